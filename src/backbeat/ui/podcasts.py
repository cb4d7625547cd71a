"""Podcast downloads per episode, day and listening app, from the measurement tables.

The download pipeline (``backbeat measure downloads``) writes ``download_daily``: IAB
downloads per UTC day and episode, split by app when run with ``--by app`` (rows with
``app = ""`` are unsplit totals) and one ``download_runs`` row per count with the requests
it excluded (by IAB rule) and rejected (malformed), by reason: the page shows the latest.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from backbeat.measurement.models import DownloadDaily, DownloadRun

MAX_ROWS = 20_000
TOP_EPISODES = 12


@dataclass
class Downloads:
    days: list[str] = field(default_factory=list)
    by_episode: dict[str, list[int]] = field(default_factory=dict)  # top episodes, per day
    by_app: list[tuple[str, int]] = field(default_factory=list)
    episodes: list[tuple[str, str, int]] = field(default_factory=list)  # show, episode, total
    shows: list[str] = field(default_factory=list)
    excluded: list[tuple[str, int]] | None = None  # None: no count recorded yet
    rejected: list[tuple[str, int]] = field(default_factory=list)
    run: DownloadRun | None = None  # the latest count, whose exclusions are shown
    rows: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    split_by_app: bool = False

    @property
    def total(self) -> int:
        return sum(total for _, _, total in self.episodes)


def downloads(session: Session, show: str | None = None) -> Downloads:
    statement = select(DownloadDaily).order_by(
        DownloadDaily.date, DownloadDaily.episode_id, DownloadDaily.app
    )
    if show:
        statement = statement.where(DownloadDaily.show_id == show)
    records = session.execute(statement.limit(MAX_ROWS)).scalars().all()
    shows = session.execute(
        select(DownloadDaily.show_id).distinct().order_by(DownloadDaily.show_id)
    )
    data = Downloads(shows=[s for (s,) in shows])
    data.split_by_app = any(r.app for r in records)
    per_day: dict[tuple[date, str], int] = defaultdict(int)
    per_app: dict[str, int] = defaultdict(int)
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        data.rows.append((r.date.isoformat(), r.show_id, r.episode_id, r.app, r.downloads))
        # Split rows sum to the episode's total; unsplit rows are the total itself.
        if data.split_by_app and not r.app:
            continue
        per_day[(r.date, r.episode_id)] += r.downloads
        totals[(r.show_id, r.episode_id)] += r.downloads
        if r.app:
            per_app[r.app] += r.downloads
    days = sorted({d for d, _ in per_day})
    data.days = [d.isoformat() for d in days]
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    data.episodes = [(s, e, n) for (s, e), n in ranked]
    for (_, episode), _n in ranked[:TOP_EPISODES]:
        data.by_episode[episode] = [per_day.get((d, episode), 0) for d in days]
    data.by_app = sorted(per_app.items(), key=lambda kv: (-kv[1], kv[0]))
    data.run = session.execute(
        select(DownloadRun).order_by(DownloadRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    if data.run is not None:
        data.excluded = _by_count(data.run.excluded)
        data.rejected = _by_count(data.run.rejected)
    return data


def _by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))

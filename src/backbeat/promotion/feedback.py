"""Reported exposures, clicks and conversions (the event log) as training exposures.

``backbeat promotion train`` writes them to ``exposures-feedback.parquet`` in the data
directory before the feature pipeline runs, so the next model learns from live responses.
Listeners, items and artists the listening data does not know are left out (counted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backbeat.eventlog import EventLogReader
from backbeat.events import Event, EventType
from backbeat.promotion.events import is_promotion
from backbeat.promotion.ids import parse_id

FEEDBACK_FILE = "exposures-feedback.parquet"
DAY = 86_400


@dataclass(frozen=True)
class FeedbackExport:
    exposures: int
    conversions: int
    skipped: int


def feedback_rows(
    events: Iterable[Event], genre_of_artist: np.ndarray, attribution_days: int = 14
) -> tuple[dict[str, np.ndarray], int]:
    exposures: dict[str, Event] = {}
    clicks: dict[str, float] = {}
    conversions: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for event in events:
        if not is_promotion(event):
            continue
        if event.type == EventType.PROMOTION_EXPOSURE:
            if event.decision_id not in exposures or event.ts < exposures[event.decision_id].ts:
                exposures[event.decision_id] = event
        elif event.type == EventType.PROMOTION_CLICK:
            clicks[event.decision_id] = min(event.ts, clicks.get(event.decision_id, event.ts))
        else:
            attrs = event.attrs or {}
            key = (event.listener, attrs.get("item_id", ""))
            conversions.setdefault(key, []).append((event.ts, attrs.get("conversion_type", "")))
    rows: dict[str, list[object]] = {name: [] for name in (
        "exposure_id", "listener", "release", "artist", "genre", "campaign", "surface", "ts",
        "click_ts", "conversion_ts", "converted", "conversion_type")}  # fmt: skip
    skipped = 0
    for exposure_id, event in sorted(exposures.items(), key=lambda kv: (kv[1].ts, kv[0])):
        attrs = event.attrs or {}
        listener = parse_id("listener", event.listener)
        release = parse_id("release", attrs.get("item_id", ""))
        artist = parse_id("artist", attrs.get("artist_id", ""))
        if listener is None or release is None or artist is None or artist >= len(genre_of_artist):
            skipped += 1
            continue
        after = [c for c in sorted(conversions.get((event.listener, attrs.get("item_id", "")), []))
                 if 0 <= c[0] - event.ts <= attribution_days * DAY]  # fmt: skip
        rows["exposure_id"].append(f"f{exposure_id}")
        rows["listener"].append(listener)
        rows["release"].append(release)
        rows["artist"].append(artist)
        rows["genre"].append(int(genre_of_artist[artist]))
        rows["campaign"].append(event.campaign_id or 0)
        rows["surface"].append(attrs.get("surface", "home_feed"))
        rows["ts"].append(int(event.ts))
        rows["click_ts"].append(int(clicks[exposure_id]) if exposure_id in clicks else -1)
        rows["conversion_ts"].append(int(after[0][0]) if after else -1)
        rows["converted"].append(bool(after))
        rows["conversion_type"].append(after[0][1] if after else "")
    types = {"listener": np.int32, "release": np.int32, "artist": np.int32, "genre": np.int16,
             "campaign": np.int32, "ts": np.int64, "click_ts": np.int64, "conversion_ts": np.int64,
             "converted": bool}  # fmt: skip
    columns = {
        name: np.array(values, dtype=types.get(name, object))
        if name in types
        else np.array(values, dtype=str)
        for name, values in rows.items()
    }
    return columns, skipped


def export_feedback(event_log_dir: Path, data: Path) -> FeedbackExport:
    """Write the event log's promotion feedback next to the listening data (replacing it)."""
    target = data / FEEDBACK_FILE
    if not event_log_dir.exists():
        target.unlink(missing_ok=True)
        return FeedbackExport(0, 0, 0)
    artists = pq.read_table(data / "artists.parquet", columns=["artist", "genre"])
    codes, genres = artists.column("artist").to_numpy(), artists.column("genre").to_numpy()
    genre_of = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    genre_of[codes] = genres
    reader = EventLogReader(event_log_dir)
    columns, skipped = feedback_rows(
        (Event.from_bytes(r.payload) for r in reader.records()), genre_of
    )
    if len(columns["ts"]) == 0:
        target.unlink(missing_ok=True)
        return FeedbackExport(0, 0, skipped)
    pq.write_table(pa.table(columns), target)
    return FeedbackExport(len(columns["ts"]), int(columns["converted"].sum()), skipped)

"""The result of a download count, the same whichever implementation produced it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

from backbeat.measurement.downloads.rules import BOT_EXCLUSIONS

_EPOCH = date(1970, 1, 1)


def day_to_iso(day: int) -> str:
    """UTC day number since the epoch to ``YYYY-MM-DD``."""
    return (_EPOCH + timedelta(days=int(day))).isoformat()


@dataclass
class DownloadReport:
    """Downloads by (date, episode_id, app), delivered ads, and every line's fate."""

    downloads: Counter[tuple[str, str, str | None]] = field(default_factory=Counter)
    ads: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    days: Counter[str] = field(default_factory=Counter)  # counted requests per UTC day
    lines: int = 0
    accepted: int = 0

    @property
    def bot_requests(self) -> int:
        return sum(n for reason, n in self.excluded.items() if reason in BOT_EXCLUSIONS)

    def rows(self, by_app: bool) -> list[dict[str, object]]:
        """Report rows sorted by date, episode and app, ready for CSV."""
        rows = []
        for (day, episode_id, app), count in sorted(
            self.downloads.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")
        ):
            row: dict[str, object] = {"date": day, "episode_id": episode_id}
            if by_app:
                row["app"] = app
            row["downloads"] = count
            rows.append(row)
        return rows

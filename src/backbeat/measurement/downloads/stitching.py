"""Dynamically inserted ads: where each ad sits in a served file, and whether it was delivered.

A stitch map CSV has ``episode_id,ad_id,byte_start,byte_end`` with ``byte_end``
exclusive. An ad counts as delivered only when every one of its bytes reached the
listener within the download's window and that download itself counts.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backbeat.errors import InvalidInput

STITCH_COLUMNS = ("episode_id", "ad_id", "byte_start", "byte_end")


@dataclass(frozen=True, slots=True)
class AdSlot:
    """One ad's bytes ``[byte_start, byte_end)`` in an episode's served file."""

    episode_id: str
    ad_id: str
    byte_start: int
    byte_end: int


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of half-open intervals as sorted, disjoint, non-touching intervals."""
    merged: list[list[int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def covers(merged: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether a merged union holds all of ``[start, end)``."""
    position = bisect.bisect_right(merged, (start, float("inf"))) - 1
    return position >= 0 and merged[position][0] <= start and merged[position][1] >= end


def parse_stitch_map(rows: Iterable[str]) -> tuple[AdSlot, ...]:
    """Read stitch-map CSV text (header line first)."""
    reader = csv.DictReader(rows)
    missing = [c for c in STITCH_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise InvalidInput(f"stitch map lacks column(s): {', '.join(missing)}")
    slots = []
    for line, row in enumerate(reader, start=2):
        try:
            start, end = int(row["byte_start"]), int(row["byte_end"])
        except ValueError as exc:
            raise InvalidInput(f"stitch map line {line}: {exc}", line=line) from exc
        if not 0 <= start < end or not row["episode_id"] or not row["ad_id"]:
            raise InvalidInput(
                f"stitch map line {line}: need ids and 0 <= byte_start < byte_end", line=line
            )
        slots.append(AdSlot(row["episode_id"], row["ad_id"], start, end))
    return tuple(slots)


def load_stitch_map(path: str | Path) -> tuple[AdSlot, ...]:
    """Read a stitch-map CSV file."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return parse_stitch_map(handle)
    except OSError as exc:
        raise InvalidInput(f"cannot read stitch map {path}: {exc.strerror}") from exc

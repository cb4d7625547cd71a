"""The episode catalog: which paths are episodes, their sizes and the IAB byte threshold."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import numpy as np

from backbeat.errors import InvalidInput
from backbeat.measurement.downloads.rules import normalise_path

CATALOG_COLUMNS = ("episode_id", "show_id", "path", "file_bytes", "header_bytes", "duration_s")
SHORT_EPISODE_S = 60


@dataclass(frozen=True, slots=True)
class Episode:
    """One audio file as published; ``header_bytes`` is the ID3 tag's size."""

    episode_id: str
    show_id: str
    path: str
    file_bytes: int
    header_bytes: int
    duration_s: Fraction

    @property
    def required_bytes(self) -> int:
        return required_bytes(self.file_bytes, self.header_bytes, self.duration_s)


def required_bytes(file_bytes: int, header_bytes: int, duration_s: Fraction) -> int:
    """IAB threshold: one minute of audio past the ID3 tag, or the whole file if ≤ 60 s."""
    if duration_s <= SHORT_EPISODE_S:
        return file_bytes
    minute = math.ceil(SHORT_EPISODE_S * (file_bytes - header_bytes) / duration_s)
    return min(file_bytes, header_bytes + minute)


class Catalog:
    """Episodes in file order, looked up by normalised path."""

    def __init__(self, episodes: Iterable[Episode]) -> None:
        self.episodes = tuple(episodes)
        self._by_path: dict[str, int] = {}
        for index, episode in enumerate(self.episodes):
            if episode.path in self._by_path:
                raise InvalidInput(
                    f"episode catalog lists path {episode.path!r} twice", path=episode.path
                )
            self._by_path[episode.path] = index

    @cached_property
    def required_bytes(self) -> np.ndarray:
        """Each episode's threshold, by index: computed once, not per counted batch."""
        return np.array([e.required_bytes for e in self.episodes], np.int64)

    def index_of(self, target: str) -> int:
        """Position of the episode a request target names, or -1."""
        return self._by_path.get(normalise_path(target), -1)

    def __len__(self) -> int:
        return len(self.episodes)


def _episode_from_row(row: dict[str, str], line: int) -> Episode:
    try:
        file_bytes = int(row["file_bytes"])
        header_bytes = int(row["header_bytes"])
        duration = Fraction(row["duration_s"].strip())
    except (ValueError, ZeroDivisionError) as exc:
        raise InvalidInput(f"episode catalog line {line}: {exc}", line=line) from exc
    if not row["episode_id"] or not row["path"]:
        raise InvalidInput(f"episode catalog line {line}: empty episode_id or path", line=line)
    if file_bytes <= 0 or not 0 <= header_bytes < file_bytes or duration <= 0:
        raise InvalidInput(
            f"episode catalog line {line}: need file_bytes > header_bytes >= 0 and duration_s > 0",
            line=line,
        )
    return Episode(
        episode_id=row["episode_id"],
        show_id=row["show_id"],
        path=normalise_path(row["path"]),
        file_bytes=file_bytes,
        header_bytes=header_bytes,
        duration_s=duration,
    )


def parse_catalog(rows: Iterable[str]) -> Catalog:
    """Read catalog CSV text (header line first)."""
    reader = csv.DictReader(rows)
    missing = [c for c in CATALOG_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise InvalidInput(f"episode catalog lacks column(s): {', '.join(missing)}")
    return Catalog(tuple(_episode_from_row(row, n) for n, row in enumerate(reader, start=2)))


def load_catalog(path: str | Path) -> Catalog:
    """Read the catalog CSV file."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return parse_catalog(handle)
    except OSError as exc:
        raise InvalidInput(f"cannot read episode catalog {path}: {exc.strerror}") from exc

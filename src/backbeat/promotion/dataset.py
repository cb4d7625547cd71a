"""Where promotion data lives under the var directory, and reading it back.

Layout of a data directory (what ``backbeat promotion generate`` writes, and what any
other source must provide)::

    manifest.json          start_ts, end_ts of the listening history
    artists.parquet        artist (int), genre (int)
    listeners.parquet      listener (int), country
    releases.parquet       release (int), artist, genre, release_ts
    listens/part-K.parquet listener, track, release, artist, ts, ms_played, source;
                           part K of N holds the listeners with listener % N == K
    exposures*.parquet     exposure_id, listener, release, artist, genre, campaign, surface,
                           ts, click_ts, conversion_ts (−1: none), converted, conversion_type
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backbeat.errors import InvalidInput

EXPOSURE_COLUMNS = (
    "exposure_id",
    "listener",
    "release",
    "artist",
    "genre",
    "campaign",
    "surface",
    "ts",
    "click_ts",
    "conversion_ts",
    "converted",
    "conversion_type",
)


def promotion_dir(var_dir: Path) -> Path:
    return var_dir / "promotion"


def data_dir(var_dir: Path) -> Path:
    return promotion_dir(var_dir) / "data"


def features_dir(var_dir: Path) -> Path:
    return promotion_dir(var_dir) / "features"


def models_dir(var_dir: Path) -> Path:
    return var_dir / "models" / "promotion"


@dataclass(frozen=True)
class DataSet:
    root: Path

    def check(self) -> None:
        if not (self.root / "manifest.json").exists():
            raise InvalidInput(
                f"no promotion data in {self.root}: run `backbeat promotion generate` first",
                reason="no-promotion-data",
            )
        if not self.listen_parts():
            raise InvalidInput(f"no listens/part-*.parquet in {self.root}", reason="no-listens")

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.root / "manifest.json").read_text())  # type: ignore[no-any-return]

    def listen_parts(self) -> list[str]:
        return sorted(str(path) for path in (self.root / "listens").glob("part-*.parquet"))

    def exposure_files(self) -> list[str]:
        return sorted(str(path) for path in self.root.glob("exposures*.parquet"))

    def artists(self) -> dict[str, np.ndarray]:
        return read_columns(self.root / "artists.parquet")

    def releases(self) -> dict[str, np.ndarray]:
        return read_columns(self.root / "releases.parquet")

    def listeners(self) -> dict[str, np.ndarray]:
        return read_columns(self.root / "listeners.parquet")


def read_columns(path: str | Path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    table = pq.read_table(path, columns=columns)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def read_exposures(paths: list[str]) -> dict[str, np.ndarray]:
    """All exposure files, concatenated in path order."""
    tables = [pq.read_table(path, columns=list(EXPOSURE_COLUMNS)) for path in paths]
    if not tables:
        return {name: np.zeros(0) for name in EXPOSURE_COLUMNS}
    table = pa.concat_tables(tables, promote_options="permissive")
    return {name: table.column(name).to_numpy() for name in table.column_names}

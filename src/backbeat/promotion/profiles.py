"""Listener histories in memory for online scoring: built once per data version, never per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backbeat.promotion import features
from backbeat.promotion.dataset import DataSet, read_columns, read_exposures
from backbeat.promotion.ids import format_id, parse_id

RELEASE_SHIFT = features.SHIFT


@dataclass
class Profiles:
    """Per listener: the feature history and the releases streamed (for the exclusion window)."""

    histories: dict[int, features.ListenerHistory]
    release_keys: dict[int, np.ndarray]  # release * SHIFT + ts, sorted
    exposure_counts: dict[tuple[str, str], int]  # (listener id, item id) → exposures so far
    popularity: features.Popularity
    genre_of_artist: np.ndarray
    release_of_track: np.ndarray
    version: str = ""
    listeners: list[int] = field(default_factory=list)

    def history(self, listener_id: str) -> features.ListenerHistory:
        code = parse_id("listener", listener_id)
        found = self.histories.get(code) if code is not None else None
        return found if found is not None else features.EMPTY_HISTORY

    def genre(self, artist: int) -> int:
        return int(self.genre_of_artist[artist]) if 0 <= artist < len(self.genre_of_artist) else -1

    def streamed_since(self, listener_id: str, release: int, since_ts: int) -> bool:
        code = parse_id("listener", listener_id)
        keys = self.release_keys.get(code) if code is not None else None
        if keys is None or release < 0:
            return False
        base = release * RELEASE_SHIFT
        index = np.searchsorted(keys, base + since_ts, side="left")
        return bool(index < len(keys) and keys[index] < base + RELEASE_SHIFT)

    def last_streams(self, listener_id: str) -> dict[int, int]:
        """Release → the listener's latest stream of it (one pass, once per request)."""
        code = parse_id("listener", listener_id)
        keys = self.release_keys.get(code) if code is not None else None
        if keys is None or len(keys) == 0:
            return {}
        releases = keys // RELEASE_SHIFT
        last = np.r_[np.flatnonzero(np.diff(releases)), len(keys) - 1]
        return dict(
            zip(releases[last].tolist(), (keys[last] % RELEASE_SHIFT).tolist(), strict=True)
        )


def empty_profiles() -> Profiles:
    return Profiles(
        histories={},
        release_keys={},
        exposure_counts={},
        popularity=features.Popularity.from_counts(0, np.zeros((0, 1), dtype=np.int64)),
        genre_of_artist=np.zeros(0, dtype=np.int64),
        release_of_track=np.zeros(0, dtype=np.int64),
    )


def load_profiles(root: Path) -> Profiles:
    """Every listener's history from a data directory (listens parts and exposure files)."""
    data = DataSet(root)
    data.check()
    manifest = data.manifest
    start_ts, end_ts = int(manifest["start_ts"]), int(manifest["end_ts"])
    artists = data.artists()
    genre_of = np.full(int(artists["artist"].max()) + 1, -1, dtype=np.int64)
    genre_of[artists["artist"]] = artists["genre"]
    tracks = read_columns(root / "tracks.parquet", ["track", "release"])
    release_of_track = np.full(int(tracks["track"].max()) + 1, -1, dtype=np.int64)
    release_of_track[tracks["track"]] = tracks["release"]
    days = max(1, (end_ts - start_ts) // features.DAY)
    daily = np.zeros((len(genre_of), days), dtype=np.int64)
    exposures = read_exposures(data.exposure_files())
    e_order = np.lexsort((exposures["ts"], exposures["listener"]))
    exposures = {name: column[e_order] for name, column in exposures.items()}
    histories: dict[int, features.ListenerHistory] = {}
    release_keys: dict[int, np.ndarray] = {}
    for path in data.listen_parts():
        listens = read_columns(path, ["listener", "artist", "release", "ts"])
        daily += features.daily_counts(
            listens["artist"], listens["ts"], start_ts, len(genre_of), days
        )
        order = np.lexsort((listens["ts"], listens["listener"]))
        listener = listens["listener"][order]
        bounds = np.flatnonzero(np.diff(listener)) + 1
        starts, ends = np.r_[0, bounds], np.r_[bounds, len(listener)]
        for lo, hi in zip(starts, ends, strict=True):
            if lo == hi:
                continue
            code = int(listener[lo])
            rows = order[lo:hi]
            artist = listens["artist"][rows].astype(np.int64)
            e_lo, e_hi = np.searchsorted(exposures["listener"], [code, code + 1])
            histories[code] = features.ListenerHistory.build(
                listens["ts"][rows],
                artist,
                genre_of[np.clip(artist, 0, len(genre_of) - 1)],
                exposure_ts=exposures["ts"][e_lo:e_hi],
                exposure_artist=exposures["artist"][e_lo:e_hi],
                click_ts=exposures["click_ts"][e_lo:e_hi],
                conversion_ts=exposures["conversion_ts"][e_lo:e_hi],
            )
            release_keys[code] = np.sort(
                listens["release"][rows].astype(np.int64) * RELEASE_SHIFT + listens["ts"][rows]
            )
    counts: dict[tuple[str, str], int] = {}
    for listener, release in zip(exposures["listener"], exposures["release"], strict=True):
        key = (format_id("listener", int(listener)), format_id("release", int(release)))
        counts[key] = counts.get(key, 0) + 1
    return Profiles(
        histories=histories,
        release_keys=release_keys,
        exposure_counts=counts,
        popularity=features.Popularity.from_counts(start_ts, daily),
        genre_of_artist=genre_of,
        release_of_track=release_of_track,
        version=f"{manifest.get('config', {}).get('seed')}:{end_ts}:{len(histories)}",
        listeners=sorted(histories),
    )

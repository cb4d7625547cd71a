"""Point-in-time features of one listener for promoted items: shared by training and serving.

A row for an exposure at time ``t`` sees only events strictly before ``t`` (plays, earlier
exposures, clicks and conversions at their own timestamps) and artist popularity over the
28 full UTC days before ``t``'s day. The training pipeline and the online scorer call the
same :func:`compute`, so what the model learned is what it is served. The hash of this
file is recorded with every model (feature-code hash).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DAY = 86_400
WINDOW = 28 * DAY
MAX_DAYS = 365.0
SHIFT = np.int64(1) << 34  # separates a key (artist, genre) from a timestamp in one int64
SURFACE_CODES = {"home_feed": 0, "takeover": 1, "search": 2, "now_playing": 3, "notification": 4}

FEATURES = (
    "artist_plays_28d",
    "artist_plays_ever",
    "days_since_artist_play",
    "listener_plays_28d",
    "days_since_last_play",
    "genre_share_28d",
    "artist_popularity_28d",
    "past_exposures",
    "past_clicks",
    "past_conversions",
    "past_exposures_artist",
    "surface",
)
BASELINE_FEATURE = "artist_popularity_28d"


def feature_code_hash() -> str:
    """SHA-256 of this module's source: a change of feature code changes the model's lineage."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class ListenerHistory:
    """One listener's past, sorted for binary search (all timestamps int64 seconds)."""

    ts: np.ndarray
    artist_keys: np.ndarray  # artist * SHIFT + ts, sorted
    genre_keys: np.ndarray  # genre * SHIFT + ts, sorted
    exposure_ts: np.ndarray
    exposure_artist_keys: np.ndarray
    click_ts: np.ndarray
    conversion_ts: np.ndarray

    @classmethod
    def build(
        cls,
        ts: np.ndarray,
        artist: np.ndarray,
        genre: np.ndarray,
        exposure_ts: np.ndarray | None = None,
        exposure_artist: np.ndarray | None = None,
        click_ts: np.ndarray | None = None,
        conversion_ts: np.ndarray | None = None,
    ) -> ListenerHistory:
        """From unsorted arrays; click/conversion times below 0 mean "none"."""
        ts = np.asarray(ts, dtype=np.int64)
        exposure_ts = _empty() if exposure_ts is None else np.asarray(exposure_ts, np.int64)
        exposure_artist = (
            _empty() if exposure_artist is None else np.asarray(exposure_artist, np.int64)
        )
        clicks = _empty() if click_ts is None else np.asarray(click_ts, np.int64)
        conversions = _empty() if conversion_ts is None else np.asarray(conversion_ts, np.int64)
        return cls(
            ts=np.sort(ts),
            artist_keys=np.sort(np.asarray(artist, np.int64) * SHIFT + ts),
            genre_keys=np.sort(np.asarray(genre, np.int64) * SHIFT + ts),
            exposure_ts=np.sort(exposure_ts),
            exposure_artist_keys=np.sort(exposure_artist * SHIFT + exposure_ts),
            click_ts=np.sort(clicks[clicks >= 0]),
            conversion_ts=np.sort(conversions[conversions >= 0]),
        )


EMPTY_HISTORY = ListenerHistory.build(_empty(), _empty(), _empty())


@dataclass(frozen=True, slots=True)
class Popularity:
    """Plays per artist per UTC day, cumulated: ``cumulative[a, d]`` = plays on days < d."""

    start_ts: int
    cumulative: np.ndarray  # (artists, days + 1)

    @classmethod
    def from_counts(cls, start_ts: int, daily: np.ndarray) -> Popularity:
        cumulative = np.zeros((daily.shape[0], daily.shape[1] + 1), dtype=np.int64)
        np.cumsum(daily, axis=1, out=cumulative[:, 1:])
        return cls(start_ts=start_ts, cumulative=cumulative)

    def at(self, artist: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Plays of each artist over the 28 full days before the day of ``ts``."""
        artists, columns = self.cumulative.shape
        day = (np.asarray(ts, np.int64) - self.start_ts) // DAY
        hi = np.clip(day, 0, columns - 1)
        lo = np.clip(day - 28, 0, columns - 1)
        known = (artist >= 0) & (artist < artists)
        safe = np.where(known, artist, 0)
        counts = self.cumulative[safe, hi] - self.cumulative[safe, lo]
        return np.where(known, counts, 0)


def daily_counts(
    artist: np.ndarray, ts: np.ndarray, start_ts: int, artists: int, days: int
) -> np.ndarray:
    """Plays per (artist, day) of a batch of listens; listens outside the days are ignored."""
    day = (np.asarray(ts, np.int64) - start_ts) // DAY
    keep = (day >= 0) & (day < days) & (artist >= 0) & (artist < artists)
    flat = np.bincount(artist[keep].astype(np.int64) * days + day[keep], minlength=artists * days)
    return flat.reshape(artists, days)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` where the index is valid, 0 elsewhere (also for an empty array)."""
    if len(values) == 0:
        return np.zeros(len(index), dtype=np.int64)
    return values[np.clip(index, 0, len(values) - 1)]


def _window(
    keys: np.ndarray, base: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (key, ts - 28d), (key, ts) and (key, -inf) in sorted ``keys``."""
    hi = np.searchsorted(keys, base + ts, side="left")
    lo28 = np.searchsorted(keys, base + ts - WINDOW, side="left")
    lo = np.searchsorted(keys, base, side="left")
    return lo28, hi, lo


def compute(
    history: ListenerHistory,
    ts: np.ndarray,
    artist: np.ndarray,
    genre: np.ndarray,
    surface: np.ndarray,
    popularity: Popularity,
) -> np.ndarray:
    """Feature rows (float64, columns :data:`FEATURES`) for queries of one listener."""
    ts = np.asarray(ts, np.int64)
    artist = np.asarray(artist, np.int64)
    genre = np.asarray(genre, np.int64)
    n = len(ts)
    out = np.empty((n, len(FEATURES)), dtype=np.float64)

    base = artist * SHIFT
    lo28, hi, lo = _window(history.artist_keys, base, ts)
    out[:, 0] = hi - lo28
    out[:, 1] = hi - lo
    last = _take(history.artist_keys, hi - 1) - base
    out[:, 2] = np.where(hi > lo, np.minimum((ts - last) / DAY, MAX_DAYS), MAX_DAYS)

    all_hi = np.searchsorted(history.ts, ts, side="left")
    all_lo28 = np.searchsorted(history.ts, ts - WINDOW, side="left")
    plays_28d = all_hi - all_lo28
    out[:, 3] = plays_28d
    last_any = _take(history.ts, all_hi - 1)
    out[:, 4] = np.where(all_hi > 0, np.minimum((ts - last_any) / DAY, MAX_DAYS), MAX_DAYS)

    g_lo28, g_hi, _ = _window(history.genre_keys, genre * SHIFT, ts)
    in_genre = np.where(genre >= 0, g_hi - g_lo28, 0)
    out[:, 5] = np.divide(in_genre, plays_28d, out=np.zeros(n), where=plays_28d > 0)
    out[:, 6] = popularity.at(artist, ts)

    out[:, 7] = np.searchsorted(history.exposure_ts, ts, side="left")
    out[:, 8] = np.searchsorted(history.click_ts, ts, side="left")
    out[:, 9] = np.searchsorted(history.conversion_ts, ts, side="left")
    e_hi = np.searchsorted(history.exposure_artist_keys, base + ts, side="left")
    e_lo = np.searchsorted(history.exposure_artist_keys, base, side="left")
    out[:, 10] = e_hi - e_lo
    out[:, 11] = surface
    return out

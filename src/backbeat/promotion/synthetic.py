"""A seeded generator of realistic listening data, promotion exposures and their responses.

Assumptions (documented in docs/promotion.md): artists have one genre and a Zipf-like
popularity long tail; each listener has a taste over genres (Dirichlet, concentrated) and a
personal set of favourite artists drawn by popularity × taste; listeners differ in activity
(log-normal); listening comes in sessions following a daily curve; some releases are new
inside the window and are promoted for 14 days after release. Responses to an exposure are
drawn from a *hidden true model* of the listener's point-in-time history with the artist,
the hidden taste, activity, surface and fatigue; a converted listener then streams the
release, so a feature pipeline that looks past the exposure time would see the label.

Everything is numpy and vectorised: 5,000 listeners × 8 weeks (≈1.5 M plays) take a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY = 86_400
SURFACES = ("home_feed", "takeover")
SOURCES = ("playlist", "album", "radio", "search", "home")
COUNTRIES = ("US", "GB", "DE", "BR", "SE", "FR")
COUNTRY_MIX = (0.38, 0.14, 0.14, 0.14, 0.1, 0.1)
# Share of sessions starting in each UTC hour: quiet nights, commute and evening peaks.
HOUR_CURVE = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.2, 2.6, 2.0, 1.6, 1.6,
     1.8, 1.7, 1.6, 1.7, 2.0, 2.5, 2.7, 2.6, 2.3, 2.0, 1.6, 1.2]
)  # fmt: skip
FAVOURITES = 40  # candidate artists a listener plays, besides exploring
EXPLORE_SHARE = 0.08
WINDOW_28D = 28 * DAY


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of a generated data set; ``end`` is when the listening history stops."""

    listeners: int = 5_000
    artists: int = 400
    genres: int = 12
    days: int = 56
    seed: int = 7
    end: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    )
    sessions_per_day: float = 0.7
    tracks_per_session: float = 7.0
    promoted_releases: int = 24
    exposure_share: float = 0.2  # of listeners, per promoted release
    shards: int = 4

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


# The hidden true model: log-odds of a stream (conversion) after one exposure.
TRUE_MODEL = {
    "intercept": -4.3,
    "log1p_artist_plays_28d": 0.8,
    "lapsed_listener": 0.6,
    "genre_taste": 3.2,
    "log_activity": 0.35,
    "takeover": 0.6,
    "prior_exposures": -0.3,
    "noise_sd": 0.3,
}


@dataclass
class SyntheticData:
    """Generated tables as column arrays (``ts`` are integer seconds since the epoch)."""

    config: SyntheticConfig
    artists: dict[str, np.ndarray]
    releases: dict[str, np.ndarray]
    tracks: dict[str, np.ndarray]
    listeners: dict[str, np.ndarray]
    listens: dict[str, np.ndarray]
    exposures: dict[str, np.ndarray]
    taste: np.ndarray = field(repr=False)

    def write(self, directory: Path) -> dict[str, int]:
        """Parquet files, listens sharded by listener; returns row counts (also in manifest.json)."""
        directory.mkdir(parents=True, exist_ok=True)
        _write(directory / "artists.parquet", self.artists)
        _write(directory / "releases.parquet", self.releases)
        _write(directory / "tracks.parquet", self.tracks)
        _write(directory / "listeners.parquet", self.listeners)
        _write(directory / "exposures.parquet", self.exposures)
        listens_dir = directory / "listens"
        listens_dir.mkdir(exist_ok=True)
        for stale in listens_dir.glob("part-*.parquet"):
            stale.unlink()
        shard_of = self.listens["listener"] % self.config.shards
        for shard in range(self.config.shards):
            mask = shard_of == shard
            _write(
                listens_dir / f"part-{shard:05d}.parquet",
                {name: column[mask] for name, column in self.listens.items()},
            )
        counts = {
            "listeners": len(self.listeners["listener"]),
            "artists": len(self.artists["artist"]),
            "releases": len(self.releases["release"]),
            "tracks": len(self.tracks["track"]),
            "listens": len(self.listens["ts"]),
            "exposures": len(self.exposures["ts"]),
            "conversions": int(self.exposures["converted"].sum()),
        }
        config = asdict(self.config)
        config["end"] = self.config.end.isoformat()
        manifest = {
            "config": config,
            "counts": counts,
            "start_ts": int(self.config.start.timestamp()),
            "end_ts": int(self.config.end.timestamp()),
            "true_model": TRUE_MODEL,
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return counts


def _write(path: Path, columns: dict[str, np.ndarray]) -> None:
    pq.write_table(pa.table(columns), path, compression="zstd")


def generate(config: SyntheticConfig) -> SyntheticData:
    """Generate a full data set from ``config.seed`` (same config → same arrays)."""
    rng = np.random.default_rng(config.seed)
    start_ts, end_ts = int(config.start.timestamp()), int(config.end.timestamp())
    n_artists, n_listeners, n_genres = config.artists, config.listeners, config.genres

    # Artists: a genre each and a Zipf-like popularity long tail.
    artist_genre = rng.integers(0, n_genres, n_artists)
    popularity = 1.0 / np.arange(1, n_artists + 1) ** 1.1
    popularity = rng.permutation(popularity)
    popularity /= popularity.sum()

    releases = _releases(rng, config, artist_genre, popularity, start_ts, end_ts)
    tracks = _tracks(rng, releases)

    # Listeners: country, concentrated taste over genres, log-normal activity.
    country = rng.choice(len(COUNTRIES), n_listeners, p=COUNTRY_MIX)
    taste = rng.dirichlet(np.full(n_genres, 0.3), n_listeners)
    activity = rng.lognormal(0.0, 0.8, n_listeners)
    activity /= activity.mean()

    listens = _listens(
        rng, config, taste, activity, artist_genre, popularity, releases, tracks, start_ts
    )
    exposures, extra = _exposures(
        rng, config, taste, activity, artist_genre, releases, tracks, listens, end_ts
    )
    listens = _merge_listens(listens, extra)
    listener_codes = np.arange(n_listeners, dtype=np.int32)
    return SyntheticData(
        config=config,
        artists={
            "artist": np.arange(n_artists, dtype=np.int32),
            "genre": artist_genre.astype(np.int16),
            "popularity": popularity,
        },
        releases=releases,
        tracks=tracks,
        listeners={
            "listener": listener_codes,
            "country": np.array(COUNTRIES)[country],
        },
        listens=listens,
        exposures=exposures,
        taste=taste,
    )


def _releases(
    rng: np.random.Generator,
    config: SyntheticConfig,
    artist_genre: np.ndarray,
    popularity: np.ndarray,
    start_ts: int,
    end_ts: int,
) -> dict[str, np.ndarray]:
    """Back catalogue for every artist (first release before the window) plus promoted new ones."""
    n_artists = len(artist_genre)
    extra = rng.poisson(1.5, n_artists)
    counts = 1 + extra
    artist = np.repeat(np.arange(n_artists), counts)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    ts = rng.integers(start_ts - 3 * 365 * DAY, end_ts, len(artist))
    ts[first] = rng.integers(start_ts - 5 * 365 * DAY, start_ts - 365 * DAY, n_artists)
    promoted = np.zeros(len(artist), dtype=bool)
    # New releases promoted 14 days from release; their flights end 14 days before the data
    # does, so every exposure's attribution window is inside the data.
    n_promoted = config.promoted_releases
    promo_artist = rng.choice(n_artists, n_promoted, replace=False, p=_normalise(popularity**0.5))
    latest = max(end_ts - 28 * DAY, start_ts + 7 * DAY)
    earliest = min(start_ts + int(0.3 * config.days * DAY), latest - DAY)
    promo_ts = rng.integers(earliest, latest, n_promoted)
    artist = np.r_[artist, promo_artist]
    ts = np.r_[ts, promo_ts]
    promoted = np.r_[promoted, np.ones(n_promoted, dtype=bool)]
    order = np.lexsort((ts, artist))
    artist, ts, promoted = artist[order], ts[order], promoted[order]
    return {
        "release": np.arange(len(artist), dtype=np.int32),
        "artist": artist.astype(np.int32),
        "genre": artist_genre[artist].astype(np.int16),
        "release_ts": ts.astype(np.int64),
        "promoted": promoted,
    }


def _tracks(rng: np.random.Generator, releases: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    counts = 1 + rng.poisson(4, len(releases["release"]))
    release = np.repeat(releases["release"], counts)
    return {
        "track": np.arange(len(release), dtype=np.int32),
        "release": release.astype(np.int32),
        "artist": releases["artist"][release],
        "duration_ms": rng.integers(120_000, 300_000, len(release)).astype(np.int32),
    }


def _normalise(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def _listens(
    rng: np.random.Generator,
    config: SyntheticConfig,
    taste: np.ndarray,
    activity: np.ndarray,
    artist_genre: np.ndarray,
    popularity: np.ndarray,
    releases: dict[str, np.ndarray],
    tracks: dict[str, np.ndarray],
    start_ts: int,
) -> dict[str, np.ndarray]:
    n_listeners, n_artists = taste.shape[0], len(artist_genre)
    # Favourite artists: Gumbel top-k over popularity × taste, with personal weights.
    affinity = np.log(popularity)[None, :] + 2.5 * np.log(taste[:, artist_genre] + 1e-9)
    keys = affinity + rng.gumbel(size=affinity.shape)
    k = min(FAVOURITES, n_artists)
    favourites = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(affinity, favourites, 1)) * rng.lognormal(
        0, 1, (n_listeners, k)
    )
    weights /= weights.sum(1, keepdims=True)
    cumulative = np.cumsum(weights, axis=1)
    cumulative[:, -1] = 1.0

    # Sessions: Poisson by activity, a day in the window, an hour from the daily curve.
    sessions = rng.poisson(activity * config.sessions_per_day * config.days)
    session_listener = np.repeat(np.arange(n_listeners), sessions)
    n_sessions = len(session_listener)
    day = rng.integers(0, config.days, n_sessions)
    hour = rng.choice(24, n_sessions, p=_normalise(HOUR_CURVE))
    session_start = start_ts + day * DAY + hour * 3600 + rng.integers(0, 3600, n_sessions)
    length = rng.geometric(1.0 / config.tracks_per_session, n_sessions)
    listener = np.repeat(session_listener, length)
    position = np.arange(len(listener)) - np.repeat(np.cumsum(length) - length, length)
    ts = np.repeat(session_start, length) + position * 190 + rng.integers(0, 60, len(listener))

    # Artist: mostly a favourite (inverse CDF on the listener's row), sometimes exploring.
    n = len(listener)
    u = rng.random(n)
    flat = (cumulative + np.arange(n_listeners)[:, None]).ravel()
    slot = np.searchsorted(flat, listener + u, side="left") - listener * k
    artist = favourites[listener, np.clip(slot, 0, k - 1)]
    explore = rng.random(n) < EXPLORE_SHARE
    artist[explore] = np.searchsorted(np.cumsum(popularity), rng.random(explore.sum()))
    artist = np.minimum(artist, n_artists - 1)
    track = _pick_tracks(rng, artist, ts, releases, tracks)
    return _listen_columns(rng, listener, track, tracks, ts, source=None)


def _pick_tracks(
    rng: np.random.Generator,
    artist: np.ndarray,
    ts: np.ndarray,
    releases: dict[str, np.ndarray],
    tracks: dict[str, np.ndarray],
) -> np.ndarray:
    """A track of one of the artist's releases already out at ``ts`` (else the first release)."""
    release_artist = releases["artist"]
    first = np.searchsorted(release_artist, np.arange(release_artist.max() + 1), side="left")
    count = np.bincount(release_artist, minlength=len(first))
    release = first[artist] + (rng.random(len(artist)) * count[artist]).astype(np.int64)
    unreleased = releases["release_ts"][release] > ts
    release[unreleased] = first[artist[unreleased]]
    track_release = tracks["release"]
    track_first = np.searchsorted(track_release, np.arange(len(release_artist)), side="left")
    track_count = np.bincount(track_release, minlength=len(release_artist))
    return track_first[release] + (rng.random(len(release)) * track_count[release]).astype(np.int64)


def _listen_columns(
    rng: np.random.Generator,
    listener: np.ndarray,
    track: np.ndarray,
    tracks: dict[str, np.ndarray],
    ts: np.ndarray,
    source: str | None,
) -> dict[str, np.ndarray]:
    duration = tracks["duration_ms"][track]
    full = rng.random(len(track)) < 0.7
    played = np.where(full, duration, (duration * rng.random(len(track))).astype(np.int32))
    sources = (
        np.array(SOURCES)[rng.integers(0, len(SOURCES), len(track))]
        if source is None
        else np.full(len(track), source)
    )
    return {
        "listener": listener.astype(np.int32),
        "track": track.astype(np.int32),
        "release": tracks["release"][track].astype(np.int32),
        "artist": tracks["artist"][track].astype(np.int32),
        "ts": ts.astype(np.int64),
        "ms_played": played.astype(np.int32),
        "source": sources,
    }


def history_counts(
    listens: dict[str, np.ndarray], listener: np.ndarray, artist: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Plays of ``artist`` by ``listener`` strictly before ``ts``: (last 28 days, ever)."""
    shift = np.int64(1) << 33
    n_artists = np.int64(int(listens["artist"].max()) + 1)
    keys = (listens["listener"].astype(np.int64) * n_artists + listens["artist"]) * shift + listens[
        "ts"
    ]
    keys = np.sort(keys)
    base = (listener.astype(np.int64) * n_artists + artist) * shift
    hi = np.searchsorted(keys, base + ts, side="left")
    lo28 = np.searchsorted(keys, base + ts - WINDOW_28D, side="left")
    lo = np.searchsorted(keys, base, side="left")
    return hi - lo28, hi - lo


def _exposures(
    rng: np.random.Generator,
    config: SyntheticConfig,
    taste: np.ndarray,
    activity: np.ndarray,
    artist_genre: np.ndarray,
    releases: dict[str, np.ndarray],
    tracks: dict[str, np.ndarray],
    listens: dict[str, np.ndarray],
    end_ts: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One exposure per listener per promoted release, responses from the hidden true model."""
    n_listeners = taste.shape[0]
    promoted = np.flatnonzero(releases["promoted"])
    per_release = max(1, int(config.exposure_share * n_listeners))
    reach_weight = _normalise(activity**0.7)
    listener_parts, release_parts = [], []
    for release in promoted:  # a few dozen releases: the loop is not the cost
        chosen = rng.choice(n_listeners, per_release, replace=False, p=reach_weight)
        listener_parts.append(chosen)
        release_parts.append(np.full(per_release, release))
    listener = np.concatenate(listener_parts)
    release = np.concatenate(release_parts)
    ts = releases["release_ts"][release] + rng.integers(0, 14 * DAY, len(release))
    order = np.lexsort((ts, listener))
    listener, release, ts = listener[order], release[order], ts[order]
    artist = releases["artist"][release]
    genre = artist_genre[artist]
    surface = (rng.random(len(ts)) < 0.2).astype(np.int64)  # 1 = takeover
    # Fatigue: earlier exposures of the same listener (any release).
    first_of_listener = np.searchsorted(listener, listener, side="left")
    prior = np.arange(len(listener)) - first_of_listener
    plays_28d, plays_ever = history_counts(listens, listener, artist, ts)
    lapsed = (plays_28d == 0) & (plays_ever > 0)
    m = TRUE_MODEL
    logit = (
        m["intercept"]
        + m["log1p_artist_plays_28d"] * np.log1p(plays_28d)
        + m["lapsed_listener"] * lapsed
        + m["genre_taste"] * taste[listener, genre]
        + m["log_activity"] * np.log(activity[listener])
        + m["takeover"] * surface
        + m["prior_exposures"] * prior
        + rng.normal(0, m["noise_sd"], len(ts))
    )
    converted = rng.random(len(ts)) < 1 / (1 + np.exp(-logit))
    clicked = rng.random(len(ts)) < np.where(converted, 0.5, 0.03)
    click_ts = np.where(clicked, ts + rng.integers(1, 120, len(ts)), -1)
    delay = np.minimum(rng.exponential(DAY, len(ts)).astype(np.int64) + 30, 13 * DAY)
    conversion_ts = np.where(converted, ts + delay, -1)
    conversion_type = np.where(
        plays_ever == 0, "new", np.where(plays_28d == 0, "reactivated", "amplified")
    )
    conversion_type = np.where(converted, conversion_type, "")

    # A conversion is a stream of the release: 1–4 plays from the conversion time on.
    plays = 1 + rng.poisson(1.5, int(converted.sum()))
    who = np.repeat(listener[converted], plays)
    which = np.repeat(release[converted], plays)
    when = np.repeat(conversion_ts[converted], plays)
    offset = np.arange(len(who)) - np.repeat(np.cumsum(plays) - plays, plays)
    track_first = np.searchsorted(tracks["release"], which, side="left")
    track_count = np.bincount(tracks["release"], minlength=len(releases["release"]))[which]
    track = track_first + (rng.random(len(which)) * track_count).astype(np.int64)
    extra = _listen_columns(rng, who, track, tracks, when + offset * 200, source="promotion")
    keep = extra["ts"] < end_ts
    extra = {name: column[keep] for name, column in extra.items()}

    exposure_order = np.lexsort((listener, ts))
    columns = {
        "exposure_id": np.array([f"x{i:08d}" for i in range(len(ts))]),
        "listener": listener.astype(np.int32),
        "release": release.astype(np.int32),
        "artist": artist.astype(np.int32),
        "genre": genre.astype(np.int16),
        "campaign": np.searchsorted(promoted, release).astype(np.int32),
        "surface": np.array(SURFACES)[surface],
        "ts": ts.astype(np.int64),
        "click_ts": click_ts.astype(np.int64),
        "conversion_ts": conversion_ts.astype(np.int64),
        "converted": converted,
        "conversion_type": conversion_type,
    }
    columns = {name: column[exposure_order] for name, column in columns.items()}
    columns["exposure_id"] = np.array([f"x{i:08d}" for i in range(len(ts))])
    return columns, extra


def _merge_listens(
    organic: dict[str, np.ndarray], extra: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    merged = {name: np.concatenate([organic[name], extra[name]]) for name in organic}
    order = np.lexsort((merged["ts"], merged["listener"]))
    return {name: column[order] for name, column in merged.items()}


def load_table(path: Path) -> dict[str, np.ndarray]:
    """A Parquet file (or a directory of parts) as numpy columns."""
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}

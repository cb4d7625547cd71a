"""Weeks of ad opportunities, vectorised: who listens when, to what, on which device.

``simulate_traffic`` turns a ``TrafficConfig`` into a ``Traffic``: one row per ad break
(time, listener, slot, genre, show, connection), sorted by time. How it is drawn:

1. expected breaks per (zone, device class, UTC hour) = the group's total listener
   activity × the local daily curve of its day type × the weekday and device weekend
   lean × trend × holiday factor (``calendar.expected_volume``), scaled so the whole
   span expects ``daily_requests × days``;
2. overdispersed counts: a day shock per market (lognormal), an hour shock per market
   and a cell shock (both gamma, mean 1), then Poisson: a gamma-Poisson (negative
   binomial) count per cell, so hours are noisier than Poisson as real traffic is;
3. each break goes to a listener of its group drawn in proportion to activity (loyal
   listeners come back often), at a uniform second of the hour;
4. content follows the listener: podcast or music by their podcast share, their favourite
   genre and show more often than not, a Zipf-popular show otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np

from backbeat.catalog.vocabulary import WEEKDAYS
from backbeat.errors import InvalidInput
from backbeat.simulation.audience import (
    DEVICE_CLASSES,
    ZONES,
    Audience,
    make_audience,
    zipf_index,
)
from backbeat.simulation.calendar import HOUR, LocalClock, expected_volume
from backbeat.simulation.profiles import (
    DEVICE_RHYTHMS,
    DEVICES,
    MARKETS,
    MUSIC_GENRE_WEIGHTS,
    MUSIC_GENRES,
    PODCAST_GENRE_WEIGHTS,
    PODCAST_GENRES,
    PODCAST_POSITIONS,
    SHOWS_PER_GENRE,
    SLOTS,
)

DAY = 86400
GENRES = PODCAST_GENRES + MUSIC_GENRES  # podcast genres first: index < len(PODCAST_GENRES)
SHOWS = [f"show-{genre}-{n + 1}" for genre in PODCAST_GENRES for n in range(SHOWS_PER_GENRE)]
CONNECTIONS = ["wifi", "cellular", "ethernet"]
FAVOURITE_GENRE = 0.55  # share of a listener's breaks in their favourite genre
FAVOURITE_SHOW = 0.6  # share of those in their favourite show


@dataclass(frozen=True)
class TrafficConfig:
    """What to simulate. ``start`` is a UTC instant (a midnight is usual)."""

    start: float
    days: int = 28
    daily_requests: int = 50_000
    listeners: int = 60_000
    seed: int = 1
    weekly_growth: float = 0.01
    holidays: bool = True
    day_sigma: float = 0.03  # market-day shock (lognormal sigma)
    hour_shape: float = 150.0  # market-hour gamma shape: CV 1/sqrt(150) = 8%
    cell_shape: float = 60.0  # (zone, device, hour) gamma shape: CV 13%
    slot_ids: tuple[int, ...] = (1, 2, 3, 4)  # ids of profiles.SLOTS, in that order

    def __post_init__(self) -> None:
        if self.days < 1 or self.daily_requests < 1 or self.listeners < 1:
            raise InvalidInput(
                "days, daily_requests and listeners must be positive", reason="invalid-simulation"
            )
        if len(self.slot_ids) != len(SLOTS):
            raise InvalidInput(
                f"slot_ids needs one id per simulated slot ({len(SLOTS)})",
                reason="invalid-simulation",
            )

    @classmethod
    def starting(cls, start: datetime, **options: Any) -> TrafficConfig:
        return cls(start=start.astimezone(UTC).timestamp(), **options)

    @property
    def end(self) -> float:
        return self.start + self.days * DAY


@dataclass(frozen=True)
class Traffic:
    """Ad breaks as parallel arrays, sorted by ``ts``; ``audience`` resolves listener rows."""

    config: TrafficConfig
    audience: Audience
    ts: np.ndarray  # float64 seconds since the epoch
    listener: np.ndarray  # row of audience
    slot: np.ndarray  # index into profiles.SLOTS
    genre: np.ndarray  # index into GENRES
    show: np.ndarray  # index into SHOWS, -1 for music
    connection: np.ndarray  # index into CONNECTIONS
    local_hour: np.ndarray  # listener's local hour (0-23)
    weekday: np.ndarray  # listener's local weekday (0 = Monday)
    holidays: list[tuple[str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ts.size)

    def between(self, since: float, until: float) -> Traffic:
        """The breaks in [since, until) (same audience)."""
        low, high = np.searchsorted(self.ts, [since, until])
        part = slice(int(low), int(high))
        return Traffic(
            self.config, self.audience, self.ts[part], self.listener[part], self.slot[part],
            self.genre[part], self.show[part], self.connection[part], self.local_hour[part],
            self.weekday[part], self.holidays,
        )  # fmt: skip

    @cached_property
    def device_class(self) -> np.ndarray:
        return self.audience.device_class[self.listener]

    @cached_property
    def segments(self) -> np.ndarray:
        return self.audience.segments[self.listener]

    def slot_id(self, row: int) -> int:
        return self.config.slot_ids[int(self.slot[row])]

    def episode(self, row: int) -> str | None:
        show = int(self.show[row])
        if show < 0:
            return None
        # A weekly show: the episode is the week the break falls in.
        return f"{SHOWS[show]}-e{int(self.ts[row] // (7 * DAY))}"

    def attributes(self, row: int) -> dict[str, Any]:
        """The request's targeting attributes, keyed like ``serving.request.request_attributes``."""
        who = int(self.listener[row])
        audience = self.audience
        tz, region, country = ZONES[int(audience.zone[who])]
        device, platform, _, _ = DEVICES[int(audience.device[who])]
        surface, position = SLOTS[int(self.slot[row])]
        show = int(self.show[row])
        return {
            "countries": country,
            "regions": region,
            "devices": device,
            "platforms": platform,
            "surfaces": surface,
            "positions": position,
            "slots": self.slot_id(row),
            "genres": GENRES[int(self.genre[row])],
            "shows": SHOWS[show] if show >= 0 else None,
            "episodes": self.episode(row),
            "segments": tuple(audience.segment_lists[who]),
            "connections": CONNECTIONS[int(self.connection[row])],
            "dayparts": int(self.local_hour[row]),
            "weekdays": WEEKDAYS[int(self.weekday[row])],
            "tz": tz,
        }


def simulate_traffic(config: TrafficConfig, audience: Audience | None = None) -> Traffic:
    """Draw the ad breaks of ``config`` (seeded: the same config gives the same traffic)."""
    audience = audience or make_audience(config.listeners, config.seed)
    rng = np.random.default_rng([config.seed, 0x7AFF1C])
    hours = config.days * 24
    volume, clock, met = expected_volume(
        config.start, hours, weekly_growth=config.weekly_growth, holidays=config.holidays
    )
    groups = len(ZONES) * len(DEVICE_CLASSES)
    group_of = audience.zone * len(DEVICE_CLASSES) + audience.device_class
    activity = np.bincount(group_of, weights=audience.activity, minlength=groups)
    mean = volume.reshape(groups, hours) * activity[:, None]
    mean *= config.daily_requests * config.days / mean.sum()
    mean = _with_noise(mean, config, rng)
    counts = rng.poisson(mean)

    order = np.argsort(group_of, kind="stable")
    bounds = np.searchsorted(group_of[order], np.arange(groups + 1))
    hour_starts = config.start + np.arange(hours) * HOUR
    ts_parts, who_parts = [], []
    for group in range(groups):
        total = int(counts[group].sum())
        if total == 0:
            continue
        members = order[bounds[group] : bounds[group + 1]]
        cumulative = np.cumsum(audience.activity[members])
        picks = np.searchsorted(cumulative, rng.random(total) * cumulative[-1], side="right")
        who_parts.append(members[np.minimum(picks, members.size - 1)])
        ts_parts.append(np.repeat(hour_starts, counts[group]))
    ts = np.concatenate(ts_parts) + rng.random(sum(part.size for part in ts_parts)) * HOUR
    listener = np.concatenate(who_parts)
    ranking = np.argsort(ts, kind="stable")
    ts, listener = ts[ranking], listener[ranking]
    return Traffic(
        config,
        audience,
        ts,
        listener,
        *_content(audience, listener, rng),
        *_local_time(audience, clock, listener, ts, config.start),
        holidays=met,
    )


def _with_noise(mean: np.ndarray, config: TrafficConfig, rng: np.random.Generator) -> np.ndarray:
    """Multiply expected counts by market-day, market-hour and cell shocks (all mean 1)."""
    groups, hours = mean.shape
    countries = [country for country, _ in MARKETS]
    market_of_group = np.repeat(
        [countries.index(country) for _, _, country in ZONES], len(DEVICE_CLASSES)
    )
    markets = len(countries)
    days = hours // 24
    day = rng.lognormal(-(config.day_sigma**2) / 2, config.day_sigma, size=(markets, days))
    hour = rng.gamma(config.hour_shape, 1 / config.hour_shape, size=(markets, hours))
    cell = rng.gamma(config.cell_shape, 1 / config.cell_shape, size=(groups, hours))
    market_factor = hour * np.repeat(day, 24, axis=1)
    return mean * market_factor[market_of_group] * cell


def _content(
    audience: Audience, listener: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slot, genre, show and connection of each break, following the listener's habits."""
    size = listener.size
    podcast = rng.random(size) < audience.podcast_share[listener]
    positions = np.array([weight for _, weight in PODCAST_POSITIONS])
    slot = np.where(
        podcast, 1 + rng.choice(len(positions), size=size, p=positions / positions.sum()), 0
    )

    favourite = rng.random(size) < FAVOURITE_GENRE
    any_podcast = rng.choice(
        len(PODCAST_GENRES),
        size=size,
        p=np.divide(PODCAST_GENRE_WEIGHTS, sum(PODCAST_GENRE_WEIGHTS)),
    )
    any_music = rng.choice(
        len(MUSIC_GENRES), size=size, p=np.divide(MUSIC_GENRE_WEIGHTS, sum(MUSIC_GENRE_WEIGHTS))
    )
    podcast_genre = np.where(favourite, audience.podcast_genre[listener], any_podcast)
    music_genre = np.where(favourite, audience.music_genre[listener], any_music)
    genre = np.where(podcast, podcast_genre, len(PODCAST_GENRES) + music_genre)

    favourite_show = favourite & (rng.random(size) < FAVOURITE_SHOW)
    show_rank = np.where(
        favourite_show, audience.show[listener], zipf_index(rng, size, SHOWS_PER_GENRE)
    )
    show = np.where(podcast, podcast_genre * SHOWS_PER_GENRE + show_rank, -1)

    connection = np.zeros(size, dtype=np.int8)
    device_class = audience.device_class[listener]
    draw = rng.random(size)
    for d, name in enumerate(DEVICE_CLASSES):
        rows = device_class == d
        edge = 0.0
        chosen = np.zeros(int(rows.sum()), dtype=np.int8)
        for kind, share in DEVICE_RHYTHMS[name].connections:
            chosen[draw[rows] >= edge] = CONNECTIONS.index(kind)
            edge += share
        connection[rows] = chosen
    return (
        slot.astype(np.int8),
        genre.astype(np.int16),
        show.astype(np.int16),
        connection,
    )


def _local_time(
    audience: Audience, clock: LocalClock, listener: np.ndarray, ts: np.ndarray, start: float
) -> tuple[np.ndarray, np.ndarray]:
    """The listener's local hour and weekday at each break (their zone's clock, DST included)."""
    zone = audience.timezone_index[listener]
    hour_index = np.clip(((ts - start) // HOUR).astype(np.int64), 0, clock.hour.shape[1] - 1)
    return clock.hour[zone, hour_index], clock.weekday[zone, hour_index]

"""A population of simulated listeners with stable ids, habits and audience segments.

Columnar (numpy arrays, one row per listener) so that millions of ad opportunities can be
drawn from it in a vectorised pass. Loyalty is lognormal: a few heavy listeners hear most
of the ads, a long tail hears one or two a week, which is what makes reach and frequency
(and frequency caps) behave as they do on a real service.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from backbeat.errors import InvalidInput
from backbeat.simulation.profiles import (
    DEVICE_RHYTHMS,
    DEVICES,
    MARKET_ZONES,
    MARKETS,
    MUSIC_GENRE_WEIGHTS,
    PODCAST_GENRE_WEIGHTS,
    SEGMENT_RATES,
    SEGMENTS,
    SHOWS_PER_GENRE,
)

# Every (time zone, region, country) a listener can live in, in a fixed order.
ZONES: list[tuple[str, str, str]] = [
    (tz, region, country) for country, _ in MARKETS for tz, region, _ in MARKET_ZONES[country]
]
TIMEZONES: list[str] = sorted({tz for tz, _, _ in ZONES})
DEVICE_CLASSES: list[str] = list(DEVICE_RHYTHMS)
# Sigma of log(listens per week): the top tenth of listeners hear about 40% of the ads.
LOYALTY_SIGMA = 1.1
# How strongly segments lean on device and market (auto-intenders drive, students are mobile).
_SEGMENT_LEAN: dict[str, dict[str, float]] = {
    "auto-intender": {"car": 2.5, "US": 1.3},
    "students": {"mobile": 1.3, "smart_speaker": 0.5, "BR": 1.4},
    "parents": {"smart_speaker": 1.6, "connected_tv": 1.4},
    "gamers": {"desktop": 1.8, "connected_tv": 1.5},
    "travellers": {"SE": 1.3, "GB": 1.2},
}


@dataclass(frozen=True)
class Audience:
    """Listeners as parallel arrays; ``ids[i]`` is listener ``i``'s stable id."""

    ids: list[str]
    zone: np.ndarray  # index into ZONES
    device: np.ndarray  # index into profiles.DEVICES (device, platform, user agents)
    user_agent: list[str]
    ip: list[str]
    activity: np.ndarray  # relative listens per week (mean 1)
    podcast_share: np.ndarray  # probability an ad break is in a podcast rather than music
    podcast_genre: np.ndarray  # favourite podcast genre (index into PODCAST_GENRES)
    music_genre: np.ndarray  # favourite music genre (index into MUSIC_GENRES)
    show: np.ndarray  # favourite show within the favourite podcast genre (0 = biggest)
    segments: np.ndarray  # bit mask over profiles.SEGMENTS

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def country(self) -> np.ndarray:
        countries = np.array([country for _, _, country in ZONES])
        return countries[self.zone]

    @cached_property
    def timezone_index(self) -> np.ndarray:
        """Index into TIMEZONES of each listener's zone."""
        lookup = np.array([TIMEZONES.index(tz) for tz, _, _ in ZONES])
        return lookup[self.zone]

    @cached_property
    def device_class(self) -> np.ndarray:
        """Index into DEVICE_CLASSES (iOS and Android phones are both ``mobile``)."""
        lookup = np.array([DEVICE_CLASSES.index(device) for device, _, _, _ in DEVICES])
        return lookup[self.device]

    @cached_property
    def segment_lists(self) -> list[list[str]]:
        """Each listener's segments by name (as the decision log writes them)."""
        names = [
            [SEGMENTS[bit] for bit in range(len(SEGMENTS)) if mask >> bit & 1]
            for mask in range(1 << len(SEGMENTS))
        ]
        return [names[mask] for mask in self.segments.tolist()]

    def in_segment(self, segment: str) -> np.ndarray:
        return (self.segments >> SEGMENTS.index(segment) & 1).astype(bool)


def make_audience(count: int, seed: int, *, id_prefix: str = "sim") -> Audience:
    """``count`` listeners drawn from the market, device, loyalty and segment mixes."""
    if count < 1:
        raise InvalidInput("an audience needs at least one listener", reason="invalid-listeners")
    rng = np.random.default_rng([seed, 0xA0D1])
    market_weights = dict(MARKETS)
    zone_weights = np.array(
        [market_weights[country] * weight for country in market_weights
         for _, _, weight in MARKET_ZONES[country]]
    )  # fmt: skip
    zone = rng.choice(len(ZONES), size=count, p=zone_weights / zone_weights.sum())
    device_weights = np.array([weight for _, _, weight, _ in DEVICES])
    device = rng.choice(len(DEVICES), size=count, p=device_weights / device_weights.sum())
    agent_pick = rng.random(count)
    user_agent = [
        DEVICES[d][3][int(u * len(DEVICES[d][3]))]
        for d, u in zip(device.tolist(), agent_pick.tolist(), strict=True)
    ]
    octets = rng.integers(0, 256, size=(count, 2))
    ip = [f"10.{n // 65536 % 256}.{a}.{b}" for n, (a, b) in enumerate(octets.tolist())]
    activity = rng.lognormal(-(LOYALTY_SIGMA**2) / 2, LOYALTY_SIGMA, size=count)
    classes = np.array([DEVICE_CLASSES.index(d) for d, _, _, _ in DEVICES])[device]
    shape = np.array([DEVICE_RHYTHMS[name].podcast_share for name in DEVICE_CLASSES])
    podcast_share = rng.beta(shape[classes, 0], shape[classes, 1])
    podcast_genre = rng.choice(
        len(PODCAST_GENRE_WEIGHTS), size=count, p=_normalised(PODCAST_GENRE_WEIGHTS)
    )
    music_genre = rng.choice(
        len(MUSIC_GENRE_WEIGHTS), size=count, p=_normalised(MUSIC_GENRE_WEIGHTS)
    )
    show = zipf_index(rng, count, SHOWS_PER_GENRE)
    countries = np.array([country for _, _, country in ZONES])[zone]
    segments = np.zeros(count, dtype=np.int64)
    for bit, (name, rate) in enumerate(zip(SEGMENTS, SEGMENT_RATES, strict=True)):
        probability = np.full(count, rate)
        for key, lean in _SEGMENT_LEAN.get(name, {}).items():
            if key in DEVICE_CLASSES:
                probability[classes == DEVICE_CLASSES.index(key)] *= lean
            else:
                probability[countries == key] *= lean
        member = rng.random(count) < np.minimum(probability, 0.95)
        segments |= member.astype(np.int64) << bit
    width = len(str(count - 1))
    ids = [f"{id_prefix}-{n:0{width}d}" for n in range(count)]
    return Audience(
        ids=ids,
        zone=zone,
        device=device,
        user_agent=user_agent,
        ip=ip,
        activity=activity,
        podcast_share=podcast_share,
        podcast_genre=podcast_genre,
        music_genre=music_genre,
        show=show,
        segments=segments,
    )


def zipf_index(
    rng: np.random.Generator, size: int, choices: int, exponent: float = 1.1
) -> np.ndarray:
    """Indices 0..choices-1 with Zipf popularity (0 the most popular)."""
    weights = 1.0 / np.arange(1, choices + 1) ** exponent
    return rng.choice(choices, size=size, p=weights / weights.sum())


def _normalised(weights: list[float]) -> np.ndarray:
    array = np.asarray(weights, dtype=float)
    return array / array.sum()

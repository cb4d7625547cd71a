"""Synthetic listeners and a day of ad opportunities with a realistic shape.

Seeded, so a demo run is repeatable: a daily curve (quiet nights, commute peaks), a
market and device mix, podcast-app user agents as they appear in real access logs,
and a player that drops off through the quartiles.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# One copy of the listening constants, shared with the multi-week simulator.
from backbeat.simulation.profiles import (
    CLICK_RATE,
    DEVICES,
    EVENT_CHAIN,
    HOURLY_CURVE,
    MARKETS,
    MUSIC_GENRES,
    PODCAST_GENRES,
    SEGMENTS,
)

DUPLICATE_RATE = 0.02  # players that fire a pixel twice
FORGED_RATE = 0.002  # tampered pixels that must be rejected


@dataclass(frozen=True, slots=True)
class Listener:
    id: str
    country: str
    device: str
    platform: str
    user_agent: str
    ip: str
    segments: tuple[str, ...]
    podcast_share: float


@dataclass(frozen=True, slots=True)
class Opportunity:
    """One ad break a listener reaches at second ``offset`` of the simulated day."""

    offset: float
    listener: Listener
    surface: str
    position: str
    genre: str


def _weighted(rng: random.Random, choices: list[tuple[str, float]]) -> str:
    return rng.choices([value for value, _ in choices], weights=[weight for _, weight in choices])[
        0
    ]


def make_listeners(count: int, rng: random.Random) -> list[Listener]:
    listeners = []
    for number in range(count):
        device, platform, _, agents = rng.choices(DEVICES, weights=[entry[2] for entry in DEVICES])[
            0
        ]
        listeners.append(
            Listener(
                id=f"listener-{number:05d}",
                country=_weighted(rng, MARKETS),
                device=device,
                platform=platform,
                user_agent=rng.choice(agents),
                ip=f"198.51.{rng.randrange(0, 100)}.{rng.randrange(1, 255)}",
                segments=tuple(rng.sample(SEGMENTS, rng.randint(0, 3))),
                podcast_share=rng.random(),
            )
        )
    return listeners


def day_of_opportunities(
    listeners: list[Listener], total: int, rng: random.Random
) -> Iterator[Opportunity]:
    """``total`` ad breaks spread over the day by the hourly curve, in time order."""
    weights = [weight / sum(HOURLY_CURVE) for weight in HOURLY_CURVE]
    offsets = sorted(
        hour * 3600 + rng.random() * 3600
        for hour in rng.choices(range(24), weights=weights, k=total)
    )
    for offset in offsets:
        listener = rng.choice(listeners)
        if rng.random() < listener.podcast_share:
            position = rng.choices(
                ["pre_roll", "mid_roll", "post_roll"], weights=[0.5, 0.35, 0.15]
            )[0]
            yield Opportunity(offset, listener, "podcast", position, rng.choice(PODCAST_GENRES))
        else:
            yield Opportunity(
                offset, listener, "music_free", "interstitial", rng.choice(MUSIC_GENRES)
            )


def player_events(rng: random.Random, has_click: bool) -> list[str]:
    """The pixels one playback fires, in order, with drop-off, clicks and duplicates."""
    fired: list[str] = []
    for event, probability in EVENT_CHAIN:
        if rng.random() >= probability:
            break
        fired.append(event)
        if rng.random() < DUPLICATE_RATE:
            fired.append(event)
    if has_click and fired and rng.random() < CLICK_RATE:
        fired.append("click")
    return fired

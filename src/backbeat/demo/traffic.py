"""Synthetic listeners and a day of ad opportunities with a realistic shape.

Seeded, so a demo run is repeatable: a daily curve (quiet nights, commute peaks), a
market and device mix, podcast-app user agents as they appear in real access logs,
and a player that drops off through the quartiles.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# Share of a day's listening in each UTC hour (sums to 1 after normalising).
HOURLY_CURVE = [
    1.2, 0.8, 0.6, 0.5, 0.5, 0.8, 2.0, 4.5, 6.5, 5.5, 4.6, 4.4,
    4.8, 4.9, 4.6, 4.7, 5.6, 6.8, 7.2, 6.4, 5.6, 4.8, 3.4, 2.2,
]  # fmt: skip

MARKETS = [("US", 0.48), ("GB", 0.16), ("DE", 0.12), ("BR", 0.10), ("SE", 0.08), ("FR", 0.06)]

# (device, platform, weight, user agents as real podcast and music apps send them)
DEVICES: list[tuple[str, str, float, list[str]]] = [
    (
        "mobile", "ios", 0.38,
        [
            "AppleCoreMedia/1.0.0.21E236 (iPhone; U; CPU OS 17_4 like Mac OS X; en_us)",
            "Podcasts/1650.20 CFNetwork/1408.0.4 Darwin/22.5.0",
            "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
            "Spotify/8.9.10 iOS/17.4.1 (iPhone15,2)",
            "PocketCasts/1.0 (Pocket Casts iOS, 7.58)",
        ],
    ),
    (
        "mobile", "android", 0.32,
        [
            "Spotify/8.9.12 Android/34 (SM-S911B)",
            "PodcastAddict/v5 (+https://podcastaddict.com/; Android podcast app)",
            "AntennaPod/3.3.2",
            "Pocket Casts",
            "CastBox/11.8.3-240305161 (Linux;Android 14) ExoPlayerLib/2.19.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Mobile Safari/537.36",
        ],
    ),
    (
        "desktop", "web", 0.12,
        [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
            "Spotify/1.2.33.1039 Win32_x86_64/0 (PC desktop)",
        ],
    ),
    (
        "smart_speaker", "alexa", 0.10,
        [
            "AlexaMediaPlayer/2.1.4676.0 (Linux;Android 5.1.1) ExoPlayerLib/1.5.9",
            "Sonos/78.1-51030 (ZPS23)",
            "Google-Speech-Actions",
        ],
    ),
    ("car", "carplay", 0.05, ["Podcasts/1650.20 CFNetwork/1408.0.4 Darwin/22.5.0 (CarPlay)"]),
    ("connected_tv", "roku", 0.03, ["Roku/DVP-12.5 (12.5.0.4178-46)"]),
]  # fmt: skip

PODCAST_GENRES = [
    "news",
    "business",
    "comedy",
    "true_crime",
    "sports",
    "technology",
    "society_culture",
    "health_fitness",
]
MUSIC_GENRES = ["pop", "hip_hop", "rock", "electronic", "latin", "indie"]
SEGMENTS = [
    "auto-intender",
    "coffee-lover",
    "fitness",
    "parents",
    "students",
    "travellers",
    "gamers",
]

# Probability that a player fires each event, given it fired the one before (drop-off).
EVENT_CHAIN = [
    ("impression", 0.97),
    ("start", 0.98),
    ("firstQuartile", 0.92),
    ("midpoint", 0.92),
    ("thirdQuartile", 0.93),
    ("complete", 0.91),
]
CLICK_RATE = 0.012
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

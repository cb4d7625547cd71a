"""What simulated listening looks like: markets, devices, content, audiences, and their rhythms.

One copy of the constants the demo, the backtest, benchmarks and tests draw from. Shares
are rough public orders of magnitude for a global audio service (Edison "Infinite Dial",
Spotify and podcast-host reports), not any one company's figures; docs/simulation.md says
where each shape comes from and what it leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

# Share of a day's listening in each UTC hour (sums to 1 after normalising); the demo's
# single-day replay uses it as is.
HOURLY_CURVE = [
    1.2, 0.8, 0.6, 0.5, 0.5, 0.8, 2.0, 4.5, 6.5, 5.5, 4.6, 4.4,
    4.8, 4.9, 4.6, 4.7, 5.6, 6.8, 7.2, 6.4, 5.6, 4.8, 3.4, 2.2,
]  # fmt: skip

# Local-time shapes used by the multi-week simulator: a working day has commute peaks and
# a quiet night; Saturday and Sunday start late and spread over the afternoon.
WEEKDAY_CURVE = [
    1.0, 0.6, 0.4, 0.3, 0.4, 1.0, 2.8, 5.8, 7.2, 5.6, 4.6, 4.4,
    4.8, 4.8, 4.5, 4.6, 5.6, 7.0, 7.4, 6.2, 5.4, 4.6, 3.2, 1.9,
]  # fmt: skip
WEEKEND_CURVE = [
    1.6, 1.1, 0.7, 0.5, 0.4, 0.5, 0.9, 1.8, 3.2, 4.6, 5.6, 6.2,
    6.4, 6.3, 6.1, 5.9, 5.8, 5.7, 5.6, 5.4, 5.2, 4.6, 3.6, 2.4,
]  # fmt: skip
# Volume of each local weekday (mon..sun) relative to the mean day.
WEEKDAY_VOLUME = [1.03, 1.05, 1.06, 1.05, 1.01, 0.92, 0.88]

MARKETS = [("US", 0.48), ("GB", 0.16), ("DE", 0.12), ("BR", 0.10), ("SE", 0.08), ("FR", 0.06)]

# Listeners of a market live in these time zones (and ISO 3166-2 regions), with weights.
MARKET_ZONES: dict[str, list[tuple[str, str, float]]] = {
    "US": [
        ("America/New_York", "US-NY", 0.47),
        ("America/Chicago", "US-IL", 0.29),
        ("America/Denver", "US-CO", 0.07),
        ("America/Los_Angeles", "US-CA", 0.17),
    ],
    "GB": [("Europe/London", "GB-ENG", 0.84), ("Europe/London", "GB-SCT", 0.16)],
    "DE": [("Europe/Berlin", "DE-BY", 0.45), ("Europe/Berlin", "DE-BE", 0.55)],
    "BR": [("America/Sao_Paulo", "BR-SP", 0.7), ("America/Sao_Paulo", "BR-RJ", 0.3)],
    "SE": [("Europe/Stockholm", "SE-AB", 1.0)],
    "FR": [("Europe/Paris", "FR-IDF", 1.0)],
}

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


@dataclass(frozen=True, slots=True)
class DeviceRhythm:
    """How a device class departs from the market's curve, and what it plays on."""

    hours: tuple[float, ...]  # 24 local-hour multipliers on the base curve
    weekend: float  # weekend volume relative to its weekdays
    podcast_share: tuple[float, float]  # Beta(a, b) of a listener's podcast share
    connections: tuple[tuple[str, float], ...]


def _hours(*spans: tuple[int, int, float]) -> tuple[float, ...]:
    multipliers = [1.0] * 24
    for start, end, factor in spans:
        for hour in range(start, end):
            multipliers[hour] = factor
    return tuple(multipliers)


DEVICE_RHYTHMS: dict[str, DeviceRhythm] = {
    "mobile": DeviceRhythm(_hours((7, 9, 1.15), (17, 19, 1.1)), 0.95, (2.0, 2.5),
                           (("wifi", 0.55), ("cellular", 0.45))),
    "desktop": DeviceRhythm(_hours((0, 7, 0.4), (9, 17, 1.7), (19, 24, 0.6)), 0.45, (1.5, 3.0),
                            (("ethernet", 0.4), ("wifi", 0.6))),
    "smart_speaker": DeviceRhythm(_hours((6, 9, 1.9), (10, 16, 0.7), (18, 22, 1.4)), 1.25,
                                  (1.0, 4.0), (("wifi", 1.0),)),
    "car": DeviceRhythm(_hours((0, 6, 0.2), (7, 9, 3.0), (16, 19, 2.6), (20, 24, 0.4)), 0.7,
                        (3.5, 1.5), (("cellular", 1.0),)),
    "connected_tv": DeviceRhythm(_hours((0, 17, 0.6), (19, 23, 2.4)), 1.3, (1.0, 3.0),
                                 (("wifi", 0.7), ("ethernet", 0.3))),
}  # fmt: skip

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
# Popularity of each genre (same order as the lists above).
PODCAST_GENRE_WEIGHTS = [0.22, 0.12, 0.18, 0.14, 0.11, 0.08, 0.09, 0.06]
MUSIC_GENRE_WEIGHTS = [0.34, 0.22, 0.16, 0.12, 0.10, 0.06]
SHOWS_PER_GENRE = 6  # podcast shows per genre, Zipf-popular: show-<genre>-1 is the biggest

SEGMENTS = [
    "auto-intender",
    "coffee-lover",
    "fitness",
    "parents",
    "students",
    "travellers",
    "gamers",
]
# Share of listeners in each segment; a listener belongs to each independently.
SEGMENT_RATES = [0.12, 0.30, 0.22, 0.25, 0.15, 0.18, 0.20]

# Surfaces and positions of the demo book's slots (demo/book.py), in slot order.
SLOTS = [
    ("music_free", "interstitial"),
    ("podcast", "pre_roll"),
    ("podcast", "mid_roll"),
    ("podcast", "post_roll"),
]
PODCAST_POSITIONS = [("pre_roll", 0.45), ("mid_roll", 0.40), ("post_roll", 0.15)]

# Holidays (from the ``holidays`` package, by market) change a day's volume and shape it
# like a Sunday. Named ones get their own factor (1.0: not observed, no effect); any other
# public holiday gets the default.
HOLIDAY_FACTORS = {
    "Christmas Day": 0.70,
    "Christmas Eve": 0.85,
    "New Year's Day": 0.80,
    "Thanksgiving Day": 0.78,
    "Thanksgiving": 0.78,
    "Boxing Day": 1.06,  # at home, listening: a busier day than a Sunday
    "Second Day of Christmas": 1.04,
    "Veterans Day": 1.0,  # a working day for most: no effect
    "Columbus Day": 1.0,
}
DEFAULT_HOLIDAY_FACTOR = 0.88

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

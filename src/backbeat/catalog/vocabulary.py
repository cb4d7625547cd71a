"""The closed vocabularies of the catalog: tiers, statuses, and targeting values.

Kept in one place so validation, the docs and the ad server agree on spelling.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class Tier(StrEnum):
    """Priority tiers, served in this order."""

    SPONSORSHIP = "sponsorship"
    GUARANTEED = "guaranteed"
    NON_GUARANTEED = "non_guaranteed"
    HOUSE = "house"


TIER_RANK: dict[str, int] = {tier.value: rank for rank, tier in enumerate(Tier)}


class Pacing(StrEnum):
    EVEN = "even"
    ASAP = "asap"


class AuctionType(StrEnum):
    FIRST_PRICE = "first_price"
    SECOND_PRICE = "second_price"


class CapPeriod(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    FLIGHT = "flight"


CAP_PERIOD_SECONDS: dict[str, int | None] = {
    CapPeriod.MINUTE: 60,
    CapPeriod.HOUR: 3600,
    CapPeriod.DAY: 86400,
    CapPeriod.WEEK: 7 * 86400,
    CapPeriod.FLIGHT: None,
}


class Surface(StrEnum):
    """Where an ad slot lives."""

    MUSIC_FREE = "music_free"
    PODCAST = "podcast"
    AUDIOBOOK = "audiobook"
    RADIO = "radio"


class Position(StrEnum):
    PRE_ROLL = "pre_roll"
    MID_ROLL = "mid_roll"
    POST_ROLL = "post_roll"
    INTERSTITIAL = "interstitial"


DEVICE_TYPES = frozenset(
    {
        "mobile",
        "tablet",
        "desktop",
        "smart_speaker",
        "connected_tv",
        "car",
        "wearable",
        "game_console",
        "other",
    }
)

PLATFORMS = frozenset(
    {
        "ios", "android", "windows", "macos", "linux", "web", "watchos", "wearos",
        "alexa", "google_assistant", "sonos", "carplay", "android_auto",
        "tizen", "webos", "roku", "fire_os", "playstation", "xbox", "other",
    }
)  # fmt: skip

GENRES = frozenset(
    {
        # music
        "pop", "rock", "hip_hop", "rnb", "electronic", "dance", "jazz", "classical", "country",
        "latin", "metal", "indie", "folk", "blues", "reggae", "soul", "kpop", "soundtrack",
        "children", "ambient",
        # podcasts (Apple Podcasts top-level categories)
        "arts", "business", "comedy", "education", "fiction", "government", "health_fitness",
        "history", "kids_family", "leisure", "music", "news", "religion_spirituality",
        "science", "society_culture", "sports", "technology", "true_crime", "tv_film",
    }
)  # fmt: skip

MIME_TYPES = frozenset(
    {"audio/mpeg", "audio/mp4", "audio/aac", "audio/ogg", "audio/wav", "audio/webm", "audio/flac"}
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

CONNECTIONS = frozenset({"wifi", "cellular", "ethernet", "offline", "unknown"})

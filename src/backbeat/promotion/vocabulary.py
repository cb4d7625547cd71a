"""The closed vocabularies of promotion campaigns (validated on write, used by scoring)."""

from __future__ import annotations

from enum import StrEnum


class PromotionSurface(StrEnum):
    """Where a promotion is shown by the personalization system."""

    HOME_FEED = "home_feed"
    TAKEOVER = "takeover"
    SEARCH = "search"
    NOW_PLAYING = "now_playing"
    NOTIFICATION = "notification"


class ItemType(StrEnum):
    ARTIST = "artist"
    RELEASE = "release"
    TRACK = "track"


class Audience(StrEnum):
    """Segments by the listener's plays of the promoted artist in the last 28 days.

    ``super`` ≥ 20 plays, ``moderate`` 5–19, ``light`` 1–4; ``previously_active`` played the
    artist before but not in the last 28 days; ``potential`` never played the artist.
    An empty audience list means everyone, ranked by the model ("most likely to stream").
    """

    SUPER = "super"
    MODERATE = "moderate"
    LIGHT = "light"
    PREVIOUSLY_ACTIVE = "previously_active"
    POTENTIAL = "potential"


class PriceModel(StrEnum):
    CPC = "cpc"  # price per click
    CPM = "cpm"  # price per thousand exposures


class ConversionType(StrEnum):
    """What a stream after an exposure means for the artist (Marquee's terms)."""

    NEW = "new"  # never streamed the artist before
    REACTIVATED = "reactivated"  # streamed before, not in the last 28 days
    AMPLIFIED = "amplified"  # streamed in the last 28 days, streams more


SUPER_PLAYS = 20
MODERATE_PLAYS = 5
AUDIENCE_WINDOW_DAYS = 28


def audience_of(plays_28d: int, plays_ever: int) -> Audience:
    """The one segment a listener falls in for an artist."""
    if plays_28d >= SUPER_PLAYS:
        return Audience.SUPER
    if plays_28d >= MODERATE_PLAYS:
        return Audience.MODERATE
    if plays_28d >= 1:
        return Audience.LIGHT
    if plays_ever >= 1:
        return Audience.PREVIOUSLY_ACTIVE
    return Audience.POTENTIAL

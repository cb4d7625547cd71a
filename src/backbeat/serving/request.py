"""An ad request and the attributes targeting is evaluated against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backbeat.catalog.vocabulary import WEEKDAYS
from backbeat.errors import InvalidInput


class AdRequest(NamedTuple):
    """One ad opportunity as the player or ad inserter describes it.

    A named tuple: as immutable and hashable as a frozen dataclass, and built once per
    request for a fraction of the cost (no ``object.__setattr__`` per field).
    """

    slot_id: int
    listener: str
    country: str | None = None
    region: str | None = None
    device: str | None = None
    platform: str | None = None
    genre: str | None = None
    show: str | None = None
    episode: str | None = None
    connection: str | None = None
    timezone: str | None = None
    segments: tuple[str, ...] = ()
    ip: str = ""
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class PodRequest:
    """An ad break that may hold several ads: how many, how long in all, and per ad."""

    max_ads: int = 1
    max_duration_ms: int | None = None
    min_ad_ms: int | None = None
    max_ad_ms: int | None = None

    def admits(self, duration_ms: int, used_ms: int) -> bool:
        if self.min_ad_ms is not None and duration_ms < self.min_ad_ms:
            return False
        if self.max_ad_ms is not None and duration_ms > self.max_ad_ms:
            return False
        return self.max_duration_ms is None or used_ms + duration_ms <= self.max_duration_ms


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown time zone {name!r} (use an IANA name)", reason="invalid-timezone"
        ) from None


@lru_cache(maxsize=65536)
def listening_app(user_agent: str) -> str | None:
    """The OPAWG app (or web player) name of a user agent; memoised: classification runs regexes."""
    if not user_agent:
        return None
    from backbeat.measurement.useragents import classify

    info = classify(user_agent)
    return None if info.type in ("unknown", "bot") else info.app


def request_attributes(
    request: AdRequest, surface: str, position: str, now: float, keys: frozenset[str]
) -> dict[str, Any]:
    """The values targeting tests; costly ones (app, local time) only when some line item uses them."""
    attributes: dict[str, Any] = {
        "countries": request.country,
        "regions": request.region,
        "devices": request.device,
        "platforms": request.platform,
        "surfaces": surface,
        "positions": position,
        "slots": request.slot_id,
        "genres": request.genre,
        "shows": request.show,
        "episodes": request.episode,
        "segments": request.segments,
        "connections": request.connection,
    }
    everything = "*" in keys
    if everything or "apps" in keys:
        attributes["apps"] = listening_app(request.user_agent)
    if everything or "dayparts" in keys or "weekdays" in keys:
        local = datetime.fromtimestamp(now, zone(request.timezone or "UTC"))
        attributes["dayparts"] = local.hour
        attributes["weekdays"] = WEEKDAYS[local.weekday()]
    return attributes

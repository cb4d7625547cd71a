"""Ad requests: parsing shared by ``GET /vast`` (``api/hot_paths.py``) and ``POST /v1/decisions``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from backbeat.api.deps import ServicesDep, bearer_key
from backbeat.catalog.auth import is_admin_key
from backbeat.errors import InvalidInput
from backbeat.serving.decisions import listener_key
from backbeat.serving.request import AdRequest, PodRequest, zone

router = APIRouter(tags=["serving"])

_COUNTRY = re.compile(r"[A-Za-z]{2}")
_REGION = re.compile(r"[A-Za-z]{2}-[A-Za-z0-9]{1,3}")
MAX_POD_ADS = 10


def _country(value: str | None) -> str | None:
    if not value:
        return None
    if not _COUNTRY.fullmatch(value):
        raise InvalidInput("country must be an ISO 3166-1 alpha-2 code", reason="invalid-country")
    return value.upper()


def _region(value: str | None) -> str | None:
    if not value:
        return None
    if not _REGION.fullmatch(value):
        raise InvalidInput(
            "region must be an ISO 3166-2 code such as US-CA", reason="invalid-region"
        )
    return value.upper()


def _token(value: str | None) -> str | None:
    return value.strip().lower() or None if value else None


def _timezone(value: str | None) -> str | None:
    if not value:
        return None
    zone(value)  # raises a 422 for names that are not IANA zones
    return value


def client_identity(
    headers: Mapping[str, str],
    peer: str,
    ip: str | None = None,
    user_agent: str | None = None,
    *,
    trusted: bool = False,
) -> tuple[str, str]:
    """The listener's address and agent: forwarded by a trusted ad inserter, else the caller's.

    ``trusted`` is true only for requests carrying a live ad inserter (``ssai``) key
    (``Services.inserters.trusts(headers)``): from anyone else ``X-Device-IP``,
    ``X-Device-User-Agent`` and the JSON ``ip``/``user_agent`` are ignored, so a caller
    cannot pose as other devices to dodge frequency caps or rate limits.
    """
    if trusted:
        client_ip = ip or headers.get("x-device-ip") or peer
        agent = user_agent or headers.get("x-device-user-agent") or headers.get("user-agent", "")
    else:
        client_ip, agent = peer, headers.get("user-agent", "")
    return client_ip[:64], agent[:512]


def build_request(
    headers: Mapping[str, str], peer: str, fields: dict[str, Any], *, trusted: bool = False
) -> AdRequest:
    client_ip, agent = client_identity(
        headers, peer, fields.get("ip"), fields.get("user_agent"), trusted=trusted
    )
    return AdRequest(
        slot_id=fields["slot"],
        listener=listener_key(fields.get("listener"), client_ip, agent),
        country=_country(fields.get("country")),
        region=_region(fields.get("region")),
        device=_token(fields.get("device")),
        platform=_token(fields.get("platform")),
        genre=_token(fields.get("genre")),
        show=fields.get("show") or None,
        episode=fields.get("episode") or None,
        connection=_token(fields.get("connection")),
        timezone=_timezone(fields.get("tz")),
        segments=tuple(segment for segment in fields.get("segments") or () if segment)[:200],
        ip=client_ip,
        user_agent=agent,
    )


def build_pod(
    max_ads: int | None, max_duration: int | None, min_ad: int | None, max_ad: int | None
) -> PodRequest:
    if min_ad is not None and max_ad is not None and min_ad > max_ad:
        raise InvalidInput("min_ad_duration exceeds max_ad_duration", reason="invalid-pod")
    return PodRequest(
        max_ads=max_ads or 1,
        max_duration_ms=None if max_duration is None else max_duration * 1000,
        min_ad_ms=None if min_ad is None else min_ad * 1000,
        max_ad_ms=None if max_ad is None else max_ad * 1000,
    )


class AdRequestFields(BaseModel):
    """What a player or ad inserter may say about an ad request (query or JSON)."""

    listener: str | None = Field(
        default=None,
        max_length=4096,
        description="1-128 characters of A-Za-z0-9._~:@- (else 400 invalid-listener)",
    )
    country: str | None = Field(default=None, max_length=2, description="ISO 3166-1 alpha-2")
    region: str | None = Field(default=None, max_length=6, description="ISO 3166-2, e.g. US-CA")
    device: str | None = Field(default=None, max_length=64)
    platform: str | None = Field(default=None, max_length=64)
    genre: str | None = Field(default=None, max_length=64)
    show: str | None = Field(default=None, max_length=64)
    episode: str | None = Field(default=None, max_length=64)
    connection: str | None = Field(default=None, max_length=64)
    tz: str | None = Field(
        default=None, max_length=64, description="IANA time zone of the listener"
    )
    pod_max_ads: int | None = Field(
        default=None, ge=1, le=MAX_POD_ADS, description="Ads in the break"
    )
    pod_max_duration: int | None = Field(
        default=None, ge=1, le=3600, description="Seconds for the whole break"
    )
    min_ad_duration: int | None = Field(
        default=None, ge=1, le=3600, description="Shortest ad, seconds"
    )
    max_ad_duration: int | None = Field(
        default=None, ge=1, le=3600, description="Longest ad, seconds"
    )

    def pod(self) -> PodRequest:
        return build_pod(
            self.pod_max_ads, self.pod_max_duration, self.min_ad_duration, self.max_ad_duration
        )


class VastQuery(AdRequestFields):
    """``GET /vast`` query parameters; unknown ones (cache busters, macros) are ignored."""

    model_config = ConfigDict(extra="ignore")

    slot: int = Field(ge=1, le=2**31 - 1, description="Ad slot id (see GET /v1/slots)")
    segments: str | None = Field(
        default=None, max_length=4096, description="Comma-separated segment ids"
    )

    def fields(self) -> dict[str, Any]:
        return {**self.model_dump(), "segments": (self.segments or "").split(",")}


class DecisionRequest(AdRequestFields):
    model_config = ConfigDict(extra="forbid")

    slot_id: int = Field(ge=1, le=2**31 - 1)
    segments: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=200
    )
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)


@router.post("/v1/decisions")
async def decisions(
    body: DecisionRequest, request: Request, services: ServicesDep
) -> dict[str, Any]:
    """The same decision as ``GET /vast``, as JSON (for server-side ad insertion and apps)."""
    headers = request.headers
    fields = {**body.model_dump(), "slot": body.slot_id}
    peer = request.client.host if request.client else ""
    trusted = services.inserters.trusts(headers)
    ad_request = build_request(headers, peer, fields, trusted=trusted)
    decisions = await services.ad_server.decide_async(ad_request, body.pod())
    # The clearing price is for the platform only, as in the (encrypted) tracking URLs.
    is_admin = is_admin_key(bearer_key(request), services.settings.admin_key)
    return services.ad_server.as_json(decisions, include_price=is_admin)

"""Ad requests: ``GET /vast`` for players and ad inserters, ``POST /v1/decisions`` for JSON."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from backbeat.api.deps import ServicesDep
from backbeat.errors import InvalidInput
from backbeat.serving.decisions import listener_key
from backbeat.serving.request import AdRequest, PodRequest, zone

router = APIRouter(tags=["serving"])

VAST_MEDIA_TYPE = "application/xml; charset=utf-8"
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_REGION = re.compile(r"[A-Za-z]{2}-[A-Za-z0-9]{1,3}")
Token = Annotated[str | None, Query(max_length=64)]
Seconds = Annotated[int | None, Query(ge=1, le=3600)]
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


def client_identity(request: Request, ip: str | None, user_agent: str | None) -> tuple[str, str]:
    """The listener's address and agent: forwarded by an ad inserter, else the caller's own."""
    headers = request.headers
    forwarded_ip = ip or headers.get("x-device-ip")
    client_ip = forwarded_ip or (request.client.host if request.client else "")
    agent = user_agent or headers.get("x-device-user-agent") or headers.get("user-agent", "")
    return client_ip[:64], agent[:512]


def build_request(request: Request, fields: dict[str, Any]) -> AdRequest:
    client_ip, agent = client_identity(request, fields.get("ip"), fields.get("user_agent"))
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


@router.get("/vast", response_class=Response, responses={200: {"content": {"application/xml": {}}}})
async def vast(
    request: Request,
    services: ServicesDep,
    slot: Annotated[int, Query(ge=1, le=2**31 - 1, description="Ad slot id (see GET /v1/slots)")],
    listener: Annotated[str | None, Query(max_length=128)] = None,
    country: Annotated[str | None, Query(max_length=2)] = None,
    region: Annotated[str | None, Query(max_length=6)] = None,
    device: Token = None,
    platform: Token = None,
    genre: Token = None,
    show: Token = None,
    episode: Token = None,
    connection: Token = None,
    tz: Annotated[
        str | None, Query(max_length=64, description="IANA time zone of the listener")
    ] = None,
    segments: Annotated[
        str | None, Query(max_length=4096, description="Comma-separated segment ids")
    ] = None,
    pod_max_ads: Annotated[
        int | None, Query(ge=1, le=MAX_POD_ADS, description="Ads in the break")
    ] = None,
    pod_max_duration: Annotated[Seconds, Query(description="Seconds for the whole break")] = None,
    min_ad_duration: Annotated[Seconds, Query(description="Shortest ad, seconds")] = None,
    max_ad_duration: Annotated[Seconds, Query(description="Longest ad, seconds")] = None,
) -> Response:
    """Audio ads as VAST 4.2 (a pod with ``sequence`` when ``pod_max_ads`` > 1), or an empty no-fill."""
    fields = {
        "slot": slot, "listener": listener, "country": country, "region": region, "device": device,
        "platform": platform, "genre": genre, "show": show, "episode": episode, "connection": connection,
        "tz": tz, "segments": (segments or "").split(","),
    }  # fmt: skip
    pod = build_pod(pod_max_ads, pod_max_duration, min_ad_duration, max_ad_duration)
    decisions = services.ad_server.decide(build_request(request, fields), pod)
    return Response(services.ad_server.vast(decisions), media_type=VAST_MEDIA_TYPE)


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slot_id: int = Field(ge=1, le=2**31 - 1)
    listener: str | None = Field(default=None, max_length=128)
    country: str | None = Field(default=None, max_length=2)
    region: str | None = Field(default=None, max_length=6)
    device: str | None = Field(default=None, max_length=64)
    platform: str | None = Field(default=None, max_length=64)
    genre: str | None = Field(default=None, max_length=64)
    show: str | None = Field(default=None, max_length=64)
    episode: str | None = Field(default=None, max_length=64)
    connection: str | None = Field(default=None, max_length=64)
    tz: str | None = Field(default=None, max_length=64)
    segments: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=200
    )
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
    pod_max_ads: int | None = Field(default=None, ge=1, le=MAX_POD_ADS)
    pod_max_duration: int | None = Field(default=None, ge=1, le=3600)
    min_ad_duration: int | None = Field(default=None, ge=1, le=3600)
    max_ad_duration: int | None = Field(default=None, ge=1, le=3600)


@router.post("/v1/decisions")
async def decisions(
    body: DecisionRequest, request: Request, services: ServicesDep
) -> dict[str, Any]:
    """The same decision as ``/vast``, as JSON (for server-side ad insertion and apps)."""
    fields = body.model_dump()
    fields["slot"] = body.slot_id
    pod = build_pod(
        body.pod_max_ads, body.pod_max_duration, body.min_ad_duration, body.max_ad_duration
    )
    return services.ad_server.as_json(
        services.ad_server.decide(build_request(request, fields), pod)
    )

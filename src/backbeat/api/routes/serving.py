"""Ad requests: ``GET /vast`` for players and ad inserters, ``POST /v1/decisions`` for JSON."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from backbeat.api.deps import ServicesDep
from backbeat.errors import InvalidInput
from backbeat.serving.decisions import AdRequest, listener_key

router = APIRouter(tags=["serving"])

VAST_MEDIA_TYPE = "application/xml; charset=utf-8"
_COUNTRY = re.compile(r"[A-Za-z]{2}")
Token = Annotated[str | None, Query(max_length=64)]


def _country(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if not _COUNTRY.fullmatch(value):
        raise InvalidInput("country must be an ISO 3166-1 alpha-2 code", reason="invalid-country")
    return value.upper()


def _token(value: str | None) -> str | None:
    return value.strip().lower() or None if value else None


def client_identity(request: Request, ip: str | None, user_agent: str | None) -> tuple[str, str]:
    """The listener's address and agent: forwarded by an ad inserter, else the caller's own."""
    headers = request.headers
    forwarded_ip = ip or headers.get("x-device-ip")
    client_ip = forwarded_ip or (request.client.host if request.client else "")
    agent = user_agent or headers.get("x-device-user-agent") or headers.get("user-agent", "")
    return client_ip[:64], agent[:512]


def build_request(
    request: Request,
    *,
    slot: int,
    listener: str | None,
    country: str | None,
    device: str | None,
    platform: str | None,
    genre: str | None,
    segments: list[str],
    ip: str | None = None,
    user_agent: str | None = None,
) -> AdRequest:
    client_ip, agent = client_identity(request, ip, user_agent)
    return AdRequest(
        slot_id=slot,
        listener=listener_key(listener, client_ip, agent),
        country=_country(country),
        device=_token(device),
        platform=_token(platform),
        genre=_token(genre),
        segments=tuple(segment for segment in segments if segment)[:200],
        ip=client_ip,
        user_agent=agent,
    )


@router.get("/vast", response_class=Response, responses={200: {"content": {"application/xml": {}}}})
async def vast(
    request: Request,
    services: ServicesDep,
    slot: Annotated[int, Query(ge=1, le=2**31 - 1, description="Ad slot id (see GET /v1/slots)")],
    listener: Annotated[str | None, Query(max_length=128)] = None,
    country: Annotated[str | None, Query(max_length=2)] = None,
    device: Token = None,
    platform: Token = None,
    genre: Token = None,
    segments: Annotated[
        str | None, Query(max_length=4096, description="Comma-separated segment ids")
    ] = None,
) -> Response:
    """One audio ad as VAST 4.2, or the empty ``<VAST version="4.2"/>`` when nothing is eligible."""
    ad_request = build_request(
        request,
        slot=slot,
        listener=listener,
        country=country,
        device=device,
        platform=platform,
        genre=genre,
        segments=(segments or "").split(","),
    )
    decision = services.ad_server.decide(ad_request)
    return Response(services.ad_server.vast(decision), media_type=VAST_MEDIA_TYPE)


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slot_id: int = Field(ge=1, le=2**31 - 1)
    listener: str | None = Field(default=None, max_length=128)
    country: str | None = Field(default=None, max_length=2)
    device: str | None = Field(default=None, max_length=64)
    platform: str | None = Field(default=None, max_length=64)
    genre: str | None = Field(default=None, max_length=64)
    segments: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=200
    )
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)


@router.post("/v1/decisions")
async def decisions(
    body: DecisionRequest, request: Request, services: ServicesDep
) -> dict[str, Any]:
    """The same decision as ``/vast``, as JSON (for server-side ad insertion and apps)."""
    ad_request = build_request(
        request,
        slot=body.slot_id,
        listener=body.listener,
        country=body.country,
        device=body.device,
        platform=body.platform,
        genre=body.genre,
        segments=body.segments,
        ip=body.ip,
        user_agent=body.user_agent,
    )
    return services.ad_server.as_json(services.ad_server.decide(ad_request))

"""``POST /v1/tracking/batch``: tracking hits a server-side ad inserter reports in bulk.

An inserter that stitches ads into streams fires the VAST's tracking URLs itself, on behalf
of its listeners: thousands a second from a few servers. One request carries up to
``MAX_BATCH_HITS`` of them; each is checked exactly as its pixel would be (signature,
expiry, event), the genuine ones are appended in one fsync'd write before the answer, and
each refused one is logged as ``rejected`` and named in the answer by its index.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from backbeat.api.deps import ServicesDep, bearer_key
from backbeat.api.hot_paths import query_params
from backbeat.api.routes.serving import client_identity
from backbeat.catalog.auth import authenticate, is_admin_key
from backbeat.errors import PermissionDenied, Unauthenticated
from backbeat.measurement.tracking import Hit

router = APIRouter(tags=["tracking"])

MAX_BATCH_HITS = 1000
TRACKING_PATH = "/t/"


class ReportedHit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=8192,
        description="The tracking URL as the VAST carried it (absolute, or its path from /t/)",
    )
    ip: str | None = Field(default=None, max_length=64, description="The listener's address")
    user_agent: str | None = Field(
        default=None, max_length=512, description="The listener's player"
    )


class TrackingBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hits: Annotated[list[ReportedHit], Field(min_length=1, max_length=MAX_BATCH_HITS)]


class RefusedHit(BaseModel):
    index: int = Field(description="Position of the hit in the request")
    status: int = Field(description="What its pixel would have answered")
    reason: str
    detail: str


class BatchResult(BaseModel):
    accepted: int = Field(description="Hits recorded durably (fsync'd) before this answer")
    refused: list[RefusedHit]


def tracking_target(url: str) -> tuple[str, dict[str, str]] | None:
    """The event and query parameters of a tracking URL, or None when it is not one."""
    if not url.isascii():  # signed URLs are ASCII: anything else is not one of ours
        return None
    path, _, query = url.partition("#")[0].partition("?")
    _, marker, event = path.rpartition(TRACKING_PATH)
    if not marker or not event or "/" in event:
        return None
    return event, query_params(query.encode())


def require_inserter(request: Request, services: ServicesDep) -> None:
    """Ad inserter (``ssai``) keys and the admin; answered from memory for those."""
    key = bearer_key(request)
    if key is None:
        raise Unauthenticated("send `Authorization: Bearer <key>`", reason="missing-api-key")
    if services.inserters.trusts(request.headers):
        return
    admin_key = services.settings.admin_key
    if is_admin_key(key, admin_key):
        return
    # Refusals only: a database lookup words the error (unknown key, or another role).
    with services.sessions() as session:
        authenticate(session=session, key=key, admin_key=admin_key)
    raise PermissionDenied(
        "tracking batches come from ad inserter (ssai) keys", reason="ssai-key-required"
    )


@router.post("/v1/tracking/batch")
async def track_batch(body: TrackingBatch, request: Request, services: ServicesDep) -> BatchResult:
    """Record up to 1,000 tracking hits for listeners' devices (ad inserters, ``ssai`` keys).

    Each hit is one signed tracking URL with the listener's ``ip`` and ``user_agent`` (the
    inserter's own when left out). The answer lists the refused hits by index with the
    status and reason their pixel would have had; the others are durable when it comes.
    """
    require_inserter(request, services)
    peer = request.client.host if request.client else ""
    # A hit without its device's address or agent takes the request's: ``client_identity``
    # for a trusted caller, worked out once per batch.
    default_ip, default_agent = client_identity(request.headers, peer, trusted=True)
    hits: list[Hit] = []
    positions: list[int] = []
    refused: list[RefusedHit] = []
    for index, reported in enumerate(body.hits):
        target = tracking_target(reported.url)
        if target is None:
            refused.append(
                RefusedHit(
                    index=index,
                    status=422,
                    reason="malformed-tracking-url",
                    detail="not a tracking URL (…/t/<event>?<signed query>)",
                )
            )
            continue
        ip = (reported.ip or default_ip)[:64]
        agent = (reported.user_agent or default_agent)[:512]
        hits.append(Hit(target[0], target[1], ip, agent))
        positions.append(index)
    for position, error in await services.tracker.track_many(hits):
        refused.append(
            RefusedHit(
                index=positions[position],
                status=error.status,
                reason=error.reason,
                detail=error.detail,
            )
        )
    refused.sort(key=lambda hit: hit.index)
    return BatchResult(accepted=len(body.hits) - len(refused), refused=refused)

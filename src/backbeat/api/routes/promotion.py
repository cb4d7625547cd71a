"""Promotion: campaigns (the catalog's conventions), scores for the personalization system,
the exposures/clicks/conversions it reports back, and the promotion delivery report."""

# No ``from __future__ import annotations``: FastAPI must see the real schema classes.

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field

from backbeat.api.deps import PrincipalDep, ServicesDep, SessionDep
from backbeat.api.routes.catalog import catalog_router
from backbeat.api.routes.reports import parse_instant
from backbeat.catalog.schemas import Id, Input, MoneyOut
from backbeat.catalog.service import get_object
from backbeat.errors import BackbeatError, InvalidInput
from backbeat.events import EventType
from backbeat.observability import EVENTLOG_APPEND_FAILURES
from backbeat.promotion import schemas
from backbeat.promotion.events import promotion_event
from backbeat.promotion.reporting import promotion_report, run_promotion_report
from backbeat.promotion.schemas import ItemId, ListenerId
from backbeat.promotion.scoring import PromotionScorer
from backbeat.promotion.service import PROMOTION_CAMPAIGNS
from backbeat.promotion.store import make_store
from backbeat.promotion.vocabulary import ConversionType, PromotionSurface

MAX_EVENTS = 1000
EARLIEST, LATEST = 946_684_800, 4_102_444_800  # 2000-01-01 and 2100-01-01 UTC


class EventLogUnavailableError(BackbeatError):
    status = 503
    title = "Event log unavailable"
    reason = "event-log-unavailable"


@asynccontextmanager
async def promotion_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the scorer once per process and keep it fresh from a background thread."""
    services = app.state.services
    settings = services.settings
    scorer = PromotionScorer(
        sessions=services.sessions,
        var_dir=settings.var_dir,
        clock=services.ad_server.clock,
        store=make_store(services.sessions, settings.redis_url),
        event_log_dir=settings.resolved_event_log_dir,
    )
    scorer.skip_own_segments(services.event_log.writer_id)
    await asyncio.to_thread(scorer.refresh, force=True)
    app.state.promotion = scorer
    stop = threading.Event()
    watcher = threading.Thread(
        target=scorer.watch, args=(stop, settings.catalog_poll_seconds), daemon=True
    )
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        scorer.poke()
        watcher.join(timeout=5)


def get_scorer(request: Request) -> PromotionScorer:
    return request.app.state.promotion  # type: ignore[no-any-return]


campaigns_router = catalog_router(
    PROMOTION_CAMPAIGNS,
    "promotion-campaigns",
    schemas.PromotionCampaignCreate,
    schemas.PromotionCampaignUpdate,
    schemas.PromotionCampaignRead,
)

router = APIRouter(tags=["promotion"], lifespan=promotion_lifespan)


@router.post("/v1/promotion-scores", response_model=schemas.ScoreResponse)
def promotion_scores(
    body: schemas.ScoreRequest, request: Request, principal: PrincipalDep
) -> Response:
    """Expected value of showing each candidate to this listener here, best first (admin key:
    the personalization system). ``explain`` lists the left-out items with their reason."""
    principal.require_admin()
    result = get_scorer(request).score(body)
    # Serialised once here: the answer is already validated, a second pass costs a request's time.
    return Response(orjson.dumps(result.to_json()), media_type="application/json")


class EventKind(StrEnum):
    EXPOSURE = "exposure"
    CLICK = "click"
    CONVERSION = "conversion"


KIND_TYPES = {
    EventKind.EXPOSURE: EventType.PROMOTION_EXPOSURE,
    EventKind.CLICK: EventType.PROMOTION_CLICK,
    EventKind.CONVERSION: EventType.CONVERSION,
}


class PromotionEventIn(Input):
    type: EventKind
    event_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:\-]{1,64}$")] = Field(
        description="The exposure's id (a click repeats it); a conversion's own id"
    )
    listener_id: ListenerId
    item_id: ItemId
    campaign_id: Id | None = Field(default=None, description="Required for exposures and clicks")
    surface: PromotionSurface | None = None
    ts: AwareDatetime | None = Field(default=None, description="Defaults to now")
    conversion_type: ConversionType | None = None


class PromotionEventsIn(Input):
    events: Annotated[list[PromotionEventIn], Field(min_length=1, max_length=MAX_EVENTS)]


@router.post("/v1/promotion-events", status_code=202)
async def promotion_events(
    body: PromotionEventsIn, request: Request, principal: PrincipalDep, services: ServicesDep
) -> dict[str, int]:
    """Append reported exposures, clicks and conversions to the event log (admin key).

    All or nothing: an event naming an unknown campaign or item refuses the whole batch.
    Answers once the events are durable.
    """
    principal.require_admin()
    scorer = get_scorer(request)
    now = scorer.clock()
    campaigns = {c.id: c for cs in scorer.snapshot.by_item.values() for c in cs}
    events = []
    for index, item in enumerate(body.events):
        if item.ts is not None and not EARLIEST <= item.ts.timestamp() < LATEST:
            raise InvalidInput(
                f"events[{index}]: ts must be between 2000 and 2100", reason="ts-out-of-range"
            )
        campaign = campaigns.get(item.campaign_id) if item.campaign_id is not None else None
        if item.type != EventKind.CONVERSION:
            if campaign is None:
                raise InvalidInput(
                    f"events[{index}]: promotion campaign {item.campaign_id} is unknown",
                    reason="unknown-campaign",
                )
            if campaign.item_id != item.item_id:
                raise InvalidInput(
                    f"events[{index}]: campaign {campaign.id} promotes {campaign.item_id}",
                    reason="item-mismatch",
                )
        elif item.conversion_type is None:
            raise InvalidInput(
                f"events[{index}]: a conversion needs its conversion_type",
                reason="missing-conversion-type",
            )
        events.append(
            promotion_event(
                kind=KIND_TYPES[item.type],
                event_id=item.event_id,
                ts=item.ts.timestamp() if item.ts is not None else now,
                listener_id=item.listener_id,
                campaign_id=campaign.id if campaign else None,
                item_id=item.item_id,
                artist_id=campaign.artist_id if campaign else "",
                surface=item.surface.value if item.surface else "",
                price_micros=campaign.price_micros if campaign else 0,
                currency=campaign.currency if campaign else "",
                price_model=campaign.price_model if campaign else "",
                conversion_type=item.conversion_type.value if item.conversion_type else None,
            )
        )
    scorer.record(events)  # counted here: the scorer never tails this process's own segments
    try:
        await asyncio.wrap_future(services.event_log.append_many([e.to_bytes() for e in events]))
    except Exception as error:  # the disk, not the caller: retry later
        EVENTLOG_APPEND_FAILURES.inc()
        raise EventLogUnavailableError(
            "the event log could not store the events; retry", reason="event-log-unavailable"
        ) from error
    return {"accepted": len(events)}


class PromotionDelivery(BaseModel):
    exposures: int
    reach: int
    clicks: int
    conversions: int
    conversions_new: int
    conversions_reactivated: int
    conversions_amplified: int
    spend: MoneyOut
    currency: str
    cost_per_conversion: MoneyOut | None
    click_through_rate: float | None


class PromotionDeliveryDay(PromotionDelivery):
    day: date


class PromotionReport(BaseModel):
    campaign_id: int
    start: datetime
    end: datetime
    totals: PromotionDelivery | None = Field(description="Flight to date (reach: distinct)")
    days: list[PromotionDeliveryDay]


@router.get("/v1/reports/promotion", tags=["reports"])
def get_promotion_report(
    session: SessionDep,
    principal: PrincipalDep,
    campaign_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
    start: Annotated[str, Query(alias="from", max_length=40)] = "1970-01-01",
    end: Annotated[str, Query(alias="to", max_length=40)] = "9999-12-31",
) -> PromotionReport:
    """Reach, exposures, clicks, conversions by type, spend and cost per conversion."""
    begin, finish = parse_instant(start, "from"), parse_instant(end, "to")
    if finish <= begin:
        raise InvalidInput("`to` must be after `from`", reason="end-before-start")
    get_object(
        session=session, resource=PROMOTION_CAMPAIGNS, object_id=campaign_id, principal=principal
    )
    report: dict[str, Any] = promotion_report(
        session=session, campaign_id=campaign_id, start=begin.date(), end=finish.date()
    )
    return PromotionReport(start=begin, end=finish, **report)


@router.post("/v1/reports/promotion/run", tags=["reports"])
def run_promotion(
    session: SessionDep, principal: PrincipalDep, services: ServicesDep, request: Request
) -> dict[str, int]:
    """Recount promotion delivery from the event log now (admin); safe to repeat."""
    principal.require_admin()
    result = run_promotion_report(
        session=session, event_log_dir=services.settings.resolved_event_log_dir
    )
    session.commit()
    get_scorer(request).poke()
    return {field: getattr(result, field) for field in result.__slots__}


ROUTERS = [campaigns_router, router]

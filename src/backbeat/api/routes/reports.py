"""Delivery reports: read by hour or day, and recounted on demand."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from backbeat.api.deps import PrincipalDep, ServicesDep, SessionDep
from backbeat.catalog.schemas import MoneyOut
from backbeat.catalog.service import CAMPAIGNS, LINE_ITEMS, get_object
from backbeat.errors import InvalidInput
from backbeat.eventlog import EventLogUnavailable
from backbeat.observability import log
from backbeat.promotion.reporting import PromotionReportRun, run_promotion_report
from backbeat.reporting.counting import CountingPolicy
from backbeat.reporting.frequency import frequency_distribution
from backbeat.reporting.service import ReportRun, delivery_report, run_delivery_report

router = APIRouter(prefix="/v1/reports", tags=["reports"])


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"


class DeliveryReportRow(BaseModel):
    line_item_id: int
    line_item_name: str
    period_start: datetime
    impressions: int
    starts: int
    first_quartiles: int
    midpoints: int
    third_quartiles: int
    completes: int
    clicks: int
    completion_rate: float | None
    click_through_rate: float | None
    spend: MoneyOut
    currency: str


class DeliveryReport(BaseModel):
    campaign_id: int
    granularity: Granularity
    start: datetime
    end: datetime
    rows: list[DeliveryReportRow]


def parse_instant(value: str, name: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 datetime; a datetime without offset is UTC."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{name} must be an ISO 8601 date or datetime", reason="invalid-datetime"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


@router.get("/delivery")
def get_delivery(
    session: SessionDep,
    principal: PrincipalDep,
    campaign_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
    start: Annotated[str, Query(alias="from", max_length=40)],
    end: Annotated[str, Query(alias="to", max_length=40)],
    granularity: Granularity = Granularity.HOUR,
) -> DeliveryReport:
    """Delivery per line item of one campaign, ``from`` inclusive to ``to`` exclusive."""
    begin, finish = parse_instant(start, "from"), parse_instant(end, "to")
    if finish <= begin:
        raise InvalidInput("`to` must be after `from`", reason="end-before-start")
    get_object(session=session, resource=CAMPAIGNS, object_id=campaign_id, principal=principal)
    lines = delivery_report(
        session=session, campaign_id=campaign_id, start=begin, end=finish, granularity=granularity
    )
    return DeliveryReport(
        campaign_id=campaign_id,
        granularity=granularity,
        start=begin,
        end=finish,
        rows=[
            DeliveryReportRow(
                **{field: getattr(line, field) for field in line.__slots__},
                completion_rate=_rate(line.completes, line.impressions),
                click_through_rate=_rate(line.clicks, line.impressions),
            )
            for line in lines
        ],
    )


class FrequencyBucketOut(BaseModel):
    """Listeners who heard the line item ``min_impressions``..``max_impressions`` times
    (``max_impressions`` null: or more)."""

    min_impressions: int
    max_impressions: int | None
    listeners: int
    impressions: int


class FrequencyReport(BaseModel):
    line_item_id: int
    reach: int
    impressions: int
    average_frequency: float | None
    buckets: list[FrequencyBucketOut]


@router.get("/frequency")
def get_frequency(
    session: SessionDep,
    principal: PrincipalDep,
    line_item_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
    top: Annotated[int, Query(ge=2, le=100)] = 10,
) -> FrequencyReport:
    """How many distinct listeners heard the line item once, twice, ... ``top`` or more
    times, from counted impressions (requests without a listener id are not in it)."""
    get_object(session=session, resource=LINE_ITEMS, object_id=line_item_id, principal=principal)
    found = frequency_distribution(session, line_item_id, top=top)
    return FrequencyReport(
        line_item_id=line_item_id,
        reach=found.reach,
        impressions=found.impressions,
        average_frequency=None
        if found.average_frequency is None
        else round(found.average_frequency, 6),
        buckets=[
            FrequencyBucketOut(
                min_impressions=b.low,
                max_impressions=b.high,
                listeners=b.listeners,
                impressions=b.impressions,
            )
            for b in found.buckets
        ],
    )


@router.post("/delivery/run")
def run_delivery(
    session: SessionDep, principal: PrincipalDep, services: ServicesDep, request: Request
) -> dict[str, Any]:
    """Recount the event log into the report tables now (admin); safe to repeat.

    One recount for everything the log holds: ad delivery (incremental) and promotion
    delivery (``promotion``: recounted whole), committed together. Records this server
    appended a moment ago are made durable first, so they are counted.
    """
    principal.require_admin()
    try:
        services.event_log.flush()
    except EventLogUnavailable as error:  # count what is durable; the writer reports the rest
        log.warning("reports.flush_failed", error=str(error))
    event_log_dir = services.settings.resolved_event_log_dir
    result: ReportRun = run_delivery_report(
        session=session,
        event_log_dir=event_log_dir,
        policy=CountingPolicy(ttl_seconds=services.settings.tracking_ttl_seconds),
    )
    promotion: PromotionReportRun = run_promotion_report(
        session=session, event_log_dir=event_log_dir
    )
    session.commit()
    scorer = getattr(request.app.state, "promotion", None)
    if scorer is not None:
        scorer.poke()  # its spend to date comes from the promotion tables
    return {
        **{field: getattr(result, field) for field in result.__slots__},
        "promotion": {field: getattr(promotion, field) for field in promotion.__slots__},
    }

"""Promotion delivery tables: recount the event log (replace, never add) and read them back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from backbeat.eventlog import EventLogReader
from backbeat.events import Event
from backbeat.promotion.delivery import PromotionCounts, PromotionRow, count_promotion
from backbeat.promotion.models import (
    PromotionCampaign,
    PromotionDeliveryDaily,
    PromotionDeliveryTotal,
)

COUNT_COLUMNS = (
    "exposures",
    "reach",
    "clicks",
    "conversions_new",
    "conversions_reactivated",
    "conversions_amplified",
)
NANOS = Decimal(10**9)


@dataclass(frozen=True, slots=True)
class PromotionReportRun:
    events_read: int
    campaigns: int
    daily_rows: int
    duplicates: int
    unattributed_conversions: int


def _values(row: PromotionRow) -> dict[str, Any]:
    return {
        "exposures": row.exposures,
        "reach": row.reach,
        "clicks": row.clicks,
        "conversions_new": row.conversions_new,
        "conversions_reactivated": row.conversions_reactivated,
        "conversions_amplified": row.conversions_amplified,
        "spend": Decimal(row.spend_nanos) / NANOS,
        "currency": row.currency,
    }


def run_promotion_report(*, session: Session, event_log_dir: Path) -> PromotionReportRun:
    """Recount every promotion record of the event log into the two report tables."""
    windows = dict(
        session.execute(select(PromotionCampaign.id, PromotionCampaign.attribution_days))
        .tuples()
        .all()
    )
    reader = EventLogReader(event_log_dir)
    counts: PromotionCounts = count_promotion(
        (Event.from_bytes(record.payload) for record in reader.records()), windows
    )
    session.execute(delete(PromotionDeliveryDaily))
    session.execute(delete(PromotionDeliveryTotal))
    daily = [
        {"campaign_id": c, "day": d, **_values(row)} for (c, d), row in sorted(counts.daily.items())
    ]
    totals = [{"campaign_id": c, **_values(row)} for c, row in sorted(counts.totals.items())]
    if daily:
        session.execute(insert(PromotionDeliveryDaily), daily)
    if totals:
        session.execute(insert(PromotionDeliveryTotal), totals)
    return PromotionReportRun(
        events_read=counts.events_read,
        campaigns=len(totals),
        daily_rows=len(daily),
        duplicates=counts.duplicates,
        unattributed_conversions=counts.unattributed_conversions,
    )


def _summary(row: Any) -> dict[str, Any]:
    values = {column: int(getattr(row, column)) for column in COUNT_COLUMNS}
    conversions = (
        values["conversions_new"]
        + values["conversions_reactivated"]
        + values["conversions_amplified"]
    )
    spend: Decimal = row.spend
    return {
        **values,
        "conversions": conversions,
        "spend": spend,
        "currency": row.currency,
        "cost_per_conversion": (spend / conversions).quantize(Decimal("0.000001"))
        if conversions
        else None,
        "click_through_rate": round(values["clicks"] / values["exposures"], 6)
        if values["exposures"]
        else None,
    }


def promotion_report(
    *, session: Session, campaign_id: int, start: date, end: date
) -> dict[str, Any]:
    """Flight-to-date totals and the daily rows in ``[start, end)`` of one campaign."""
    total = session.get(PromotionDeliveryTotal, campaign_id)
    rows = session.execute(
        select(PromotionDeliveryDaily)
        .where(
            PromotionDeliveryDaily.campaign_id == campaign_id,
            PromotionDeliveryDaily.day >= start,
            PromotionDeliveryDaily.day < end,
        )
        .order_by(PromotionDeliveryDaily.day)
    ).scalars()
    return {
        "campaign_id": campaign_id,
        "totals": _summary(total) if total is not None else None,
        "days": [{"day": row.day, **_summary(row)} for row in rows],
    }


def spend_to_date(session: Session) -> dict[int, Decimal]:
    """Counted spend per campaign (the scorer's pacing input, read in the background)."""
    return dict(
        session.execute(select(PromotionDeliveryTotal.campaign_id, PromotionDeliveryTotal.spend))
        .tuples()
        .all()
    )

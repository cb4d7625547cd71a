"""Writing counted delivery to report tables and reading it back by hour or day."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from backbeat.catalog.models import LineItem
from backbeat.eventlog import EventLogReader
from backbeat.events import Event
from backbeat.measurement.delivery import DeliveryCounts, count_delivery
from backbeat.reporting.models import DeliveryHourly, RejectedHourly

COUNT_COLUMNS = (
    "impressions",
    "starts",
    "first_quartiles",
    "midpoints",
    "third_quartiles",
    "completes",
    "clicks",
)


@dataclass(frozen=True, slots=True)
class ReportRun:
    events_read: int
    rows_written: int
    duplicates: int
    rejected: int
    torn_tails: int


def run_delivery_report(*, session: Session, event_log_dir: Path) -> ReportRun:
    """Recount the whole event log and replace the report tables in one transaction.

    Replacing rather than adding is what makes a re-run over the same log idempotent.
    """
    reader = EventLogReader(event_log_dir)
    counts: DeliveryCounts = count_delivery(
        Event.from_bytes(record.payload) for record in reader.records()
    )
    _check_quality(counts)
    session.execute(delete(DeliveryHourly))
    session.execute(delete(RejectedHourly))
    rows = [
        {
            "line_item_id": row.line_item_id,
            "hour": row.hour,
            "campaign_id": row.campaign_id,
            "currency": row.currency,
            "spend": row.spend,
            **{column: getattr(row, column) for column in COUNT_COLUMNS},
        }
        for row in counts.rows.values()
    ]
    if rows:
        session.execute(insert(DeliveryHourly), rows)
    rejected = [
        {"hour": hour, "reason": reason, "count": n}
        for (hour, reason), n in counts.rejected.items()
    ]
    if rejected:
        session.execute(insert(RejectedHourly), rejected)
    return ReportRun(
        events_read=counts.events_read,
        rows_written=len(rows),
        duplicates=counts.duplicates,
        rejected=sum(counts.rejected.values()),
        torn_tails=reader.stats.torn_tails,
    )


def _check_quality(counts: DeliveryCounts) -> None:
    """Refuse to write numbers that cannot be right."""
    from backbeat.errors import InvalidInput

    for row in counts.rows.values():
        if any(getattr(row, column) < 0 for column in COUNT_COLUMNS) or row.spend_units < 0:
            raise InvalidInput(
                f"negative count for line item {row.line_item_id}", reason="negative-count"
            )


@dataclass(frozen=True, slots=True)
class DeliveryLine:
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
    spend: Decimal
    currency: str


def delivery_report(
    *, session: Session, campaign_id: int, start: datetime, end: datetime, granularity: str
) -> list[DeliveryLine]:
    """Rows per line item and hour (or UTC day), ``start`` inclusive, ``end`` exclusive."""
    rows = session.execute(
        select(DeliveryHourly, LineItem.name)
        .join(LineItem, LineItem.id == DeliveryHourly.line_item_id, isouter=True)
        .where(
            DeliveryHourly.campaign_id == campaign_id,
            DeliveryHourly.hour >= start,
            DeliveryHourly.hour < end,
        )
        .order_by(DeliveryHourly.hour, DeliveryHourly.line_item_id)
    ).all()
    grouped: dict[tuple[datetime, int], list[tuple[DeliveryHourly, str | None]]] = defaultdict(list)
    for row, name in rows:
        period = row.hour if granularity == "hour" else row.hour.replace(hour=0)
        grouped[(period, row.line_item_id)].append((row, name))
    return [
        DeliveryLine(
            line_item_id=line_item_id,
            line_item_name=members[0][1] or "",
            period_start=period,
            spend=sum((row.spend for row, _ in members), Decimal(0)),
            currency=members[0][0].currency,
            **{column: sum(getattr(row, column) for row, _ in members) for column in COUNT_COLUMNS},
        )
        for (period, line_item_id), members in sorted(grouped.items())
    ]


def delivered_so_far(session: Session) -> tuple[dict[int, tuple[int, int]], dict[int, int]]:
    """Counted spend (CPM-micro units) and impressions per line item, and spend per campaign.

    Seeds a restarted server's budget ledger so it does not spend a budget twice.
    """
    from sqlalchemy import func

    line_items: dict[int, tuple[int, int]] = {}
    campaigns: dict[int, int] = defaultdict(int)
    for line_item_id, campaign_id, spend, impressions in session.execute(
        select(
            DeliveryHourly.line_item_id,
            DeliveryHourly.campaign_id,
            func.sum(DeliveryHourly.spend),
            func.sum(DeliveryHourly.impressions),
        ).group_by(DeliveryHourly.line_item_id, DeliveryHourly.campaign_id)
    ):
        units = int((spend or Decimal(0)) * 10**9)  # spend is exact in nanos: CPM micros summed
        line_items[line_item_id] = (units, int(impressions or 0))
        campaigns[campaign_id] += units
    return line_items, dict(campaigns)

"""Counting client-confirmed delivery from tracking events, by IAB's one-per-decision rule.

Pure functions, so the CLI, the API and the Beam pipeline count the same way: an event
type counts once per decision id (the earliest copy wins and dates it), and spend is the
sum of the charged CPMs of counted impressions divided by 1000.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from backbeat.events import DELIVERY_EVENTS, Event, EventType

HOUR = 3600
COUNTED_TYPES = frozenset(event.value for event in DELIVERY_EVENTS)
COLUMN_OF = {
    EventType.IMPRESSION: "impressions",
    EventType.START: "starts",
    EventType.FIRST_QUARTILE: "first_quartiles",
    EventType.MIDPOINT: "midpoints",
    EventType.THIRD_QUARTILE: "third_quartiles",
    EventType.COMPLETE: "completes",
    EventType.CLICK: "clicks",
}


def hour_of(ts: float) -> datetime:
    return datetime.fromtimestamp(int(ts // HOUR) * HOUR, UTC)


def dedupe_key(event: Event) -> tuple[str, str]:
    return event.decision_id, event.type


@dataclass(slots=True)
class DeliveryRow:
    """One line item in one UTC hour; ``spend_units`` is the sum of CPM micros of impressions."""

    line_item_id: int
    hour: datetime
    campaign_id: int
    currency: str
    impressions: int = 0
    starts: int = 0
    first_quartiles: int = 0
    midpoints: int = 0
    third_quartiles: int = 0
    completes: int = 0
    clicks: int = 0
    spend_units: int = 0

    @property
    def spend(self) -> Decimal:
        return Decimal(self.spend_units) / Decimal(10**9)


@dataclass(slots=True)
class DeliveryCounts:
    rows: dict[tuple[int, datetime], DeliveryRow] = field(default_factory=dict)
    rejected: dict[tuple[datetime, str], int] = field(default_factory=dict)
    duplicates: int = 0
    events_read: int = 0


def first_copies(events: Iterable[Event], counts: DeliveryCounts) -> dict[tuple[str, str], Event]:
    """Keep the earliest copy of each (decision, event type); count the rest as duplicates."""
    kept: dict[tuple[str, str], Event] = {}
    for event in events:
        counts.events_read += 1
        if event.type == EventType.REJECTED:
            key = (hour_of(event.ts), event.reason or "unknown")
            counts.rejected[key] = counts.rejected.get(key, 0) + 1
            continue
        if event.type not in COUNTED_TYPES or not event.line_item_id or not event.decision_id:
            continue
        key = dedupe_key(event)
        previous = kept.get(key)
        if previous is None:
            kept[key] = event
        else:
            counts.duplicates += 1
            if event.ts < previous.ts:
                kept[key] = event
    return kept


def count_delivery(events: Iterable[Event]) -> DeliveryCounts:
    """Hourly delivery per line item, each (decision, event type) counted once."""
    counts = DeliveryCounts()
    for event in first_copies(events, counts).values():
        assert event.line_item_id is not None
        hour = hour_of(event.ts)
        row = counts.rows.get((event.line_item_id, hour))
        if row is None:
            row = counts.rows[(event.line_item_id, hour)] = DeliveryRow(
                line_item_id=event.line_item_id,
                hour=hour,
                campaign_id=event.campaign_id or 0,
                currency=event.currency,
            )
        column = COLUMN_OF[EventType(event.type)]
        setattr(row, column, getattr(row, column) + 1)
        if event.type == EventType.IMPRESSION:
            row.spend_units += event.price_micros
    return counts

"""Counting the event log into report tables incrementally, and reading them by hour or day."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backbeat.catalog.models import LineItem
from backbeat.errors import Conflict, InvalidInput
from backbeat.eventlog import Checkpoint, Damage, EventLogReader
from backbeat.measurement.models import EventLogDamage
from backbeat.observability import log
from backbeat.reporting.counting import (
    CountingPolicy,
    commit_batch,
    positions_of,
    reset_counts,
    state_of,
)
from backbeat.reporting.metrics import DAMAGED_BYTES
from backbeat.reporting.models import DeliveryHourly

if TYPE_CHECKING:
    from collections.abc import Callable

COUNT_COLUMNS = (
    "impressions",
    "starts",
    "first_quartiles",
    "midpoints",
    "third_quartiles",
    "completes",
    "clicks",
)


EVENTLOG_CONSUMER = "eventlog"
DEFAULT_BATCH_RECORDS = 100_000


class EventLogDamaged(Conflict):
    """The event log has damage in the middle of a segment that nobody accepted yet."""

    title = "Event log damaged"
    reason = "event-log-damaged"
    exit_code = 8


@dataclass(frozen=True, slots=True)
class ReportRun:
    """Totals of the count so far (the same however the work was split into runs)."""

    events_read: int
    rows_written: int
    duplicates: int
    rejected: int
    torn_tails: int


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    """One counting run: the totals so far and what this run added or found."""

    totals: ReportRun
    new_records: int
    batches: int
    bad_records: int
    damaged_bytes: int
    damage: tuple[Damage, ...]
    full: bool


def count_event_log(
    *,
    session: Session,
    event_log_dir: Path,
    policy: CountingPolicy | None = None,
    full: bool = False,
    accept_damage: bool = False,
    batch_records: int = DEFAULT_BATCH_RECORDS,
    commit: Callable[[], None] | None = None,
) -> DeliveryRun:
    """Count what the event log gained since the last committed position.

    Each batch of at most ``batch_records`` records is counted by the Beam pipeline and
    committed with the new position by ``commit`` (when given; otherwise the caller's one
    transaction covers the whole run). ``full`` forgets every count first and recounts the
    whole log in the caller's transaction. Damage in the middle of a segment fails the run
    with :class:`EventLogDamaged` unless it was accepted before or ``accept_damage`` is set,
    in which case the records around it are counted and the damage is recorded.
    """
    policy = policy or CountingPolicy()
    if batch_records < 1:
        raise InvalidInput("batch_records must be positive", reason="invalid-batch-size")
    if full:
        reset_counts(session, EVENTLOG_CONSUMER)
    expected = positions_of(state_of(session, EVENTLOG_CONSUMER))
    reader = EventLogReader(event_log_dir, start=Checkpoint(expected))
    records = reader.records()
    seen_damage = torn_before = batches = new_records = bad_records = damaged = 0
    while True:
        # Locks the state; another run that committed since our last batch owns the rest.
        if positions_of(state_of(session, EVENTLOG_CONSUMER)) != expected:
            log.info("delivery.concurrent_run", consumer=EVENTLOG_CONSUMER)
            break
        batch = [(f"{r.segment}@{r.offset}", r.payload) for r in islice(records, batch_records)]
        damage = reader.damage[seen_damage:]
        seen_damage += len(damage)
        _accept_damage(session, damage, accept=accept_damage)
        torn_tails = reader.stats.torn_tails
        outcome = commit_batch(
            session,
            consumer=EVENTLOG_CONSUMER,
            records=batch,
            positions=dict(reader.checkpoint.offsets),
            policy=policy,
            torn_tails=torn_tails - torn_before,
            damaged_bytes=sum(region.length for region in damage),
        )
        torn_before = torn_tails
        batches += 1
        new_records += len(batch)
        bad_records += outcome.bad_records
        damaged += sum(region.length for region in damage)
        if commit is not None:
            commit()
        expected = dict(reader.checkpoint.offsets)
        if len(batch) < batch_records:
            break
    return DeliveryRun(
        totals=totals(session, EVENTLOG_CONSUMER),
        new_records=new_records,
        batches=batches,
        bad_records=bad_records,
        damaged_bytes=damaged,
        damage=tuple(reader.damage),
        full=full,
    )


def _accept_damage(session: Session, damage: list[Damage], *, accept: bool) -> None:
    for region in damage:
        DAMAGED_BYTES.labels(segment=region.segment).set(region.length)
        if session.get(EventLogDamage, (region.segment, region.offset)) is not None:
            continue
        if not accept:
            raise EventLogDamaged(
                f"event log segment {region.segment} is damaged at byte {region.offset} "
                f"({region.length} bytes unreadable); the records around it are intact. "
                "Count past it with `backbeat report --accept-damage` once the segment is "
                "kept for inspection.",
                segment=region.segment,
                offset=region.offset,
                length=region.length,
            )
        log.error(
            "eventlog.damage_accepted",
            segment=region.segment,
            offset=region.offset,
            length=region.length,
        )
        session.add(
            EventLogDamage(segment=region.segment, offset=region.offset, length=region.length)
        )
    session.flush()


def totals(session: Session, consumer: str) -> ReportRun:
    """The cumulative totals a consumer has committed."""
    state = state_of(session, consumer)
    rows = session.execute(select(func.count()).select_from(DeliveryHourly)).scalar_one()
    return ReportRun(
        events_read=state.events_read,
        rows_written=rows,
        duplicates=state.duplicates,
        rejected=state.rejected,
        torn_tails=state.torn_tails,
    )


def run_delivery_report(
    *, session: Session, event_log_dir: Path, policy: CountingPolicy | None = None
) -> ReportRun:
    """Count what is new in the event log, in the caller's transaction; safe to repeat.

    Re-running adds nothing: positions and de-duplication state are committed with the
    counts, so the totals returned are the same until new events arrive.
    """
    return count_event_log(session=session, event_log_dir=event_log_dir, policy=policy).totals


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

"""Committing incremental delivery counts exactly once, whatever the source.

A source (the local event log, a Kafka topic) hands over a batch of ``(position, payload)``
records and the positions it will have reached once they are consumed. In one database
transaction this module adds the batch's counts to the hourly rows, updates the
de-duplication state and stores the positions, so a run killed at any point leaves either
all of a batch or none of it, and the next run starts exactly where the last commit ended.

De-duplication state (``counted_event``) is kept only while a tracking URL of the decision
can still be valid: ``expires`` is the counted copy's time plus the tracking TTL, and rows
are dropped once the event-time watermark (the latest event time read) has passed it by a
grace period (for writers whose segments are read late).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Table, delete, or_, select, tuple_
from sqlalchemy.orm import Session

from backbeat.errors import InvalidInput
from backbeat.eventlog import Checkpoint
from backbeat.events import EventType
from backbeat.measurement.delivery import COLUMN_OF
from backbeat.measurement.delivery_deltas import (
    COUNTED_TYPES,
    DEFAULT_BEAM_MIN_RECORDS,
    Copy,
    DeltaBatch,
    Key,
    count_deltas,
)
from backbeat.measurement.models import CountedEvent, CountingState, RejectedRecord
from backbeat.observability import log
from backbeat.reporting.metrics import BAD_RECORDS, COUNTED_EVENTS, DUPLICATES
from backbeat.reporting.models import DeliveryHourly, ListenerFrequency, RejectedHourly

DEFAULT_GRACE_SECONDS = 24 * 3600
LOOKUP_CHUNK = 500
NANOS_PER_MICRO_CPM = Decimal(10**9)
IMPRESSION = EventType.IMPRESSION.value  # spend = CPM micros summed / 10^9


@dataclass(frozen=True, slots=True)
class CountingPolicy:
    """How long de-duplication state lives, on which runner, which types count."""

    ttl_seconds: int = 7 * 24 * 3600
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    beam_args: tuple[str, ...] = ()
    counted_types: frozenset[str] = COUNTED_TYPES
    beam_min_records: int = DEFAULT_BEAM_MIN_RECORDS


@dataclass(slots=True)
class BatchOutcome:
    """What one committed batch changed."""

    records: int = 0
    counted: int = 0
    duplicates: int = 0
    rejected: int = 0
    bad_records: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)


def state_of(session: Session, consumer: str) -> CountingState:
    """The consumer's row, created on first use and locked until the transaction ends.

    The lock serialises concurrent runs of one consumer (a row lock on PostgreSQL; the
    database write lock on SQLite, taken by the insert), so two runs never commit the
    same records twice; a run checks the positions it started from before each batch.
    """
    _upsert(
        session,
        CountingState.__table__,  # type: ignore[arg-type]
        [
            {
                "consumer": consumer,
                "positions": Checkpoint().to_json().decode(),
                "events_read": 0,
                "duplicates": 0,
                "rejected": 0,
                "bad_records": 0,
                "torn_tails": 0,
                "damaged_bytes": 0,
                "watermark": 0.0,
                "runs": 0,
            }
        ],
        ("consumer",),
    )
    return session.execute(
        select(CountingState)
        .where(CountingState.consumer == consumer)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def positions_of(state: CountingState) -> dict[str, int]:
    return dict(Checkpoint.from_json(state.positions).offsets)


def reset_counts(session: Session, consumer: str) -> None:
    """Forget every count and all state, for a full recount in the same transaction."""
    for table in (DeliveryHourly, RejectedHourly, CountedEvent, ListenerFrequency):
        session.execute(delete(table))
    session.execute(delete(RejectedRecord).where(RejectedRecord.consumer == consumer))
    session.execute(delete(CountingState).where(CountingState.consumer == consumer))
    session.flush()


def commit_batch(
    session: Session,
    *,
    consumer: str,
    records: Sequence[tuple[str, bytes]],
    positions: dict[str, int],
    policy: CountingPolicy,
    torn_tails: int = 0,
    damaged_bytes: int = 0,
) -> BatchOutcome:
    """Count ``records`` and store ``positions`` in the session's transaction (not committed).

    The caller commits; until then nothing of the batch is visible, and a failure
    anywhere leaves the database as it was.
    """
    state = state_of(session, consumer)
    outcome = BatchOutcome(records=len(records))
    if records:
        decisions, listeners = _decisions_of(records)
        counted = _counted_copies(session, decisions)
        batch = count_deltas(
            records,
            counted,
            beam_args=policy.beam_args,
            counted_types=policy.counted_types,
            beam_min_records=policy.beam_min_records,
        )
        touched = _apply(session, consumer, batch, policy)
        _upsert(
            session,
            ListenerFrequency.__table__,  # type: ignore[arg-type]
            _new_impressions(batch, counted, listeners),
            ("line_item_id", "listener_hash"),
            add=("impressions",),
        )
        outcome.counted = sum(count for *_, count, _spend in batch.deltas)
        outcome.duplicates = batch.duplicates
        outcome.rejected = sum(n for _, _, n in batch.rejected)
        outcome.bad_records = len(batch.bad)
        for _, reason, _ in batch.bad:
            outcome.bad_reasons[reason] = outcome.bad_reasons.get(reason, 0) + 1
        state.events_read += batch.read
        state.duplicates += batch.duplicates
        state.rejected += outcome.rejected
        state.bad_records += outcome.bad_records
        state.watermark = max(state.watermark, batch.watermark)
        _purge_expired(session, state.watermark - policy.grace_seconds)
    state.torn_tails += torn_tails
    state.damaged_bytes += damaged_bytes
    state.positions = Checkpoint(offsets=positions).to_json().decode()
    state.runs += 1
    session.flush()
    if records:
        _check_quality(session, touched)
    COUNTED_EVENTS.inc(outcome.counted)
    DUPLICATES.inc(outcome.duplicates)
    for reason, n in outcome.bad_reasons.items():
        BAD_RECORDS.labels(reason=reason).inc(n)
    if outcome.bad_records:
        log.warning("delivery.bad_records", consumer=consumer, reasons=outcome.bad_reasons)
    return outcome


def _decisions_of(records: Iterable[tuple[str, bytes]]) -> tuple[set[str], dict[str, str]]:
    """Decision ids the batch mentions (to fetch only their de-duplication state), and
    the listener of each decision with an impression in the batch."""
    decisions: set[str] = set()
    listeners: dict[str, str] = {}
    for _, payload in records:
        try:
            record = orjson.loads(payload)
            decision = record.get("decision_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(decision, str) and decision:
            decisions.add(decision)
            listener = record.get("listener")
            if record.get("type") == IMPRESSION and isinstance(listener, str) and listener:
                listeners[decision] = listener
    return decisions, listeners


def listener_hash(listener: str) -> int:
    """A signed 64-bit BLAKE2b of the listener id: what the frequency table stores."""
    digest = hashlib.blake2b(listener.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _new_impressions(
    batch: DeltaBatch, counted: dict[Key, Copy], listeners: dict[str, str]
) -> list[dict[str, Any]]:
    """One frequency increment per impression counted for the first time in this batch
    (a duplicate, or an earlier copy replacing a counted one, adds nothing)."""
    increments: dict[tuple[int, int], int] = {}
    for (decision, kind), copy in batch.state.items():
        if kind != IMPRESSION or (decision, kind) in counted:
            continue
        listener = listeners.get(decision)
        if listener is None:  # unknown listener: not in the distribution
            continue
        key = (copy.line_item_id, listener_hash(listener))
        increments[key] = increments.get(key, 0) + 1
    return [
        {"line_item_id": item, "listener_hash": hashed, "impressions": n}
        for (item, hashed), n in increments.items()
    ]


def _counted_copies(session: Session, decisions: set[str]) -> dict[Key, Copy]:
    counted: dict[Key, Copy] = {}
    ordered = sorted(decisions)
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        chunk = ordered[start : start + LOOKUP_CHUNK]
        for row in session.execute(
            select(CountedEvent).where(CountedEvent.decision_id.in_(chunk))
        ).scalars():
            counted[(row.decision_id, row.event_type)] = Copy(
                row.ts, row.line_item_id, row.campaign_id, row.currency, row.price_micros
            )
    return counted


def _upsert(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    keys: Sequence[str],
    *,
    add: Sequence[str] = (),
    replace: Sequence[str] = (),
) -> None:
    """Insert rows; on a key conflict add ``add`` columns and overwrite ``replace`` ones."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two tested databases are supported
        raise InvalidInput(f"unsupported database {dialect!r}", reason="unsupported-database")
    statement = insert(table)
    changes = {name: table.c[name] + statement.excluded[name] for name in add}
    changes.update({name: statement.excluded[name] for name in replace})
    if changes:
        statement = statement.on_conflict_do_update(index_elements=list(keys), set_=changes)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    session.execute(statement, rows)


def _apply(
    session: Session,
    consumer: str,
    batch: DeltaBatch,
    policy: CountingPolicy,
) -> list[tuple[int, datetime]]:
    columns = tuple(COLUMN_OF.values())
    hourly: dict[tuple[int, int], dict[str, Any]] = {}
    for line_item, hour, campaign, currency, kind, count, spend in batch.deltas:
        row = hourly.get((line_item, hour))
        if row is None:
            row = hourly[(line_item, hour)] = {
                "line_item_id": line_item,
                "hour": datetime.fromtimestamp(hour, UTC),
                "campaign_id": campaign,
                "currency": currency,
                "spend_units": 0,
                **dict.fromkeys(columns, 0),
            }
        column = COLUMN_OF.get(kind)  # type: ignore[call-overload]
        if column is not None:
            row[column] += count
        row["spend_units"] += spend
    rows = [
        {**row, "spend": Decimal(row.pop("spend_units")) / NANOS_PER_MICRO_CPM}
        for row in hourly.values()
    ]
    _upsert(
        session,
        DeliveryHourly.__table__,  # type: ignore[arg-type]
        rows,
        ("line_item_id", "hour"),
        add=(*columns, "spend"),
    )
    rejected = [
        {"hour": datetime.fromtimestamp(hour, UTC), "reason": reason, "count": n}
        for hour, reason, n in batch.rejected
    ]
    _upsert(session, RejectedHourly.__table__, rejected, ("hour", "reason"), add=("count",))  # type: ignore[arg-type]
    bad = [
        {"consumer": consumer, "position": position[:200], "reason": reason, "excerpt": excerpt}
        for position, reason, excerpt in batch.bad
    ]
    _upsert(session, RejectedRecord.__table__, bad, ("consumer", "position"))  # type: ignore[arg-type]
    state = [
        {
            "decision_id": decision,
            "event_type": kind,
            "ts": copy.ts,
            "line_item_id": copy.line_item_id,
            "campaign_id": copy.campaign_id,
            "currency": copy.currency,
            "price_micros": copy.price_micros,
            "expires": copy.ts + policy.ttl_seconds,
        }
        for (decision, kind), copy in batch.state.items()
    ]
    _upsert(
        session,
        CountedEvent.__table__,  # type: ignore[arg-type]
        state,
        ("decision_id", "event_type"),
        replace=("ts", "line_item_id", "campaign_id", "currency", "price_micros", "expires"),
    )
    return [(row["line_item_id"], row["hour"]) for row in rows]


def _purge_expired(session: Session, before: float) -> None:
    session.execute(delete(CountedEvent).where(CountedEvent.expires < before))


def _check_quality(session: Session, touched: Sequence[tuple[int, datetime]]) -> None:
    """Refuse to commit numbers that cannot be right (a negative count or spend)."""
    negative = or_(
        *(getattr(DeliveryHourly, name) < 0 for name in COLUMN_OF.values()),
        DeliveryHourly.spend < 0,
    )
    for start in range(0, len(touched), LOOKUP_CHUNK):
        chunk = touched[start : start + LOOKUP_CHUNK]
        bad = session.execute(
            select(DeliveryHourly.line_item_id, DeliveryHourly.hour)
            .where(tuple_(DeliveryHourly.line_item_id, DeliveryHourly.hour).in_(chunk))
            .where(negative)
            .limit(1)
        ).first()
        if bad is not None:
            raise InvalidInput(
                f"delivery of line item {bad[0]} at {bad[1]} went negative",
                reason="negative-count",
            )


__all__ = [
    "BatchOutcome",
    "CountingPolicy",
    "commit_batch",
    "positions_of",
    "reset_counts",
    "state_of",
]

"""Bring an in-memory ledger up to counted delivery by reading the event log.

Budgets are spent in counted impressions (``serving/ledger.py``). At startup the whole log
is read once: every impression counts (once per decision id, at the price it was signed
with, as the delivery report counts it), and every ``fill`` record still inside its render
window without an impression is a live reservation, so a restarted server never spends
again what it spent before. Afterwards the same reader picks up only new records, on the
server's housekeeping tick: impressions turn reservations into counted spend (and bring
in other workers' deliveries), and reservations past the render window are released.

A server skips its own segments (``skip_own_segments``): its fills are reservations from
the moment it decides, and its tracker hands over each impression once it is durable
(``count_acknowledged``), so every worker parses only the other workers' records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from backbeat.eventlog import EventLogReader, yielding
from backbeat.events import EventType, record_prefix
from backbeat.serving.ledger import MemoryLedger
from backbeat.signing import TrackingClaims

_IMPRESSION = record_prefix(EventType.IMPRESSION)
_FILL = record_prefix(EventType.FILL)


@dataclass(frozen=True, slots=True)
class ReconcileRun:
    records: int
    impressions: int
    reservations: int
    released: int


class Reconciler:
    """Feeds one ``MemoryLedger`` from the event log directory, incrementally."""

    def __init__(self, ledger: MemoryLedger, directory: Path) -> None:
        self.ledger = ledger
        self._reader = EventLogReader(Path(directory))

    def skip_own_segments(self, writer_id: str) -> None:
        """Never read this process's own segments (named after ``writer_id``): its fills are
        reservations already (``commit_spend``) and its tracker counts its impressions as
        they become durable (``count_acknowledged``). Reading them back cost each worker a
        parse of every record the server wrote, its own included."""
        self._reader.skip_segments(writer_id + "-")

    def count_acknowledged(self, impressions: Iterable[TrackingClaims], now: float) -> int:
        """Impressions this process has just appended durably, counted as reading them back
        from the log would count them (once per decision, at the signed price)."""
        counted = 0
        for claims in impressions:
            if claims.line_item_id and claims.decision_id:
                counted += self.ledger.count_impression(
                    claims.decision_id,
                    claims.line_item_id,
                    claims.campaign_id,
                    claims.price_micros,
                    now,
                )
        return counted

    def run(self, now: float) -> ReconcileRun:
        """Read what is new in the log; then release reservations past the render window."""
        records = impressions = reservations = 0
        for record in yielding(self._reader.records()):
            records += 1
            payload = record.payload
            # Records start with their type (``Event.to_bytes`` field order): skip the rest
            # without parsing them.
            if payload.startswith(_IMPRESSION):
                event = orjson.loads(payload)
                if event.get("line_item_id") and event.get("decision_id"):
                    impressions += self.ledger.count_impression(
                        event["decision_id"],
                        int(event["line_item_id"]),
                        int(event.get("campaign_id") or 0),
                        int(event.get("price_micros") or 0),
                        now,
                    )
            elif payload.startswith(_FILL):
                event = orjson.loads(payload)
                reservations += 1
                self.ledger.reserve(
                    event["decision_id"],
                    int(event["line_item_id"]),
                    int(event["campaign_id"]),
                    int(event["price_micros"]),
                    now,
                )
        released = self.ledger.expire(now)
        return ReconcileRun(records, impressions, reservations, released)

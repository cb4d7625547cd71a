"""Bring an in-memory ledger up to counted delivery by reading the event log.

Budgets are spent in counted impressions (``serving/ledger.py``). At startup the whole log
is read once: every impression counts (once per decision id, at the price it was signed
with, as the delivery report counts it), and every ``fill`` record still inside its render
window without an impression is a live reservation, so a restarted server never spends
again what it spent before. Afterwards the same reader picks up only new records, on the
server's housekeeping tick: impressions turn reservations into counted spend (and bring
in other workers' deliveries), and reservations past the render window are released.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from backbeat.eventlog import EventLogReader, yielding
from backbeat.events import EventType, record_prefix
from backbeat.serving.ledger import MemoryLedger

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
        self._own_segments: str | None = None

    def skip_own_fills(self, writer_id: str) -> None:
        """This process's own ``fill`` records (segments named after ``writer_id``) are
        already reservations in its ledger (``commit_spend``): skip them unparsed."""
        self._own_segments = writer_id + "-"

    def run(self, now: float) -> ReconcileRun:
        """Read what is new in the log; then release reservations past the render window."""
        records = impressions = reservations = 0
        own = self._own_segments
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
                if own is not None and record.segment.startswith(own):
                    continue
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

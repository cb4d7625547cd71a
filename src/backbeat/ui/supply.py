"""No-fill reasons per slot, read from the decision log (sampled ``opportunity`` records).

The ad server appends a sampled share of its decisions to the event log with the slot and,
for a no-fill, the reason (``no-candidates``, ``reserve``, ``capped`` …). This tally reads
the log incrementally (the reader keeps its offsets) and scales each record by one over
its sampling rate, so the counts estimate all requests, not only the logged ones.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson

from backbeat.eventlog import EventLogReader
from backbeat.events import EventType

_MARK = f'"type":"{EventType.OPPORTUNITY.value}"'.encode()


@dataclass(frozen=True, slots=True)
class SlotSupply:
    slot_id: int
    requests: float  # estimated from the sample
    filled: float
    no_fill: dict[str, float]  # reason -> estimated requests

    @property
    def fill_rate(self) -> float | None:
        return self.filled / self.requests if self.requests else None


class NoFillTally:
    """Running per-slot totals of the decision log.

    A page view starts a read of what was appended since the last one in a background
    thread and waits for it at most ``wait`` seconds, so a long log never holds a page up:
    the page shows what is counted so far and says the count is still running.
    """

    BATCH = 10_000  # records merged into the totals at a time

    def __init__(self, event_log_dir: Path) -> None:
        self._reader = EventLogReader(event_log_dir)
        self._requests: Counter[int] = Counter()
        self._filled: Counter[int] = Counter()
        self._reasons: Counter[tuple[int, str]] = Counter()
        self._logged = 0
        self._lock = threading.Lock()  # guards the totals
        self._reading: threading.Thread | None = None
        self._start = threading.Lock()

    def refresh(self) -> None:
        """Read every record appended since the last refresh (one reader at a time)."""
        requests: Counter[int] = Counter()
        filled: Counter[int] = Counter()
        reasons: Counter[tuple[int, str]] = Counter()
        logged = 0
        for n, record in enumerate(self._reader.records(), 1):
            if _MARK in record.payload:
                try:
                    event = orjson.loads(record.payload)
                    slot_id = int(event["slot_id"])
                    sample = float((event.get("attrs") or {}).get("sample") or 1.0)
                except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                    continue
                weight = 1.0 / sample if sample > 0 else 1.0
                logged += 1
                requests[slot_id] += weight
                reason = event.get("reason")
                if reason:
                    reasons[(slot_id, str(reason))] += weight
                else:
                    filled[slot_id] += weight
            if n % self.BATCH == 0:
                self._merge(requests, filled, reasons, logged)
                requests, filled, reasons, logged = Counter(), Counter(), Counter(), 0
        self._merge(requests, filled, reasons, logged)

    def _merge(
        self,
        requests: Counter[int],
        filled: Counter[int],
        reasons: Counter[tuple[int, str]],
        logged: int,
    ) -> None:
        with self._lock:
            self._requests.update(requests)
            self._filled.update(filled)
            self._reasons.update(reasons)
            self._logged += logged

    def _read_in_background(self, wait: float) -> bool:
        """Start a refresh unless one runs; True when none is running after ``wait``."""
        with self._start:
            if self._reading is None or not self._reading.is_alive():
                self._reading = threading.Thread(
                    target=self.refresh, name="ui-no-fill", daemon=True
                )
                self._reading.start()
            reading = self._reading
        reading.join(timeout=wait)
        return not reading.is_alive()

    @property
    def logged(self) -> int:
        """Opportunity records read (before scaling)."""
        return self._logged

    def by_slot(self, wait: float = 0.5) -> tuple[dict[int, SlotSupply], bool]:
        """Totals per slot, and whether they cover the whole log as of this call."""
        complete = self._read_in_background(wait)
        with self._lock:
            reasons: dict[int, dict[str, float]] = {}
            for (slot_id, reason), n in sorted(self._reasons.items()):
                reasons.setdefault(slot_id, {})[reason] = n
            totals = {
                slot_id: SlotSupply(
                    slot_id, requests, self._filled[slot_id], reasons.get(slot_id, {})
                )
                for slot_id, requests in sorted(self._requests.items())
            }
        return totals, complete

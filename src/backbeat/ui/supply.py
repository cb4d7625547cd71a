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
    """Running per-slot totals of the decision log; ``refresh`` reads what was appended."""

    def __init__(self, event_log_dir: Path) -> None:
        self._reader = EventLogReader(event_log_dir)
        self._requests: Counter[int] = Counter()
        self._filled: Counter[int] = Counter()
        self._reasons: Counter[tuple[int, str]] = Counter()
        self._logged = 0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            for record in self._reader.records():
                if _MARK not in record.payload:
                    continue
                try:
                    event = orjson.loads(record.payload)
                    slot_id = int(event["slot_id"])
                    sample = float((event.get("attrs") or {}).get("sample") or 1.0)
                except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                    continue
                weight = 1.0 / sample if sample > 0 else 1.0
                self._logged += 1
                self._requests[slot_id] += weight
                reason = event.get("reason")
                if reason:
                    self._reasons[(slot_id, str(reason))] += weight
                else:
                    self._filled[slot_id] += weight

    @property
    def logged(self) -> int:
        """Opportunity records read (before scaling)."""
        return self._logged

    def by_slot(self) -> dict[int, SlotSupply]:
        self.refresh()
        with self._lock:
            reasons: dict[int, dict[str, float]] = {}
            for (slot_id, reason), n in sorted(self._reasons.items()):
                reasons.setdefault(slot_id, {})[reason] = n
            return {
                slot_id: SlotSupply(
                    slot_id, requests, self._filled[slot_id], reasons.get(slot_id, {})
                )
                for slot_id, requests in sorted(self._requests.items())
            }

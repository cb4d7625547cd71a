"""Delivery state that decisions must respect: frequency-cap counters, spend, impressions.

Spend is kept in "CPM micros" (the sum of the CPM, in micros, of each impression), so
one impression adds exactly its CPM and budgets compare as integers: an impression at a
CPM of c micros costs c/1000 micros of budget. The in-memory ledger is the embedded
single-process default; a shared ledger (Redis) implements the same methods.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Protocol

from backbeat.serving.snapshot import ServableLineItem


def cap_window(item: ServableLineItem, now: float) -> int:
    """Start of the fixed, UTC-aligned cap window holding ``now``; -1 for whole-flight caps."""
    period = item.cap_period_seconds
    return -1 if period is None else int(now // period) * period


def fits_budget(spent_units: int, cpm_micros: int, budget_micros: int | None) -> bool:
    return budget_micros is None or spent_units + cpm_micros <= budget_micros * 1000


class Ledger(Protocol):
    def line_item_delivery(self, line_item_id: int) -> tuple[int, int]:
        """(spend in CPM micros, impressions) so far."""
        ...

    def try_record(self, item: ServableLineItem, listener: str, now: float) -> str | None:
        """Record one impression if cap, budgets and goal allow; else return why not."""
        ...


class MemoryLedger:
    """Process-local ledger, guarded by a lock so threaded callers cannot overspend."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caps: dict[tuple[int, str, int], int] = defaultdict(int)
        self._item_units: dict[int, int] = defaultdict(int)
        self._item_impressions: dict[int, int] = defaultdict(int)
        self._campaign_units: dict[int, int] = defaultdict(int)

    def seed(self, *, line_items: dict[int, tuple[int, int]], campaigns: dict[int, int]) -> None:
        """Start from delivery already counted (after a restart)."""
        with self._lock:
            for item_id, (units, impressions) in line_items.items():
                self._item_units[item_id] = units
                self._item_impressions[item_id] = impressions
            self._campaign_units.update(campaigns)

    def line_item_delivery(self, line_item_id: int) -> tuple[int, int]:
        return self._item_units.get(line_item_id, 0), self._item_impressions.get(line_item_id, 0)

    def cap_count(self, item: ServableLineItem, listener: str, now: float) -> int:
        return self._caps.get((item.id, listener, cap_window(item, now)), 0)

    def try_record(self, item: ServableLineItem, listener: str, now: float) -> str | None:
        with self._lock:
            cap_key = (item.id, listener, cap_window(item, now))
            if item.cap_count is not None and self._caps.get(cap_key, 0) >= item.cap_count:
                return "frequency-capped"
            if (
                item.goal_impressions is not None
                and self._item_impressions[item.id] >= item.goal_impressions
            ):
                return "goal-reached"
            if not fits_budget(self._item_units[item.id], item.cpm_micros, item.budget_micros):
                return "budget-exhausted"
            if not fits_budget(
                self._campaign_units[item.campaign_id], item.cpm_micros, item.campaign_budget_micros
            ):
                return "campaign-budget-exhausted"
            if item.cap_count is not None:
                self._caps[cap_key] += 1
            self._item_units[item.id] += item.cpm_micros
            self._item_impressions[item.id] += 1
            self._campaign_units[item.campaign_id] += item.cpm_micros
            return None

    def prune(self, now: float, keep_seconds: int = 8 * 86400) -> None:
        """Forget cap windows that ended; whole-flight counters stay."""
        with self._lock:
            stale = [key for key in self._caps if 0 <= key[2] < now - keep_seconds]
            for key in stale:
                del self._caps[key]

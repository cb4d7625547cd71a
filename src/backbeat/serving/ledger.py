"""Delivery state that decisions must respect: frequency-cap counters, spend, impressions.

Spend is counted in "CPM micros" (the sum of the charged CPM, in micros, of each
impression), so one impression adds exactly its price and budgets compare as integers:
an impression at a CPM of c micros costs c/1000 micros of budget.

Two implementations share the ``Ledger`` protocol: ``MemoryLedger`` (one process, the
embedded default) and ``RedisLedger`` (``serving/redis_ledger.py``, many replicas).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from backbeat.serving.snapshot import ServableLineItem

DAY = 86400


def day_of(now: float) -> int:
    return int(now // DAY)


def fits(spent_units: int, price_units: int, budget_micros: int | None) -> bool:
    return budget_micros is None or spent_units + price_units <= budget_micros * 1000


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a line item has delivered so far (across replicas where the ledger is shared)."""

    spend_units: int = 0
    impressions: int = 0
    today_units: int = 0


class Ledger(Protocol):
    """What decisions need from delivery state; hot-path methods must not block on I/O."""

    def delivery(self, item: ServableLineItem, now: float) -> Delivery:
        """Delivered so far; local memory only."""
        ...

    def budget_block(self, item: ServableLineItem, price_units: int, now: float) -> str | None:
        """Why ``item`` cannot spend ``price_units`` now (lifetime, daily, campaign, goal), or None."""
        ...

    def acquire_caps(
        self, listener: str, candidates: Sequence[ServableLineItem], now: float
    ) -> tuple[int | None, str]:
        """Atomically count one ad for the first candidate under all its caps; its index, or None and why.

        At most one network round trip, and none when no candidate has a cap.
        """
        ...

    def commit_spend(self, item: ServableLineItem, price_units: int, now: float) -> None:
        """Record a fill at its charged price; local, flushed in the background where shared."""
        ...

    def add_attempts(self, attempts: dict[int, int]) -> dict[int, int]:
        """Publish pacing attempts per line item; returns totals across replicas (off the hot path)."""
        ...


class MemoryLedger:
    """Process-local ledger, guarded by a lock so threaded callers cannot overspend."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caps: dict[tuple[str, str, int | None, int], int] = defaultdict(int)
        self._units: dict[int, int] = defaultdict(int)
        self._impressions: dict[int, int] = defaultdict(int)
        self._daily: dict[tuple[int, int], int] = defaultdict(int)
        self._campaign_units: dict[int, int] = defaultdict(int)
        self._attempts: dict[int, int] = defaultdict(int)

    def seed(self, *, line_items: dict[int, tuple[int, int]], campaigns: dict[int, int]) -> None:
        """Start from delivery already counted (after a restart)."""
        with self._lock:
            for item_id, (units, impressions) in line_items.items():
                self._units[item_id] = units
                self._impressions[item_id] = impressions
            self._campaign_units.update(campaigns)

    def delivery(self, item: ServableLineItem, now: float) -> Delivery:
        return Delivery(
            self._units.get(item.id, 0),
            self._impressions.get(item.id, 0),
            self._daily.get((item.id, day_of(now)), 0),
        )

    def budget_block(self, item: ServableLineItem, price_units: int, now: float) -> str | None:
        if (
            item.goal_impressions is not None
            and self._impressions.get(item.id, 0) >= item.goal_impressions
        ):
            return "goal-reached"
        if not fits(self._units.get(item.id, 0), price_units, item.budget_micros):
            return "budget-exhausted"
        if not fits(
            self._daily.get((item.id, day_of(now)), 0), price_units, item.daily_budget_micros
        ):
            return "daily-budget-exhausted"
        if not fits(
            self._campaign_units.get(item.campaign_id, 0), price_units, item.campaign_budget_micros
        ):
            return "campaign-budget-exhausted"
        return None

    def acquire_caps(
        self, listener: str, candidates: Sequence[ServableLineItem], now: float
    ) -> tuple[int | None, str]:
        with self._lock:
            for position, item in enumerate(candidates):
                # The window length is part of the key: 3/hour and 5/60 min are different counters.
                keys = [
                    (rule.scope, listener, rule.window_seconds, rule.window_start(now))
                    for rule in item.caps
                ]
                if all(
                    self._caps.get(key, 0) < rule.count
                    for key, rule in zip(keys, item.caps, strict=True)
                ):
                    for key in keys:
                        self._caps[key] += 1
                    return position, ""
        return None, "frequency-capped"

    def commit_spend(self, item: ServableLineItem, price_units: int, now: float) -> None:
        with self._lock:
            self._units[item.id] += price_units
            self._impressions[item.id] += 1
            self._daily[(item.id, day_of(now))] += price_units
            self._campaign_units[item.campaign_id] += price_units

    def add_attempts(self, attempts: dict[int, int]) -> dict[int, int]:
        with self._lock:
            for item_id, count in attempts.items():
                self._attempts[item_id] += count
            return dict(self._attempts)

    def prune(self, now: float, keep_seconds: int = 8 * DAY) -> None:
        """Forget cap windows and days that ended long ago; whole-flight counters stay."""
        with self._lock:
            for key in [key for key in self._caps if 0 <= key[3] < now - keep_seconds]:
                del self._caps[key]
            for key in [key for key in self._daily if key[1] < day_of(now) - 2]:
                del self._daily[key]

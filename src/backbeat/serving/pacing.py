"""Even pacing: a pass-through probability per line item, adjusted every short interval.

The plan for a line item is its goal (impressions) or budget spread over its flight in
proportion to the daily traffic curve. Every ``interval`` seconds the controller compares
what was delivered (across replicas) with the plan and sets the probability so that, at
the rate line items are reaching the pacing gate, delivery catches up with the plan over
the next ``horizon`` seconds. Guaranteed line items start from their allocation-plan
share before any rate has been observed.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from backbeat.catalog.vocabulary import Pacing
from backbeat.serving.ledger import Ledger
from backbeat.serving.snapshot import ServableLineItem, Snapshot

HOUR = 3600
# Share of a day's listening per UTC hour: quiet nights, commute and evening peaks.
DEFAULT_CURVE: tuple[float, ...] = (
    1.2, 0.8, 0.6, 0.5, 0.5, 0.8, 2.0, 4.5, 6.5, 5.5, 4.6, 4.4,
    4.8, 4.9, 4.6, 4.7, 5.6, 6.8, 7.2, 6.4, 5.6, 4.8, 3.4, 2.2,
)  # fmt: skip


class TrafficCurve:
    """Cumulative expected traffic over time from a 24-hour profile (UTC hours)."""

    def __init__(self, hourly: Sequence[float] = DEFAULT_CURVE) -> None:
        if len(hourly) != 24 or any(weight <= 0 for weight in hourly):
            raise ValueError("a traffic curve needs 24 positive hourly weights")
        total = sum(hourly)
        self.hourly = tuple(weight / total for weight in hourly)
        self._cumulative = [0.0]
        for weight in self.hourly:
            self._cumulative.append(self._cumulative[-1] + weight)

    def mass(self, t: float) -> float:
        """Expected traffic from the epoch to ``t``, in days of traffic."""
        days, rest = divmod(t, 86400.0)
        hour, seconds = divmod(rest, HOUR)
        hour = int(hour)
        return days + self._cumulative[hour] + self.hourly[hour] * seconds / HOUR

    def fraction(self, start: float, end: float, t: float) -> float:
        """Share of the traffic of [start, end) expected before ``t``."""
        if t <= start:
            return 0.0
        if t >= end:
            return 1.0
        return (self.mass(t) - self.mass(start)) / (self.mass(end) - self.mass(start))


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """The allocation plan's numbers for one guaranteed line item."""

    share: float
    supply_forecast: int | None = None


@dataclass
class PacingController:
    curve: TrafficCurve = field(default_factory=TrafficCurve)
    interval: float = 5.0
    horizon: float = 300.0
    plan: Mapping[int, PlanEntry] = field(default_factory=dict)
    _probability: dict[int, float] = field(default_factory=dict)
    _attempts: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    _last_update: float | None = None
    _last_totals: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def probability(self, item: ServableLineItem) -> float:
        if item.pacing != Pacing.EVEN:
            return 1.0
        found = self._probability.get(item.id)
        if found is not None:
            return found
        entry = self.plan.get(item.id)
        return entry.share if entry is not None else 1.0

    def record_attempt(self, item: ServableLineItem) -> None:
        """The item was eligible and reached the pacing gate (counted whatever the coin says)."""
        self._attempts[item.id] += 1

    def target(self, item: ServableLineItem) -> tuple[str, int] | None:
        if item.goal_impressions:
            return "impressions", item.goal_impressions
        if item.budget_micros:
            return "units", item.budget_micros * 1000
        return None

    def maybe_update(self, now: float, snapshot: Snapshot, ledger: Ledger) -> bool:
        """Recompute probabilities if an interval has passed; cheap to call on every decision."""
        if self._last_update is not None and now - self._last_update < self.interval:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._update(now, snapshot, ledger)
        finally:
            self._lock.release()
        return True

    def _update(self, now: float, snapshot: Snapshot, ledger: Ledger) -> None:
        attempts, self._attempts = self._attempts, defaultdict(int)
        totals = ledger.add_attempts(dict(attempts))
        elapsed = None if self._last_update is None else now - self._last_update
        self._last_update = now
        for item in snapshot.line_items:
            if item.pacing != Pacing.EVEN:
                continue
            target = self.target(item)
            if target is None:
                continue
            metric, total = target
            global_attempts = totals.get(item.id, 0) - self._last_totals.get(item.id, 0)
            self._last_totals[item.id] = totals.get(item.id, 0)
            if not elapsed or global_attempts <= 0:
                continue
            delivery = ledger.delivery(item, now)
            delivered = delivery.impressions if metric == "impressions" else delivery.spend_units
            per_unit = 1 if metric == "impressions" else max(item.cpm_micros, 1)
            horizon_end = min(now + self.horizon, item.end_ts)
            planned = total * self.curve.fraction(item.start_ts, item.end_ts, horizon_end)
            wanted = max(planned - delivered, 0.0) / per_unit  # impressions over the horizon
            expected_attempts = global_attempts / elapsed * max(horizon_end - now, self.interval)
            expected_attempts *= self._traffic_ratio(now, horizon_end, elapsed)
            probability = wanted / expected_attempts if expected_attempts > 0 else 1.0
            self._probability[item.id] = min(1.0, max(0.0, probability))

    def _traffic_ratio(self, now: float, horizon_end: float, elapsed: float) -> float:
        """Expected traffic over the horizon relative to the rate seen in the last interval."""
        past = self.curve.mass(now) - self.curve.mass(now - elapsed)
        ahead = self.curve.mass(horizon_end) - self.curve.mass(now)
        span = max(horizon_end - now, self.interval)
        if past <= 0:
            return 1.0
        return (ahead / span) / (past / elapsed)

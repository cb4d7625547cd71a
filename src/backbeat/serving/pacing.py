"""Pacing: how often each even-paced line item may take a request it is eligible for.

Even pacing spreads what is left of a line item's goal (impressions) or budget over what is
left of its flight in proportion to the daily traffic curve, and what is left of today's
budget over the rest of the day; ASAP is never throttled. Every ``interval`` seconds the
controller turns that into a pass-through probability per line item::

    probability = wanted impressions per unit of traffic
                  / (attempts per unit of traffic × impressions per attempt let through)

* *Wanted* compares delivered with planned. The plan is the goal times the curve's share
  of the flight; the controller aims to be back on it ``catch_up`` seconds from now, but
  never asks for less than ``catch_up_limits[0]`` or more than ``catch_up_limits[1]``
  times the even rate (what is left over the traffic left). So a deficit (a late booking,
  an outage, a slow start) is made up smoothly rather than in a burst, and a surplus slows
  delivery without stopping it. Near the end both collapse to "what is left over the
  traffic left", which is what lands a flight on its goal.
* *Attempts* are how often the item reached the pacing gate (eligible, in budget), summed
  across replicas through ``Ledger.add_attempts``. They are counted per unit of curve
  mass (expected traffic), not per second, so the estimate does not sag at night and
  swell at the evening peak; older intervals are forgotten with time constant ``memory``.
* *Impressions per attempt let through* is below 1 when a frequency cap or a better item
  in the same decision takes the request; it comes from the ledger's delivered count.

The estimates are smoothed (over ``memory``, five minutes, stretched for thin supply until
``min_evidence`` attempts are in view) but the probability acts on the very next request,
so the loop has no lag to oscillate on; the plan error is corrected over ``catch_up``
(half an hour), far slower than the ``interval``. Until a rate has been seen
(``warmup_attempts`` attempts or ``warmup_seconds``) a line item keeps its starting
probability: its allocation-plan share when the plan has one, otherwise
``initial_probability`` (0: wait one warm-up rather than overshoot in the first seconds).
It then rises at most ``max_rise``-fold per interval.

Every replica runs its own controller on the same shared numbers (attempt totals and
delivery from the ledger), so they compute the same probabilities and together let
through what one server would.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from backbeat.catalog.vocabulary import Pacing, Tier
from backbeat.observability import log
from backbeat.serving.ledger import Delivery, Ledger
from backbeat.serving.snapshot import ServableLineItem, Snapshot

__all__ = [
    "DEFAULT_CURVE",
    "PacingController",
    "PlanEntry",
    "PlanSource",
    "TrafficCurve",
]

HOUR = 3600
DAY = 86400
# Share of a day's listening per UTC hour: quiet nights, commute and evening peaks.
DEFAULT_CURVE: tuple[float, ...] = (
    1.2, 0.8, 0.6, 0.5, 0.5, 0.8, 2.0, 4.5, 6.5, 5.5, 4.6, 4.4,
    4.8, 4.9, 4.6, 4.7, 5.6, 6.8, 7.2, 6.4, 5.6, 4.8, 3.4, 2.2,
)  # fmt: skip
# Pseudo-counts for "impressions per attempt let through": starts at 1 and needs a few
# real passes to move, so one unlucky interval cannot double a probability.
_EFFICIENCY_PRIOR = 3.0
_MIN_EFFICIENCY = 0.05
_MIN_RISE_STEP = 0.05


class TrafficCurve:
    """Cumulative expected traffic over time from a 24-hour profile (UTC hours)."""

    def __init__(self, hourly: Sequence[float] = DEFAULT_CURVE) -> None:
        if len(hourly) != 24 or any(not weight > 0 or math.isinf(weight) for weight in hourly):
            raise ValueError("a traffic curve needs 24 positive, finite hourly weights")
        total = math.fsum(hourly)
        self.hourly = tuple(weight / total for weight in hourly)
        self._cumulative = [0.0]
        for weight in self.hourly:
            self._cumulative.append(self._cumulative[-1] + weight)
        self._cumulative[-1] = 1.0  # exact, so a whole day is exactly one unit of mass

    def __repr__(self) -> str:
        return f"TrafficCurve({[round(weight, 4) for weight in self.hourly]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrafficCurve) and self.hourly == other.hourly

    def __hash__(self) -> int:
        return hash(self.hourly)

    def _split(self, t: float) -> tuple[float, float]:
        """Whole days since the epoch and the mass within the day, kept apart for precision."""
        days, rest = divmod(t, float(DAY))
        hour, seconds = divmod(rest, float(HOUR))
        position = int(hour)
        return days, self._cumulative[position] + self.hourly[position] * seconds / HOUR

    def mass(self, t: float) -> float:
        """Expected traffic from the epoch to ``t``, in days of traffic."""
        days, within = self._split(t)
        return days + within

    def between(self, start: float, end: float) -> float:
        """Expected traffic in [start, end), in days of traffic (0 for an empty span)."""
        if end <= start:
            return 0.0
        start_days, start_within = self._split(start)
        end_days, end_within = self._split(end)
        return max((end_days - start_days) + (end_within - start_within), 0.0)

    def fraction(self, start: float, end: float, t: float) -> float:
        """Share of the traffic of [start, end) expected before ``t``."""
        if t <= start:
            return 0.0
        if t >= end:
            return 1.0
        return min(self.between(start, t) / self.between(start, end), 1.0)


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """The allocation plan's numbers for one guaranteed line item."""

    share: float  # of its eligible supply it needs: the starting pass-through probability
    supply_forecast: int | None = None  # eligible requests forecast over the rest of its flight
    # HWM/SHALE plans (``serving.plan``): allocation order and the plan's numbers. With
    # them the online rule decides which planned item a request goes to, and pacing only
    # shapes that in time (starting at 1).
    rank: int | None = None
    alpha: float | None = None
    theta: float | None = None
    weight: float = 1.0
    dual: float | None = None  # SHALE's stage-one α: servers compute β from it


class PlanSource(Protocol):
    """Where a controller gets its allocation plan (``serving.plan.PlanFile``)."""

    def poll(self) -> tuple[Mapping[int, PlanEntry], TrafficCurve | None] | None:
        """The plan and, if it carries one, a learned curve when they changed; else None."""
        ...


@dataclass(slots=True)
class _Pace:
    """One line item's estimates; sums decay with the controller's ``memory``."""

    probability: float
    attempts: float = 0.0  # attempts seen, across replicas
    traffic: float = 0.0  # curve mass over which they were seen
    passed: float = 0.0  # attempts let through (attempts × the probability then)
    delivered: float = 0.0  # impressions that came of them
    observed_seconds: float = 0.0
    last_attempts: int | None = None  # ledger totals at the previous update
    last_impressions: int = 0

    def warmed_up(self, attempts: int, seconds: float) -> bool:
        return self.attempts >= attempts or self.observed_seconds >= seconds


@dataclass
class PacingController:
    """Per-line-item pass-through probabilities for even pacing; one per server process.

    ``probability`` and ``record_attempt`` are the hot path (a dict lookup, a counter);
    ``maybe_update`` recomputes at most once per ``interval`` and never blocks a decision.
    """

    curve: TrafficCurve = field(default_factory=TrafficCurve)
    interval: float = 5.0
    catch_up: float = 1800.0
    catch_up_limits: tuple[float, float] = (0.5, 1.5)
    memory: float = 300.0
    min_evidence: float = 50.0
    warmup_attempts: int = 20
    warmup_seconds: float = 300.0
    initial_probability: float = 0.0
    max_rise: float = 2.0
    plan: Mapping[int, PlanEntry] = field(default_factory=dict)
    plan_source: PlanSource | None = None
    _probability: dict[int, float] = field(default_factory=dict, repr=False)
    _paces: dict[int, _Pace] = field(default_factory=dict, repr=False)
    _attempts: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int), repr=False)
    _last_update: float | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- hot path -----------------------------------------------------------------------

    def probability(self, item: ServableLineItem) -> float:
        if item.pacing != Pacing.EVEN:
            return 1.0
        found = self._probability.get(item.id)
        return found if found is not None else self._initial(item)

    def record_attempt(self, item: ServableLineItem) -> None:
        """The item was eligible and reached the pacing gate (counted whatever the coin says)."""
        self._attempts[item.id] += 1

    # -- control ------------------------------------------------------------------------

    @property
    def probabilities(self) -> dict[int, float]:
        """Current probabilities of the even-paced line items seen so far (for metrics, benches)."""
        return dict(self._probability)

    def target(self, item: ServableLineItem) -> tuple[str, int] | None:
        """The lifetime quantity paced: impressions, or spend in CPM-micro units."""
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

    def _initial(self, item: ServableLineItem) -> float:
        if self.target(item) is None and not item.daily_budget_micros:
            return 1.0  # nothing to spread
        entry = self.plan.get(item.id)
        if entry is not None:
            if entry.alpha is not None:
                return 1.0  # the plan's online rule already thins its supply
            return min(1.0, max(0.0, entry.share))
        return self.initial_probability

    def _poll_plan(self) -> None:
        if self.plan_source is None:
            return
        try:
            update = self.plan_source.poll()
        except Exception:  # a bad plan must not stop decisions: keep the last one
            log.exception("allocation plan reload failed")
            return
        if update is not None:
            self.plan, curve = update
            if curve is not None:
                self.curve = curve

    def _update(self, now: float, snapshot: Snapshot, ledger: Ledger) -> None:
        attempts, self._attempts = self._attempts, defaultdict(int)
        totals = ledger.add_attempts(dict(attempts))
        self._poll_plan()
        previous, self._last_update = self._last_update, now
        elapsed = 0.0 if previous is None else max(now - previous, 0.0)
        traffic = self.curve.between(previous, now) if previous is not None else 0.0
        keep = math.exp(-elapsed / self.memory)
        paces: dict[int, _Pace] = {}
        probabilities: dict[int, float] = {}
        for item in snapshot.line_items:
            if item.pacing != Pacing.EVEN:
                continue
            pace = self._paces.get(item.id) or _Pace(probability=self._initial(item))
            paces[item.id] = pace
            delivery = ledger.delivery(item, now)
            total = totals.get(item.id, 0)
            if pace.last_attempts is not None and elapsed > 0:
                seen = max(total - pace.last_attempts, 0)
                # Thin supply: forget no faster than keeps ``min_evidence`` attempts in view.
                forget = keep
                if pace.attempts * keep < self.min_evidence:
                    forget = min(1.0, self.min_evidence / pace.attempts) if pace.attempts else 1.0
                pace.attempts = pace.attempts * forget + seen
                pace.traffic = pace.traffic * forget + traffic
                pace.passed = pace.passed * forget + seen * pace.probability
                pace.delivered = pace.delivered * forget + max(
                    delivery.impressions - pace.last_impressions, 0
                )
                if item.start_ts <= now < item.end_ts:
                    pace.observed_seconds += elapsed
            pace.last_attempts = total
            pace.last_impressions = delivery.impressions
            if item.start_ts <= now < item.end_ts:
                pace.probability = self._next_probability(item, pace, delivery, now)
            probabilities[item.id] = pace.probability
        self._paces = paces
        self._probability = probabilities

    def _next_probability(
        self, item: ServableLineItem, pace: _Pace, delivery: Delivery, now: float
    ) -> float:
        wanted = self.wanted_rate(item, delivery, now)
        if wanted is None:
            return 1.0
        if not pace.warmed_up(self.warmup_attempts, self.warmup_seconds):
            return pace.probability
        if pace.attempts <= 0 or pace.traffic <= 0:
            # Warm and still no attempt: supply is too thin to pace, take all of it.
            return 1.0 if wanted > 0 else 0.0
        attempts_rate = pace.attempts / pace.traffic
        efficiency = (pace.delivered + _EFFICIENCY_PRIOR) / (pace.passed + _EFFICIENCY_PRIOR)
        efficiency = min(1.0, max(_MIN_EFFICIENCY, efficiency))
        probability = min(1.0, max(0.0, wanted / (attempts_rate * efficiency)))
        # Bounded rise: a noisy estimate (or a sudden change of competition) cannot turn a
        # trickle into a flood within one interval.
        return min(
            probability, max(pace.probability * self.max_rise, pace.probability + _MIN_RISE_STEP)
        )

    def wanted_rate(self, item: ServableLineItem, delivery: Delivery, now: float) -> float | None:
        """Impressions wanted per unit of traffic (day of curve mass) from now; None: unpaced.

        The lifetime goal or budget is compared with its plan and the daily budget is
        spread over the rest of the day; the smaller rate wins.
        """
        rates: list[float] = []
        per_impression = _units_per_impression(item, delivery)
        mass = self.curve.mass
        at = mass(now)
        target = self.target(item)
        if target is not None:
            metric, total_units = target
            if metric == "impressions":
                total, done = float(total_units), float(delivery.impressions)
            else:
                total, done = total_units / per_impression, delivery.spend_units / per_impression
            begin, end = mass(item.start_ts), mass(item.end_ts)
            horizon = mass(min(now + self.catch_up, item.end_ts))
            even = max(total - done, 0.0) / (end - at)
            planned = total * (horizon - begin) / (end - begin)
            to_plan = max(planned - done, 0.0) / (horizon - at)
            low, high = self.catch_up_limits
            rates.append(min(max(to_plan, low * even), high * even))
        if item.daily_budget_micros:
            day_end = mass(min((now // DAY + 1) * DAY, item.end_ts))
            today_left = max(item.daily_budget_micros * 1000 - delivery.today_units, 0)
            rates.append(today_left / per_impression / (day_end - at))
        return min(rates) if rates else None


def _units_per_impression(item: ServableLineItem, delivery: Delivery) -> float:
    """Spend units one impression costs: the fixed CPM, or the average auction price so far."""
    if item.tier == Tier.NON_GUARANTEED and delivery.impressions:
        return max(delivery.spend_units / delivery.impressions, 1.0)
    return float(max(item.cpm_micros, 1))

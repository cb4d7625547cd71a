"""Delivery state that decisions must respect: frequency-cap counters, spend, impressions.

Spend is counted in "CPM micros" (the sum of the charged CPM, in micros, of each
impression), so one impression adds exactly its price and budgets compare as integers:
an impression at a CPM of c micros costs c/1000 micros of budget.

**One budget currency: counted impressions.** Budgets and goals are spent by impressions
counted from the event log (what reports show and advertisers pay for). A decision
reserves its price until its impression is counted or its render window passes (then the
reservation is released: the ad never played). So the ledger's spend is *counted +
reserved*: it never overspends (in one process: several workers sharing a log see each
other's fills a tick late, so use Redis for exact budgets across workers), a goal is reached in counted impressions even when a
share of served ads never render, and a restarted server rebuilds both halves from the
event log (impression records and ``fill`` records) before serving (``serving/reconcile.py``).

Two implementations share the ``Ledger`` protocol and that rule: ``MemoryLedger`` (one
process, the embedded default) and ``RedisLedger`` (``serving/redis_ledger.py``, many
replicas: reservations out of budget leases, counted and reserved spend kept in Redis by
one reconciler per event log, ``serving/redis_reconcile.py``).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from backbeat.serving.seen_ids import SeenIds
from backbeat.serving.snapshot import CapRule, ServableLineItem

DAY = 86400


def day_of(now: float) -> int:
    return int(now // DAY)


def fits(spent_units: int, price_units: int, budget_micros: int | None) -> bool:
    return budget_micros is None or spent_units + price_units <= budget_micros * 1000


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a line item has delivered so far (across replicas where the ledger is shared).

    ``impressions`` is what pacing aims with: counted impressions plus the reserved ones
    expected to render (``reserved × render rate``), so pacing compensates for ads that
    never play.
    """

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

    def commit_spend(
        self, item: ServableLineItem, price_units: int, now: float, decision_id: str = ""
    ) -> None:
        """Record a fill at its charged price; local, flushed in the background where shared."""
        ...

    def caps_allow(
        self,
        listener: str,
        item: ServableLineItem,
        now: float,
        counted: ServableLineItem | None = None,
    ) -> bool:
        """Whether ``item`` was under all its caps for ``listener`` before this decision.

        Reads, counts nothing. ``counted`` is the winner whose caps were just counted: a
        counter both share is read as it was before (the runner-up of a second-price
        auction is judged on the state the auction saw).
        """
        ...

    def add_attempts(self, attempts: dict[int, int]) -> dict[int, int]:
        """Publish pacing attempts per line item; returns totals across replicas (off the hot path)."""
        ...


def shared_caps(item: ServableLineItem, counted: ServableLineItem | None) -> frozenset[CapRule]:
    """The cap counters of ``item`` that counting ``counted`` has just moved."""
    if counted is None or not counted.caps:
        return frozenset()
    moved = {(rule.scope, rule.window_seconds) for rule in counted.caps}
    return frozenset(rule for rule in item.caps if (rule.scope, rule.window_seconds) in moved)


DEFAULT_RENDER_WINDOW_S = 300.0
FLIGHT_GRACE_S = 7 * DAY
DEFAULT_DEDUP_S = 7 * DAY


def decision_ts(decision_id: str) -> float:
    """When a decision was made: its id starts with the milliseconds (``new_decision_id``)."""
    try:
        return int(decision_id[:12], 16) / 1000
    except ValueError:
        return 0.0


# A reservation: (line item id, campaign id, units, ts). A plain tuple of numbers on purpose:
# the cyclic GC stops tracking those after their first collection, while a dataclass
# instance stays tracked, and a busy server holds a render window of them (millions): every
# full collection walked them all, a stall of hundreds of milliseconds on the event loop.
_Reservation = tuple[int, int, int, float]


class MemoryLedger:
    """Process-local ledger, guarded by a lock so threaded callers cannot overspend.

    Spend is counted + reserved (see the module docstring). Memory stays bounded: cap
    windows are pruned once over, reservations live one render window, and the ids of
    counted decisions (to count a replayed pixel once) live as long as a tracking URL.
    """

    def __init__(
        self,
        *,
        render_window_s: float = DEFAULT_RENDER_WINDOW_S,
        dedup_s: float = DEFAULT_DEDUP_S,
    ) -> None:
        self._lock = threading.Lock()
        self.render_window_s = render_window_s
        self.dedup_s = dedup_s
        self._caps: dict[tuple[str, str, int | None, int], int] = defaultdict(int)
        # Windowed cap counters by the second their window ends: pruning pops the ended
        # buckets, so its cost is what ended, not every counter held (millions of
        # listeners' counters were walked every second, under the lock decisions take).
        self._cap_ends: dict[int, list[tuple[str, str, int | None, int]]] = defaultdict(list)
        self._daily_kept_from: int | None = None
        # Whole-flight counters by scope, and the latest flight end each scope was counted
        # under: freed once that flight is long over and no live line item has the scope.
        self._flight_keys: dict[str, list[tuple[str, str, int | None, int]]] = defaultdict(list)
        self._flight_ends: dict[str, float] = {}
        self._units: dict[int, int] = defaultdict(int)
        self._impressions: dict[int, int] = defaultdict(int)
        self._daily: dict[tuple[int, int], int] = defaultdict(int)
        self._campaign_units: dict[int, int] = defaultdict(int)
        self._attempts: dict[int, int] = defaultdict(int)
        self._reserved: dict[str, _Reservation] = {}  # decision id -> reservation, oldest first
        self._reserved_count: dict[int, int] = defaultdict(int)
        self._counted = SeenIds()  # decision ids already counted, while a replay could come
        self.rendered = 0
        self.expired = 0

    def seed(self, *, line_items: dict[int, tuple[int, int]], campaigns: dict[int, int]) -> None:
        """Start from delivery already counted (after a restart)."""
        with self._lock:
            for item_id, (units, impressions) in line_items.items():
                self._units[item_id] = units
                self._impressions[item_id] = impressions
            self._campaign_units.update(campaigns)

    @property
    def render_rate(self) -> float:
        """Share of reservations that became counted impressions (a prior of 1 until known)."""
        return (self.rendered + 1) / (self.rendered + self.expired + 1)

    def delivery(self, item: ServableLineItem, now: float) -> Delivery:
        reserved = self._reserved_count.get(item.id, 0)
        expected_lost = round(reserved * (1.0 - self.render_rate))
        return Delivery(
            self._units.get(item.id, 0),
            self._impressions.get(item.id, 0) - expected_lost,
            self._daily.get((item.id, day_of(now)), 0),
        )

    def budget_block(self, item: ServableLineItem, price_units: int, now: float) -> str | None:
        # Runs for every candidate walked: an unset budget costs no counter lookup, and the
        # ``fits`` tests are inlined (a call per test costs more than the test).
        if (
            item.goal_impressions is not None
            and self._impressions.get(item.id, 0) >= item.goal_impressions
        ):
            return "goal-reached"
        budget = item.budget_micros
        if budget is not None and self._units.get(item.id, 0) + price_units > budget * 1000:
            return "budget-exhausted"
        daily = item.daily_budget_micros
        if (
            daily is not None
            and self._daily.get((item.id, int(now // DAY)), 0) + price_units > daily * 1000
        ):
            return "daily-budget-exhausted"
        spent = self._campaign_units.get(item.campaign_id, 0)
        if spent + price_units > item.campaign_budget_micros * 1000:
            return "campaign-budget-exhausted"
        return None

    def caps_allow(
        self,
        listener: str,
        item: ServableLineItem,
        now: float,
        counted: ServableLineItem | None = None,
    ) -> bool:
        if not item.caps:
            return True
        # ``shared_caps`` inlined: a counter ``counted`` just moved is read one lower, and
        # only a counter in use is asked whether it moved (the runner-up check of an auction).
        moved = counted.caps if counted is not None else ()
        caps = self._caps
        for rule in item.caps:
            window = rule.window_seconds
            start = -1 if window is None else int(now // window) * window
            used = caps.get((rule.scope, listener, window, start), 0)
            if used and any(
                other.scope == rule.scope and other.window_seconds == window for other in moved
            ):
                used -= 1
            if used >= rule.count:
                return False
        return True

    def acquire_caps(
        self, listener: str, candidates: Sequence[ServableLineItem], now: float
    ) -> tuple[int | None, str]:
        with self._lock:
            caps = self._caps
            for position, item in enumerate(candidates):
                if not item.caps:
                    return position, ""
                # The window length is part of the key: 3/hour and 5/60 min are different
                # counters. Keys as ``CapRule.window_start`` makes them, computed inline.
                keys = []
                for rule in item.caps:
                    window = rule.window_seconds
                    start = -1 if window is None else int(now // window) * window
                    key = (rule.scope, listener, window, start)
                    used = caps.get(key, 0)
                    if used >= rule.count:
                        break
                    keys.append((key, used))
                else:
                    for key, used in keys:
                        if not used:  # a new counter: remember when it can go
                            if key[2] is not None:
                                self._cap_ends[key[3] + key[2]].append(key)
                            else:
                                self._flight_keys[key[0]].append(key)
                                if self._flight_ends.get(key[0], -1.0) < item.end_ts:
                                    self._flight_ends[key[0]] = item.end_ts
                        caps[key] = used + 1
                    return position, ""
        return None, "frequency-capped"

    def commit_spend(
        self, item: ServableLineItem, price_units: int, now: float, decision_id: str = ""
    ) -> None:
        item_id, campaign_id = item.id, item.campaign_id
        with self._lock:
            self._units[item_id] += price_units  # ``_add`` inlined: once per fill
            self._impressions[item_id] += 1
            self._daily[(item_id, int(now // DAY))] += price_units
            self._campaign_units[campaign_id] += price_units
            if decision_id:
                self._reserved[decision_id] = (item_id, campaign_id, price_units, now)
                self._reserved_count[item_id] += 1

    def _add(self, item_id: int, campaign_id: int, units: int, ts: float, sign: int) -> None:
        self._units[item_id] += sign * units
        self._impressions[item_id] += sign
        self._daily[(item_id, day_of(ts))] += sign * units
        self._campaign_units[campaign_id] += sign * units

    # -- reconciliation with counted delivery (``serving/reconcile.py``) ---------------

    def count_impression(
        self, decision_id: str, item_id: int, campaign_id: int, units: int, now: float
    ) -> bool:
        """An impression read from the event log; True if it counted (first for its decision)."""
        ts = decision_ts(decision_id) or now
        with self._lock:
            if self._counted.seen(decision_id, ts):
                return False
            self._counted.add(decision_id, ts)
            reservation = self._reserved.pop(decision_id, None)
            if reservation is not None:  # already in spend: the reservation becomes counted
                reserved_item, _, reserved_units, _ = reservation
                self._reserved_count[reserved_item] -= 1
                self.rendered += 1
                if reserved_units != units:  # never, unless the price changed in flight
                    self._add(item_id, campaign_id, units - reserved_units, ts, 1)
                    self._add(item_id, campaign_id, 0, ts, -1)  # the impression stays one
                return True
            self._add(item_id, campaign_id, units, ts, 1)
            return True

    def reserve(
        self, decision_id: str, item_id: int, campaign_id: int, units: int, now: float
    ) -> None:
        """A fill read from the event log (another worker's, or one made before a restart)."""
        ts = decision_ts(decision_id) or now
        with self._lock:
            if (
                decision_id in self._reserved
                or self._counted.seen(decision_id, ts)
                or ts < now - self.render_window_s
            ):
                return
            self._add(item_id, campaign_id, units, ts, 1)
            self._reserved[decision_id] = (item_id, campaign_id, units, ts)
            self._reserved_count[item_id] += 1

    def expire(self, now: float) -> int:
        """Release reservations older than the render window; returns how many."""
        released = 0
        with self._lock:
            cutoff = now - self.render_window_s
            stale = []
            for key, held in self._reserved.items():  # oldest first (roughly: peers' arrive late)
                if held[3] >= cutoff:
                    break
                stale.append(key)
            for key in stale:
                item_id, campaign_id, units, ts = self._reserved.pop(key)
                self._reserved_count[item_id] -= 1
                self._add(item_id, campaign_id, units, ts, -1)
                released += 1
            self.expired += released
        # Outside the lock decisions take: a step of sealing or releasing old hours of ids.
        self._counted.forget_before(now - self.dedup_s, now)
        return released

    def reserved(self) -> int:
        return len(self._reserved)

    def add_attempts(self, attempts: dict[int, int]) -> dict[int, int]:
        with self._lock:
            for item_id, count in attempts.items():
                self._attempts[item_id] += count
            return dict(self._attempts)

    def prune(self, now: float, live_scopes: Collection[str] | None = None) -> None:
        """Forget cap windows that ended and days long past.

        Whole-flight counters go too once their flight ended ``FLIGHT_GRACE_S`` ago and no
        line item in ``live_scopes`` (the snapshot's cap scopes) still counts on them: a
        paused line item keeps its counters, a campaign extended within the grace too.
        """
        with self._lock:
            caps, ends = self._caps, self._cap_ends
            for end in [end for end in ends if end <= now]:
                for key in ends.pop(end):
                    caps.pop(key, None)
            if live_scopes is not None:
                over = now - FLIGHT_GRACE_S
                for scope in [
                    scope
                    for scope, end in self._flight_ends.items()
                    if end <= over and scope not in live_scopes
                ]:
                    del self._flight_ends[scope]
                    for key in self._flight_keys.pop(scope, ()):
                        caps.pop(key, None)
            oldest = day_of(now) - 2
            if oldest != self._daily_kept_from:  # days end once a day: walk them only then
                for key in [key for key in self._daily if key[1] < oldest]:
                    del self._daily[key]
                self._daily_kept_from = oldest

    def cap_counters(self) -> int:
        return len(self._caps)

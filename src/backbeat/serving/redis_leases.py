"""Budget leases of the shared ledger: spend locally from chunks granted atomically by Redis.

See "Budgets" and "Lease size" in ``serving/redis_ledger.py``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backbeat.serving.redis_breaker import RedisUnavailable

MIN_LEASE_IMPRESSIONS = 4
LEASE_SECONDS = 10.0  # a lease should last about this long at the recent local spend rate
MAX_LEASE_SHARE = 100  # a lease is at most 1/100 of its budget
EXHAUSTED_RETRY_SECONDS = 2.0  # how often to ask again for a budget that was used up
BATCH = 200  # keys per script call: long scripts would stall every replica's caps calls


@dataclass(slots=True, eq=False)
class _Lease:
    """Budget this replica may spend without asking Redis, for one budget counter."""

    key: str
    reason: str  # why an item is blocked once the budget is used up
    scale: int  # local units per Redis unit: MICROS for money, 1 for impressions
    floor: Callable[[], int]  # local units known spent globally: a lower bound on leased
    budget: int = -1  # Redis units (micros or impressions), from the latest snapshot
    ttl_at: float = 0.0
    unit: int = 1  # Redis units one impression costs (largest seen)
    available: int = 0  # local units; negative after a race between two threads
    low_water: int = 0
    remaining: int | None = None  # Redis units still unleased at the last grant
    pending: bool = False
    exhausted: bool = False
    retry_at: float = 0.0
    used: int = 0  # local units spent since the last grant
    granted_at: float = 0.0
    rate: float = 0.0  # Redis units per second, smoothed
    pinned: int = 0  # local units: a floor kept while Redis has lost its data (see the ledger)


class Leases:
    """Mixin: lease bookkeeping on the hot path, grants and give-backs in the background."""

    _lock: threading.Lock
    _leases: dict[str, _Lease]
    _queue: deque[_Lease]
    _wake: threading.Event
    _replicas: int
    _now: float
    _lease_script: Any
    stats: Any

    def _lease(
        self,
        key: str,
        reason: str,
        scale: int,
        floor: Callable[[], int],
        budget: int,
        ttl_at: float,
    ) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(key, reason, scale, floor)
        lease.ttl_at = ttl_at
        if lease.budget != budget:
            changed = lease.budget >= 0
            lease.budget = budget
            lease.exhausted = False
            if changed:  # the catalog moved the budget: grant more, or give some back
                self._request(lease)
        return lease

    def _short(self, lease: _Lease, need: int) -> str:
        """The item cannot spend from ``lease`` now: ask for more in the background."""
        lease.unit = max(lease.unit, -(-need // lease.scale))
        if not lease.exhausted:
            self._request(lease)
            return "budget-lease-empty"
        now = time.monotonic()
        if now >= lease.retry_at:  # replicas may have given leases back since
            lease.retry_at = now + EXHAUSTED_RETRY_SECONDS
            self._request(lease)
        return lease.reason

    def _consume(self, lease: _Lease, amount: int) -> None:
        lease.available -= amount
        lease.used += amount
        if lease.available < lease.low_water and not lease.exhausted:
            self._request(lease)

    def _request(self, lease: _Lease) -> None:
        if not lease.pending:
            lease.pending = True
            self._queue.append(lease)
            self._wake.set()

    def _refill(self) -> None:
        batch: list[_Lease] = []
        seen: set[int] = set()
        while self._queue:
            lease = self._queue.popleft()
            if id(lease) not in seen:
                seen.add(id(lease))
                batch.append(lease)
        try:
            for start in range(0, len(batch), BATCH):
                self._grant(batch[start : start + BATCH])
        except RedisUnavailable:
            self._queue.extend(lease for lease in batch if lease.pending)
            raise

    def _grant(self, leases: list[_Lease]) -> None:
        now = time.monotonic()
        wants = [self._want(lease, now) for lease in leases]
        args: list[int] = []
        for lease, want in zip(leases, wants, strict=True):
            held = max(lease.available, 0) // lease.scale
            floor = -(-max(lease.floor(), lease.pinned) // lease.scale)
            ttl = int(lease.ttl_at - self._now) if lease.ttl_at else 0
            args += [want, lease.budget, floor, held, max(ttl, 0)]
        keys = [lease.key for lease in leases]
        result = self._run_script("lease", self._lease_script, keys, args)
        self.stats.background += 1
        with self._lock:
            for n, lease in enumerate(leases):
                grant, remaining = int(result[2 * n]), int(result[2 * n + 1])
                lease.available += grant * lease.scale
                lease.remaining = remaining
                lease.exhausted = remaining <= 0 and grant < wants[n]
                lease.granted_at = now
                lease.used = 0
                lease.low_water = max(lease.unit, wants[n] // 3) * lease.scale
                lease.pending = False
                if lease.exhausted:
                    lease.retry_at = now + EXHAUSTED_RETRY_SECONDS

    def _want(self, lease: _Lease, now: float) -> int:
        """How much to ask for, in Redis units; see "Lease size" in the module docstring."""
        if lease.granted_at:
            rate = lease.used / lease.scale / max(now - lease.granted_at, 0.2)
            lease.rate = rate if not lease.rate else (lease.rate + rate) / 2
        unit = max(lease.unit, 1)
        ceiling = max(unit, lease.budget // MAX_LEASE_SHARE)
        least = min(MIN_LEASE_IMPRESSIONS * unit, ceiling)
        remaining = lease.budget if lease.remaining is None else lease.remaining
        share = remaining // (2 * max(self._replicas, 1))
        want = max(least, min(ceiling, int(lease.rate * LEASE_SECONDS), share))
        if lease.available < 0:  # a race spent past the lease: cover it first
            debt = -lease.available
            want += -(-debt // lease.scale)
        return want

    def _return_leases(self) -> None:
        with self._lock:
            held = [lease for lease in self._leases.values() if lease.available >= lease.scale]
            amounts = [lease.available // lease.scale for lease in held]
            for lease, amount in zip(held, amounts, strict=True):
                lease.available -= amount * lease.scale
        for start in range(0, len(held), BATCH):
            keys = [lease.key for lease in held[start : start + BATCH]]
            args: list[int] = []
            for amount in amounts[start : start + BATCH]:
                args += [-amount, 0, 0, 0, 0]  # a negative want gives that much back
            self._run_script("lease", self._lease_script, keys, args)

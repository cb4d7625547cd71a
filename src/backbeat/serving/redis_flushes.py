"""Delivery counters of the shared ledger: global totals read back, local deltas flushed.

See "Delivery" in ``serving/redis_ledger.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from backbeat.serving.ledger import day_of
from backbeat.serving.redis_breaker import RedisUnavailable
from backbeat.serving.redis_leases import BATCH

REPLICA_TTL_SECONDS = 10.0
WATCH_SECONDS = 30.0  # keep pulling global delivery of items pacing asked about this recently


@dataclass(slots=True, eq=False)
class _Counter:
    """A delivery counter: the global total last read, plus what is on its way or not sent.

    Most are kept by the reconciler and only read here; ``pushed`` ones (pacing attempts)
    are added to by every replica and raised to what this replica saw (a Redis that lost
    its data). A ``monotonic`` counter never reads lower than before (counted delivery; a
    floor seeded from the database holds until Redis has more); reservations go down.
    """

    key: str
    name: str  # hash field, or "" for a plain key
    ttl_at: float = 0.0  # ledger time after which Redis may forget it (0: never)
    known: int = 0
    inflight: int = 0
    delta: int = 0
    pushed: bool = False
    monotonic: bool = True

    def total(self) -> int:
        return self.known + self.inflight + self.delta


class Flushes:
    """Mixin: counters, the periodic flush (with the replica heartbeat) and day pruning."""

    _lock: threading.Lock
    _counters: dict[str, _Counter]
    _dirty: set[_Counter]
    _watched: dict[int, float]
    _entries: dict[int, Any]
    _unread: dict[int, Any]
    _rendered: _Counter
    _expired: _Counter
    _reconciled_at: _Counter | None
    render_window_s: float
    _leases: dict[str, Any]
    _replicas: int
    _now: float
    _flush_script: Any
    prefix: str
    replica_id: str
    stats: Any

    def _counter(
        self, key: str, name: str, ttl_at: float = 0.0, *, monotonic: bool = True
    ) -> _Counter:
        found = self._counters.get(f"{key}#{name}")
        if found is None:
            found = self._counters[f"{key}#{name}"] = _Counter(key, name, monotonic=monotonic)
        if ttl_at:
            found.ttl_at = ttl_at
        return found

    def _flush(self) -> None:
        """Push local deltas, pull global totals (and heartbeat), in batched script calls."""
        cutoff = time.monotonic() - WATCH_SECONDS
        with self._lock:
            counters = set(self._dirty)
            self._dirty.clear()
            for item_id, asked in list(self._watched.items()):
                if asked < cutoff:
                    del self._watched[item_id]
                    continue
                entry = self._entries.get(item_id)
                if entry is not None:
                    counters.update(entry.counters())
            counters.update((self._rendered, self._expired))
            if self._reconciled_at is not None:
                counters.add(self._reconciled_at)
            batch = list(counters)
            for counter in batch:
                counter.inflight, counter.delta = counter.delta, 0
        try:
            if not batch:
                self._flush_batch([])
            for start in range(0, len(batch), BATCH):
                self._flush_batch(batch[start : start + BATCH])
            self._forget_read()
        except RedisUnavailable:
            with self._lock:
                for counter in batch:
                    if counter.inflight:
                        counter.delta += counter.inflight
                        counter.inflight = 0
                        self._dirty.add(counter)
            raise

    def _flush_batch(self, counters: list[_Counter]) -> None:
        wall = time.time()
        keys = [f"{self.prefix}replicas"]
        args: list[Any] = [self.replica_id, wall, wall - REPLICA_TTL_SECONDS]
        for counter in counters:
            keys.append(counter.key)
            ttl = max(int(counter.ttl_at - self._now), 0) if counter.ttl_at else 0
            args += [counter.name, counter.known if counter.pushed else 0, counter.inflight, ttl]
        result = self._run_script("flush", self._flush_script, keys, args)
        self.stats.background += 1
        self._replicas = max(int(result[0]), 1)
        with self._lock:
            for counter, value in zip(counters, result[1:], strict=True):
                if counter.monotonic:
                    counter.known = max(int(value or 0), counter.known + counter.inflight)
                else:
                    counter.known = int(value or 0)
                counter.inflight = 0

    def _forget_read(self) -> None:
        """Our fills the reconciler has read are in the reserved counters now."""
        read_ms = self._reconciled_at.known if self._reconciled_at is not None else 0
        # Without a reconciler (or one far behind) they would be released by now anyway.
        until = max(read_ms // 1000, int(self._now - self.render_window_s))
        with self._lock:
            for item_id, unread in list(self._unread.items()):
                unread.drop_until(until)
                if not unread.buckets:
                    del self._unread[item_id]

    def _prune(self) -> None:
        """Forget entries, leases and counters of days that are over and flights long ended."""
        yesterday = day_of(self._now) - 1
        with self._lock:
            stale = [item_id for item_id, entry in self._entries.items() if entry.day < yesterday]
            for item_id in stale:
                del self._entries[item_id]
            # Redis forgets these keys then too (a week after the flight): nothing to give back.
            for key in [k for k, c in self._counters.items() if 0 < c.ttl_at < self._now]:
                if not self._counters[key].delta:
                    del self._counters[key]
            for key in [k for k, lease in self._leases.items() if 0 < lease.ttl_at < self._now]:
                del self._leases[key]
            for key in _daily_keys(self._leases, self.prefix + "lease:lid:", yesterday):
                del self._leases[key]
            for key in _daily_keys(self._counters, self.prefix + "lday:", yesterday):
                if not self._counters[key].delta:
                    del self._counters[key]


def _daily_keys(table: dict[str, Any], prefix: str, before: int) -> Iterable[str]:
    """Keys of per-day leases or counters (``<prefix><id>:<day>...``) for days before ``before``."""
    stale = []
    for key in table:
        if key.startswith(prefix):
            day = key[len(prefix) :].split(":", 1)[1].split("#", 1)[0]
            if int(day) < before:
                stale.append(key)
    return stale

"""The circuit breaker of the shared ledger: fail fast while Redis is away, probe to recover.

Calls use a short socket timeout and no retries. A refused connection, or a second
timeout in a row, opens the breaker; the background thread pings every
``retry_interval`` and closes it when Redis answers. Faults are logged once and exposed as
``backbeat_redis_up`` and ``backbeat_redis_errors_total``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from backbeat.observability import REDIS_ERRORS, REDIS_ROUND_TRIPS, REDIS_UP, log

T = TypeVar("T")
TIMEOUTS_TO_OPEN = 2


class RedisUnavailable(Exception):
    """Redis did not answer (or the breaker is open); the caller falls back to local state."""


class Breaker:
    """Mixin: ``_call`` wraps every Redis call; ``_probe`` closes the breaker again."""

    _fast: redis.Redis
    _slow: redis.Redis
    _up: bool
    _down_since: float
    _retry_at: float
    _timeouts: int
    _breaker_lock: threading.Lock
    _generation: int
    retry_interval: float

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        try:
            result = call()
        except redis.TimeoutError as exc:
            # One slow answer is more often a busy machine than a dead server: open only on
            # the second in a row (a hung Redis costs each thread at most one timeout more).
            self._timeouts += 1
            if self._timeouts >= TIMEOUTS_TO_OPEN:
                self._fault(operation, exc)
            else:
                REDIS_ERRORS.labels(operation).inc()
            raise RedisUnavailable(operation) from exc
        except redis.ConnectionError as exc:
            self._fault(operation, exc)
            raise RedisUnavailable(operation) from exc
        except redis.RedisError as exc:
            REDIS_ERRORS.labels(operation).inc()
            log.error("redis call failed", operation=operation, error=repr(exc))
            raise RedisUnavailable(operation) from exc
        self._timeouts = 0
        REDIS_ROUND_TRIPS.labels(operation).inc()
        return result

    def _fault(self, operation: str, exc: Exception) -> None:
        REDIS_ERRORS.labels(operation).inc()
        with self._breaker_lock:
            self._retry_at = time.monotonic() + self.retry_interval
            if not self._up:
                return
            self._up = False
            self._down_since = time.monotonic()
        REDIS_UP.set(0)
        log.warning(
            "redis unreachable: capped items skipped, budgets served from held leases",
            operation=operation,
            error=repr(exc),
        )

    def _probe(self) -> None:
        if time.monotonic() < self._retry_at:
            return
        # Connections from before the outage are dead; drop them rather than fail on each.
        self._fast.connection_pool.disconnect()
        self._slow.connection_pool.disconnect()
        try:
            self._call("ping", self._slow.ping)
        except RedisUnavailable:
            return
        with self._breaker_lock:
            self._generation += 1
            self._up = True
            down = time.monotonic() - self._down_since
        REDIS_UP.set(1)
        log.info("redis reachable again", down_seconds=round(down, 3))

"""Token buckets per caller, in the memory of one worker (no round trip on the hot path).

Each key (an API key's digest, a client address) gets a bucket of ``burst`` tokens refilled
at ``rate`` per second; a request takes one token or is refused with the seconds until the
next token (``Retry-After``). Limits are per worker process: with N workers a caller gets at
most N × rate. The table of buckets is bounded, so a flood of distinct keys cannot exhaust
memory: full buckets (callers idle long enough to be back at ``burst``) are dropped first.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """``allow(key)`` -> 0.0 when admitted, else seconds to wait. ``rate`` 0 admits everything."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str) -> float:
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > self.max_keys:
                    self._prune(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {
            key: (tokens, at) for key, (tokens, at) in self._buckets.items() if now - at < refill
        }
        if len(self._buckets) > self.max_keys:
            # Everyone is active: forgetting (a full bucket for all) beats unbounded memory.
            self._buckets.clear()


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))

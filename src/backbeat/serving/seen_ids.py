"""Decision ids the ledger has counted, kept compact for as long as a replay could come.

A tracking URL stays valid for days (``BACKBEAT_TRACKING_TTL_SECONDS``), so the ledger must
remember every counted decision that long to count a replayed pixel once. A dict of id
strings costs about 130 bytes an id: at a few hundred impressions a second, gigabytes per
worker. Here ids are grouped by the hour of their decision; hours past are sealed into a
sorted array of 64-bit keys (8 bytes an id), searched by bisection. Keys are Python's
string hash, salted per process, so nobody can aim two ids at one key; two ids of the
same hour share one with odds of about one in 2**64 per pair.

Sealing and forgetting an hour touch every id in it while holding the GIL: both advance a
step per housekeeping tick (``forget_before``), so a busy hour costs many short steps rather
than one stall of the event loop; the one sort per hour runs in NumPy, which lets the GIL
go, and outside this structure's lock (the ledger calls ``forget_before`` outside its own).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

HOUR = 3600
SEAL_STEP = 50_000  # ids per tick at least; a big hour goes faster, done in ~600 ticks


@dataclass(slots=True)
class _Sealing:
    keys: set[int]  # no longer added to: late ids of its hour go to ``late``
    left: Iterator[int]
    done: array = field(default_factory=lambda: array("q"))


class SeenIds:
    """``add`` / ``seen`` by (decision id, decision time); ``forget_before`` drops old hours."""

    def __init__(self, seal_step: int = SEAL_STEP) -> None:
        self.seal_step = seal_step
        self._open: dict[int, set[int]] = {}  # this hour and the last: plain sets
        self._sealing: dict[int, _Sealing] = {}  # being copied into an array, a step a tick
        self._sealed: dict[int, np.ndarray] = {}  # hours past: sorted int64 keys
        self._late: dict[int, set[int]] = {}  # added to an hour after its sealing began
        self._freeing: list[set[int]] = []  # sets emptied a step a tick, not all at once
        self._count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    @property
    def settled(self) -> bool:
        """No hour half sealed and no set waiting to be released: the steps have caught up."""
        return not self._sealing and not self._freeing

    def add(self, decision_id: str, ts: float) -> None:
        """Remember ``decision_id`` (its caller has checked it was not ``seen``)."""
        hour = int(ts // HOUR)
        with self._lock:
            table = self._late if hour in self._sealing or hour in self._sealed else self._open
            bucket = table.get(hour)
            if bucket is None:
                bucket = table[hour] = set()
            bucket.add(hash(decision_id))
            self._count += 1

    def seen(self, decision_id: str, ts: float) -> bool:
        hour = int(ts // HOUR)
        key = hash(decision_id)
        with self._lock:
            return self._seen(hour, key)

    def _seen(self, hour: int, key: int) -> bool:
        bucket = self._open.get(hour)
        if bucket is not None:
            return key in bucket
        late = self._late.get(hour)
        if late is not None and key in late:
            return True
        sealing = self._sealing.get(hour)
        if sealing is not None:
            return key in sealing.keys
        sealed = self._sealed.get(hour)
        if sealed is None:
            return False
        at = int(np.searchsorted(sealed, key))
        return at < len(sealed) and int(sealed[at]) == key

    def forget_before(self, oldest: float, now: float) -> None:
        """Drop the hours that ended before ``oldest``; seal those before the last hour.

        Each call does a step of the work: copying sealing hours into arrays, and releasing
        the sets of hours sealed or dropped.
        """
        with self._lock:
            copied = self._forget_and_copy(oldest, now)
        for hour, keys in copied:  # each hour's one sort, outside the lock
            keys.sort()
            with self._lock:
                sealing = self._sealing.pop(hour, None)
                if sealing is not None:  # not dropped meanwhile
                    self._sealed[hour] = keys
                    self._freeing.append(sealing.keys)
        with self._lock:
            self._merge_late()
            self._free_step()

    def _forget_and_copy(self, oldest: float, now: float) -> list[tuple[int, np.ndarray]]:
        for hour in [hour for hour in self._open if (hour + 1) * HOUR <= oldest]:
            self._release(self._open.pop(hour))
        for hour in [hour for hour in self._sealing if (hour + 1) * HOUR <= oldest]:
            self._release(self._sealing.pop(hour).keys)
        for hour in [hour for hour in self._sealed if (hour + 1) * HOUR <= oldest]:
            self._count -= len(self._sealed.pop(hour))
        for hour in [hour for hour in self._late if (hour + 1) * HOUR <= oldest]:
            self._release(self._late.pop(hour))
        current = int(now // HOUR)
        for hour in [hour for hour in self._open if hour < current - 1]:
            keys = self._open.pop(hour)
            self._sealing[hour] = _Sealing(keys, iter(keys))
        # One budget for all sealing hours, oldest first (after a restart, a week of hours
        # is sealing at once): at least ``seal_step`` ids, all of them within ~600 ticks.
        left = sum(len(sealing.keys) - len(sealing.done) for sealing in self._sealing.values())
        budget = max(self.seal_step, left // 600)
        copied = []
        for hour in sorted(self._sealing):
            sealing = self._sealing[hour]
            step = min(budget, len(sealing.keys) - len(sealing.done))
            sealing.done.extend(islice(sealing.left, step))
            budget -= step
            if len(sealing.done) == len(sealing.keys):
                copied.append((hour, np.frombuffer(sealing.done, dtype=np.int64).copy()))
            if not budget:
                break
        return copied

    def _merge_late(self) -> None:
        """Late ids (a pixel hours after its decision) join their hour's array once there are
        enough of them to be worth a merge; until then they are a small set beside it."""
        for hour in [
            hour
            for hour, keys in self._late.items()
            if hour in self._sealed and len(keys) >= _merge_at(self._sealed[hour])
        ]:
            keys = self._late.pop(hour)
            merged = np.union1d(self._sealed[hour], np.fromiter(keys, np.int64, len(keys)))
            self._sealed[hour] = merged
            self._freeing.append(keys)

    def _release(self, keys: set[int]) -> None:
        self._count -= len(keys)
        self._freeing.append(keys)

    def _free_step(self) -> None:
        budget = max(self.seal_step, sum(len(keys) for keys in self._freeing) // 600)
        while self._freeing and budget:
            keys = self._freeing[-1]
            take = min(budget, len(keys))
            for _ in range(take):
                keys.pop()
            budget -= take
            if not keys:
                self._freeing.pop()


def _merge_at(sealed: np.ndarray) -> int:
    return max(1024, len(sealed) // 64)

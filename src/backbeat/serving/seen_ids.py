"""Decision ids the ledger has counted, kept compact for as long as a replay could come.

A tracking URL stays valid for days (``BACKBEAT_TRACKING_TTL_SECONDS``), so the ledger must
remember every counted decision that long to count a replayed pixel once. A dict of id
strings costs about 130 bytes an id: at a few hundred impressions a second, gigabytes per
worker. Here ids are grouped by the hour of their decision; hours past are sealed into a
sorted array of 64-bit keys (8 bytes an id), searched by bisection. Keys are Python's
string hash, salted per process, so nobody can aim two ids at one key; two ids of the
same hour share one with odds of about one in 2**64 per pair.
"""

from __future__ import annotations

import numpy as np

HOUR = 3600


class SeenIds:
    """``add`` / ``seen`` by (decision id, decision time); ``forget_before`` drops old hours.

    Not thread-safe: the ledger calls it under its lock.
    """

    def __init__(self) -> None:
        self._open: dict[int, set[int]] = {}  # this hour and the last: plain sets
        self._sealed: dict[int, np.ndarray] = {}  # hours past: sorted int64 keys
        self._late: dict[int, set[int]] = {}  # added to a sealed hour since it was sealed
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, decision_id: str, ts: float) -> None:
        """Remember ``decision_id`` (its caller has checked it was not ``seen``)."""
        hour = int(ts // HOUR)
        table = self._late if hour in self._sealed else self._open
        bucket = table.get(hour)
        if bucket is None:
            bucket = table[hour] = set()
        bucket.add(hash(decision_id))
        self._count += 1

    def seen(self, decision_id: str, ts: float) -> bool:
        hour = int(ts // HOUR)
        key = hash(decision_id)
        bucket = self._open.get(hour)
        if bucket is not None:
            return key in bucket
        sealed = self._sealed.get(hour)
        if sealed is None:
            return False
        late = self._late.get(hour)
        if late is not None and key in late:
            return True
        at = int(np.searchsorted(sealed, key))
        return at < len(sealed) and int(sealed[at]) == key

    def forget_before(self, oldest: float, now: float) -> None:
        """Drop the hours that ended before ``oldest``; seal those before the last hour."""
        for table in (self._open, self._sealed, self._late):
            for hour in [hour for hour in table if (hour + 1) * HOUR <= oldest]:
                self._count -= len(table.pop(hour))
        current = int(now // HOUR)
        for hour in [hour for hour in self._open if hour < current - 1]:
            keys = np.fromiter(self._open.pop(hour), dtype=np.int64)
            keys.sort()
            self._sealed[hour] = keys
        # Late ids (a pixel hours after its decision) join their hour's array once there are
        # enough of them to be worth a merge; until then they are a small set beside it.
        for hour in [
            h for h, keys in self._late.items() if len(keys) >= _merge_at(self._sealed[h])
        ]:
            keys = self._late.pop(hour)
            self._sealed[hour] = np.union1d(
                self._sealed[hour], np.fromiter(keys, dtype=np.int64, count=len(keys))
            )


def _merge_at(sealed: np.ndarray) -> int:
    return max(1024, len(sealed) // 64)

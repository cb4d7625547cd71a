"""The checks of a decision that depend only on the book, the clock, the slot and the country.

Flight, currency and reserve do not depend on delivery, so per snapshot they become
bitsets over the best-first positions (the targeting index's numbering): the line items
live at a given second, and those a given slot currency and reserve admit. A request
ANDs them with its targeting bits instead of testing each candidate; the decider walks
only what is left through the checks that need the ledger (budgets, pacing, caps).

A no-fill still says why: ``reason`` names the first check a filtered item fails, in the
order the per-candidate checks used (flight, currency, reserve).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Protocol

# Cached reserve masks per snapshot: slots × countries with their own reserve; bounded
# so a stream of odd countries cannot grow it (it is rebuilt on demand).
MAX_PRICE_MASKS = 4096


class _Item(Protocol):
    start_ts: float
    end_ts: float
    currency: str
    cpm_micros: int

    @property
    def is_house(self) -> bool: ...


class StaticChecks:
    """Bitsets of the line items that pass flight, and currency with reserve."""

    __slots__ = ("_items", "_boundaries", "_live", "_priced", "_passing")

    def __init__(self, items: Sequence[_Item]) -> None:
        self._items = tuple(items)
        self._boundaries = sorted({t for item in items for t in (item.start_ts, item.end_ts)})
        # (bits, valid from, valid until): the live set changes only at a flight boundary.
        self._live: tuple[int, float, float] = (0, 1.0, 0.0)
        self._priced: dict[tuple[str, int], int] = {}
        # ``live & priced`` per (currency, reserve), for the live set it was made from.
        self._passing: dict[tuple[str, int], tuple[int, int]] = {}

    def passing(self, now: float, currency: str, reserve: int) -> int:
        """Items passing all three checks at ``now``: one lookup while the live set holds."""
        live = self.live(now)
        key = (currency, reserve)
        found = self._passing.get(key)
        if found is not None and found[0] is live:
            return found[1]
        bits = live & self.priced(currency, reserve)
        if len(self._passing) >= MAX_PRICE_MASKS:
            self._passing.clear()
        self._passing[key] = (live, bits)
        return bits

    def live(self, now: float) -> int:
        """Items whose flight holds ``now`` (start inclusive, end exclusive)."""
        bits, since, until = self._live
        if since <= now < until:
            return bits
        bits = 0
        for position, item in enumerate(self._items):
            if item.start_ts <= now < item.end_ts:
                bits |= 1 << position
        # Valid between the boundaries around ``now``: no item starts or ends in between.
        boundaries = self._boundaries
        at = bisect_right(boundaries, now)
        since = boundaries[at - 1] if at else -float("inf")
        until = boundaries[at] if at < len(boundaries) else float("inf")
        self._live = (bits, since, until)  # one assignment: safe for concurrent readers
        return bits

    def priced(self, currency: str, reserve: int) -> int:
        """Items in ``currency`` that bid at least ``reserve`` (house ads fill at any price)."""
        key = (currency, reserve)
        bits = self._priced.get(key)
        if bits is None:
            bits = 0
            for position, item in enumerate(self._items):
                if item.currency == currency and (item.cpm_micros >= reserve or item.is_house):
                    bits |= 1 << position
            if len(self._priced) >= MAX_PRICE_MASKS:
                self._priced.clear()
            self._priced[key] = bits
        return bits

    def reason(self, position: int, now: float, currency: str, reserve: int) -> str | None:
        """Why the item at ``position`` fails these checks (None: it passes)."""
        item = self._items[position]
        if not item.start_ts <= now < item.end_ts:
            return "outside-flight"
        if item.currency != currency:
            return "currency-mismatch"
        if item.cpm_micros < reserve and not item.is_house:
            return "below-reserve"
        return None

"""Choosing the ads a listener hears.

For each request: the targeting index gives the line items that admit it; they are
walked best-first (tier, then CPM) through the local checks — flight, currency, reserve
(by slot and country; house ads fill at any price), pacing, budgets — into a short list;
the ledger then counts the first one still under its frequency caps (one atomic step,
shared across replicas where the ledger is). Non-guaranteed winners pay the slot's
auction price (first or second price). Ties in tier and price are broken by a seeded
random order, so a given seed and request sequence always decide the same.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from backbeat.catalog.vocabulary import AuctionType
from backbeat.errors import BadRequest
from backbeat.serving.auction import clearing_price
from backbeat.serving.ledger import Ledger
from backbeat.serving.pacing import PacingController
from backbeat.serving.plan import PlanRule
from backbeat.serving.request import AdRequest, PodRequest, request_attributes
from backbeat.serving.snapshot import ServableCreative, ServableLineItem, ServableSlot, Snapshot
from backbeat.serving.targeting_index import iter_bits
from backbeat.signing import LISTENER_ALPHABET, LISTENER_MAX, is_safe_listener

SHORTLIST = 8


class Decision(NamedTuple):
    """One filled (or unfilled) ad position; a pod is several, one per ``sequence``.

    A named tuple rather than a frozen dataclass: as immutable, and built in a fraction
    of the time (a frozen dataclass sets each field through ``object.__setattr__``).
    """

    id: str
    ts: float
    request: AdRequest
    slot: ServableSlot
    line_item: ServableLineItem | None
    creative: ServableCreative | None
    price_micros: int = 0
    no_fill_reason: str | None = None
    eligible: int = 0
    sequence: int | None = None
    targeted: int = 0  # bitset of line items the targeting admitted
    attributes: dict[str, Any] | None = None

    @property
    def filled(self) -> bool:
        return self.line_item is not None

    def __repr__(self) -> str:
        """Without the targeting bitset and attributes (a 10,000-item bitset is 3,000 digits)."""
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields[:10])
        return f"Decision({shown})"


class InvalidListener(BadRequest):
    """A listener id outside the safe alphabet: a ``400``, never signed into a URL."""

    status = 400


def listener_key(listener: str | None, ip: str, user_agent: str) -> str:
    """The listener id, or a stable hash of IP + user agent when the player sends none.

    Ids are 1–128 characters of ``LISTENER_ALPHABET``: they key frequency caps and are
    signed into tracking URLs, so a separator or an unbounded id must never get in.
    """
    if listener:
        if not is_safe_listener(listener):
            raise InvalidListener(
                f"listener must be 1-{LISTENER_MAX} characters of [{LISTENER_ALPHABET}]",
                reason="invalid-listener",
            )
        return listener
    return "h:" + hashlib.sha256(f"{ip}\x1f{user_agent}".encode()).hexdigest()[:24]


def _process_prefix() -> int:
    return secrets.randbits(32) << 32


_prefix = _process_prefix()
_counter = itertools.count(secrets.randbits(32))


def _reseed() -> None:
    global _prefix, _counter
    _prefix, _counter = _process_prefix(), itertools.count(secrets.randbits(32))


os.register_at_fork(after_in_child=_reseed)


def new_decision_id(now: float) -> str:
    """Time-ordered and unique across processes: 48 bits of milliseconds, then 64 bits that
    are a random per-process prefix (drawn from the OS, again after fork) and a counter.

    Two processes collide only with the same 32-bit prefix, the same counter value and
    the same millisecond; a random draw per id costs more on the decision path. One
    integer, formatted once (28 hex digits).
    """
    return "%028x" % ((int(now * 1000) << 64) | _prefix | (next(_counter) & 0xFFFFFFFF))  # noqa: UP031


def top_category(category: str) -> str:
    """``IAB2-3`` competes with every ``IAB2…``: separation works on top-level categories."""
    return category.split("-", 1)[0]


@dataclass
class Decider:
    ledger: Ledger
    pacing: PacingController = field(default_factory=PacingController)
    seed: int | None = None
    # Servers update pacing from a background thread (a 10k-item update would stall one
    # request); simulations with a fake clock drive it inline.
    drive_pacing: bool = True
    _rng: random.Random = field(init=False, repr=False)
    _rotation: int = field(default=0, repr=False)
    _plan_rule: tuple[Snapshot, object, PlanRule] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # -- single ads -------------------------------------------------------------------

    def decide(
        self, snapshot: Snapshot, slot: ServableSlot, request: AdRequest, now: float
    ) -> Decision:
        return self.decide_pod(snapshot, slot, request, now, PodRequest())[0]

    def decide_pod(
        self,
        snapshot: Snapshot,
        slot: ServableSlot,
        request: AdRequest,
        now: float,
        pod: PodRequest,
    ) -> list[Decision]:
        """Fill up to ``pod.max_ads`` positions; a no-fill is one unfilled decision."""
        if self.drive_pacing:
            self.pacing.maybe_update(now, snapshot, self.ledger)
        index = snapshot.index
        attributes = request_attributes(
            request, slot.surface, slot.position, now, index.keys_in_use
        )
        targeted = index.candidates(attributes)
        if not targeted:
            return [
                self._unfilled(request, slot, now, "no-targeting-match", 0, targeted, attributes)
            ]
        reserve = slot.reserve_for(request.country)
        # Why items dropped out, as (walk position, reason, count): only a no-fill reads them.
        blocked: list[tuple[float, str, int]] = []
        planned = self._planned(snapshot, targeted, now, blocked)
        checks = snapshot.checks
        # Flight, currency and reserve as bitsets: the walk visits only items passing them.
        static = checks.passing(now, slot.currency, reserve)
        walk = iter_bits(planned & static)
        items = snapshot.line_items
        budget_block = self.ledger.budget_block
        pacing = self.pacing
        coin = self._rng.random
        # ``ahead`` holds items pulled but not used up (short-listed behind a winner, or
        # looked at while pricing), best first; ``cursor`` is the walk's last position.
        ahead: list[ServableLineItem] = []
        eligible_seen = 0
        cursor = -1

        def pull() -> ServableLineItem | None:
            """The next locally eligible item, best first (budgets and pacing checked here)."""
            nonlocal eligible_seen, cursor
            if ahead:
                return ahead.pop(0)
            for cursor in walk:  # resumes where the last pull stopped
                item = items[cursor]
                reason = budget_block(item, item.cpm_micros, now)
                if reason is None and item.even_paced:
                    pacing.record_attempt(item)
                    probability = pacing.probability(item)
                    if probability < 1.0 and coin() >= probability:
                        reason = "paced"
                if reason is None:
                    eligible_seen += 1
                    return item
                blocked.append((cursor, reason, 1))
            cursor = len(items)  # exhausted: every filtered item was passed
            return None

        open_break = pod.min_ad_ms is None and pod.max_ad_ms is None and pod.max_duration_ms is None
        chosen: list[Decision] = []
        advertisers: set[int] = set()
        categories: set[str] = set()
        used_ms = 0

        def unfit(item: ServableLineItem) -> str | None:
            """Why ``item`` cannot take this position of the pod (None: it can)."""
            if open_break and not advertisers:  # a single ad of any length: anything fits
                return None
            if item.advertiser_id in advertisers:
                return "same-advertiser-in-pod"
            if categories and not categories.isdisjoint(item.top_categories):
                return "competing-category-in-pod"
            if not any(pod.admits(c.duration_ms, used_ms) for c in item.creatives):
                return "creative-does-not-fit"
            return None

        listener = request.listener
        while len(chosen) < pod.max_ads:
            shortlist: list[ServableLineItem] = []
            while (item := pull()) is not None:
                if not open_break or advertisers:
                    reason = unfit(item)
                    if reason is not None:  # it cannot fit a later position either
                        blocked.append((cursor, reason, 1))
                        continue
                shortlist.append(item)
                # Enough once an uncapped item (it cannot fail the caps step) has a runner-up
                # of another tier or price behind it: its tie group is then complete.
                if len(shortlist) >= SHORTLIST or (
                    len(shortlist) >= 2
                    and not shortlist[-2].caps
                    and item.rank != shortlist[-2].rank
                ):
                    break
            if not shortlist:
                break
            if len(shortlist) > 1:
                self._shuffle_ties(shortlist)
            position, reason = self.ledger.acquire_caps(listener, shortlist, now)
            if position is None:
                blocked.append((cursor + 0.5, reason, len(shortlist)))
                continue
            item = shortlist[position]
            # Short-listed items after the winner were never cap-checked: they stay candidates
            # (those before it are capped for this listener and drop out).
            if position + 1 < len(shortlist):
                ahead[:0] = shortlist[position + 1 :]
            creative = self._creative(item, pod, used_ms)
            assert creative is not None  # ``unfit`` checked that one fits
            price = self._price(slot, item, reserve, listener, now, pull, ahead, unfit)
            decision_id = new_decision_id(now)
            self.ledger.commit_spend(item, price, now, decision_id)
            chosen.append(
                Decision(
                    decision_id, now, request, slot, item, creative, price, None, eligible_seen,
                    len(chosen) + 1 if pod.max_ads > 1 else None, targeted, attributes,
                )
            )  # fmt: skip
            advertisers.add(item.advertiser_id)
            categories |= item.top_categories
            used_ms += creative.duration_ms
        if chosen:
            return chosen
        # The filtered items the walk passed over count too (all of them once it is exhausted).
        passed = planned & ~static & ((1 << cursor) - 1 if cursor > 0 else 0)
        reason = self._no_fill_reason(snapshot, passed, blocked, now, slot, reserve)
        return [self._unfilled(request, slot, now, reason, eligible_seen, targeted, attributes)]

    # -- steps --------------------------------------------------------------------------

    @staticmethod
    def _no_fill_reason(
        snapshot: Snapshot,
        passed: int,
        blocked: list[tuple[float, str, int]],
        now: float,
        slot: ServableSlot,
        reserve: int,
    ) -> str:
        """The most common reason, ties going to the one met first in best-first order.

        Items the static bitsets filtered out count at their own positions, as if the walk
        had tested them one by one (``passed``: those before the walk's last position).
        """
        checks = snapshot.checks
        found = list(blocked)
        for position in iter_bits(passed):
            reason = checks.reason(position, now, slot.currency, reserve)
            if reason is not None:
                found.append((position, reason, 1))
        if not found:
            return "no-eligible-line-item"
        found.sort(key=_position)
        reasons: Counter[str] = Counter()
        for _, reason, count in found:
            reasons[reason] += count
        return reasons.most_common(1)[0][0]

    def _planned(
        self, snapshot: Snapshot, bits: int, now: float, blocked: list[tuple[float, str, int]]
    ) -> int:
        """The candidates, less the planned guaranteed items the plan's online rule passes over.

        With an HWM or SHALE plan loaded, a request several planned items want goes to at
        most one of them, drawn by the plan's shares (``serving.plan``); the others skip it.
        """
        plan = self.pacing.plan
        if not plan:
            return bits
        cached = self._plan_rule
        if cached is None or cached[0] is not snapshot or cached[1] is not plan:
            cached = self._plan_rule = (snapshot, plan, PlanRule(snapshot, plan))
        rule = cached[2]
        if not bits & rule.bits:
            return bits
        excluded = rule.pick(bits, now, self._rng.random())
        if not excluded:
            return bits
        blocked.append((-1, "allocated-elsewhere", excluded.bit_count()))
        return bits & ~excluded

    def _creative(
        self, item: ServableLineItem, pod: PodRequest, used_ms: int
    ) -> ServableCreative | None:
        if len(item.creatives) == 1:
            only = item.creatives[0]
            return only if pod.admits(only.duration_ms, used_ms) else None
        fitting = [
            creative for creative in item.creatives if pod.admits(creative.duration_ms, used_ms)
        ]
        if not fitting:
            return None
        self._rotation += 1
        return fitting[self._rotation % len(fitting)]

    def _shuffle_ties(self, shortlist: list[ServableLineItem]) -> None:
        """Equal tier and price: order by the seeded RNG so delivery spreads, reproducibly."""
        start = 0
        while start < len(shortlist):
            end = start + 1
            rank = shortlist[start].rank
            while end < len(shortlist) and shortlist[end].rank == rank:
                end += 1
            if end - start > 1:
                group = shortlist[start:end]
                self._rng.shuffle(group)
                shortlist[start:end] = group
            start = end

    def _price(
        self,
        slot: ServableSlot,
        item: ServableLineItem,
        reserve: int,
        listener: str,
        now: float,
        pull: Callable[[], ServableLineItem | None],
        ahead: list[ServableLineItem],
        unfit: Callable[[ServableLineItem], str | None],
    ) -> int:
        """Fixed-price tiers pay their CPM; the auction prices against the best *real* rival.

        The runner-up of a second-price auction is the best other non-guaranteed bidder that
        could have served this very request: eligible (targeting, flight, currency, reserve,
        budget, pacing), fitting this pod position with a creative, and under its caps for
        this listener (checked, not counted). A capped or unfit bidder sets no price.
        """
        if not item.in_auction:
            return item.cpm_micros  # fixed-price deals and house ads pay their own CPM
        if slot.auction == AuctionType.FIRST_PRICE:
            return item.cpm_micros
        runner_up: int | None = None
        looked: list[ServableLineItem] = []
        while (other := pull()) is not None:
            looked.append(other)
            if not other.in_auction:
                break  # best first: no non-guaranteed bidder comes after another tier
            if other.cpm_micros < reserve:
                break  # and none after this one clears the reserve either
            if unfit(other) is None and self.ledger.caps_allow(listener, other, now, item):
                runner_up = other.cpm_micros
                break
        ahead[:0] = looked  # still candidates for the pod's next position, in order
        return clearing_price(
            auction=slot.auction,
            winning_bid=item.cpm_micros,
            runner_up_bid=runner_up,
            reserve=reserve,
        )

    def _unfilled(
        self,
        request: AdRequest,
        slot: ServableSlot,
        now: float,
        reason: str,
        eligible: int,
        targeted: int,
        attributes: dict[str, Any],
    ) -> Decision:
        return Decision(
            new_decision_id(now), now, request, slot, None, None,
            no_fill_reason=reason, eligible=eligible, targeted=targeted, attributes=attributes,
        )  # fmt: skip


def _position(entry: tuple[float, str, int]) -> float:
    return entry[0]

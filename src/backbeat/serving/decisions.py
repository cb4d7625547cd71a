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
import os
import random
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from backbeat.catalog.vocabulary import AuctionType, Tier
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


@dataclass(frozen=True, slots=True)
class Decision:
    """One filled (or unfilled) ad position; a pod is several, one per ``sequence``."""

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
    targeted: int = field(default=0, repr=False)  # bitset of line items the targeting admitted
    attributes: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def filled(self) -> bool:
        return self.line_item is not None


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


_ids = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.randbits(128)))


def new_decision_id(now: float) -> str:
    """Time-ordered and unique across processes: milliseconds then 64 random bits.

    A per-process generator seeded from the OS (reseeded after fork): ``secrets`` per id
    costs a system call on the decision path.
    """
    return f"{int(now * 1000):012x}{_ids.getrandbits(64):016x}"


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
        attributes = request_attributes(
            request, slot.surface, slot.position, now, snapshot.index.keys_in_use
        )
        bits = snapshot.index.candidates(attributes)
        if not bits:
            return [self._unfilled(request, slot, now, "no-targeting-match", 0, bits, attributes)]
        reserve = slot.reserve_for(request.country)
        reasons: Counter[str] = Counter()
        chosen: list[Decision] = []
        advertisers: set[int] = set()
        categories: set[str] = set()
        used_ms = 0
        # Locally eligible items, best first; ``ahead`` holds those pulled but not used up
        # (short-listed behind a winner, or looked at while pricing), in the same order.
        walk = self._eligible(snapshot, slot, reserve, self._planned(snapshot, bits, now, reasons), now, reasons)  # fmt: skip
        ahead: list[ServableLineItem] = []
        eligible_seen = 0

        def pull() -> ServableLineItem | None:
            nonlocal eligible_seen
            if ahead:
                return ahead.pop(0)
            item = next(walk, None)
            eligible_seen += item is not None
            return item

        open_break = pod.min_ad_ms is None and pod.max_ad_ms is None and pod.max_duration_ms is None

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

        while len(chosen) < pod.max_ads:
            shortlist: list[tuple[ServableLineItem, ServableCreative]] = []
            while (item := pull()) is not None:
                reason = unfit(item)
                if reason is not None:  # it cannot fit a later position either
                    reasons[reason] += 1
                    continue
                creative = self._creative(item, pod, used_ms)
                assert creative is not None
                shortlist.append((item, creative))
                # Enough once an uncapped item (it cannot fail the caps step) has a runner-up
                # of another tier or price behind it: its tie group is then complete.
                if len(shortlist) >= SHORTLIST or (
                    len(shortlist) >= 2
                    and not shortlist[-2][0].caps
                    and _rank(shortlist[-1][0]) != _rank(shortlist[-2][0])
                ):
                    break
            if not shortlist:
                break
            self._shuffle_ties(shortlist)
            position, reason = self.ledger.acquire_caps(
                request.listener, [item for item, _ in shortlist], now
            )
            if position is None:
                reasons[reason] += len(shortlist)
                continue
            item, creative = shortlist[position]
            # Short-listed items after the winner were never cap-checked: they stay candidates
            # (those before it are capped for this listener and drop out).
            ahead[:0] = [entry for entry, _ in shortlist[position + 1 :]]
            price = self._price(slot, item, reserve, request.listener, now, pull, ahead, unfit)
            decision_id = new_decision_id(now)
            self.ledger.commit_spend(item, price, now, decision_id)
            chosen.append(
                Decision(
                    decision_id, now, request, slot, item, creative, price,
                    eligible=eligible_seen, sequence=len(chosen) + 1 if pod.max_ads > 1 else None,
                    targeted=bits, attributes=attributes,
                )
            )  # fmt: skip
            advertisers.add(item.advertiser_id)
            categories |= item.top_categories
            used_ms += creative.duration_ms
        if not chosen:
            reason = reasons.most_common(1)[0][0] if reasons else "no-eligible-line-item"
            return [self._unfilled(request, slot, now, reason, eligible_seen, bits, attributes)]
        return chosen

    # -- steps --------------------------------------------------------------------------

    def _eligible(
        self,
        snapshot: Snapshot,
        slot: ServableSlot,
        reserve: int,
        bits: int,
        now: float,
        reasons: Counter[str],
    ) -> Iterator[ServableLineItem]:
        """Targeted line items, best first, that pass every check not needing the ledger's caps."""
        for position in iter_bits(bits):
            item = snapshot.line_items[position]
            reason = self._local_block(item, slot, reserve, now)
            if reason is not None:
                reasons[reason] += 1
                continue
            yield item

    def _planned(self, snapshot: Snapshot, bits: int, now: float, reasons: Counter[str]) -> int:
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
        reasons["allocated-elsewhere"] += excluded.bit_count()
        return bits & ~excluded

    def _local_block(
        self, item: ServableLineItem, slot: ServableSlot, reserve: int, now: float
    ) -> str | None:
        if not item.start_ts <= now < item.end_ts:
            return "outside-flight"
        if item.currency != slot.currency:
            return "currency-mismatch"
        if item.cpm_micros < reserve and not item.is_house:  # cheap test first
            return "below-reserve"
        reason = self.ledger.budget_block(item, item.cpm_micros, now)
        if reason is not None:
            return reason
        self.pacing.record_attempt(item)
        probability = self.pacing.probability(item)
        if probability < 1.0 and self._rng.random() >= probability:
            return "paced"
        return None

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

    def _shuffle_ties(self, shortlist: list[tuple[ServableLineItem, ServableCreative]]) -> None:
        """Equal tier and price: order by the seeded RNG so delivery spreads, reproducibly."""
        start = 0
        while start < len(shortlist):
            end = start + 1
            head = shortlist[start][0]
            while end < len(shortlist) and (
                shortlist[end][0].tier_rank,
                shortlist[end][0].cpm_micros,
            ) == (
                head.tier_rank,
                head.cpm_micros,
            ):
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
        if item.tier != Tier.NON_GUARANTEED:
            return item.cpm_micros  # fixed-price deals and house ads pay their own CPM
        if slot.auction == AuctionType.FIRST_PRICE:
            return item.cpm_micros
        runner_up: int | None = None
        looked: list[ServableLineItem] = []
        while (other := pull()) is not None:
            looked.append(other)
            if other.tier != Tier.NON_GUARANTEED:
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


def _rank(item: ServableLineItem) -> tuple[int, int]:
    return item.tier_rank, item.cpm_micros

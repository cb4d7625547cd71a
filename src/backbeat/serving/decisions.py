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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from backbeat.catalog.vocabulary import Tier
from backbeat.serving.auction import clearing_price
from backbeat.serving.ledger import Ledger
from backbeat.serving.pacing import PacingController
from backbeat.serving.request import AdRequest, PodRequest, request_attributes
from backbeat.serving.snapshot import ServableCreative, ServableLineItem, ServableSlot, Snapshot
from backbeat.serving.targeting_index import iter_bits

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


def listener_key(listener: str | None, ip: str, user_agent: str) -> str:
    """The listener id, or a stable hash of IP + user agent when the player sends none."""
    if listener:
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
        walk = self._eligible(snapshot, slot, reserve, bits, now, reasons)
        eligible_seen = 0
        while len(chosen) < pod.max_ads:
            shortlist: list[tuple[ServableLineItem, ServableCreative]] = []
            for item in walk:
                eligible_seen += 1
                if item.advertiser_id in advertisers:
                    reasons["same-advertiser-in-pod"] += 1
                    continue
                if categories and not categories.isdisjoint(
                    top_category(c) for c in item.categories
                ):
                    reasons["competing-category-in-pod"] += 1
                    continue
                creative = self._creative(item, pod, used_ms)
                if creative is None:
                    reasons["creative-does-not-fit"] += 1
                    continue
                shortlist.append((item, creative))
                # Enough once an uncapped item (it cannot fail the caps step) has a runner-up
                # of another tier or price behind it: its tie group is then complete, and the
                # runner-up prices a second-price auction.
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
            rest = [entry for entry, _ in shortlist[position + 1 :]]
            if item.tier == Tier.NON_GUARANTEED and not any(
                other.tier == Tier.NON_GUARANTEED for other in rest
            ):
                # The winner ended the shortlist: the next eligible bidder still sets its price.
                following = next(walk, None)
                if following is not None:
                    rest.append(following)
            price = self._price(slot, item, rest, reserve)
            self.ledger.commit_spend(item, price, now)
            chosen.append(
                Decision(
                    new_decision_id(now), now, request, slot, item, creative, price,
                    eligible=eligible_seen, sequence=len(chosen) + 1 if pod.max_ads > 1 else None,
                    targeted=bits, attributes=attributes,
                )
            )  # fmt: skip
            advertisers.add(item.advertiser_id)
            categories.update(top_category(category) for category in item.categories)
            used_ms += creative.duration_ms
            # Short-listed items after the winner were never cap-checked: they stay candidates
            # for the pod's next position (those before it are capped for this listener).
            walk = _chain(rest, walk)
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

    def _local_block(
        self, item: ServableLineItem, slot: ServableSlot, reserve: int, now: float
    ) -> str | None:
        if not item.start_ts <= now < item.end_ts:
            return "outside-flight"
        if item.currency != slot.currency:
            return "currency-mismatch"
        if not item.is_house and item.cpm_micros < reserve:
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
        rest: list[ServableLineItem],
        reserve: int,
    ) -> int:
        if item.tier != Tier.NON_GUARANTEED:
            return item.cpm_micros  # fixed-price deals and house ads pay their own CPM
        runner_up = next(
            (other.cpm_micros for other in rest if other.tier == Tier.NON_GUARANTEED), None
        )
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


def _chain(
    first: Iterator[ServableLineItem] | object, then: Iterator[ServableLineItem]
) -> Iterator[ServableLineItem]:
    yield from first  # type: ignore[misc]
    yield from then

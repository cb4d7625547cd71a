"""Choosing the ad a listener hears: eligibility, priority, reserve, pacing, caps and budget."""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from dataclasses import dataclass, field

from backbeat.serving.ledger import Ledger
from backbeat.serving.snapshot import ServableCreative, ServableLineItem, ServableSlot, Snapshot


@dataclass(frozen=True, slots=True)
class AdRequest:
    """One ad opportunity as the player or ad inserter describes it."""

    slot_id: int
    listener: str
    country: str | None = None
    device: str | None = None
    platform: str | None = None
    genre: str | None = None
    segments: tuple[str, ...] = ()
    ip: str = ""
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    id: str
    ts: float
    request: AdRequest
    slot: ServableSlot
    line_item: ServableLineItem | None
    creative: ServableCreative | None
    price_micros: int = 0
    no_fill_reason: str | None = None
    eligible: int = 0

    @property
    def filled(self) -> bool:
        return self.line_item is not None


def listener_key(listener: str | None, ip: str, user_agent: str) -> str:
    """The listener id, or a stable hash of IP + user agent when the player sends none."""
    if listener:
        return listener
    return "h:" + hashlib.sha256(f"{ip}\x1f{user_agent}".encode()).hexdigest()[:24]


def new_decision_id(now: float) -> str:
    """Time-ordered and unique across processes: milliseconds then 64 random bits."""
    return f"{int(now * 1000):012x}{secrets.token_hex(8)}"


def _bits_best_first(bits: int):  # type: ignore[no-untyped-def]
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


@dataclass
class Decider:
    """Walks targeting-eligible line items best-first and takes the first that may serve.

    Order: tier (sponsorship, guaranteed, non-guaranteed, house), then CPM, then id.
    Paid tiers must meet the slot's reserve; house ads fill what is left at any price.
    Even pacing holds a line item back while it is ahead of a straight line through its
    flight (plus ``pacing_slack``).
    """

    ledger: Ledger
    pacing_slack: float = 0.02
    _rotation: int = field(default=0, repr=False)

    def decide(
        self, snapshot: Snapshot, slot: ServableSlot, request: AdRequest, now: float
    ) -> Decision:
        attributes = {
            "countries": request.country,
            "devices": request.device,
            "platforms": request.platform,
            "surfaces": slot.surface,
            "positions": slot.position,
            "slots": slot.id,
            "genres": request.genre,
            "segments": request.segments,
        }
        bits = snapshot.index.candidates(attributes)
        decision_id = new_decision_id(now)
        if not bits:
            return Decision(
                decision_id, now, request, slot, None, None, no_fill_reason="no-targeting-match"
            )
        reasons: Counter[str] = Counter()
        eligible = 0
        for position in _bits_best_first(bits):
            item = snapshot.line_items[position]
            reason = self._ineligible(item, slot, now)
            if reason is None:
                eligible += 1
                reason = self.ledger.try_record(item, request.listener, now)
            if reason is not None:
                reasons[reason] += 1
                continue
            self._rotation += 1
            creative = item.creatives[self._rotation % len(item.creatives)]
            return Decision(
                decision_id, now, request, slot, item, creative, item.cpm_micros, eligible=eligible
            )
        return Decision(
            decision_id,
            now,
            request,
            slot,
            None,
            None,
            no_fill_reason=reasons.most_common(1)[0][0],
            eligible=eligible,
        )

    def _ineligible(self, item: ServableLineItem, slot: ServableSlot, now: float) -> str | None:
        if not item.start_ts <= now < item.end_ts:
            return "outside-flight"
        if item.currency != slot.currency:
            return "currency-mismatch"
        if not item.is_house and item.cpm_micros < slot.reserve_micros:
            return "below-reserve"
        if item.pacing == "even" and self._ahead_of_pace(item, now):
            return "paced"
        return None

    def _ahead_of_pace(self, item: ServableLineItem, now: float) -> bool:
        elapsed = (now - item.start_ts) / (item.end_ts - item.start_ts)
        units, impressions = self.ledger.line_item_delivery(item.id)
        delivered = 0.0
        if item.budget_micros:
            delivered = units / (item.budget_micros * 1000)
        if item.goal_impressions:
            delivered = max(delivered, impressions / item.goal_impressions)
        return delivered > elapsed + self.pacing_slack

"""An immutable, indexed copy of what can serve, built from the catalog off the request path.

Line items are ordered best-first (tier, then CPM, then id) and numbered by that order;
their targeting is compiled into a ``TargetingIndex`` over those numbers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backbeat.catalog.models import AdSlot, Advertiser, Campaign, Creative, LineItem
from backbeat.catalog.service import catalog_version
from backbeat.catalog.vocabulary import CAP_PERIOD_SECONDS, TIER_RANK, Pacing, Status, Tier
from backbeat.serving.static_checks import StaticChecks
from backbeat.serving.targeting_index import TargetingIndex
from backbeat.types import to_micros


@dataclass(frozen=True, slots=True)
class CapRule:
    """At most ``count`` per listener per window; ``scope`` names the counter (``li:7``, ``c:3``)."""

    scope: str
    count: int
    window_seconds: int | None  # None: the whole flight

    def window_start(self, now: float) -> int:
        """Fixed, UTC-aligned windows; -1 for whole-flight caps."""
        if self.window_seconds is None:
            return -1
        return int(now // self.window_seconds) * self.window_seconds


def cap_rules(scope: str, caps: list[dict[str, Any]] | None) -> tuple[CapRule, ...]:
    """One rule per distinct window: 3/hour and 5/60 minutes are one counter, capped at 3."""
    tightest: dict[int | None, int] = {}
    for cap in caps or ():
        period = CAP_PERIOD_SECONDS[cap["period"]]
        window = None if period is None else period * int(cap.get("length", 1))
        tightest[window] = min(int(cap["count"]), tightest.get(window, int(cap["count"])))
    return tuple(
        CapRule(scope=scope, count=count, window_seconds=window)
        for window, count in tightest.items()
    )


@dataclass(frozen=True, slots=True)
class ServableCreative:
    id: int
    name: str
    media_url: str
    mime_type: str
    duration_ms: int
    bitrate_kbps: int | None
    click_url: str | None
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServableLineItem:
    """A line item with everything a decision needs; money in integer micros."""

    id: int
    campaign_id: int
    advertiser_id: int
    advertiser_name: str
    name: str
    tier: str
    tier_rank: int
    cpm_micros: int
    currency: str
    budget_micros: int | None
    daily_budget_micros: int | None
    campaign_budget_micros: int
    goal_impressions: int | None
    pacing: str
    caps: tuple[CapRule, ...]
    start_ts: float
    end_ts: float
    targeting: dict[str, Any]
    creatives: tuple[ServableCreative, ...]
    advertiser_category: str | None = None
    # Derived once here, not per decision: the IAB categories of the ad (creatives and
    # advertiser) and their top-level parts, for competitive separation in pods.
    categories: frozenset[str] = field(init=False, default=frozenset(), repr=False, compare=False)
    top_categories: frozenset[str] = field(
        init=False, default=frozenset(), repr=False, compare=False
    )
    # Plain values the decider reads per candidate instead of comparing enums there.
    in_auction: bool = field(init=False, default=False, repr=False, compare=False)
    even_paced: bool = field(init=False, default=False, repr=False, compare=False)
    rank: tuple[int, int] = field(init=False, default=(0, 0), repr=False, compare=False)

    def __post_init__(self) -> None:
        found = {category for creative in self.creatives for category in creative.categories}
        if self.advertiser_category:
            found.add(self.advertiser_category)
        object.__setattr__(self, "categories", frozenset(found))
        tops = frozenset(category.split("-", 1)[0] for category in found)
        object.__setattr__(self, "top_categories", tops)
        object.__setattr__(self, "in_auction", self.tier == Tier.NON_GUARANTEED)
        object.__setattr__(self, "even_paced", self.pacing == Pacing.EVEN)
        object.__setattr__(self, "rank", (self.tier_rank, self.cpm_micros))

    @property
    def is_house(self) -> bool:
        return self.tier == Tier.HOUSE


@dataclass(frozen=True, slots=True)
class ServableSlot:
    id: int
    name: str
    surface: str
    position: str
    reserve_micros: int
    currency: str
    reserve_by_country: dict[str, int] = field(default_factory=dict)
    auction: str = "second_price"

    def reserve_for(self, country: str | None) -> int:
        return (
            self.reserve_by_country.get(country, self.reserve_micros)
            if country
            else self.reserve_micros
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    line_items: tuple[ServableLineItem, ...]
    slots: dict[int, ServableSlot]
    index: TargetingIndex
    checks: StaticChecks = field(default_factory=lambda: StaticChecks(()), repr=False)

    @classmethod
    def empty(cls) -> Snapshot:
        return cls.of(-1, [], [])

    @classmethod
    def of(
        cls, version: int, line_items: list[ServableLineItem], slots: list[ServableSlot]
    ) -> Snapshot:
        ordered = sorted(line_items, key=lambda item: (item.tier_rank, -item.cpm_micros, item.id))
        return cls(
            version=version,
            line_items=tuple(ordered),
            slots={slot.id: slot for slot in slots},
            index=TargetingIndex.build(item.targeting for item in ordered),
            checks=StaticChecks(ordered),
        )


def load_snapshot(session: Session, *, now: datetime) -> Snapshot:
    """Read every servable object: active, with active parents, flight not over, with audio."""
    version = catalog_version(session)
    rows = session.execute(
        select(LineItem, Campaign, Advertiser)
        .join(Campaign, LineItem.campaign_id == Campaign.id)
        .join(Advertiser, Campaign.advertiser_id == Advertiser.id)
        .where(
            LineItem.status == Status.ACTIVE,
            Campaign.status == Status.ACTIVE,
            Advertiser.status == Status.ACTIVE,
            Campaign.end_at > now,
        )
    ).all()
    creatives: dict[int, list[ServableCreative]] = defaultdict(list)
    for creative in session.execute(
        select(Creative).where(Creative.status == Status.ACTIVE).order_by(Creative.id)
    ).scalars():
        creatives[creative.line_item_id].append(
            ServableCreative(
                id=creative.id,
                name=creative.name,
                media_url=creative.media_url,
                mime_type=creative.mime_type,
                duration_ms=creative.duration_ms,
                bitrate_kbps=creative.bitrate_kbps,
                click_url=creative.click_url,
                categories=tuple(creative.categories or ()),
            )
        )
    items = [
        ServableLineItem(
            id=item.id,
            campaign_id=campaign.id,
            advertiser_id=advertiser.id,
            advertiser_name=advertiser.name,
            advertiser_category=advertiser.category,
            name=item.name,
            tier=item.tier,
            tier_rank=TIER_RANK[item.tier],
            cpm_micros=to_micros(item.cpm),
            currency=campaign.currency,
            budget_micros=None if item.budget is None else to_micros(item.budget),
            daily_budget_micros=None if item.daily_budget is None else to_micros(item.daily_budget),
            campaign_budget_micros=to_micros(campaign.total_budget),
            goal_impressions=item.goal_impressions,
            pacing=item.pacing,
            caps=cap_rules(f"li:{item.id}", item.frequency_caps)
            + cap_rules(f"c:{campaign.id}", campaign.frequency_caps),
            start_ts=campaign.start_at.timestamp(),
            end_ts=campaign.end_at.timestamp(),
            targeting=item.targeting or {},
            creatives=tuple(creatives[item.id]),
        )
        for item, campaign, advertiser in rows
        if creatives.get(item.id)
    ]
    slots = [
        ServableSlot(
            id=slot.id,
            name=slot.name,
            surface=slot.surface,
            position=slot.position,
            reserve_micros=to_micros(slot.reserve_cpm),
            currency=slot.currency,
            reserve_by_country={
                country: to_micros(Decimal(amount))
                for country, amount in (slot.reserve_by_country or {}).items()
            },
            auction=slot.auction,
        )
        for slot in session.execute(select(AdSlot).where(AdSlot.status == Status.ACTIVE)).scalars()
    ]
    return Snapshot.of(version, items, slots)

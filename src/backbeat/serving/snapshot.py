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
    # Per line item, the row versions it was built from (``load_snapshot(previous=...)``).
    fingerprints: dict[int, tuple[Any, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # The frequency-cap counters live line items count on (the ledger frees the others).
    cap_scopes: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def empty(cls) -> Snapshot:
        return cls.of(-1, [], [])

    @classmethod
    def of(
        cls,
        version: int,
        line_items: list[ServableLineItem],
        slots: list[ServableSlot],
        fingerprints: dict[int, tuple[Any, ...]] | None = None,
    ) -> Snapshot:
        ordered = sorted(line_items, key=lambda item: (item.tier_rank, -item.cpm_micros, item.id))
        return cls(
            version=version,
            line_items=tuple(ordered),
            slots={slot.id: slot for slot in slots},
            index=TargetingIndex.build(item.targeting for item in ordered),
            checks=StaticChecks(ordered),
            fingerprints=fingerprints or {},
            cap_scopes=frozenset(rule.scope for item in ordered for rule in item.caps),
        )


# Rows that can serve: active, with active parents, flight not over.
def _servable(now: datetime) -> Any:
    return (
        (LineItem.status == Status.ACTIVE)
        & (Campaign.status == Status.ACTIVE)
        & (Advertiser.status == Status.ACTIVE)
        & (Campaign.end_at > now)
    )


_LOAD_CHUNK = 500  # ids per ``IN`` list when reloading changed line items


def _row_versions(session: Session, now: datetime) -> dict[int, tuple[Any, ...]]:
    """Each servable line item's fingerprint: the version and update time of its row, its
    campaign's, its advertiser's and its active creatives'. Every catalog write goes
    through the ORM, which bumps ``version`` (optimistic concurrency); the update time
    also tells apart a new row that reused a deleted one's id."""
    creatives: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for line_item_id, *versions in session.execute(
        select(Creative.line_item_id, Creative.id, Creative.version, Creative.updated_at)
        .where(Creative.status == Status.ACTIVE)
        .order_by(Creative.id)
    ):
        creatives[line_item_id].append(tuple(versions))
    rows = session.execute(
        select(
            LineItem.id,
            LineItem.version,
            LineItem.updated_at,
            Campaign.version,
            Campaign.updated_at,
            Advertiser.version,
            Advertiser.updated_at,
        )
        .join(Campaign, LineItem.campaign_id == Campaign.id)
        .join(Advertiser, Campaign.advertiser_id == Advertiser.id)
        .where(_servable(now))
    )
    return {
        item_id: (*versions, tuple(creatives[item_id]))
        for item_id, *versions in rows
        if item_id in creatives
    }


def _fingerprint(
    item: LineItem, campaign: Campaign, advertiser: Advertiser, creatives: list[Creative]
) -> tuple[Any, ...]:
    """``_row_versions``' fingerprint of rows already loaded."""
    return (
        item.version,
        item.updated_at,
        campaign.version,
        campaign.updated_at,
        advertiser.version,
        advertiser.updated_at,
        tuple((creative.id, creative.version, creative.updated_at) for creative in creatives),
    )


def _load_line_items(
    session: Session,
    now: datetime,
    ids: list[int] | None,
    fingerprints: dict[int, tuple[Any, ...]],
) -> list[ServableLineItem]:
    """Servable line items in full (all of them, or those of ``ids``); their fingerprints
    go into ``fingerprints``, taken from the very rows read."""
    statement = (
        select(LineItem, Campaign, Advertiser)
        .join(Campaign, LineItem.campaign_id == Campaign.id)
        .join(Advertiser, Campaign.advertiser_id == Advertiser.id)
        .where(_servable(now))
    )
    creative_rows = select(Creative).where(Creative.status == Status.ACTIVE).order_by(Creative.id)
    if ids is not None:
        statement = statement.where(LineItem.id.in_(ids))
        creative_rows = creative_rows.where(Creative.line_item_id.in_(ids))
    rows = session.execute(statement).all()
    loaded: dict[int, list[Creative]] = defaultdict(list)
    creatives: dict[int, list[ServableCreative]] = defaultdict(list)
    for creative in session.execute(creative_rows).scalars():
        loaded[creative.line_item_id].append(creative)
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
    for item, campaign, advertiser in rows:
        if loaded.get(item.id):
            fingerprints[item.id] = _fingerprint(item, campaign, advertiser, loaded[item.id])
    return items


def load_snapshot(session: Session, *, now: datetime, previous: Snapshot | None = None) -> Snapshot:
    """Read every servable object: active, with active parents, flight not over, with audio.

    With ``previous``, only line items whose rows changed since it (``fingerprints``)
    are read in full; the others are carried over as they are. A 10,000-item book
    otherwise costs every worker seconds of CPU on each catalog change, beside serving.
    """
    version = catalog_version(session)
    kept: list[ServableLineItem] = []
    fingerprints: dict[int, tuple[Any, ...]] = {}
    only: list[int] | None = None
    if previous is not None and previous.fingerprints:
        current = _row_versions(session, now)
        old = previous.fingerprints
        for item in previous.line_items:
            fingerprint = current.get(item.id)
            if fingerprint is not None and old.get(item.id) == fingerprint:
                kept.append(item)
                fingerprints[item.id] = fingerprint
        only = [item_id for item_id in current if item_id not in fingerprints]
    fresh: list[ServableLineItem] = []
    chunks = (
        [None]
        if only is None
        else [only[i : i + _LOAD_CHUNK] for i in range(0, len(only), _LOAD_CHUNK)]
    )
    for chunk in chunks:
        fresh += _load_line_items(session, now, chunk, fingerprints)
    items = kept + fresh
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
    return Snapshot.of(version, items, slots, fingerprints)

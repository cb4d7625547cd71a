"""An immutable, indexed copy of what can serve, built from the catalog off the request path.

Line items are ordered best-first (tier, then CPM, then id) and numbered by that order;
the targeting index maps each attribute value to a bitset (a Python int) of the line
items it admits, so a decision ANDs a handful of bitsets and walks set bits best-first.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backbeat.catalog.models import AdSlot, Advertiser, Campaign, Creative, LineItem
from backbeat.catalog.service import catalog_version
from backbeat.catalog.targeting import TARGETING_KEYS
from backbeat.catalog.vocabulary import CAP_PERIOD_SECONDS, TIER_RANK, Status, Tier
from backbeat.types import to_micros

SINGLE_VALUED_KEYS = (
    "countries",
    "devices",
    "platforms",
    "surfaces",
    "positions",
    "slots",
    "genres",
)
MULTI_VALUED_KEYS = ("segments",)
assert set(SINGLE_VALUED_KEYS + MULTI_VALUED_KEYS) == set(TARGETING_KEYS)


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
    """A line item with everything a decision needs, money in integer micros."""

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
    campaign_budget_micros: int
    goal_impressions: int | None
    pacing: str
    cap_count: int | None
    cap_period_seconds: int | None
    start_ts: float
    end_ts: float
    targeting: dict[str, frozenset[Any]]
    creatives: tuple[ServableCreative, ...]

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


@dataclass(slots=True)
class TargetingIndex:
    """Per targeting key: value -> bitset of admitting line items, and who is unrestricted."""

    all_bits: int = 0
    by_value: dict[str, dict[Any, int]] = field(default_factory=lambda: defaultdict(dict))
    unrestricted: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, line_items: list[ServableLineItem]) -> TargetingIndex:
        index = cls(all_bits=(1 << len(line_items)) - 1)
        for key in TARGETING_KEYS:
            values: dict[Any, int] = {}
            free = 0
            for position, item in enumerate(line_items):
                admitted = item.targeting.get(key)
                if admitted is None:
                    free |= 1 << position
                    continue
                for value in admitted:
                    values[value] = values.get(value, 0) | (1 << position)
            index.by_value[key] = values
            index.unrestricted[key] = free
        return index

    def candidates(self, attributes: dict[str, Any]) -> int:
        """Bitset of line items whose targeting admits the request."""
        bits = self.all_bits
        for key in SINGLE_VALUED_KEYS:
            bits &= self.unrestricted[key] | self.by_value[key].get(attributes.get(key), 0)
            if not bits:
                return 0
        for key in MULTI_VALUED_KEYS:
            admitted = self.unrestricted[key]
            values = self.by_value[key]
            for value in attributes.get(key) or ():
                admitted |= values.get(value, 0)
            bits &= admitted
        return bits


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    line_items: tuple[ServableLineItem, ...]
    slots: dict[int, ServableSlot]
    index: TargetingIndex

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(version=-1, line_items=(), slots={}, index=TargetingIndex())

    @classmethod
    def of(
        cls, version: int, line_items: list[ServableLineItem], slots: list[ServableSlot]
    ) -> Snapshot:
        ordered = sorted(line_items, key=lambda item: (item.tier_rank, -item.cpm_micros, item.id))
        return cls(
            version=version,
            line_items=tuple(ordered),
            slots={slot.id: slot for slot in slots},
            index=TargetingIndex.build(ordered),
        )


def _ts(moment: datetime) -> float:
    return moment.timestamp()


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
            name=item.name,
            tier=item.tier,
            tier_rank=TIER_RANK[item.tier],
            cpm_micros=to_micros(item.cpm),
            currency=campaign.currency,
            budget_micros=None if item.budget is None else to_micros(item.budget),
            campaign_budget_micros=to_micros(campaign.total_budget),
            goal_impressions=item.goal_impressions,
            pacing=item.pacing,
            cap_count=item.cap_count,
            cap_period_seconds=CAP_PERIOD_SECONDS.get(item.cap_period) if item.cap_period else None,
            start_ts=_ts(campaign.start_at),
            end_ts=_ts(campaign.end_at),
            targeting={key: frozenset(values) for key, values in (item.targeting or {}).items()},
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
        )
        for slot in session.execute(select(AdSlot).where(AdSlot.status == Status.ACTIVE)).scalars()
    ]
    return Snapshot.of(version, items, slots)

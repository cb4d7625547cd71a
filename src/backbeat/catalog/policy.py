"""What an advertiser key may book: the publisher keeps its own tiers and a price floor.

``house`` (the platform's filler) and ``sponsorship`` (sold by the publisher, ahead of
everything) are the publisher's tiers: only the admin books or changes line items in them.
An advertiser key books ``guaranteed`` and ``non_guaranteed`` line items at a CPM no lower
than the lowest reserve of the active slots in its campaign's currency (a line item below
every reserve could never serve; without any active slot the floor is one micro), and
never changes slots (``catalog.service.SLOTS`` is admin-written).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backbeat.catalog.auth import Principal
from backbeat.catalog.models import AdSlot, Campaign, LineItem
from backbeat.catalog.vocabulary import Status, Tier
from backbeat.errors import InvalidInput, PermissionDenied

ADVERTISER_TIERS = frozenset({Tier.GUARANTEED, Tier.NON_GUARANTEED})
PUBLISHER_TIERS = frozenset(Tier) - ADVERTISER_TIERS
MIN_CPM = Decimal("0.000001")


def cpm_floor(session: Session, currency: str) -> Decimal:
    """The lowest CPM an advertiser key may book in ``currency``."""
    lowest = session.execute(
        select(func.min(AdSlot.reserve_cpm)).where(
            AdSlot.status == Status.ACTIVE, AdSlot.currency == currency
        )
    ).scalar_one_or_none()
    return max(Decimal(lowest), MIN_CPM) if lowest is not None else MIN_CPM


def check_line_item_booking(
    session: Session,
    principal: Principal,
    values: dict[str, Any],
    existing: LineItem | None,
) -> None:
    """Refuse an advertiser key's line item write outside its tiers or under the floor."""
    if principal.is_admin:
        return
    if existing is not None and existing.tier not in ADVERTISER_TIERS:
        raise PermissionDenied(
            f"line item {existing.id} is in the publisher's {existing.tier} tier",
            reason="publisher-tier",
        )
    tier = values.get("tier", existing.tier if existing is not None else None)
    if tier is not None and tier not in ADVERTISER_TIERS:
        raise PermissionDenied(
            f"only the publisher books {tier} line items; advertiser keys book "
            + " or ".join(sorted(ADVERTISER_TIERS)),
            reason="tier-not-allowed",
        )
    if "cpm" not in values or values["cpm"] is None:
        return
    campaign_id = values.get("campaign_id", existing.campaign_id if existing else None)
    currency = session.execute(
        select(Campaign.currency).where(Campaign.id == campaign_id)
    ).scalar_one_or_none()
    if currency is None:
        return  # the campaign lookup that follows answers 404
    floor = cpm_floor(session, currency)
    if Decimal(values["cpm"]) < floor:
        raise InvalidInput(
            f"cpm must be at least {floor} {currency}, the lowest slot reserve",
            reason="cpm-below-reserve",
            field="cpm",
        )

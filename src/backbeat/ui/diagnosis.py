"""Why a line item is not delivering (or not as planned), in words, from what is known.

Checked in the order a person would fix them: status, flight, creatives, money and goal
(as served: the same conditions that keep a line item out of the ad server's snapshot or
make the decider skip it), then pacing. Supply-side reasons per slot are on the overview.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from backbeat.catalog.models import Campaign, LineItem
from backbeat.catalog.vocabulary import Status
from backbeat.ui.pacing import Progress


def diagnose(
    *,
    item: LineItem,
    campaign: Campaign,
    active_creatives: int,
    spend: Decimal,
    campaign_spend: Decimal,
    impressions: int,
    progress: Progress,
    probability: float | None,
    now: datetime,
) -> list[str]:
    reasons: list[str] = []
    if item.status != Status.ACTIVE:
        reasons.append(f"the line item is {item.status}")
    if campaign.status != Status.ACTIVE:
        reasons.append(f"the campaign is {campaign.status}")
    if now < campaign.start_at:
        reasons.append(f"the flight starts {campaign.start_at:%Y-%m-%d %H:%M} UTC")
    elif now >= campaign.end_at:
        reasons.append("the flight has ended")
    if active_creatives == 0:
        reasons.append("no active creative: it cannot serve until it has one")
    if item.budget is not None and spend >= item.budget:
        reasons.append("its budget is spent")
    if campaign_spend >= campaign.total_budget:
        reasons.append("the campaign budget is spent")
    if item.goal_impressions and impressions >= item.goal_impressions:
        reasons.append("its impression goal is reached")
    if reasons:
        return reasons
    if probability is not None and probability <= 0.0 and progress.status != "behind":
        reasons.append("pacing is holding it back (pass-through 0 while on or ahead of plan)")
    elif progress.status == "behind":
        if probability is not None and probability >= 0.999:
            reasons.append(
                "behind plan although pacing lets every eligible request through: too little "
                "matching supply (targeting, caps, reserve prices, or higher tiers winning)"
            )
        else:
            reasons.append("behind plan: pacing is speeding it up")
    return reasons

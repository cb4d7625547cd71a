"""Shared inputs of the forecast tests: a small synthetic log and forecasters over it."""

from __future__ import annotations

from functools import cache

from backbeat.forecast.history import OpportunityTable
from backbeat.forecast.service import Forecaster
from backbeat.forecast.synthetic import booked_item, synthetic_table

DAY = 86400.0
NOW = float(int(1_790_000_000 // 3600) * 3600 + 1800)  # 2026-09-21, half past the hour


@cache
def small_table() -> OpportunityTable:
    """Three weeks of 40,000 logged requests (10% decision-log sampling)."""
    return synthetic_table(40_000, days=21, end=NOW, seed=3)


def forecaster(items=(), **options) -> Forecaster:
    options.setdefault("supply_model", "profile")
    return Forecaster.from_table(small_table(), list(items), now=NOW, **options)


def guaranteed(
    item_id: int,
    goal: int,
    targeting: dict,
    *,
    days: float = 7,
    start: float = NOW,
    tier: str = "guaranteed",
    advertiser_id: int = 1,
):
    return booked_item(
        item_id,
        targeting=targeting,
        tier=tier,
        goal=goal,
        start=start,
        end=start + days * DAY,
        advertiser_id=advertiser_id,
    )

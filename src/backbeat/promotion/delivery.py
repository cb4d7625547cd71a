"""Counting promotion delivery from the event log: reach, exposures, clicks, conversions, spend.

Pure functions, like ``measurement.delivery``: each exposure, click and conversion counts
once per id (the earliest copy wins); a click counts only for a counted exposure; a
conversion counts for the campaign of the listener's latest exposure to the same item within
that campaign's attribution window before it, at most one conversion per exposure. Spend is
exact integers in nanos: a CPM exposure costs ``price_micros`` nanos (CPM / 1000), a CPC
click ``price_micros × 1000`` nanos.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from backbeat.events import Event, EventType
from backbeat.promotion.events import is_promotion
from backbeat.promotion.vocabulary import ConversionType, PriceModel

DAY = 86_400


def day_of(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


@dataclass(slots=True)
class PromotionRow:
    campaign_id: int
    currency: str
    exposures: int = 0
    clicks: int = 0
    conversions_new: int = 0
    conversions_reactivated: int = 0
    conversions_amplified: int = 0
    spend_nanos: int = 0
    listeners: set[str] = field(default_factory=set)

    @property
    def reach(self) -> int:
        return len(self.listeners)

    @property
    def conversions(self) -> int:
        return self.conversions_new + self.conversions_reactivated + self.conversions_amplified


@dataclass
class PromotionCounts:
    daily: dict[tuple[int, date], PromotionRow] = field(default_factory=dict)
    totals: dict[int, PromotionRow] = field(default_factory=dict)
    duplicates: int = 0
    unattributed_conversions: int = 0
    events_read: int = 0


def _rows(counts: PromotionCounts, event: Event, ts: float) -> tuple[PromotionRow, PromotionRow]:
    assert event.campaign_id is not None
    key = (event.campaign_id, day_of(ts))
    daily = counts.daily.get(key)
    if daily is None:
        daily = counts.daily[key] = PromotionRow(event.campaign_id, event.currency)
    total = counts.totals.get(event.campaign_id)
    if total is None:
        total = counts.totals[event.campaign_id] = PromotionRow(event.campaign_id, event.currency)
    return daily, total


def count_promotion(events: Iterable[Event], attribution_days: dict[int, int]) -> PromotionCounts:
    """Daily and flight-to-date rows per promotion campaign."""
    counts = PromotionCounts()
    kept: dict[tuple[str, str], Event] = {}
    for event in events:
        if not is_promotion(event):
            continue
        counts.events_read += 1
        key = (event.type, event.decision_id)
        previous = kept.get(key)
        if previous is not None:
            counts.duplicates += 1
            if event.ts >= previous.ts:
                continue
        kept[key] = event
    exposures = {
        e.decision_id: e for (kind, _), e in kept.items() if kind == EventType.PROMOTION_EXPOSURE
    }
    by_listener_item: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for exposure in sorted(exposures.values(), key=lambda e: (e.ts, e.decision_id)):
        if exposure.campaign_id is None:
            continue
        item = (exposure.attrs or {}).get("item_id", "")
        by_listener_item.setdefault((exposure.listener, item), []).append(
            (exposure.ts, exposure.decision_id)
        )
        for row in _rows(counts, exposure, exposure.ts):
            row.exposures += 1
            row.listeners.add(exposure.listener)
            if (exposure.attrs or {}).get("price_model", PriceModel.CPM) == PriceModel.CPM:
                row.spend_nanos += exposure.price_micros
    for (kind, _), click in sorted(kept.items(), key=lambda kv: (kv[1].ts, kv[0][1])):
        if kind != EventType.PROMOTION_CLICK:
            continue
        exposure = exposures.get(click.decision_id)
        if exposure is None or exposure.campaign_id is None:
            continue
        for row in _rows(counts, exposure, click.ts):
            row.clicks += 1
            if (exposure.attrs or {}).get("price_model") == PriceModel.CPC:
                row.spend_nanos += exposure.price_micros * 1000
    converted: set[str] = set()
    conversions = [e for (kind, _), e in kept.items() if kind == EventType.CONVERSION]
    for conversion in sorted(conversions, key=lambda e: (e.ts, e.decision_id)):
        attrs = conversion.attrs or {}
        history = by_listener_item.get((conversion.listener, attrs.get("item_id", "")), [])
        index = bisect.bisect_right(history, (conversion.ts, "\uffff")) - 1
        exposure = None
        while index >= 0:
            ts, exposure_id = history[index]
            candidate = exposures[exposure_id]
            window = attribution_days.get(candidate.campaign_id or 0, 14) * DAY
            if conversion.ts - ts > window:
                break
            if exposure_id not in converted:
                exposure = candidate
                break
            index -= 1
        if exposure is None:
            counts.unattributed_conversions += 1
            continue
        converted.add(exposure.decision_id)
        column = {
            ConversionType.NEW: "conversions_new",
            ConversionType.REACTIVATED: "conversions_reactivated",
        }.get(attrs.get("conversion_type", ""), "conversions_amplified")
        for row in _rows(counts, exposure, conversion.ts):
            setattr(row, column, getattr(row, column) + 1)
    return counts

"""The share plan (the simple fallback): remaining goal over forecast remaining supply.

For each sponsorship or guaranteed line item with a goal (impressions, or a budget at its
fixed CPM), ``share = remaining goal / forecast remaining eligible supply``, capped at 1;
servers start pacing it at that share. ``backbeat plan --algorithm share`` writes it, and
``backbeat plan`` falls back to it when the decision log is too thin for a supply sample.

Supply comes from the decision log. Its sampled ``opportunity`` records carry the request
attributes, so replaying them against each line item's targeting, each weighted 1/sample,
gives the line item's eligible requests; divided by the days of traffic the log spans (by
the traffic curve, so a log of one busy afternoon is not mistaken for a day) and times the
days of traffic left in the flight, that is the forecast. The same pass learns the traffic
curve, which travels with the plan so that servers pace to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backbeat.catalog.vocabulary import WEEKDAYS, Tier
from backbeat.eventlog import EventLogReader
from backbeat.events import Event, EventType
from backbeat.forecast.traffic_curve import CurveTally
from backbeat.serving.pacing import PlanEntry, TrafficCurve
from backbeat.serving.plan import AllocationPlan
from backbeat.serving.snapshot import ServableLineItem
from backbeat.serving.targeting_index import TargetingIndex, iter_bits

__all__ = ["Opportunity", "compute_plan", "plan_goal", "read_opportunities"]

DAY = 86400
PLANNED_TIERS = frozenset({Tier.SPONSORSHIP, Tier.GUARANTEED})
# Decision-log fields that describe the decision, not the request.
_NOT_ATTRIBUTES = frozenset({"targeted", "catalog_version", "winners", "sample"})
# A log spanning less traffic than this (about a quiet quarter hour) forecasts nothing.
_MIN_OBSERVED_DAYS = 0.005


@dataclass(frozen=True, slots=True)
class Opportunity:
    """One sampled ad request of the decision log: when, how many it stands for, its attributes."""

    ts: float
    weight: float
    attributes: Mapping[str, Any]


def opportunity_from_event(event: Event) -> Opportunity:
    """Decode a decision-log record; requests before a dayparting item existed get UTC time."""
    attrs = dict(event.attrs or {})
    sample = attrs.get("sample") or 1.0
    attributes = {key: value for key, value in attrs.items() if key not in _NOT_ATTRIBUTES}
    if "dayparts" not in attributes or "weekdays" not in attributes:
        # Only logged while some line item targets them; the listener's zone is not logged,
        # so UTC is the best replay for the rest.
        moment = datetime.fromtimestamp(event.ts, UTC)
        attributes.setdefault("dayparts", moment.hour)
        attributes.setdefault("weekdays", WEEKDAYS[moment.weekday()])
    return Opportunity(event.ts, 1.0 / float(sample), attributes)


def read_opportunities(
    directory: Path, *, since: float | None = None, until: float | None = None
) -> Iterator[Opportunity]:
    """The decision log's opportunities in [since, until), from every segment of ``directory``."""
    marker = f'"{EventType.OPPORTUNITY.value}"'.encode()
    for record in EventLogReader(Path(directory)).records():
        if marker not in record.payload:  # skip decoding tracking events
            continue
        event = Event.from_bytes(record.payload)
        if event.type != EventType.OPPORTUNITY:
            continue
        if (since is not None and event.ts < since) or (until is not None and event.ts >= until):
            continue
        yield opportunity_from_event(event)


def plan_goal(item: ServableLineItem) -> float | None:
    """The lifetime goal in impressions: the goal itself, or the budget at the fixed CPM."""
    if item.goal_impressions:
        return float(item.goal_impressions)
    if item.budget_micros and item.cpm_micros > 0:
        return item.budget_micros * 1000 / item.cpm_micros
    return None


def compute_plan(
    *,
    line_items: Sequence[ServableLineItem],
    opportunities: Iterable[Opportunity],
    delivered: Mapping[int, int],
    now: float,
    curve: TrafficCurve | None = None,
    min_curve_samples: int = 1000,
) -> AllocationPlan:
    """The plan for the sponsorship and guaranteed line items with a goal still in flight.

    Args:
        line_items: the servable book (``load_snapshot``); others are ignored.
        opportunities: the decision log's sampled requests over the look-back window.
        delivered: impressions counted so far per line item.
        now: when the plan starts to apply.
        curve: the traffic curve; None learns it from ``opportunities`` (default curve
            where they are too few).

    A line item whose targeting matched no logged request gets no entry: the controller
    then starts it conservatively instead of from a share of an unknown supply.
    """
    planned = [
        item
        for item in line_items
        if item.tier in PLANNED_TIERS and item.end_ts > now and plan_goal(item) is not None
    ]
    index = TargetingIndex.build(item.targeting for item in planned)
    matched = [0.0] * len(planned)
    tally = CurveTally()
    for opportunity in opportunities:
        tally.add(opportunity.ts, opportunity.weight)
        for position in iter_bits(index.candidates(opportunity.attributes)):
            matched[position] += opportunity.weight
    learned = curve is None
    if curve is None:
        curve = tally.curve(min_samples=min_curve_samples)
    observed = 0.0
    if tally.first is not None and tally.last is not None:
        observed = curve.between(tally.first, tally.last)
    entries: dict[int, PlanEntry] = {}
    if observed >= _MIN_OBSERVED_DAYS:
        for item, eligible in zip(planned, matched, strict=True):
            goal = plan_goal(item)
            assert goal is not None
            supply = eligible / observed * curve.between(max(now, item.start_ts), item.end_ts)
            if supply <= 0:
                continue
            remaining = max(goal - delivered.get(item.id, 0), 0.0)
            entries[item.id] = PlanEntry(min(1.0, remaining / supply), math.ceil(supply))
    return AllocationPlan(
        generated_at=now,
        entries=entries,
        curve=curve.hourly if learned and tally.samples >= min_curve_samples else None,
        opportunities=tally.samples,
        observed_days=observed,
    )

"""The allocation plan: the share of its eligible supply each guaranteed line item needs.

This is the simple plan of the decisioning issue (the forecasting work replaces it): for
each sponsorship or guaranteed line item with a goal (impressions, or a budget at its
fixed CPM), ``share = remaining goal / forecast remaining eligible supply``, capped at 1.

Supply comes from the decision log. Its sampled ``opportunity`` records carry the request
attributes, so replaying them against each line item's targeting, each weighted 1/sample,
gives the line item's eligible requests; divided by the days of traffic the log spans (by
the traffic curve, so a log of one busy afternoon is not mistaken for a day) and times the
days of traffic left in the flight, that is the forecast. The same pass learns the traffic
curve, which travels with the plan so that servers pace to it.

The plan is an input to servers, never computed by them: ``backbeat plan`` writes it as a
small JSON file (``var/allocation-plan.json`` by default) and each server's ``PlanFile``
reloads it into its ``PacingController`` when the file changes::

    {"format": 1, "generated_at": 1790000000.0, "opportunities": 52310,
     "observed_days": 6.98, "curve": [0.012, ...24 weights...],
     "line_items": {"17": {"share": 0.31, "supply_forecast": 412000}}}

``PlanFile`` writes atomically (rename) so a server never reads half a plan.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from backbeat.catalog.vocabulary import WEEKDAYS, Tier
from backbeat.errors import InvalidInput
from backbeat.eventlog import EventLogReader
from backbeat.events import Event, EventType
from backbeat.observability import log
from backbeat.serving.pacing import CurveTally, PlanEntry, TrafficCurve
from backbeat.serving.snapshot import ServableLineItem
from backbeat.serving.targeting_index import TargetingIndex, iter_bits

__all__ = [
    "DEFAULT_PLAN_NAME",
    "PLAN_FORMAT",
    "AllocationPlan",
    "Opportunity",
    "PlanFile",
    "compute_plan",
    "plan_goal",
    "read_opportunities",
    "read_plan",
    "write_plan",
]

DEFAULT_PLAN_NAME = "allocation-plan.json"
PLAN_FORMAT = 1
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


@dataclass(frozen=True, slots=True)
class AllocationPlan:
    """What servers load: a share and a supply forecast per line item, and the learned curve."""

    generated_at: float
    entries: dict[int, PlanEntry] = field(default_factory=dict)
    curve: tuple[float, ...] | None = None  # 24 hourly weights; None: servers keep theirs
    opportunities: int = 0
    observed_days: float = 0.0

    def traffic_curve(self) -> TrafficCurve | None:
        return TrafficCurve(self.curve) if self.curve is not None else None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": PLAN_FORMAT,
                "generated_at": self.generated_at,
                "opportunities": self.opportunities,
                "observed_days": self.observed_days,
                "curve": list(self.curve) if self.curve is not None else None,
                "line_items": {
                    str(item_id): {"share": entry.share, "supply_forecast": entry.supply_forecast}
                    for item_id, entry in sorted(self.entries.items())
                },
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> AllocationPlan:
        try:
            document = orjson.loads(data)
            if document.get("format") != PLAN_FORMAT:
                raise ValueError(f"unknown plan format {document.get('format')!r}")
            entries = {}
            for key, value in document["line_items"].items():
                share = float(value["share"])
                if not 0.0 <= share <= 1.0:
                    raise ValueError(f"share {share} of line item {key} is not within [0, 1]")
                forecast = value.get("supply_forecast")
                entries[int(key)] = PlanEntry(share, None if forecast is None else int(forecast))
            curve = document.get("curve")
            plan = cls(
                generated_at=float(document["generated_at"]),
                entries=entries,
                curve=None if curve is None else tuple(float(weight) for weight in curve),
                opportunities=int(document.get("opportunities", 0)),
                observed_days=float(document.get("observed_days", 0.0)),
            )
            plan.traffic_curve()  # validates the curve
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise InvalidInput(
                f"not a valid allocation plan: {error}", reason="invalid-allocation-plan"
            ) from error
        return plan


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


def write_plan(plan: AllocationPlan, path: Path) -> None:
    """Replace the plan file atomically: servers polling it see the old plan or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(plan.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_plan(path: Path) -> AllocationPlan:
    return AllocationPlan.from_json(Path(path).read_bytes())


class PlanFile:
    """A ``PlanSource`` reloading the plan file whenever it changes (a ``stat`` per poll).

    A missing file is an empty plan; an unreadable one is logged once and the last good
    plan stays in force.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.loaded: AllocationPlan | None = None
        self._seen: tuple[int, int, int] | None = None

    def poll(self) -> tuple[Mapping[int, PlanEntry], TrafficCurve | None] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._seen is None:
                return None
            self._seen, self.loaded = None, None
            log.info("allocation plan removed", path=str(self.path))
            return {}, None
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key == self._seen:
            return None
        self._seen = key
        try:
            plan = read_plan(self.path)
        except (OSError, InvalidInput) as error:
            log.warning("allocation plan not loaded", path=str(self.path), error=str(error))
            return None
        self.loaded = plan
        log.info("allocation plan loaded", path=str(self.path), line_items=len(plan.entries))
        return plan.entries, plan.traffic_curve()

"""Pacing: the traffic curve, the feedback controller, the allocation plan and a simulated flight."""

from __future__ import annotations

import math
import random
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.catalog.vocabulary import TIER_RANK, Pacing, Tier
from backbeat.cli.plan import plan as plan_command
from backbeat.config import Settings
from backbeat.errors import InvalidInput
from backbeat.eventlog import EventLogWriter
from backbeat.events import Event, EventType
from backbeat.forecast.allocation.share import Opportunity, compute_plan, read_opportunities
from backbeat.forecast.traffic_curve import learn_traffic_curve
from backbeat.serving.ledger import Delivery
from backbeat.serving.pacing import DEFAULT_CURVE, PacingController, PlanEntry, TrafficCurve
from backbeat.serving.plan import AllocationPlan, PlanFile, read_plan, write_plan
from backbeat.serving.snapshot import ServableCreative, ServableLineItem, Snapshot
from backbeat.serving.targeting_index import compile_predicate

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

import bench_pacing  # noqa: E402

HOUR = 3600.0
DAY = 86400.0
T0 = 1_790_035_200.0  # a UTC midnight
USD = 1_000_000
CREATIVE = ServableCreative(
    1, "Spot", "https://cdn.example.com/a.mp3", "audio/mpeg", 30_000, 128, None, ()
)


def item(
    id: int = 1,
    *,
    tier: str = Tier.GUARANTEED,
    pacing: str = Pacing.EVEN,
    goal: int | None = 10_000,
    budget: float | None = None,
    daily_budget: float | None = None,
    cpm: float = 10.0,
    start: float = T0,
    end: float = T0 + DAY,
    targeting: dict[str, Any] | None = None,
) -> ServableLineItem:
    return ServableLineItem(
        id=id, campaign_id=id, advertiser_id=id, advertiser_name="Acme", name=f"li {id}",
        tier=str(tier), tier_rank=TIER_RANK[str(tier)], cpm_micros=round(cpm * USD), currency="USD",
        budget_micros=None if budget is None else round(budget * USD),
        daily_budget_micros=None if daily_budget is None else round(daily_budget * USD),
        campaign_budget_micros=10**9 * USD, goal_impressions=goal, pacing=str(pacing), caps=(),
        start_ts=start, end_ts=end, targeting=targeting or {}, creatives=(CREATIVE,),
    )  # fmt: skip


class FakeLedger:
    """Just what the controller reads: delivery per line item and attempt totals."""

    def __init__(self) -> None:
        self.impressions: dict[int, int] = {}
        self.units: dict[int, int] = {}
        self.today: dict[int, int] = {}
        self.attempts: dict[int, int] = {}

    def delivery(self, item: ServableLineItem, now: float) -> Delivery:
        return Delivery(
            self.units.get(item.id, 0), self.impressions.get(item.id, 0), self.today.get(item.id, 0)
        )

    def add_attempts(self, attempts: dict[int, int]) -> dict[int, int]:
        for item_id, count in attempts.items():
            self.attempts[item_id] = self.attempts.get(item_id, 0) + count
        return dict(self.attempts)


def fluid_flight(
    controller: PacingController,
    paced: ServableLineItem,
    *,
    requests_per_day: float,
    start: float,
    end: float,
    step: float = 60.0,
    delivered: int = 0,
    seed: int = 3,
) -> list[float]:
    """Drive the controller with Poisson-ish attempts on the curve; returns impressions per hour."""
    rng = random.Random(seed)
    ledger = FakeLedger()
    ledger.impressions[paced.id] = delivered
    snapshot = Snapshot.of(1, [paced], [])
    curve = TrafficCurve()
    hourly = [0.0] * math.ceil((end - start) / HOUR)
    now = start
    while now < end:
        controller.maybe_update(now, snapshot, ledger)
        expected = requests_per_day * curve.between(now, now + step)
        attempts = max(0, round(rng.gauss(expected, math.sqrt(expected))))
        goal_left = (paced.goal_impressions or 0) - ledger.impressions.get(paced.id, 0)
        passed = sum(rng.random() < controller.probability(paced) for _ in range(attempts))
        won = min(passed, max(goal_left, 0))
        for _ in range(attempts):
            controller.record_attempt(paced)
        ledger.impressions[paced.id] = ledger.impressions.get(paced.id, 0) + won
        hourly[int((now - start) // HOUR)] += won
        now += step
    return hourly


# -- traffic curve --------------------------------------------------------------------------

weights = st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=24, max_size=24)


@settings(deadline=None)
@given(
    weights,
    st.floats(0, 3 * DAY),
    st.floats(60, 3 * DAY),
    st.lists(st.floats(0, 1), min_size=2, max_size=8),
)
def test_curve_fractions_are_monotone_and_end_at_one(hourly, offset, length, points):
    curve = TrafficCurve(hourly)
    assert math.isclose(sum(curve.hourly), 1.0)
    start, end = T0 + offset, T0 + offset + length
    times = sorted(start + point * length for point in points)
    fractions = [curve.fraction(start, end, t) for t in times]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    assert curve.fraction(start, end, start) == 0.0
    assert curve.fraction(start, end, end) == 1.0


@settings(deadline=None)
@given(weights, st.floats(0, 10 * DAY))
def test_a_day_of_traffic_is_one_unit_of_mass(hourly, t):
    curve = TrafficCurve(hourly)
    assert math.isclose(curve.between(T0 + t, T0 + t + DAY), 1.0, rel_tol=1e-9)
    hours = [curve.between(T0 + h * HOUR, T0 + (h + 1) * HOUR) for h in range(24)]
    assert math.isclose(sum(hours), 1.0)
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(hours, curve.hourly, strict=True))


def test_curve_rejects_bad_profiles():
    for bad in ([1.0] * 23, [1.0] * 23 + [0.0], [1.0] * 23 + [float("nan")]):
        with pytest.raises(ValueError):
            TrafficCurve(bad)


def test_learned_curve_recovers_the_shape_of_the_log_and_falls_back_when_thin():
    rng = random.Random(5)
    shape = [1.0] * 12 + [3.0] * 12  # afternoons three times as busy
    samples = []
    for day in range(3):
        for hour in range(24):
            for _ in range(int(200 * shape[hour])):
                samples.append((T0 + day * DAY + (hour + rng.random()) * HOUR, 2.0))  # sample 0.5
    learned = learn_traffic_curve(samples)
    assert all(
        math.isclose(a, b, rel_tol=0.05)
        for a, b in zip(learned.hourly, TrafficCurve(shape).hourly, strict=True)
    )
    assert learn_traffic_curve(samples[:50]) == TrafficCurve(DEFAULT_CURVE)
    # A log covering only the morning learns the morning and keeps the default's shape elsewhere.
    mornings = [(ts, w) for ts, w in samples if (ts - T0) % DAY < 12 * HOUR]
    partial = learn_traffic_curve(mornings)
    default = TrafficCurve(DEFAULT_CURVE).hourly
    ratio = [partial.hourly[h] / default[h] for h in range(14, 24)]
    assert max(ratio) / min(ratio) < 1.01


# -- controller -----------------------------------------------------------------------------


def test_asap_and_unpaced_items_pass_everything():
    controller = PacingController()
    ledger = FakeLedger()
    asap = item(1, pacing=Pacing.ASAP)
    open_ended = item(2, goal=None)
    controller.maybe_update(T0, Snapshot.of(1, [asap, open_ended], []), ledger)
    assert controller.probability(asap) == 1.0
    assert controller.probability(open_ended) == 1.0


def test_start_is_conservative_then_follows_the_plan_share():
    paced = item(1)
    assert PacingController().probability(paced) == 0.0
    assert PacingController(plan={1: PlanEntry(0.25, 40_000)}).probability(paced) == 0.25
    assert (
        PacingController(plan={1: PlanEntry(0.25)}, initial_probability=0.1).probability(item(2))
        == 0.1
    )


def warmed_controller(
    paced: ServableLineItem, hours: float
) -> tuple[PacingController, FakeLedger, Snapshot]:
    """A controller that has watched ``hours`` of on-plan delivery at 100k requests a day."""
    controller = PacingController()
    ledger = FakeLedger()
    snapshot = Snapshot.of(1, [paced], [])
    curve = controller.curve
    now = paced.start_ts
    while now < paced.start_ts + hours * HOUR:
        controller.maybe_update(now, snapshot, ledger)
        ledger.attempts[paced.id] = ledger.attempts.get(paced.id, 0) + round(
            100_000 * curve.between(now, now + 5)
        )
        ledger.impressions[paced.id] = round(
            paced.goal_impressions * curve.fraction(paced.start_ts, paced.end_ts, now + 5)
        )
        now += 5
    return controller, ledger, snapshot


def test_behind_plan_raises_the_probability_and_ahead_lowers_it():
    paced = item(1, goal=20_000)
    now = paced.start_ts + 6 * HOUR
    outcomes = {}
    for label, factor in (("behind", 0.8), ("on", 1.0), ("ahead", 1.2)):
        trial, trial_ledger, snapshot = warmed_controller(paced, 6)
        assert 0.15 < trial.probability(paced) < 0.25  # 20k of 100k requests
        planned = paced.goal_impressions * trial.curve.fraction(paced.start_ts, paced.end_ts, now)
        trial_ledger.impressions[paced.id] = round(planned * factor)
        trial_ledger.attempts[paced.id] += round(100_000 * trial.curve.between(now - 5, now))
        trial.maybe_update(now, snapshot, trial_ledger)
        outcomes[label] = trial.probability(paced)
    assert outcomes["behind"] > outcomes["on"] > outcomes["ahead"] > 0
    # Catch-up is bounded: far behind asks for at most 1.5 times the even rate.
    assert outcomes["behind"] <= 1.5 * outcomes["on"] * 1.05


def test_daily_budget_caps_the_rate():
    paced = item(1, goal=None, daily_budget=10.0, cpm=10.0)  # 1000 impressions a day
    controller = PacingController()
    rate = controller.wanted_rate(paced, Delivery(), T0)
    assert rate is not None and math.isclose(rate, 1000, rel_tol=1e-6)
    half_spent = Delivery(today_units=5 * USD * 1000)
    assert math.isclose(controller.wanted_rate(paced, half_spent, T0) or 0, 500, rel_tol=1e-6)
    both = item(1, goal=100_000, daily_budget=10.0, cpm=10.0)
    assert math.isclose(controller.wanted_rate(both, Delivery(), T0) or 0, 1000, rel_tol=1e-6)


def test_closed_loop_lands_on_goal_without_overshoot_or_oscillation():
    paced = item(1, goal=15_000)
    hourly = fluid_flight(
        PacingController(), paced, requests_per_day=60_000, start=T0, end=T0 + DAY
    )
    assert abs(sum(hourly) / 15_000 - 1) <= 0.02
    curve = TrafficCurve()
    planned = [15_000 * share for share in curve.hourly]
    assert all(
        delivered <= 1.3 * plan + 15 for delivered, plan in zip(hourly, planned, strict=True)
    )
    assert hourly[0] <= planned[0] * 1.3 + 15  # no early overshoot


def test_a_late_booking_catches_up_smoothly():
    paced = item(1, goal=15_000, start=T0 - 12 * HOUR, end=T0 + 12 * HOUR)
    hourly = fluid_flight(
        PacingController(), paced, requests_per_day=60_000, start=T0, end=paced.end_ts
    )
    assert abs(sum(hourly) / 15_000 - 1) <= 0.02
    curve = TrafficCurve()
    for hour, delivered in enumerate(hourly):
        begin = T0 + hour * HOUR
        even = 15_000 * curve.between(begin, begin + HOUR) / curve.between(T0, paced.end_ts)
        assert delivered <= 1.6 * even + 20  # bounded catch-up, never a burst


# -- allocation plan ------------------------------------------------------------------------


def opportunity_event(ts: float, sample: float, **attributes: Any) -> Event:
    return Event(
        type=EventType.OPPORTUNITY, ts=ts, decision_id=f"d{ts}", slot_id=1, listener="l",
        attrs={**attributes, "targeted": 3, "catalog_version": 1, "winners": [], "sample": sample},
    )  # fmt: skip


@pytest.fixture
def decision_log(tmp_path: Path) -> Path:
    """Two days of a 50 % sampled decision log: US/mobile, GB/desktop and news listeners."""
    rng = random.Random(11)
    directory = tmp_path / "events"
    with EventLogWriter(directory) as writer:
        for n in range(4000):
            ts = T0 - 2 * DAY + rng.random() * 2 * DAY
            country, device = rng.choice([("US", "mobile"), ("US", "mobile"), ("GB", "desktop")])
            genre = rng.choice(["news", "comedy"])
            writer.append(
                opportunity_event(
                    ts, 0.5, countries=country, devices=device, genres=genre, segments=[f"s{n % 3}"]
                ).to_bytes()
            )
        writer.append(Event(type=EventType.IMPRESSION, ts=T0 - HOUR, line_item_id=1).to_bytes())
    return directory


def test_plan_is_remaining_goal_over_forecast_supply(decision_log):
    opportunities = list(read_opportunities(decision_log, since=T0 - 7 * DAY, until=T0))
    assert len(opportunities) == 4000 and all(o.weight == 2.0 for o in opportunities)
    book = [
        item(1, goal=2000, targeting={"countries": ["US"]}, end=T0 + 2 * DAY),
        item(
            2,
            tier=Tier.SPONSORSHIP,
            goal=None,
            budget=5.0,
            cpm=10.0,
            targeting={"genres": ["news"], "not": {"countries": ["GB"]}},
        ),
        item(3, goal=1_000_000, targeting={"countries": ["GB"]}),  # more than the supply
        item(4, tier=Tier.NON_GUARANTEED, targeting={"countries": ["US"]}),  # not planned
        item(5, goal=None),  # no goal
        item(6, goal=100, targeting={"countries": ["JP"]}),  # no supply seen
        item(7, goal=100, end=T0 - HOUR),  # flight over
    ]
    result = compute_plan(line_items=book, opportunities=opportunities, delivered={1: 400}, now=T0)
    assert set(result.entries) == {1, 2, 3}
    curve = TrafficCurve(result.curve) if result.curve else TrafficCurve()
    observed = curve.between(min(o.ts for o in opportunities), max(o.ts for o in opportunities))
    for line_item, goal_left in ((book[0], 1600), (book[1], 500), (book[2], 1_000_000)):
        admits = compile_predicate(line_item.targeting)
        eligible = sum(o.weight for o in opportunities if admits(o.attributes))
        supply = eligible / observed * curve.between(T0, line_item.end_ts)
        entry = result.entries[line_item.id]
        assert entry.supply_forecast == math.ceil(supply)
        assert math.isclose(entry.share, min(1.0, goal_left / supply))
    assert result.entries[3].share == 1.0
    assert 0.2 < result.entries[1].share < 0.4  # 1600 of two-thirds of 4000 a day × 2 days
    assert 0.3 < result.entries[2].share < 0.45  # 500 of a third of 4000 for a day
    assert result.opportunities == 4000 and 1.9 < result.observed_days <= 2.0


def test_an_empty_log_plans_nothing(tmp_path):
    result = compute_plan(line_items=[item(1)], opportunities=[], delivered={}, now=T0)
    assert result.entries == {} and result.curve is None


def test_plan_file_round_trip_and_rejects_garbage(tmp_path):
    plan = AllocationPlan(generated_at=T0, entries={3: PlanEntry(0.25, 1000), 9: PlanEntry(1.0, None)},
                          curve=TrafficCurve().hourly, opportunities=10, observed_days=1.5)  # fmt: skip
    path = tmp_path / "var" / "allocation-plan.json"
    write_plan(plan, path)
    assert read_plan(path) == plan
    assert [p.name for p in path.parent.iterdir()] == ["allocation-plan.json"]  # no temporary left
    for garbage in (
        b"{",
        b'{"format": 2}',
        b'{"format": 1, "generated_at": 1, "line_items": {"1": {"share": 2}}}',
    ):
        path.write_bytes(garbage)
        with pytest.raises(InvalidInput):
            read_plan(path)


def test_servers_load_the_plan_and_reload_it_when_it_changes(tmp_path):
    path = tmp_path / "allocation-plan.json"
    source = PlanFile(path)
    controller = PacingController(plan_source=source)
    paced, ledger = item(1), FakeLedger()
    snapshot = Snapshot.of(1, [paced], [])
    controller.maybe_update(T0, snapshot, ledger)
    assert controller.probability(paced) == 0.0  # no plan yet: conservative
    learned = [1.0] * 12 + [2.0] * 12
    write_plan(
        AllocationPlan(generated_at=T0, entries={1: PlanEntry(0.3, 9000)}, curve=tuple(learned)),
        path,
    )
    assert source.poll() is not None and source.poll() is None  # unchanged: nothing to do
    controller = PacingController(plan_source=PlanFile(path))
    controller.maybe_update(T0, snapshot, ledger)
    assert controller.probability(paced) == 0.3
    assert controller.curve == TrafficCurve(learned)
    write_plan(AllocationPlan(generated_at=T0 + HOUR, entries={1: PlanEntry(0.1, 9000)}), path)
    controller.maybe_update(T0 + 10, snapshot, ledger)
    assert controller.plan == {1: PlanEntry(0.1, 9000)}
    assert controller.curve == TrafficCurve(learned)  # a plan without a curve keeps the last
    path.write_bytes(b"not json")
    controller.maybe_update(T0 + 20, snapshot, ledger)
    assert controller.plan == {1: PlanEntry(0.1, 9000)}  # a broken file keeps the last good plan
    path.unlink()
    controller.maybe_update(T0 + 30, snapshot, ledger)
    assert controller.plan == {}


@pytest.mark.parametrize("algorithm", ["shale", "hwm", "share"])
def test_plan_command_writes_the_plan_from_database_and_log(
    tmp_path, runner, decision_log, algorithm
):
    from sqlalchemy.orm import Session

    from backbeat.catalog.models import Advertiser, Campaign, Creative, LineItem
    from backbeat.db import make_engine, migrate

    config = Settings(var_dir=tmp_path / "var", event_log_dir=decision_log)
    migrate(config.resolved_database_url)
    engine = make_engine(config.resolved_database_url)
    with Session(engine) as session, session.begin():
        advertiser = Advertiser(name="Acme")
        campaign = Campaign(advertiser=advertiser, name="Spring", total_budget=Decimal(1000), currency="USD",
                            start_at=datetime.fromtimestamp(T0 - DAY, UTC), end_at=datetime.fromtimestamp(T0 + DAY, UTC))  # fmt: skip
        session.add_all([advertiser, campaign])
        session.flush()
        line_item = LineItem(campaign_id=campaign.id, advertiser_id=advertiser.id, name="US", tier="guaranteed",
                             cpm=Decimal(10), goal_impressions=500, pacing="even", targeting={"countries": ["US"]})  # fmt: skip
        session.add(line_item)
        session.flush()
        session.add(Creative(line_item_id=line_item.id, advertiser_id=advertiser.id, name="Spot",
                             media_url="https://cdn.example.com/a.mp3", mime_type="audio/mpeg", duration_ms=30_000))  # fmt: skip
    engine.dispose()
    at = datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    result = runner.invoke(
        plan_command, ["--at", at, "--algorithm", algorithm], obj=config, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    written = orjson.loads((tmp_path / "var" / "allocation-plan.json").read_bytes())
    assert set(written["line_items"]) == {"1"}
    assert 0.1 < written["line_items"]["1"]["share"] < 0.3  # 500 of about 2700 US requests a day
    entry = written["line_items"]["1"]
    assert written["algorithm"] == algorithm
    if algorithm == "shale":  # alone, SHALE's share of every node is θ = goal / supply
        assert entry["rank"] == 0 and entry["theta"] == pytest.approx(entry["share"], rel=0.01)
    elif algorithm == "hwm":  # alone, HWM's α is the share of its supply it needs
        assert entry["rank"] == 0 and entry["alpha"] == pytest.approx(entry["share"], rel=0.01)
    else:
        assert "alpha" not in entry
    assert "planned 1 line items" in result.output


# -- simulated flight -----------------------------------------------------------------------


@pytest.mark.slow
def test_simulated_flight_lands_every_goal_smoothly():
    """A day of the benchmark's flight, served by two replicas that share one ledger."""
    result = bench_pacing.simulate(days=1, requests=60_000, seed=2, replicas=2)
    assert result.requests > 55_000
    for report in result.items:
        assert abs(report.ratio - 1) <= 0.02, report.name
        assert report.worst_over <= 2.0, report.name
        assert report.max_deviation_of_mean_hour <= 0.25, report.name


def test_opportunity_replay_matches_the_predicates():
    rng = random.Random(4)
    opportunities = [
        Opportunity(
            T0 + 2 * n, 1.0, {"countries": rng.choice(["US", "GB"]), "segments": [rng.choice("ab")]}
        )
        for n in range(300)
    ]
    targeting = {"any": [{"countries": ["GB"]}, {"segments": ["a"]}]}
    result = compute_plan(line_items=[item(1, targeting=targeting, goal=10)], opportunities=opportunities,
                          delivered={}, now=T0 + 600, curve=TrafficCurve([1.0] * 24))  # fmt: skip
    admits = compile_predicate(targeting)
    eligible = sum(1 for o in opportunities if admits(o.attributes))
    expected = eligible / (598 / DAY) * (DAY - 600) / DAY
    assert result.entries[1].supply_forecast == math.ceil(expected)

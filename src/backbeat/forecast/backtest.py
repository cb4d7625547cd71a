"""Backtest: forecast a simulated week from the weeks before it, then serve it and compare.

1. Simulate weeks 1..k+1 (``backbeat.simulation``) and write them to a temporary event
   log as the decision log would (a ``sample`` share of requests, with the impressions,
   clicks and conversions that followed).
2. Book a few guaranteed line items for week k+1 (goals a share of their supply in the
   history, some beyond what the week can give) plus an auction and a house ad.
3. Build the ``Forecaster`` from the log with ``now`` = the start of week k+1 and
   forecast week k+1 for many random targeting combinations (countries, devices,
   platforms, segments, genres, surfaces, dayparts).
4. Run the ad server in process (``Decider`` with its pacing controller and the
   allocation plan, a fake clock) on every request of week k+1, and measure what
   happened: matching requests, distinct listeners, clicks (the simulator's hidden model
   drawn once per request), and impressions each guaranteed line item was given.
5. Report WAPE (sum |forecast - actual| / sum actual) of supply, reach, clicks and
   delivered guaranteed impressions, and how often the 80% intervals held the actual.

Nothing is written outside the temporary directory; a seed fixes everything.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from backbeat.catalog.vocabulary import TIER_RANK, WEEKDAYS, Pacing, Tier
from backbeat.errors import InvalidInput
from backbeat.serving.decisions import Decider
from backbeat.serving.ledger import MemoryLedger
from backbeat.serving.pacing import PacingController, TrafficCurve
from backbeat.serving.request import AdRequest, listening_app
from backbeat.serving.snapshot import (
    CapRule,
    ServableCreative,
    ServableLineItem,
    ServableSlot,
    Snapshot,
)
from backbeat.serving.targeting_index import TargetingIndex, iter_bits
from backbeat.simulation import ResponseModel, Traffic, TrafficConfig, simulate_traffic
from backbeat.simulation.audience import ZONES
from backbeat.simulation.profiles import DEVICES, MARKETS, SEGMENTS, SLOTS
from backbeat.simulation.records import write_history
from backbeat.simulation.traffic import CONNECTIONS, GENRES, SHOWS

DAY = 86400
WEEK = 7 * DAY
USD = 1_000_000
# The week forecast is 9-15 February 2026: no public holiday in any simulated market.
TARGET_WEEK = datetime(2026, 2, 9, tzinfo=UTC)
LARGE = 10_000  # weekly opportunities from which the supply goal applies
GOALS = {"supply_wape_large": 0.08, "reach_wape": 0.05, "coverage": (0.75, 0.85)}


@dataclass(frozen=True)
class BacktestConfig:
    weeks: int = 4  # k: weeks of history
    combinations: int = 200
    seed: int = 1
    daily_requests: int = 10_000
    listeners: int = 40_000
    sample: float = 1.0  # decision-log sampling rate of the history
    sample_by: str = "request"  # or "listener": how the decision log keeps its sample
    guaranteed: int = 6

    def __post_init__(self) -> None:
        if not 1 <= self.weeks <= 12:
            raise InvalidInput("weeks must be between 1 and 12", reason="invalid-backtest")
        if not 1 <= self.combinations <= 10_000:
            raise InvalidInput(
                "combinations must be between 1 and 10000", reason="invalid-backtest"
            )
        if self.sample_by not in ("request", "listener"):
            raise InvalidInput("sample_by is request or listener", reason="invalid-backtest")
        if not 0.0 < self.sample <= 1.0:
            raise InvalidInput("sample must be in (0, 1]", reason="invalid-backtest")


@dataclass
class Comparison:
    """Forecast and actual for one figure of one combination (or line item)."""

    name: str
    forecast: float
    actual: float
    low: float | None = None
    high: float | None = None

    @property
    def covered(self) -> bool | None:
        if self.low is None or self.high is None:
            return None
        return self.low <= self.actual <= self.high


@dataclass
class BacktestReport:
    config: BacktestConfig
    seconds: dict[str, float]
    supply: list[Comparison] = field(default_factory=list)
    reach: list[Comparison] = field(default_factory=list)
    clicks: list[Comparison] = field(default_factory=list)
    delivered: list[Comparison] = field(default_factory=list)
    available: list[Comparison] = field(default_factory=list)
    holidays: list[tuple[str, str, str]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """WAPE and coverage; coverage skips combinations nothing matched (a [0, 0]
        interval around an actual 0 proves nothing)."""
        large = [c for c in self.supply if c.actual >= LARGE]
        live = [n for n, c in enumerate(self.supply) if c.actual > 0]
        supply = [self.supply[n] for n in live]
        reach = [self.reach[n] for n in live]
        clicks = [self.clicks[n] for n in live]
        figures = {
            "supply_wape": wape(self.supply),
            "supply_wape_large": wape(large),
            "large_combinations": len(large),
            "reach_wape": wape(self.reach),
            "clicks_wape": wape(self.clicks),
            "delivered_wape": wape(self.delivered),
            "available_wape": wape(self.available),
            "available_coverage": coverage([c for c in self.available if c.actual > 0]),
            "supply_coverage": coverage(supply),
            "reach_coverage": coverage(reach),
            "clicks_coverage": coverage(clicks),
            "coverage": coverage(supply + reach + clicks),
            "combinations_with_supply": len(live),
        }
        figures["goals_met"] = {
            "supply_wape_large": figures["supply_wape_large"] <= GOALS["supply_wape_large"],
            "reach_wape": figures["reach_wape"] <= GOALS["reach_wape"],
            "coverage": GOALS["coverage"][0] <= figures["coverage"] <= GOALS["coverage"][1],
        }
        return figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "metrics": self.metrics(),
            "seconds": self.seconds,
            "holidays_in_span": [list(h) for h in self.holidays],
            "combinations": [
                {
                    "name": s.name,
                    "supply": asdict(s),
                    "reach": asdict(r),
                    "clicks": asdict(c),
                    "available": asdict(a),
                }
                for s, r, c, a in zip(
                    self.supply, self.reach, self.clicks, self.available, strict=True
                )
            ],
            "guaranteed": [asdict(d) for d in self.delivered],
        }


def wape(comparisons: Sequence[Comparison]) -> float:
    """Weighted absolute percentage error: sum |forecast - actual| / sum actual (NaN if empty)."""
    actual = sum(c.actual for c in comparisons)
    if not comparisons or actual <= 0:
        return math.nan
    return sum(abs(c.forecast - c.actual) for c in comparisons) / actual


def coverage(comparisons: Sequence[Comparison]) -> float:
    """Share of intervals that held the actual value (NaN when none had an interval)."""
    held = [c.covered for c in comparisons if c.covered is not None]
    return sum(held) / len(held) if held else math.nan


# -- the book and the combinations -------------------------------------------------------


def random_combinations(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Targetings like a booking form's: one to three dimensions, a few values each."""
    countries = [country for country, _ in MARKETS]
    devices = sorted({device for device, _, _, _ in DEVICES})
    platforms = sorted({platform for _, platform, _, _ in DEVICES})
    dimensions: list[tuple[str, Callable[[], list[Any]]]] = [
        ("countries", lambda: sorted(rng.sample(countries, rng.randint(1, 3)))),
        ("devices", lambda: sorted(rng.sample(devices, rng.randint(1, 2)))),
        ("platforms", lambda: sorted(rng.sample(platforms, rng.randint(1, 2)))),
        ("segments", lambda: sorted(rng.sample(SEGMENTS, rng.randint(1, 2)))),
        ("genres", lambda: sorted(rng.sample(GENRES, rng.randint(1, 4)))),
        ("surfaces", lambda: [rng.choice(["music_free", "podcast"])]),
        ("dayparts", lambda: list(range(start := rng.randint(0, 18), start + rng.randint(3, 6)))),
        ("weekdays", lambda: list(WEEKDAYS[:5]) if rng.random() < 0.6 else ["sat", "sun"]),
    ]
    combinations: list[dict[str, Any]] = []
    while len(combinations) < count:
        chosen = rng.sample(dimensions, rng.choice([1, 1, 2, 2, 2, 3]))
        targeting = {key: make() for key, make in chosen}
        if targeting not in combinations:
            combinations.append(targeting)
    return combinations


def _creative(n: int) -> ServableCreative:
    return ServableCreative(
        n, f"Spot {n}", f"https://cdn.example.com/{n}.mp3", "audio/mpeg", 30_000, 128, None, ()
    )


def _line_item(
    n: int, name: str, tier: str, cpm: float, targeting: dict[str, Any], start: float, **more: Any
) -> ServableLineItem:
    values: dict[str, Any] = {
        "budget_micros": None,
        "daily_budget_micros": None,
        "goal_impressions": None,
        "caps": (),
        "pacing": Pacing.ASAP,
        **more,
    }
    return ServableLineItem(
        id=n, campaign_id=n, advertiser_id=n, advertiser_name=f"Advertiser {n}", name=name,
        tier=str(tier), tier_rank=TIER_RANK[str(tier)], cpm_micros=round(cpm * USD),
        currency="USD", campaign_budget_micros=10**9 * USD, start_ts=start, end_ts=start + WEEK,
        targeting=targeting, creatives=(_creative(n),), **values,
    )  # fmt: skip


GUARANTEED_TARGETINGS: list[tuple[dict[str, Any], float, tuple[int, int] | None]] = [
    ({"countries": ["US"], "devices": ["mobile"]}, 0.45, None),
    ({"countries": ["GB", "DE", "FR"], "surfaces": ["podcast"]}, 0.6, (3, DAY)),
    ({"genres": ["news", "business"]}, 0.5, None),
    ({"segments": ["auto-intender"], "devices": ["car", "mobile"]}, 1.3, None),  # oversold
    ({"countries": ["BR", "SE"]}, 0.35, (2, DAY)),
    ({"positions": ["mid_roll"], "countries": ["US", "GB"]}, 0.7, None),
    ({"dayparts": [6, 7, 8, 9], "weekdays": list(WEEKDAYS[:5])}, 0.4, None),
    ({"segments": ["parents", "students"]}, 0.3, (4, WEEK)),
]


def book(count: int, weekly_supply: Sequence[float], start: float) -> list[ServableLineItem]:
    """``count`` guaranteed items (goal = share x the week's supply in the history), an
    auction item and a house ad, all for the target week."""
    items = []
    for n, (targeting, share, cap) in enumerate(GUARANTEED_TARGETINGS[:count], start=1):
        caps = (CapRule(f"li:{n}", cap[0], cap[1]),) if cap else ()
        items.append(
            _line_item(
                n,
                f"guaranteed-{n}",
                Tier.GUARANTEED,
                15.0 + n,
                targeting,
                start,
                goal_impressions=max(1, round(share * weekly_supply[n - 1])),
                pacing=Pacing.EVEN,
                caps=caps,
            )  # fmt: skip
        )
    n = len(items)
    items.append(_line_item(n + 1, "auction", Tier.NON_GUARANTEED, 9.0, {}, start))
    items.append(_line_item(n + 2, "house", Tier.HOUSE, 0.0, {}, start))
    return items


def slots(slot_ids: Sequence[int]) -> list[ServableSlot]:
    return [
        ServableSlot(slot_id, f"{surface}/{position}", surface, position, USD, "USD")
        for slot_id, (surface, position) in zip(slot_ids, SLOTS, strict=True)
    ]


# -- what happened ---------------------------------------------------------------------------


@dataclass
class Actuals:
    supply: np.ndarray  # per combination
    reach: np.ndarray
    clicks: np.ndarray
    delivered: dict[int, int]
    requests: int
    unreserved: np.ndarray  # per combination: matching breaks no guaranteed item took


def _requests(traffic: Traffic) -> list[AdRequest]:
    """One ``AdRequest`` per break (listener templates shared, content per break)."""
    audience = traffic.audience
    made = []
    zones = [ZONES[z] for z in audience.zone.tolist()]
    devices = [DEVICES[d] for d in audience.device.tolist()]
    segments = [tuple(names) for names in audience.segment_lists]
    slot_ids = traffic.config.slot_ids
    week = (traffic.ts // WEEK).astype(np.int64).tolist()
    for row, (who, slot, genre, show, connection) in enumerate(
        zip(
            traffic.listener.tolist(),
            traffic.slot.tolist(),
            traffic.genre.tolist(),
            traffic.show.tolist(),
            traffic.connection.tolist(),
            strict=True,
        )  # fmt: skip
    ):
        tz, region, country = zones[who]
        device, platform, _, _ = devices[who]
        made.append(
            AdRequest(
                slot_id=slot_ids[slot],
                listener=audience.ids[who],
                country=country,
                region=region,
                device=device,
                platform=platform,
                genre=GENRES[genre],
                show=SHOWS[show] if show >= 0 else None,
                episode=f"{SHOWS[show]}-e{week[row]}" if show >= 0 else None,
                connection=CONNECTIONS[connection],
                timezone=tz,
                segments=segments[who],
                ip=audience.ip[who],
                user_agent=audience.user_agent[who],
            )  # fmt: skip
        )
    return made


def _bool_bits(bits: int, size: int) -> np.ndarray:
    return np.array([(bits >> position) & 1 for position in range(size)], dtype=bool)


def _columns(traffic: Traffic) -> dict[str, tuple[np.ndarray, list[Any]]]:
    """Per targeting key: a value code per break and the values of the codes."""
    audience = traffic.audience
    who = traffic.listener
    agents = sorted(set(audience.user_agent))
    agent_code = np.array([agents.index(agent) for agent in audience.user_agent])
    return {
        "countries": (audience.zone[who], [country for _, _, country in ZONES]),
        "regions": (audience.zone[who], [region for _, region, _ in ZONES]),
        "devices": (audience.device[who], [device for device, _, _, _ in DEVICES]),
        "platforms": (audience.device[who], [platform for _, platform, _, _ in DEVICES]),
        "surfaces": (traffic.slot, [surface for surface, _ in SLOTS]),
        "positions": (traffic.slot, [position for _, position in SLOTS]),
        "slots": (traffic.slot, list(traffic.config.slot_ids)),
        "genres": (traffic.genre, list(GENRES)),
        "shows": (np.where(traffic.show < 0, len(SHOWS), traffic.show), [*SHOWS, None]),
        "connections": (traffic.connection, list(CONNECTIONS)),
        "dayparts": (traffic.local_hour, list(range(24))),
        "weekdays": (traffic.weekday, list(WEEKDAYS)),
        "apps": (agent_code[who], [listening_app(agent) for agent in agents]),
    }


def match_matrix(traffic: Traffic, combinations: list[dict[str, Any]]) -> np.ndarray:
    """(breaks x combinations) booleans: does the combination admit the break?

    Evaluated with the ad server's compiled ``TargetingIndex`` (its per-value bitsets, one
    gather per key instead of one lookup per break); expressions it cannot split into
    per-key tests (``any``, nested ``not``) go through its residual predicates per break.
    """
    index = TargetingIndex.build(combinations)
    size = len(combinations)
    matrix = np.ones((len(traffic), size), dtype=bool)
    columns = _columns(traffic)
    for key, table in index.include.items():
        unrestricted = index.unrestricted[key]
        if key == "segments":
            masks = np.arange(1 << len(SEGMENTS))
            admitted = np.array(
                [_bool_bits(unrestricted | _any_of(table, mask), size) for mask in masks]
            )
            matrix &= admitted[traffic.segments]
            continue
        codes, values = columns[key]
        admitted = np.array([_bool_bits(unrestricted | table.get(v, 0), size) for v in values])
        matrix &= admitted[codes]
    for key, table in index.exclude.items():
        if key == "segments":
            excluded = np.array(
                [_bool_bits(_any_of(table, m), size) for m in range(1 << len(SEGMENTS))]
            )
            matrix &= ~excluded[traffic.segments]
            continue
        codes, values = columns[key]
        excluded = np.array([_bool_bits(table.get(v, 0), size) for v in values])
        matrix &= ~excluded[codes]
    for position, predicate in index.residuals.items():
        matrix[:, position] &= [predicate(traffic.attributes(row)) for row in range(len(traffic))]
    return matrix


def _any_of(table: dict[Any, int], mask: int) -> int:
    bits = 0
    for n, name in enumerate(SEGMENTS):
        if mask >> n & 1:
            bits |= table.get(name, 0)
    return bits


def serve_week(
    traffic: Traffic,
    items: list[ServableLineItem],
    combinations: list[dict[str, Any]],
    *,
    plan: Any = None,
    seed: int = 1,
    model: ResponseModel | None = None,
) -> Actuals:
    """Decide every break of ``traffic`` and tally what each combination and item got."""
    model = model or ResponseModel()
    snapshot = Snapshot.of(1, items, slots(traffic.config.slot_ids))
    pacing = PacingController(interval=600.0)
    if plan is not None:
        pacing.plan = plan.entries
        if plan.curve is not None:
            pacing.curve = TrafficCurve(plan.curve)
    decider = Decider(MemoryLedger(), pacing, seed=seed)
    delivered = {item.id: 0 for item in items if item.tier == Tier.GUARANTEED}
    reserved = np.zeros(len(traffic), dtype=bool)
    for row, (ts, request) in enumerate(zip(traffic.ts.tolist(), _requests(traffic), strict=True)):
        decision = decider.decide(snapshot, snapshot.slots[request.slot_id], request, ts)
        if decision.line_item is not None and decision.line_item.id in delivered:
            delivered[decision.line_item.id] += 1
            reserved[row] = True
    rng = np.random.default_rng([seed, 0xC11C])
    clicked = rng.random(len(traffic)) < model.click_probability(
        traffic.device_class, traffic.segments, traffic.slot.astype(np.int64)
    )
    matrix = match_matrix(traffic, combinations)
    supply = matrix.sum(axis=0).astype(float)
    clicks = matrix[clicked].sum(axis=0).astype(float)
    # Distinct listeners: OR the rows of each listener, then count listeners per column.
    order = np.argsort(traffic.listener, kind="stable")
    starts = np.flatnonzero(np.diff(traffic.listener[order], prepend=-1))
    per_listener = (
        np.logical_or.reduceat(matrix[order], starts, axis=0) if starts.size else matrix[:0]
    )
    reach = per_listener.sum(axis=0).astype(float)
    unreserved = matrix[~reserved].sum(axis=0).astype(float)
    return Actuals(supply, reach, clicks, delivered, len(traffic), unreserved)


# -- the run -----------------------------------------------------------------------------


def _plan(forecaster: Any) -> Any:
    """The allocation plan servers would load: SHALE from the forecaster, as ``backbeat plan``
    writes it."""
    from backbeat.forecast.allocation.planner import plan_from_forecaster

    return plan_from_forecaster(forecaster, algorithm="shale")


def run_backtest(config: BacktestConfig, *, workdir: Path | None = None) -> BacktestReport:
    """The whole backtest; ``workdir`` keeps the simulated event log (a temp dir otherwise)."""
    from backbeat.forecast.history import read_history
    from backbeat.forecast.service import Forecaster, ForecastQuery

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    target = TARGET_WEEK.timestamp()
    start = target - config.weeks * WEEK
    traffic = simulate_traffic(
        TrafficConfig(
            start=start,
            days=(config.weeks + 1) * 7,
            daily_requests=config.daily_requests,
            listeners=config.listeners,
            seed=config.seed,
        )
    )
    seconds["simulate"] = time.perf_counter() - clock
    rng = random.Random(config.seed)
    combinations = random_combinations(rng, config.combinations)
    last_week = traffic.between(target - WEEK, target)
    supply = weekly_supply(last_week, [t for t, _, _ in GUARANTEED_TARGETINGS])
    items = book(config.guaranteed, supply, target)
    guaranteed = [item for item in items if item.tier == Tier.GUARANTEED]
    flight = {"start_at": target, "end_at": target + WEEK}
    with tempfile.TemporaryDirectory(prefix="backbeat-backtest-") as temporary:
        log_dir = Path(workdir or temporary) / "events"
        clock = time.perf_counter()
        write_history(
            log_dir, traffic, sample=config.sample, sample_by=config.sample_by,
            app_of=listening_app,
        )  # fmt: skip
        seconds["write_log"] = time.perf_counter() - clock

        clock = time.perf_counter()
        table = read_history(log_dir, until=target)
        # Supply, reach and clicks of a combination as if it took every matched opportunity:
        # a forecaster with nothing booked (available = matched).
        open_book = Forecaster.from_table(table, [], now=target, seed=config.seed)
        seconds["build"] = time.perf_counter() - clock
        clock = time.perf_counter()
        forecasts = [
            open_book.forecast(
                ForecastQuery(**flight, tier=Tier.NON_GUARANTEED, targeting=targeting)
            )
            for targeting in combinations
        ]
        seconds["forecast"] = (time.perf_counter() - clock) / max(len(combinations), 1) * 1000
        clock = time.perf_counter()
        # What each guaranteed item is forecast to deliver: its share in the forecaster's
        # allocation of the whole book (HWM over the sample), at most its goal.
        with_book = Forecaster.from_table(table, items, now=target, seed=config.seed)
        # What a guaranteed draft could still book: supply the booked items do not need.
        availability = [
            with_book.forecast(ForecastQuery(**flight, tier=Tier.GUARANTEED, targeting=targeting))
            for targeting in combinations
        ]
        booked = with_book.booked
        delivery = {
            item.id: min(float(item.goal_impressions or 0), float(allocated))
            for item, allocated in zip(booked.items, booked.allocated, strict=True)
        }
        seconds["forecast_delivery"] = time.perf_counter() - clock

        clock = time.perf_counter()
        week = traffic.between(target, target + WEEK)
        actual = serve_week(
            week,
            items,
            combinations,
            plan=_plan(with_book),
            seed=config.seed,
        )
        seconds["serve"] = time.perf_counter() - clock
    report = BacktestReport(config, seconds, holidays=traffic.holidays)
    for n, (targeting, result) in enumerate(zip(combinations, forecasts, strict=True)):
        name = _label(targeting)
        report.supply.append(_compare(name, result.matched, actual.supply[n]))
        report.reach.append(_compare(name, result.reach, actual.reach[n]))
        report.clicks.append(_compare(name, result.clicks, actual.clicks[n]))
        report.available.append(_compare(name, availability[n].available, actual.unreserved[n]))
    for item in guaranteed:
        report.delivered.append(
            Comparison(item.name, delivery.get(item.id, 0.0), float(actual.delivered[item.id]))
        )
    return report


def _caps_of(item: ServableLineItem) -> list[dict[str, Any]]:
    caps = []
    for rule in item.caps:
        if rule.window_seconds == DAY:
            caps.append({"count": rule.count, "period": "day"})
        elif rule.window_seconds == WEEK:
            caps.append({"count": rule.count, "period": "week"})
    return caps


def _compare(name: str, estimate: Any, actual: float) -> Comparison:
    return Comparison(
        name, float(estimate.value), float(actual), float(estimate.low), float(estimate.high)
    )


def weekly_supply(
    traffic: Traffic, targetings: Sequence[dict[str, Any]], every: int = 5
) -> list[float]:
    """Breaks of ``traffic`` each targeting admits (the ad server's matching), counted on
    every ``every``-th break and scaled: what a trafficker saw last week when booking."""
    index = TargetingIndex.build(targetings)
    totals = [0.0] * len(targetings)
    for row in range(0, len(traffic), every):
        for position in iter_bits(index.candidates(traffic.attributes(row))):
            totals[position] += every
    return totals


def _label(targeting: dict[str, Any]) -> str:
    return " ".join(
        f"{key}={','.join(str(v) for v in values)}" for key, values in targeting.items()
    )


# -- printing ----------------------------------------------------------------------------


def format_report(report: BacktestReport) -> str:
    metrics = report.metrics()
    config = report.config
    lines = [
        f"Backtest: {config.weeks} weeks of history ({config.daily_requests:,} requests/day, "
        f"{config.listeners:,} listeners, decision-log sample {config.sample:.0%}), forecast "
        f"week {TARGET_WEEK:%Y-%m-%d} for {config.combinations} targeting combinations and "
        f"{len(report.delivered)} guaranteed line items; seed {config.seed}",
        "",
        f"{'figure':<34}{'WAPE':>8}{'80% coverage':>14}{'goal':>22}",
        _row("supply, combinations >= 10k/week", metrics["supply_wape_large"], None,
             f"WAPE <= {GOALS['supply_wape_large']:.0%}"),
        _row(f"supply, all {len(report.supply)}", metrics["supply_wape"],
             metrics["supply_coverage"], "coverage 75-85%"),
        _row("reach (distinct listeners)", metrics["reach_wape"], metrics["reach_coverage"],
             f"WAPE <= {GOALS['reach_wape']:.0%}"),
        _row("clicks", metrics["clicks_wape"], metrics["clicks_coverage"], ""),
        _row("delivered guaranteed impressions", metrics["delivered_wape"], None, ""),
        _row("available (left by the guaranteed)", metrics["available_wape"],
             metrics["available_coverage"], ""),
        _row("all intervals", math.nan, metrics["coverage"], "75-85%"),
        "",
        f"{metrics['large_combinations']} combinations had >= {LARGE:,} opportunities in the week, "
        f"{metrics['combinations_with_supply']} had any (coverage counts those). "
        f"Goals met: "
        + ", ".join(f"{name} {'yes' if met else 'NO'}" for name, met in metrics["goals_met"].items()),
        "timings: " + ", ".join(f"{name} {value:.1f} {'ms each' if name == 'forecast' else 's'}" for name, value in report.seconds.items()),
    ]  # fmt: skip
    return "\n".join(lines)


def _row(name: str, error: float, cover: float | None, goal: str) -> str:
    error_text = "-" if math.isnan(error) else f"{error:.1%}"
    cover_text = "-" if cover is None or math.isnan(cover) else f"{cover:.1%}"
    return f"{name:<34}{error_text:>8}{cover_text:>14}{goal:>22}"


__all__ = [
    "BacktestConfig",
    "BacktestReport",
    "Comparison",
    "coverage",
    "format_report",
    "random_combinations",
    "run_backtest",
    "serve_week",
    "wape",
]

"""Simulated flight: even pacing (and ASAP, for contrast) over days of synthetic traffic.

Runs the real ``Decider`` + ``MemoryLedger`` + ``PacingController`` in process with a fake
clock: ad requests arrive following the default daily curve with hour-to-hour and
day-to-day noise, against a book of even-paced sponsorship/guaranteed line items (goals,
lifetime and daily budgets, a frequency cap, overlapping targeting), competing
non-guaranteed line items and a house ad. The allocation plan (start shares and the
traffic curve) comes from a 10 % sample of the previous day, as ``backbeat plan`` would
compute it from the decision log. Prints hour-by-hour delivery against plan, each line
item's delivered/goal, and smoothness figures.

Usage: ``.venv/bin/python bench/bench_pacing.py [--days 2] [--requests 240000] [--seed 1] [--no-plan]``.
Also imported by ``tests/serving/test_pacing.py`` for a shortened flight.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from backbeat.catalog.vocabulary import TIER_RANK, Pacing, Tier  # noqa: E402
from backbeat.forecast.allocation.share import Opportunity, compute_plan  # noqa: E402
from backbeat.serving.decisions import Decider  # noqa: E402
from backbeat.serving.ledger import MemoryLedger  # noqa: E402
from backbeat.serving.pacing import DEFAULT_CURVE, PacingController, TrafficCurve  # noqa: E402
from backbeat.serving.request import AdRequest, request_attributes  # noqa: E402
from backbeat.serving.snapshot import (  # noqa: E402
    CapRule,
    ServableCreative,
    ServableLineItem,
    ServableSlot,
    Snapshot,
)
from backbeat.serving.targeting_index import compile_predicate  # noqa: E402
from synthetic import GENRES, PLATFORMS, SEGMENTS, SLOTS  # noqa: E402

HOUR = 3600
DAY = 86400
START = (1_790_000_000 // DAY + 1) * DAY  # a UTC midnight
USD = 1_000_000
LOG_SAMPLE = 0.1
COUNTRIES = {"US": 35, "GB": 12, "DE": 10, "FR": 7, "BR": 6, "CA": 5, "AU": 4, "SE": 3,
             "MX": 4, "ES": 4, "IT": 4, "NL": 2, "JP": 2, "IN": 2}  # fmt: skip
DEVICES = {"mobile": 50, "desktop": 15, "smart_speaker": 12, "car": 8, "tablet": 8,
           "connected_tv": 7}  # fmt: skip
GENRE_WEIGHTS = [18, 12, 12, 10, 10, 8, 12, 8, 6, 4]


@dataclass(frozen=True)
class Booking:
    """A paced line item of the simulated book; ``share`` of its eligible supply sets the goal."""

    name: str
    tier: str
    cpm: float
    targeting: dict[str, list[Any]]
    share: float
    metric: str = "impressions"  # or "budget" (lifetime) or "daily" (daily budget only)
    cap: tuple[int, int] | None = None  # count per window seconds


BOOKINGS = [
    Booking("spons-news", Tier.SPONSORSHIP, 30.0, {"genres": ["news"]}, 0.30),
    Booking("g-us-mobile", Tier.GUARANTEED, 20.0, {"countries": ["US"], "devices": ["mobile"]}, 0.35),
    Booking("g-eu-capped", Tier.GUARANTEED, 18.0, {"countries": ["GB", "DE", "FR"]}, 0.30, cap=(2, DAY)),
    Booking("g-broad", Tier.GUARANTEED, 12.0, {}, 0.06),
    Booking("g-segments", Tier.GUARANTEED, 15.0, {"segments": SEGMENTS[:20]}, 0.25, metric="budget"),
    Booking("g-daily", Tier.GUARANTEED, 16.0, {"devices": ["smart_speaker", "car"]}, 0.30, metric="daily"),
    Booking("ng-even", Tier.NON_GUARANTEED, 14.0, {"countries": ["US", "CA"]}, 0.15, metric="budget"),
]  # fmt: skip
COMPETITORS = [  # (name, tier, cpm, targeting, cap): ASAP, no budget
    ("ng-a", Tier.NON_GUARANTEED, 11.0, {"countries": ["US", "CA", "GB"]}, None),
    ("ng-b", Tier.NON_GUARANTEED, 9.0, {}, (2, HOUR)),
    ("ng-c", Tier.NON_GUARANTEED, 6.0, {"devices": ["mobile", "tablet"]}, None),
    ("house", Tier.HOUSE, 0.0, {}, None),
]


def creative(n: int) -> ServableCreative:
    return ServableCreative(n, f"Spot {n}", f"https://cdn.example.com/{n}.mp3", "audio/mpeg",
                            30_000, 128, None, ())  # fmt: skip


def line_item(
    n: int,
    name: str,
    tier: str,
    cpm: float,
    targeting: dict[str, list[Any]],
    pacing: str,
    **more: Any,
) -> ServableLineItem:
    fields: dict[str, Any] = {
        "budget_micros": None,
        "daily_budget_micros": None,
        "goal_impressions": None,
        "caps": (),
        "start_ts": float(START),
        "end_ts": float(START + DAY),
        **more,
    }
    return ServableLineItem(
        id=n, campaign_id=n, advertiser_id=n, advertiser_name=f"Advertiser {n}", name=name,
        tier=str(tier), tier_rank=TIER_RANK[str(tier)], cpm_micros=round(cpm * USD),
        currency="USD", campaign_budget_micros=10**9 * USD, pacing=pacing,
        targeting=targeting, creatives=(creative(n),), **fields,
    )  # fmt: skip


# -- traffic ------------------------------------------------------------------------------


def _weighted(rng: random.Random, table: dict[str, int]) -> Iterator[str]:
    keys, weights = list(table), list(table.values())
    while True:
        yield from rng.choices(keys, weights=weights, k=1024)


@dataclass
class Traffic:
    """Ad requests and when they arrive: the hourly curve with noise, then uniform in the hour."""

    start: float
    days: int
    requests: int
    seed: int
    listeners: int = 40_000
    hour_noise: float = 0.08
    day_noise: float = 0.05

    def __iter__(self) -> Iterator[tuple[float, AdRequest]]:
        rng = random.Random(self.seed)
        curve = TrafficCurve(DEFAULT_CURVE).hourly
        audience = self._audience(rng)
        made: dict[tuple[int, int], AdRequest] = {}
        for day in range(self.days):
            day_factor = math.exp(rng.gauss(0, self.day_noise))
            for hour in range(24):
                expected = self.requests / self.days * curve[hour] * day_factor
                count = max(0, round(expected * math.exp(rng.gauss(0, self.hour_noise))))
                base = self.start + day * DAY + hour * HOUR
                for ts in sorted(base + rng.random() * HOUR for _ in range(count)):
                    # Heavy listeners are few and hear many ads: caps bite on them.
                    key = (int(self.listeners * rng.random() ** 2), rng.randrange(len(SLOTS)) + 1)
                    request = made.get(key)
                    if request is None:
                        template = audience[key[0] % len(audience)]
                        request = made[key] = template._replace(
                            listener=f"l{key[0]}", slot_id=key[1]
                        )
                    yield ts, request

    def _audience(self, rng: random.Random, size: int = 20_000) -> list[AdRequest]:
        """Request templates (drawn once: drawing attributes per request is most of the cost)."""
        countries, devices = _weighted(rng, COUNTRIES), _weighted(rng, DEVICES)
        return [
            AdRequest(
                slot_id=1,
                listener="",
                country=next(countries),
                device=next(devices),
                platform=rng.choice(PLATFORMS),
                genre=rng.choices(GENRES, weights=GENRE_WEIGHTS)[0],
                segments=tuple(rng.sample(SEGMENTS[:60], rng.randint(0, 4))),
            )
            for _ in range(size)
        ]


# -- the flight ---------------------------------------------------------------------------


@dataclass
class ItemReport:
    """One paced line item's hourly delivery against plan, in its own metric."""

    id: int
    name: str
    metric: str
    goal: float
    delivered: list[float]
    planned: list[float]
    goal_reached_hour: int | None = None

    @property
    def ratio(self) -> float:
        return sum(self.delivered) / self.goal

    @property
    def worst_over(self) -> float:
        """Largest hourly delivered/planned."""
        return max(d / p for d, p in zip(self.delivered, self.planned, strict=True) if p > 0)

    @property
    def max_deviation(self) -> float:
        """Largest hourly |delivered − planned| / planned."""
        return max(
            abs(d - p) / p for d, p in zip(self.delivered, self.planned, strict=True) if p > 0
        )

    @property
    def max_deviation_of_mean_hour(self) -> float:
        """Largest hourly |delivered − planned| over the mean planned hour (night hours are small)."""
        mean = sum(self.planned) / len(self.planned)
        return max(abs(d - p) for d, p in zip(self.delivered, self.planned, strict=True)) / mean

    @property
    def dispersion(self) -> float:
        """RMS of (delivered − planned)/√planned over hours: ≈1 is as smooth as Poisson noise allows.

        Only for impression metrics: budgets count money, not events.
        """
        terms = [
            (d - p) ** 2 / p for d, p in zip(self.delivered, self.planned, strict=True) if p > 0
        ]
        return math.sqrt(sum(terms) / len(terms))


@dataclass
class FlightResult:
    pacing: str
    days: int
    requests: int
    seconds: float
    items: list[ItemReport] = field(default_factory=list)
    fills: dict[str, int] = field(default_factory=dict)


def book(days: int, eligible: dict[str, float], pacing: str) -> list[ServableLineItem]:
    """The simulated book; goals are each booking's share of its forecast eligible supply."""
    items: list[ServableLineItem] = []
    end = float(START + days * DAY)
    for n, booking in enumerate(BOOKINGS, start=1):
        quantity = booking.share * eligible[booking.name]
        more: dict[str, Any] = {"end_ts": end}
        if booking.metric == "impressions":
            more["goal_impressions"] = round(quantity)
        elif booking.metric == "budget":
            more["budget_micros"] = round(quantity * booking.cpm * USD / 1000)
        else:
            more["daily_budget_micros"] = round(quantity / days * booking.cpm * USD / 1000)
        if booking.cap:
            more["caps"] = (CapRule(f"li:{n}", booking.cap[0], booking.cap[1]),)
        items.append(
            line_item(n, booking.name, booking.tier, booking.cpm, booking.targeting, pacing, **more)
        )
    for n, (name, tier, cpm, targeting, cap) in enumerate(COMPETITORS, start=len(BOOKINGS) + 1):
        caps = (CapRule(f"li:{n}", cap[0], cap[1]),) if cap else ()
        items.append(line_item(n, name, tier, cpm, targeting, Pacing.ASAP, end_ts=end, caps=caps))
    return items


def slots() -> list[ServableSlot]:
    return [
        ServableSlot(
            n, f"{surface}/{position}", surface, position, reserve_micros=USD, currency="USD"
        )
        for n, (surface, position) in enumerate(SLOTS, start=1)
    ]


def previous_day_log(requests_per_day: int, seed: int, keys: frozenset[str]) -> list[Opportunity]:
    """Yesterday's decision log at a 10 % sample: what ``backbeat plan`` reads.

    A 10 % sample of a day's requests is drawn as a day of traffic a tenth as dense.
    """
    by_id = {slot.id: slot for slot in slots()}
    log: list[Opportunity] = []
    for ts, request in Traffic(START - DAY, 1, round(requests_per_day * LOG_SAMPLE), seed + 1000):
        slot = by_id[request.slot_id]
        attributes = request_attributes(request, slot.surface, slot.position, ts, keys)
        log.append(Opportunity(ts, 1 / LOG_SAMPLE, attributes))
    return log


def simulate(
    *,
    days: int = 2,
    requests: int = 240_000,
    seed: int = 1,
    pacing: str = Pacing.EVEN,
    use_plan: bool = True,
    interval: float = 30.0,
    replicas: int = 1,
    **controller: Any,
) -> FlightResult:
    """Run one flight; every paced line item's flight is the whole simulated span.

    ``interval`` is longer than a server's 5 s because the simulated traffic is thin (a few
    requests a second): an update every 30 s still sees tens of requests between updates,
    as a real server does every 5 s. ``controller`` passes other ``PacingController`` knobs.
    ``replicas`` servers, each with its own controller, share one ledger and take turns.
    """
    started = time.perf_counter()
    probe = Snapshot.of(
        0, book(days, dict.fromkeys((b.name for b in BOOKINGS), 1.0), pacing), slots()
    )
    log = previous_day_log(requests // days, seed, probe.index.keys_in_use)
    # Goals from the same sample the plan sees, replayed with the targeting predicates.
    eligible = {}
    for booking in BOOKINGS:
        admits = compile_predicate(booking.targeting) if booking.targeting else (lambda _: True)
        eligible[booking.name] = sum(o.weight for o in log if admits(o.attributes)) * days
    items = book(days, eligible, pacing)
    snapshot = Snapshot.of(1, items, slots())
    plan = compute_plan(line_items=items, opportunities=log, delivered={}, now=float(START))
    ledger = MemoryLedger()
    deciders = []
    for replica in range(replicas):
        gate = PacingController(interval=interval, **controller)
        if use_plan:
            gate.plan = plan.entries
            if plan.curve is not None:
                gate.curve = TrafficCurve(plan.curve)
        deciders.append(Decider(ledger, gate, seed=seed + replica))
    hours = days * 24
    paced = {item.id: item for item in items if item.name in {b.name for b in BOOKINGS}}
    delivered = {item_id: [0.0] * hours for item_id in paced}
    reached: dict[int, int] = {}
    fills: dict[str, int] = {item.name: 0 for item in items}
    fills["no-fill"] = 0
    count = 0
    for ts, request in Traffic(float(START), days, requests, seed):
        count += 1
        decider = deciders[count % replicas]
        decision = decider.decide(snapshot, snapshot.slots[request.slot_id], request, ts)
        chosen = decision.line_item
        if chosen is None:
            fills["no-fill"] += 1
            continue
        fills[chosen.name] += 1
        if chosen.id in paced:
            hour = int((ts - START) // HOUR)
            metric = BOOKINGS[chosen.id - 1].metric
            amount = 1.0 if metric == "impressions" else decision.price_micros / 1000 / USD
            delivered[chosen.id][hour] += amount
            if (
                chosen.goal_impressions
                and ledger.delivery(chosen, ts).impressions >= chosen.goal_impressions
            ):
                reached.setdefault(chosen.id, hour)
    curve = deciders[0].pacing.curve
    result = FlightResult(str(pacing), days, count, time.perf_counter() - started, fills=fills)
    for item_id, item in paced.items():
        metric = BOOKINGS[item_id - 1].metric
        if metric == "impressions":
            goal = float(item.goal_impressions or 0)
        elif metric == "budget":
            goal = (item.budget_micros or 0) / USD
        else:
            goal = (item.daily_budget_micros or 0) / USD * days
        planned = []
        for hour in range(hours):
            begin = START + hour * HOUR
            if metric == "daily":
                day = START + hour // 24 * DAY
                share = curve.fraction(day, day + DAY, begin + HOUR) - curve.fraction(
                    day, day + DAY, begin
                )
                planned.append(goal / days * share)
            else:
                share = curve.fraction(item.start_ts, item.end_ts, begin + HOUR) - curve.fraction(
                    item.start_ts, item.end_ts, begin
                )
                planned.append(goal * share)
        result.items.append(
            ItemReport(
                item_id, item.name, metric, goal, delivered[item_id], planned, reached.get(item_id)
            )
        )
    return result


# -- report -------------------------------------------------------------------------------


def _amount(value: float, metric: str) -> str:
    return f"{value:.0f}" if metric == "impressions" else f"${value:.0f}"


def print_table(result: FlightResult) -> None:
    width = 13
    print("hour   " + "".join(f"{item.name:>{width}}" for item in result.items))
    print("       " + "".join(f"{'deliv/plan':>{width}}" for _ in result.items))
    for hour in range(result.days * 24):
        cells = "".join(
            f"{_amount(item.delivered[hour], item.metric) + '/' + _amount(item.planned[hour], item.metric).lstrip('$'):>{width}}"
            for item in result.items
        )
        print(f"d{hour // 24 + 1} {hour % 24:02d} {cells}")


def print_summary(result: FlightResult) -> None:
    print(
        f"{'line item':<13}{'metric':>12}{'goal':>10}{'delivered':>11}{'ratio':>8}"
        f"{'max|dev|':>10}{'/mean h':>9}{'max d/p':>9}{'disp':>7}{'done at':>9}"
    )
    for item in result.items:
        done = (
            "-"
            if item.goal_reached_hour is None
            else f"d{item.goal_reached_hour // 24 + 1} {item.goal_reached_hour % 24:02d}h"
        )
        dispersion = f"{item.dispersion:.2f}" if item.metric == "impressions" else "-"
        print(
            f"{item.name:<13}{item.metric:>12}{_amount(item.goal, item.metric):>10}"
            f"{_amount(sum(item.delivered), item.metric):>11}{item.ratio:>8.3f}"
            f"{item.max_deviation:>10.1%}{item.max_deviation_of_mean_hour:>9.1%}"
            f"{item.worst_over:>9.2f}{dispersion:>7}{done:>9}"
        )
    fills = ", ".join(f"{name} {count}" for name, count in result.fills.items())
    print(f"fills: {fills}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--requests", type=int, default=240_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-plan", action="store_true", help="start without an allocation plan")
    parser.add_argument("--replicas", type=int, default=1, help="servers sharing one ledger")
    parser.add_argument("--no-asap", action="store_true", help="skip the ASAP contrast run")
    args = parser.parse_args(argv)
    options = {
        "days": args.days,
        "requests": args.requests,
        "seed": args.seed,
        "replicas": args.replicas,
    }
    # The two flights are independent: one process each, so both cores work.
    with ProcessPoolExecutor(max_workers=1 if args.no_asap else 2) as pool:
        even_run = pool.submit(simulate, **options, use_plan=not args.no_plan)
        asap_run = None if args.no_asap else pool.submit(simulate, **options, pacing=Pacing.ASAP)
        even = even_run.result()
        asap = asap_run.result() if asap_run is not None else None
    print(
        f"Even pacing: {even.requests} ad requests over {even.days} days, "
        f"{len(even.items)} paced line items, {args.replicas} replica(s), plan {'off' if args.no_plan else 'from a 10% sample of the day before'}; "
        f"simulated in {even.seconds:.1f} s ({even.requests / even.seconds:,.0f} decisions/s)\n"
    )
    print_table(even)
    print()
    print_summary(even)
    worst = max(abs(item.ratio - 1) for item in even.items)
    print(
        f"\nworst delivered/goal off by {worst:.2%} (limit 2%); worst hour "
        f"{max(item.worst_over for item in even.items):.2f}x its plan; "
        f"worst hourly deviation {max(item.max_deviation_of_mean_hour for item in even.items):.1%} of a mean hour"
    )
    if asap is not None:
        print(f"\nASAP, same book and traffic (simulated in {asap.seconds:.1f} s):")
        print_summary(asap)
    return 0 if worst <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())

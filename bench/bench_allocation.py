"""Guaranteed allocation: HWM and SHALE against the exact optimum (HiGHS), and plan speed.

    .venv/bin/python bench/bench_allocation.py [--items 300] [--opportunities 1000000]
        [--qp-items 40] [--scale-items 1000] [--seed 1]

1. **Quality.** A simulated week of supply (``--opportunities`` sampled requests over six
   markets, four devices, ten genres and 168 hours, with a daily curve), grouped into
   supply nodes (identical country × device × genre × hour). ``--items`` overlapping
   guaranteed line items target random subsets of markets, devices, genres and dayparts
   over flights of one to seven days, with goals of 20–140 % of a fair share: about
   as much demand as supply in total, so some are contended and some infeasible. The same
   problem is solved by HWM, SHALE and exactly as an LP with HiGHS (most deliverable
   guaranteed impressions); side by side: delivered, total under-delivery, line items
   under-delivered (by > 0.1 %), share of impressions left to the auction, runtime and
   peak memory. SHALE's goal: within 1 % of the optimum's delivered impressions.
2. **Representativeness.** On a ``--qp-items`` sub-book (HiGHS' QP solver is slow on the
   full one), SHALE's objective against the exact QP optimum.
3. **Speed.** Plan computation for ``--scale-items`` line items over a sample of
   ``--opportunities`` requests: grouping into nodes, eligibility, HWM, SHALE.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from backbeat.forecast.allocation.exact import max_delivery, representative
from backbeat.forecast.allocation.graph import Graph, merge_identical
from backbeat.forecast.allocation.hwm import hwm_allocate
from backbeat.forecast.allocation.shale import shale_allocate

COUNTRIES = np.array([0.42, 0.18, 0.14, 0.12, 0.08, 0.06])  # US GB DE BR SE FR
DEVICES = np.array([0.62, 0.2, 0.12, 0.06])
GENRES = np.full(10, 0.1)
CURVE = np.array(
    [1.2, 0.8, 0.6, 0.5, 0.5, 0.8, 2.0, 4.5, 6.5, 5.5, 4.6, 4.4,
     4.8, 4.9, 4.6, 4.7, 5.6, 6.8, 7.2, 6.4, 5.6, 4.8, 3.4, 2.2]
)  # fmt: skip


def simulate_week(rng: np.random.Generator, opportunities: int) -> tuple[np.ndarray, np.ndarray]:
    """Sampled requests grouped into nodes: (attributes (n, 4): country, device, genre, hour; supply)."""
    daily = CURVE / CURVE.sum()
    weekday = np.array([1.0, 1.0, 1.0, 1.0, 1.05, 0.9, 0.85])
    hour_weights = (weekday[:, None] * daily[None, :]).reshape(-1)
    columns = [
        rng.choice(len(COUNTRIES), opportunities, p=COUNTRIES),
        rng.choice(len(DEVICES), opportunities, p=DEVICES),
        rng.choice(len(GENRES), opportunities, p=GENRES),
        rng.choice(168, opportunities, p=hour_weights / hour_weights.sum()),
    ]
    key = ((columns[0] * 4 + columns[1]) * 10 + columns[2]) * 168 + columns[3]
    unique, counts = np.unique(key, return_counts=True)
    attributes = np.stack(
        (unique // (4 * 10 * 168), unique // (10 * 168) % 4, unique // 168 % 10, unique % 168), 1
    )
    return attributes, counts.astype(np.float64) * 10.0  # a 10 % decision-log sample


def book(
    rng: np.random.Generator,
    attributes: np.ndarray,
    supply: np.ndarray,
    items: int,
    load: float,
    narrow: bool = False,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Overlapping targetings and flights; goals scaled so demand is ``load`` × supply.

    ``narrow``: every item buys one or two of the three big markets on one device, the
    contended case where the order of a greedy plan matters most.
    """
    eligible: list[np.ndarray] = []
    for _ in range(items):
        mask = np.ones(len(supply), dtype=bool)
        if narrow:
            mask &= np.isin(attributes[:, 0], rng.choice(3, rng.integers(1, 3), replace=False))
            mask &= attributes[:, 1] == rng.choice(4, p=DEVICES)
        elif rng.random() < 0.8:
            mask &= np.isin(attributes[:, 0], rng.choice(6, rng.integers(1, 4), replace=False))
        if rng.random() < 0.5:
            mask &= np.isin(attributes[:, 1], rng.choice(4, rng.integers(1, 3), replace=False))
        if rng.random() < 0.6:
            mask &= np.isin(attributes[:, 2], rng.choice(10, rng.integers(1, 5), replace=False))
        if rng.random() < 0.3:  # a daypart: morning, drive time or evening
            start = rng.choice([6, 15, 18])
            mask &= np.isin(attributes[:, 3] % 24, np.arange(start, start + 4))
        first = rng.integers(0, 7)
        days = rng.integers(1, 8 - first)
        mask &= (attributes[:, 3] // 24 >= first) & (attributes[:, 3] // 24 < first + days)
        eligible.append(np.flatnonzero(mask))
    totals = np.array([supply[nodes].sum() for nodes in eligible])
    share = rng.uniform(0.2, 1.4, items)
    demand = totals * share
    # Scaled to the supply some item can take (all of it but for narrow books).
    reachable = supply[np.unique(np.concatenate(eligible))].sum()
    demand *= load * reachable / max(demand.sum(), 1.0)
    return eligible, np.floor(demand)


def measure(run: Callable[[], Any]) -> tuple[Any, float, float]:
    tracemalloc.start()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def row(name: str, allocated: np.ndarray, taken: np.ndarray, demand: np.ndarray,
        supply: np.ndarray, seconds: float, peak: float) -> dict[str, Any]:  # fmt: skip
    under = np.maximum(demand - allocated, 0.0)
    return {
        "name": name,
        "delivered": float(allocated.sum()),
        "under": float(under.sum()),
        "under_items": int((allocated < demand * 0.999).sum()),
        "auction": 1.0 - float(taken.sum()) / float(supply.sum()),
        "seconds": seconds,
        "peak": peak,
    }


def quality(args: argparse.Namespace, load: float, qp: bool) -> None:
    rng = np.random.default_rng(args.seed)
    attributes, supply = simulate_week(rng, args.opportunities)
    eligible, demand = book(rng, attributes, supply, args.items, load, args.narrow)
    raw_nodes = len(supply)
    # Nodes eligible for the same line items are one node to all three methods (exact).
    supply, eligible, _ = merge_identical(supply, eligible)
    graph = Graph.build(supply, eligible, demand)
    print(
        f"\n== quality{' (narrow book)' if args.narrow else ''}: {args.items} guaranteed "
        f"line items, {raw_nodes:,} supply nodes "
        f"({len(supply):,} after merging identical eligibility) from "
        f"{args.opportunities:,} sampled requests ({supply.sum():,.0f} impressions), "
        f"{graph.edge_node.size:,} edges, demand {load:.0%} of the supply they target"
    )
    rows = []
    hwm, seconds, peak = measure(lambda: hwm_allocate(supply, eligible, demand))
    rows.append(row("HWM", hwm.allocated, hwm.taken, demand, supply, seconds, peak))
    shale, seconds, peak = measure(lambda: shale_allocate(supply, eligible, demand))
    rows.append(row("SHALE", shale.allocated, shale.taken, demand, supply, seconds, peak))
    exact, seconds, peak = measure(lambda: max_delivery(graph))
    rows.append(row(f"LP optimum ({exact.status})", exact.allocated, exact.taken, demand, supply,
                    seconds, peak))  # fmt: skip
    best = rows[-1]["delivered"]
    print(f"{'':28} {'delivered':>12} {'vs optimum':>10} {'under-delivery':>15} "
          f"{'items under':>11} {'to auction':>10} {'seconds':>8} {'peak MiB':>9}")  # fmt: skip
    for entry in rows:
        print(
            f"{entry['name']:28} {entry['delivered']:12,.0f} {entry['delivered'] / best:10.2%} "
            f"{entry['under']:15,.0f} {entry['under_items']:11d} {entry['auction']:10.1%} "
            f"{entry['seconds']:8.2f} {entry['peak']:9.1f}"
        )
    gap = 1 - rows[1]["delivered"] / best
    print(f"SHALE within {gap:.3%} of the optimum's delivered impressions (goal: < 1 %)")

    if qp and args.qp_items:
        keep = rng.choice(args.items, args.qp_items, replace=False)
        sub_eligible = [eligible[j] for j in keep]
        used = np.unique(np.concatenate(sub_eligible))
        remap = np.full(len(supply), -1)
        remap[used] = np.arange(used.size)
        sub_supply = supply[used]
        sub_eligible = [remap[nodes] for nodes in sub_eligible]
        sub_demand = demand[keep] * 0.8  # contended, mostly feasible
        sub_graph = Graph.build(sub_supply, sub_eligible, sub_demand)
        sub, shale_seconds, _ = measure(
            lambda: shale_allocate(sub_supply, sub_eligible, sub_demand, passes=30)
        )
        qp, qp_seconds, _ = measure(lambda: representative(sub_graph))
        print(
            f"\n== representativeness on {args.qp_items} line items, {used.size:,} nodes, "
            f"{sub_graph.edge_node.size:,} edges (QP: {qp.status}, {qp_seconds:.1f}s; "
            f"SHALE {shale_seconds:.2f}s)"
        )
        theta = sub.theta[sub_graph.edge_contract]
        s = sub_supply[sub_graph.edge_node]

        def cost(flows: np.ndarray) -> float:
            return 0.5 * float(np.sum(s / np.maximum(theta, 1e-12) * (flows / s - theta) ** 2))

        shale_flows = _shale_flows(sub_graph, sub)
        qp_flows = qp.flows
        print(
            f"objective ½Σ s/θ (x−θ)²: SHALE {cost(shale_flows):,.1f}, QP optimum "
            f"{cost(qp_flows):,.1f} (ratio {cost(shale_flows) / max(cost(qp_flows), 1e-9):.3f}); "
            f"delivered SHALE {sub.allocated.sum():,.0f}, QP {qp.allocated.sum():,.0f} "
            f"of {sub_demand.sum():,.0f}"
        )


def _shale_flows(graph: Graph, result: Any) -> np.ndarray:
    remaining = np.ones(graph.n)
    flows = np.zeros(graph.edge_node.size)
    for j in result.order:
        lo, hi = graph.starts[j], graph.starts[j + 1]
        nodes = graph.edge_node[lo:hi]
        wanted = np.maximum(
            0.0, result.theta[j] * (1 + (result.alpha[j] - result.beta[nodes]) / result.weight[j])
        )
        share = np.minimum(remaining[nodes], wanted)
        remaining[nodes] -= share
        flows[lo:hi] = share * graph.supply[nodes]
    return flows


def speed(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed + 1)

    def build() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        attributes, supply = simulate_week(rng, args.opportunities)
        eligible, demand = book(rng, attributes, supply, args.scale_items, args.loads[0])
        supply, eligible, _ = merge_identical(supply, eligible)
        return supply, eligible, demand

    (supply, eligible, demand), build_seconds, build_peak = measure(build)
    edges = sum(nodes.size for nodes in eligible)
    print(
        f"\n== speed: {args.scale_items} line items over {args.opportunities:,} sampled requests "
        f"-> {len(supply):,} merged nodes, {edges:,} edges (grouping, eligibility and merging "
        f"{build_seconds:.1f}s, "
        f"peak {build_peak:.0f} MiB)"
    )
    hwm, seconds, peak = measure(lambda: hwm_allocate(supply, eligible, demand))
    print(f"HWM   {seconds:6.2f}s  peak {peak:6.0f} MiB  delivered {hwm.allocated.sum():,.0f}")
    shale, seconds, peak = measure(lambda: shale_allocate(supply, eligible, demand))
    print(f"SHALE {seconds:6.2f}s  peak {peak:6.0f} MiB  delivered {shale.allocated.sum():,.0f}")
    print(f"plan total (build + SHALE): {build_seconds + seconds:.1f}s (goal: < 60 s)")


def planner(args: argparse.Namespace) -> None:
    """The real planner (``backbeat plan``) over the forecaster of ``bench_forecast.py``."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from backbeat.forecast.allocation.planner import plan_problem, solve_plan
    from backbeat.forecast.service import Forecaster
    from backbeat.forecast.synthetic import synthetic_table
    from bench_forecast import book as forecast_book

    rng = np.random.default_rng(7)
    now = float(int(1_790_000_000 // 3600) * 3600 + 1234)
    table = synthetic_table(args.opportunities, days=28, end=now,
                            listeners=max(args.opportunities // 8, 10), seed=7)  # fmt: skip
    items = forecast_book(rng, args.scale_items, now)
    started = time.perf_counter()
    forecaster = Forecaster.from_table(table, items, now=now, max_rows=args.opportunities, seed=7)
    built = time.perf_counter() - started
    problem, problem_seconds, problem_peak = measure(lambda: plan_problem(forecaster))
    edges = sum(nodes.size for nodes in problem.eligible)
    print(
        f"\n== planner (backbeat plan): {len(problem.items)} reserving line items, sample "
        f"{forecaster.sample.size:,} rows (forecaster built in {built:.0f}s); graph "
        f"{problem.supply.size:,} nodes (atom × week), {edges:,} edges in {problem_seconds:.1f}s, "
        f"peak {problem_peak:.0f} MiB"
    )
    for algorithm in ("hwm", "shale"):
        (_, allocated), seconds, peak = measure(lambda a=algorithm: solve_plan(problem, a))
        print(
            f"{algorithm:5} {seconds:6.1f}s  peak {peak:5.0f} MiB  delivered "
            f"{allocated.sum():,.0f} of {problem.demand.sum():,.0f}; plan total "
            f"{problem_seconds + seconds:.1f}s (goal: < 60 s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--opportunities", type=int, default=1_000_000)
    parser.add_argument(
        "--loads",
        type=lambda text: [float(part) for part in text.split(",")],
        default=[0.8, 1.0, 1.2],
        help="total demand over supply, one quality run each",
    )
    parser.add_argument("--qp-items", type=int, default=12)
    parser.add_argument("--scale-items", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--planner", action="store_true", help="also time the real planner")
    parser.add_argument("--narrow", action="store_true", help="a contended book (see book())")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for position, load in enumerate(args.loads):
        quality(args, load, qp=position == len(args.loads) - 1)
    if not args.skip_speed:
        speed(args)
    if args.planner:
        planner(args)


if __name__ == "__main__":
    main()

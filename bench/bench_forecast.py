"""Forecast speed: a 1M-request supply sample and 1,000 booked line items.

Builds a synthetic decision log of four weeks (``backbeat.forecast.synthetic``: listeners
with country, device, platform and segments, heavy and light, on a daily curve), books
1,000 sponsorship and guaranteed line items with real-shaped targeting (markets, devices,
genres, segments, dayparts) and flights over the next weeks, builds the forecaster
(sample, supply model, booked allocation) and answers random drafts:

- build time and its parts; peak RSS;
- one forecast at a time: p50 / p99 latency;
- bulk: forecasts per second through ``forecast_many`` (its listener-hash subsample, drafts
  answered in batches), in one process and in two forked processes (two cores), wall and
  CPU time; baseline in the same run: the same drafts one ``forecast(bulk=True)`` at a
  time (what ``forecast_many`` did before batching), and the largest difference between
  the two answers;
- baseline, measured in the same run on the same sample: matching a draft by evaluating
  the ad server's compiled predicate row by row in Python (a naive scan) — the ratio is
  what the columnar masks buy.

    python bench/bench_forecast.py [--rows 1000000] [--items 1000] [--queries 300]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import time

import numpy as np

from backbeat.forecast.service import Forecaster, ForecastQuery
from backbeat.forecast.synthetic import (
    COUNTRIES,
    DEVICES,
    GENRES,
    SEGMENTS,
    booked_item,
    synthetic_table,
)
from backbeat.serving.targeting_index import compile_predicate

DAY = 86400


def random_targeting(rng: np.random.Generator) -> dict:
    targeting: dict = {}
    targeting["countries"] = sorted(
        rng.choice([c for c, _ in COUNTRIES], size=int(rng.integers(1, 3)), replace=False).tolist()
    )
    if rng.random() < 0.4:
        targeting["devices"] = sorted(
            rng.choice(
                [d for d, _ in DEVICES], size=int(rng.integers(1, 3)), replace=False
            ).tolist()
        )
    if rng.random() < 0.3:
        targeting["genres"] = sorted(
            rng.choice(GENRES, size=int(rng.integers(1, 4)), replace=False).tolist()
        )
    if rng.random() < 0.25:
        targeting["segments"] = sorted(
            rng.choice(SEGMENTS, size=int(rng.integers(1, 3)), replace=False).tolist()
        )
    if rng.random() < 0.15:
        start = int(rng.integers(0, 18))
        targeting["dayparts"] = list(range(start, start + 6))
    if rng.random() < 0.1:
        targeting["not"] = {"genres": ["news"]}
    return targeting


def book(rng: np.random.Generator, count: int, now: float) -> list:
    items = []
    for item_id in range(1, count + 1):
        start = now + float(rng.uniform(-3, 21)) * DAY
        length = float(rng.uniform(3, 28)) * DAY
        items.append(
            booked_item(
                item_id,
                targeting=random_targeting(rng),
                tier="sponsorship" if rng.random() < 0.15 else "guaranteed",
                goal=int(rng.uniform(5_000, 150_000)),
                start=start,
                end=start + length,
                advertiser_id=int(rng.integers(1, 60)),
            )
        )
    return items


def drafts(rng: np.random.Generator, count: int, now: float) -> list[ForecastQuery]:
    out = []
    for _ in range(count):
        start = now + float(rng.uniform(0, 14)) * DAY
        out.append(
            ForecastQuery(
                start_at=start,
                end_at=start + float(rng.uniform(1, 28)) * DAY,
                tier=str(rng.choice(["sponsorship", "guaranteed", "non_guaranteed"])),
                targeting=random_targeting(rng),
                goal_impressions=int(rng.uniform(10_000, 500_000)) if rng.random() < 0.5 else None,
            )
        )
    return out


_SHARED: Forecaster | None = None


def _answer_bulk(queries: list[ForecastQuery]) -> int:
    assert _SHARED is not None
    return len(_SHARED.forecast_many(queries))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--bulk", type=int, default=1000)
    parser.add_argument("--supply-model", default="auto")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    now = float(int(1_790_000_000 // 3600) * 3600 + 1234)

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}"
    )
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    started = time.perf_counter()
    table = synthetic_table(
        args.rows, days=28, end=now, listeners=max(args.rows // 8, 10), seed=args.seed
    )
    print(
        f"synthetic log: {table.size:,} requests, {len(table.listeners):,} listeners "
        f"({time.perf_counter() - started:.1f} s)"
    )
    items = book(rng, args.items, now)
    started = time.perf_counter()
    forecaster = Forecaster.from_table(
        table, items, now=now, max_rows=args.rows, supply_model=args.supply_model, seed=args.seed
    )
    build = time.perf_counter() - started
    print(
        f"build: {build:.1f} s (supply model {forecaster.supply.model} "
        f"{forecaster.supply.fit_seconds:.1f} s), sample {forecaster.sample.size:,} rows, "
        f"{int(forecaster.booked.group_of_row.max()) + 1:,} booked-eligibility groups, "
        f"{len(forecaster.booked.items)} reserving items"
    )
    print(f"peak RSS after build: {peak_rss_mib():,.0f} MiB")

    queries = drafts(rng, args.queries, now)
    for query in queries[:10]:  # warm the leaf cache the way a running server would be
        forecaster.forecast(query)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        forecaster.forecast(query)
        latencies.append(time.perf_counter() - started)
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(f"single forecast: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(queries)} drafts")

    bulk = drafts(rng, args.bulk, now)
    forecaster.forecast_many(bulk[:50])  # warm the bulk index and leaf bitmaps
    started, cpu = time.perf_counter(), time.process_time()
    single = [forecaster.forecast(query, bulk=True) for query in bulk]
    base_wall, base_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    batched = forecaster.forecast_many(bulk)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"bulk: {len(bulk) / wall:,.0f} forecasts/s wall, {len(bulk) / cpu:,.0f}/s CPU "
        f"({len(bulk)} drafts, one process, {forecaster.bulk_rows.size:,}-row subsample)"
    )
    print(
        f"bulk baseline, one draft at a time: {len(bulk) / base_wall:,.0f}/s wall, "
        f"{len(bulk) / base_cpu:,.0f}/s CPU: batching is {base_wall / wall:.2f}x (wall), "
        f"{base_cpu / cpu:.2f}x (CPU)"
    )
    worst = max(
        abs(getattr(a, name).value - getattr(b, name).value) / max(getattr(b, name).value, 1.0)
        for a, b in zip(batched, single, strict=True)
        for name in ("matched", "possible", "available", "reach", "clicks")
    )
    print(f"bulk vs one at a time: largest relative difference {worst:.1e}")
    # Two processes (two cores), each answering half: forked, sharing the built forecaster.
    global _SHARED
    _SHARED = forecaster
    context = multiprocessing.get_context("fork")
    halves = [bulk[: len(bulk) // 2], bulk[len(bulk) // 2 :]]
    with context.Pool(2) as pool:
        pool.map(_answer_bulk, [halves[0][:10], halves[1][:10]])  # warm both workers
        started = time.perf_counter()
        pool.map(_answer_bulk, halves)
        elapsed = time.perf_counter() - started
    print(f"bulk: {len(bulk) / elapsed:,.0f} forecasts/s wall (two forked processes)")
    # Fresh drafts: targetings and flights never answered before (no per-draft cache warm;
    # the per-value caches are as a running server's would be).
    fresh = drafts(rng, args.bulk, now)
    halves = [fresh[: len(fresh) // 2], fresh[len(fresh) // 2 :]]
    with context.Pool(2) as pool:
        pool.map(_answer_bulk, [[query] for query in fresh[:2]])  # start both workers
        started = time.perf_counter()
        pool.map(_answer_bulk, halves)
        elapsed = time.perf_counter() - started
    print(
        f"bulk, fresh drafts: {len(fresh) / elapsed:,.0f} forecasts/s wall (two forked processes)"
    )

    # Baseline: the ad server's predicate, row by row, over the same sample.
    rows = forecaster.sample.table
    attributes = [rows.attributes(i) for i in range(rows.size)]
    weight = forecaster.sample.weight
    naive = []
    for query in queries[:3]:
        predicate = compile_predicate(query.targeting)
        started = time.perf_counter()
        total = 0.0
        for i, row in enumerate(attributes):
            if predicate(row):
                total += weight[i]
        naive.append(time.perf_counter() - started)
    masks = []
    for query in queries[:3]:
        forecaster.sample.matcher._cache.clear()
        started = time.perf_counter()
        mask = forecaster.sample.matcher.match(query.targeting)
        float(weight[mask].sum())
        masks.append(time.perf_counter() - started)
    print(
        f"baseline: naive per-row predicate scan {np.mean(naive) * 1000:,.0f} ms per draft vs "
        f"columnar mask (cold cache) {np.mean(masks) * 1000:.1f} ms: "
        f"{np.mean(naive) / np.mean(masks):,.0f}x; full forecast p50 is "
        f"{np.mean(naive) / (p50 / 1000):,.0f}x faster than the naive scan alone"
    )
    print(f"peak RSS: {peak_rss_mib():,.0f} MiB")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()

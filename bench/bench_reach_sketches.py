"""Theta-sketch reach: build cost, memory, and what the sketch step adds to one forecast.

A synthetic decision log (``forecast.synthetic``, all listeners) is sketched per targeting
value and day (``AudienceSketches.build``); then random booking-form drafts (the
backtest's ``random_combinations``) over 7, 14 and 28-day slices are counted, cold (empty
union cache) and warm (a second pass over the same drafts, as a bulk batch over a shared
flight sees them). Baseline in the same run: the sample's Horvitz-Thompson count of the
same drafts (``reach.distinct_listeners`` over a matched row set of a 1M-row sample).

Usage: ``.venv/bin/python bench/bench_reach_sketches.py [--rows 2000000] [--drafts 1000]``.
CPU times are the process's own (``time.process_time``); wall times in brackets.
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import numpy as np

from backbeat.forecast.backtest import random_combinations
from backbeat.forecast.sketches import AudienceSketches
from backbeat.forecast.synthetic import synthetic_table

DAY = 86400.0
NOW = float(int(1_790_000_000 // DAY) * DAY)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step):
    wall, cpu = time.perf_counter(), time.process_time()
    result = step()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--drafts", type=int, default=1000)
    parser.add_argument("--lg-k", type=int, default=12)
    args = parser.parse_args(argv)

    table = synthetic_table(args.rows, days=args.days, end=NOW, seed=5)
    print(f"log: {table.size:,} requests, {len(table.listeners):,} listeners, {args.days} days")
    before = peak_mib()
    sketches, cpu, wall = timed(lambda: AudienceSketches.build(table, now=NOW, lg_k=args.lg_k))
    assert sketches is not None
    sketch_count = len(sketches.sketches) * sketches.days
    print(
        f"build: {cpu:.2f} s CPU ({wall:.2f} s wall); {sketch_count:,} sketches (value x last n days) of "
        f"{len(sketches.codes)} keys, {sketches.retained:,} hashes = "
        f"{sketches.retained * 8 / 2**20:.1f} MiB; peak RSS +{peak_mib() - before:.0f} MiB"
    )
    combinations = random_combinations(random.Random(7), args.drafts)
    drafts = [
        (targeting, random.Random(n).choice([7, 14, 28]))
        for n, targeting in enumerate(combinations)
    ]

    def count_all() -> int:
        answered = 0
        for targeting, days in drafts:
            answered += sketches.audience(targeting, days=days) is not None
        return answered

    answered, cold_cpu, cold_wall = timed(count_all)
    _, warm_cpu, warm_wall = timed(count_all)
    per = 1000 / len(drafts)
    print(
        f"{answered} of {len(drafts)} drafts answered by the sketches (the rest: two "
        f"request-level keys, the sample's count)"
    )
    print(
        f"per draft, cold cache: {cold_cpu * per:.3f} ms CPU ({cold_wall * per:.3f} ms wall); "
        f"warm: {warm_cpu * per:.3f} ms CPU ({warm_wall * per:.3f} ms wall)"
    )
    # Baseline: the sample's HT count of the same drafts (mask -> rows -> bincount).
    from backbeat.forecast.service import Forecaster

    forecaster = Forecaster.from_table(table, [], now=NOW, supply_model="profile")
    from backbeat.forecast.reach import distinct_listeners

    rows = forecaster.bulk_rows or forecaster.rows

    def ht_all() -> float:
        total = 0.0
        for targeting, days in drafts:
            matched = np.flatnonzero(rows.matcher.match(targeting))
            recent = matched[rows.ts[matched] >= NOW - days * DAY]
            total += distinct_listeners(rows, recent)
        return total

    ht_all()  # warm the leaf-mask cache as a running server has it
    _, ht_cpu, ht_wall = timed(ht_all)
    print(
        f"baseline, same run: the bulk sample's HT count ({rows.size:,} rows), "
        f"{ht_cpu * per:.3f} ms CPU ({ht_wall * per:.3f} ms wall) per draft"
    )
    print(f"peak RSS {peak_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

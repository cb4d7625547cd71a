"""Simulator speed, history writing speed, and (optionally) the forecast backtest.

1. ``simulate_traffic`` for 4 weeks of ad breaks (vectorised), against the demo's
   per-break Python generator (``demo.traffic.day_of_opportunities``) on a day of the
   same size, measured in the same run;
2. decision-log records for them: spliced JSON (``simulation.records``) against building
   an ``Event`` per record and ``to_bytes`` (the baseline), and the batched write into a
   fresh event log;
3. with ``--backtest``: ``backbeat forecast backtest`` with its defaults (or the given
   ``--weeks/--combinations/--seed``), printing its table.

Usage: ``.venv/bin/python bench/bench_backtest.py [--weekly 200000] [--backtest]``.
Peak memory is the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from backbeat.demo.traffic import day_of_opportunities, make_listeners
from backbeat.events import Event
from backbeat.serving.request import listening_app
from backbeat.simulation import TrafficConfig, simulate_traffic
from backbeat.simulation.records import draw_outcomes, history_records, write_history

START = datetime(2026, 1, 12, tzinfo=UTC)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weekly", type=int, default=200_000, help="ad breaks per week")
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--listeners", type=int, default=100_000)
    parser.add_argument("--backtest", action="store_true", help="also run the backtest")
    parser.add_argument("--combinations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    config = TrafficConfig.starting(
        START,
        days=7 * args.weeks,
        daily_requests=args.weekly // 7,
        listeners=args.listeners,
        seed=args.seed,
    )
    started, cpu = time.perf_counter(), time.process_time()
    traffic = simulate_traffic(config)
    simulate_s, simulate_cpu = time.perf_counter() - started, time.process_time() - cpu

    baseline_count = min(len(traffic), 100_000)
    rng = random.Random(args.seed)
    listeners = make_listeners(min(args.listeners, 20_000), rng)
    started = time.process_time()
    for _ in day_of_opportunities(listeners, baseline_count, rng):
        pass
    baseline_rate = baseline_count / (time.process_time() - started)
    print(
        f"simulate: {len(traffic):,} ad breaks over {args.weeks} weeks, {args.listeners:,} "
        f"listeners in {simulate_s:.2f} s ({simulate_cpu:.2f} s CPU, "
        f"{len(traffic) / simulate_cpu:,.0f}/s); demo's per-break generator "
        f"{baseline_rate:,.0f}/s CPU on {baseline_count:,}: "
        f"{len(traffic) / simulate_cpu / baseline_rate:.1f}x"
    )

    outcomes = draw_outcomes(traffic)
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    sample: list[bytes] = []
    for payload in history_records(traffic, outcomes, app_of=listening_app):
        count += 1
        if len(sample) < 100_000:
            sample.append(payload)
    splice_s, splice_cpu = time.perf_counter() - started, time.process_time() - cpu
    decoded = [orjson.loads(payload) for payload in sample]
    for record in decoded:
        record.pop("v")
    started, cpu = time.perf_counter(), time.process_time()
    for record in decoded:
        Event(**record).to_bytes()
    per_event = (time.perf_counter() - started) / len(decoded)
    per_event_cpu = (time.process_time() - cpu) / len(decoded)
    per_splice, per_splice_cpu = splice_s / count, splice_cpu / count
    print(
        f"records: {count:,} (opportunities, impressions, clicks, conversions) in "
        f"{splice_s:.2f} s: {per_splice * 1e6:.1f} µs each ({per_splice_cpu * 1e6:.1f} µs CPU); "
        f"baseline Event(...).to_bytes() {per_event * 1e6:.1f} µs each "
        f"({per_event_cpu * 1e6:.1f} µs CPU): {per_event_cpu / per_splice_cpu:.1f}x by CPU"
    )
    del decoded, sample
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        stats = write_history(Path(directory) / "events", traffic, app_of=listening_app)
        write_s = time.perf_counter() - started
    print(
        f"write_history: {stats.opportunities:,} opportunities + {stats.impressions:,} "
        f"impressions + {stats.clicks:,} clicks + {stats.conversions:,} conversions into a "
        f"fresh event log in {write_s:.2f} s (simulate + records + fsync'd batches)"
    )
    print(f"peak memory: {peak_mib():,.0f} MiB")

    if args.backtest:
        from backbeat.forecast.backtest import BacktestConfig, format_report, run_backtest

        report = run_backtest(
            BacktestConfig(weeks=args.weeks, combinations=args.combinations, seed=args.seed)
        )
        print()
        print(format_report(report))
        print(f"peak memory: {peak_mib():,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decision cost as the book grows: 1k, 10k and 100k live line items, and memory per 10k.

Usage: ``.venv/bin/python bench/bench_scaling.py [--sizes 1000,10000,100000] [--requests 20000]``.
Builds snapshots in memory (no database) with the targeting mix of bench/synthetic.py
and times the real ``Decider`` with the in-memory ledger, on one core.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from backbeat.catalog.vocabulary import TIER_RANK, Tier  # noqa: E402
from backbeat.serving.decisions import Decider  # noqa: E402
from backbeat.serving.ledger import MemoryLedger  # noqa: E402
from backbeat.serving.request import AdRequest  # noqa: E402
from backbeat.serving.snapshot import (  # noqa: E402
    CapRule,
    ServableCreative,
    ServableLineItem,
    ServableSlot,
    Snapshot,
)
from bench_serving import machine  # noqa: E402
from synthetic import SLOTS, TIERS, random_request_attributes, random_targeting  # noqa: E402


def synthetic_snapshot(size: int, seed: int = 1) -> Snapshot:
    rng = random.Random(seed)
    now = time.time()
    tiers, weights = zip(*TIERS, strict=True)
    items = []
    for n in range(size):
        tier = rng.choices(tiers, weights=weights)[0]
        caps = () if rng.random() < 0.4 else (CapRule(f"li:{n}", rng.choice([3, 5, 10]), 86400),)
        items.append(
            ServableLineItem(
                id=n + 1,
                campaign_id=n // 5 + 1,
                advertiser_id=n // 20 + 1,
                advertiser_name=f"Advertiser {n // 20}",
                name=f"Line item {n}",
                tier=tier,
                tier_rank=TIER_RANK[tier],
                cpm_micros=0 if tier == Tier.HOUSE else rng.randint(150, 4000) * 10_000,
                currency="USD",
                budget_micros=10**12,
                daily_budget_micros=None,
                campaign_budget_micros=10**13,
                goal_impressions=None,
                pacing="asap",
                caps=caps,
                start_ts=now - 86400,
                end_ts=now + 30 * 86400,
                targeting=random_targeting(rng),
                creatives=(
                    ServableCreative(
                        n + 1,
                        f"Spot {n}",
                        f"https://cdn.example.com/{n}.mp3",
                        "audio/mpeg",
                        30_000,
                        128,
                        None,
                        (),
                    ),
                ),
            )
        )
    slots = [
        ServableSlot(
            id=number,
            name=f"{surface}/{position}",
            surface=surface,
            position=position,
            reserve_micros=2_000_000,
            currency="USD",
        )
        for number, (surface, position) in enumerate(SLOTS, start=1)
    ]
    return Snapshot.of(1, items, slots)


def measure(size: int, requests: int) -> tuple[float, float, float]:
    gc.collect()
    tracemalloc.start()
    snapshot = synthetic_snapshot(size)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rng = random.Random(7)
    decider = Decider(MemoryLedger(), seed=1)
    batch = [
        (
            snapshot.slots[rng.randint(1, len(SLOTS))],
            AdRequest(
                slot_id=0, listener=f"l{rng.randrange(10**6)}", **random_request_attributes(rng)
            ),
        )  # type: ignore[arg-type]
        for _ in range(requests)
    ]
    now = time.time()
    started = time.perf_counter()
    filled = 0
    for slot, request in batch:
        filled += decider.decide(snapshot, slot, request, now).filled
    elapsed = time.perf_counter() - started
    return elapsed / requests * 1e6, current / 2**20, filled / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"{'line items':>12} {'µs/decision':>12} {'decisions/s':>12} {'snapshot MiB':>13} {'MiB per 10k':>12} {'fill':>6}"
    )
    for size in (int(value) for value in args.sizes.split(",")):
        micros, mib, fill = measure(size, args.requests)
        print(
            f"{size:>12,} {micros:>12.1f} {1e6 / micros:>12,.0f} {mib:>13.1f} {mib / size * 10_000:>12.1f} {fill:>6.0%}"
        )


if __name__ == "__main__":
    main()

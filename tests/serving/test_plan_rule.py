"""The plan's online rule on the decision path: HWM and SHALE shares, β solved exactly."""

from __future__ import annotations

import random
from typing import Any

import pytest

from backbeat.catalog.vocabulary import TIER_RANK, Pacing, Tier
from backbeat.serving.decisions import Decider
from backbeat.serving.ledger import MemoryLedger
from backbeat.serving.pacing import PacingController, PlanEntry
from backbeat.serving.plan import AllocationPlan, PlanRule, read_plan, write_plan
from backbeat.serving.request import AdRequest
from backbeat.serving.snapshot import ServableCreative, ServableLineItem, ServableSlot, Snapshot

T0 = 1_790_000_000.0
USD = 1_000_000
CREATIVE = ServableCreative(
    1, "Spot", "https://cdn.example.com/a.mp3", "audio/mpeg", 30_000, 128, None, ()
)
SLOT = ServableSlot(1, "Break", "music_free", "mid_roll", 0, "USD")


def item(id: int, tier: str = Tier.GUARANTEED, cpm: float = 10.0, **extra: Any) -> ServableLineItem:
    return ServableLineItem(
        id=id, campaign_id=id, advertiser_id=id, advertiser_name=f"A{id}", name=f"li {id}",
        tier=str(tier), tier_rank=TIER_RANK[str(tier)], cpm_micros=round(cpm * USD), currency="USD",
        budget_micros=None, daily_budget_micros=None, campaign_budget_micros=10**12,
        goal_impressions=None, pacing=str(Pacing.ASAP), caps=(), start_ts=T0, end_ts=T0 + 86400,
        targeting={}, creatives=(CREATIVE,), **extra,
    )  # fmt: skip


BOOK = [item(1), item(2), item(3, cpm=8.0), item(9, tier=Tier.NON_GUARANTEED, cpm=5.0)]


def winners(plan: dict[int, PlanEntry], requests: int = 20_000) -> dict[int, float]:
    snapshot = Snapshot.of(1, BOOK, [SLOT])
    decider = Decider(MemoryLedger(), PacingController(plan=plan), seed=7, drive_pacing=False)
    counts: dict[int, int] = {}
    for n in range(requests):
        decision = decider.decide(snapshot, SLOT, AdRequest(slot_id=1, listener=f"l{n}"), T0 + 1)
        assert decision.line_item is not None
        counts[decision.line_item.id] = counts.get(decision.line_item.id, 0) + 1
    return {key: value / requests for key, value in counts.items()}


def test_hwm_plan_splits_contended_requests_in_allocation_order() -> None:
    # Order 2, 1, 3: item 2 takes 0.3, item 1 min(0.5, 0.7) = 0.5, item 3 min(0.4, 0.2) = 0.2;
    # nothing is left for the auction (item 9) although item 3 wanted more.
    plan = {
        1: PlanEntry(0.5, 100, rank=1, alpha=0.5),
        2: PlanEntry(0.3, 100, rank=0, alpha=0.3),
        3: PlanEntry(0.2, 100, rank=2, alpha=0.4),
    }
    shares = winners(plan)
    for key, expected in ((2, 0.3), (1, 0.5), (3, 0.2)):
        assert shares.get(key, 0.0) == pytest.approx(expected, abs=0.015)
    assert shares.get(9, 0.0) == 0.0


def test_what_the_plan_leaves_goes_to_the_auction_and_unplanned_items_serve_as_before() -> None:
    # Only items 1 and 2 are planned (0.2 and 0.1); item 3 (unplanned guaranteed)
    # serves whatever the plan leaves, ahead of the auction, as without a plan.
    plan = {1: PlanEntry(0.2, 100, rank=0, alpha=0.2), 2: PlanEntry(0.1, 100, rank=1, alpha=0.1)}
    shares = winners(plan)
    assert shares.get(1, 0.0) == pytest.approx(0.2, abs=0.015)
    assert shares.get(2, 0.0) == pytest.approx(0.1, abs=0.015)
    assert shares.get(3, 0.0) == pytest.approx(0.7, abs=0.015)


def _plain_shale_shares(entries: list[tuple[float, float, float, float]]) -> list[float]:
    """(ζ, α, θ, V) in allocation order -> x per item; β by bisection over the duals α."""

    def wanted(beta: float, dual: bool = False) -> list[float]:
        return [max(0.0, t * (1 + ((a if dual else z) - beta) / v)) for z, a, t, v in entries]

    beta = 0.0
    if sum(wanted(0.0, True)) > 1:
        lo, hi = 0.0, max(a + v for _, a, _, v in entries)
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if sum(wanted(mid, True)) > 1 else (lo, mid)
        beta = (lo + hi) / 2
    left, shares = 1.0, []
    for x in wanted(beta):
        shares.append(min(x, left))
        left -= shares[-1]
    return shares


@pytest.mark.parametrize("seed", range(6))
def test_shale_rule_matches_a_plain_computation(seed: int) -> None:
    rng = random.Random(seed)
    book = [item(n) for n in range(1, 6)]
    snapshot = Snapshot.of(1, book, [SLOT])
    raw = [
        (
            rng.uniform(-0.5, 3.0),
            rng.uniform(-0.5, 3.0),
            rng.uniform(0.05, 0.6),
            rng.uniform(0.5, 2),
        )
        for _ in book
    ]
    plan = {
        line.id: PlanEntry(0.1, 10, rank=rank, alpha=z, theta=t, weight=v, dual=a)
        for rank, (line, (z, a, t, v)) in enumerate(zip(book, raw, strict=True))
    }
    rule = PlanRule(snapshot, plan)
    expected = _plain_shale_shares(raw)
    position = {line.id: p for p, line in enumerate(snapshot.line_items)}
    everything = (1 << len(book)) - 1
    # Sweep the coin: the share of coins giving the request to each item is its x.
    steps = 4000
    got = [0.0] * len(book)
    for k in range(steps):
        excluded = rule.pick(everything, T0 + 1, (k + 0.5) / steps)
        kept = everything & ~excluded
        for index, line in enumerate(book):
            if kept >> position[line.id] & 1:
                got[index] += 1 / steps
    assert got == pytest.approx(expected, abs=2 / steps + 1e-9)


def test_plan_file_round_trips_hwm_and_shale_entries(tmp_path) -> None:
    for algorithm, entry in (
        ("hwm", PlanEntry(0.4, 1000, rank=0, alpha=0.4)),
        ("shale", PlanEntry(0.4, 1000, rank=3, alpha=1.7, theta=0.2, weight=1.0, dual=1.2)),
    ):
        plan = AllocationPlan(
            generated_at=T0, entries={5: entry}, algorithm=algorithm, catalog_version=4
        )
        write_plan(plan, tmp_path / "plan.json")
        assert read_plan(tmp_path / "plan.json") == plan


def test_servers_deliver_what_the_shale_plan_allocated() -> None:
    """End to end: solve SHALE offline, load its numbers, serve requests drawn from the nodes."""
    import numpy as np

    from backbeat.forecast.allocation.shale import shale_allocate

    countries = ["US", "GB", "DE"]
    supply = np.array([5000.0, 3000.0, 2000.0])  # requests per node
    targets = [["US"], ["US", "GB"], ["GB", "DE"], ["US", "DE"]]
    demand = np.array([2500.0, 2600.0, 2200.0, 1800.0])
    eligible = [np.array([countries.index(c) for c in t]) for t in targets]
    shale = shale_allocate(supply, eligible, demand)
    book = [_with_targeting(item(n + 1), {"countries": t}) for n, t in enumerate(targets)]
    book.append(item(9, tier=Tier.NON_GUARANTEED, cpm=5.0))
    rank = {int(j): r for r, j in enumerate(shale.order)}
    plan = {
        n + 1: PlanEntry(
            0.5, 1, rank=rank[n], alpha=float(shale.alpha[n]), theta=float(shale.theta[n]),
            weight=float(shale.weight[n]), dual=float(shale.dual[n]),
        )
        for n in range(len(targets))
    }  # fmt: skip
    snapshot = Snapshot.of(1, book, [SLOT])
    decider = Decider(MemoryLedger(), PacingController(plan=plan), seed=3, drive_pacing=False)
    rng = random.Random(5)
    requests = 20_000
    won = [0] * len(targets)
    for n in range(requests):
        country = rng.choices(countries, weights=supply.tolist())[0]
        decision = decider.decide(
            snapshot, SLOT, AdRequest(slot_id=1, listener=f"l{n}", country=country), T0 + 1
        )
        assert decision.line_item is not None
        if decision.line_item.id <= len(targets):
            won[decision.line_item.id - 1] += 1
    expected = shale.allocated / supply.sum()
    assert [w / requests for w in won] == pytest.approx(expected.tolist(), abs=0.012)


def _with_targeting(line: ServableLineItem, targeting: dict[str, Any]) -> ServableLineItem:
    from dataclasses import replace

    return replace(line, targeting=targeting)


def test_a_bad_plan_is_refused_before_it_replaces_a_good_one(tmp_path) -> None:
    from backbeat.errors import InvalidInput

    good = AllocationPlan(generated_at=T0, entries={1: PlanEntry(0.4, 10, rank=0, alpha=0.4)},
                          algorithm="hwm")  # fmt: skip
    path = tmp_path / "plan.json"
    write_plan(good, path)
    for entry in (
        PlanEntry(0.4, 10, rank=0, alpha=float("nan")),
        PlanEntry(0.4, 10, rank=0, alpha=1.5),  # an HWM share above 1
        PlanEntry(1.2, 10, rank=0, alpha=0.4),
    ):
        bad = AllocationPlan(generated_at=T0, entries={1: entry}, algorithm="hwm")
        with pytest.raises(InvalidInput):
            write_plan(bad, path)
        assert read_plan(path) == good

"""The booked allocation over the sample, computed once per (book, sample), read per forecast.

Which booked line items reserve supply: sponsorship and guaranteed ones with a goal (goal
impressions, or budget / CPM), still in flight. Non-guaranteed and house items reserve
nothing (they compete in the auction). Each reserves only its remaining need: the goal
minus what was delivered (``delivered``, e.g. from the report tables); when that is not
known, the goal pro-rated to the part of the flight still ahead (delivery assumed on pace).

The allocation is HWM (``forecast.allocation.hwm``), sponsorship before guaranteed, the
scarcest first within a tier, run on a random subsample of rows projected onto the future
hours of the horizon (a node is one row in one future hour, so flights are exact to the
hour). HWM's plan is a share ``alpha`` per line item; under its online rule a request's
supply left after the book is ``max(0, 1 - sum of the alphas of the items taking it)``.
That sum is then accumulated over the whole sample per *group* (rows alike for every
booked targeting) and day, each item counting for the share of the day its flight covers,
with each ``alpha`` rescaled by the ratio of the item's eligible supply in the subsample
to that in the full sample, so the full sample reserves each item's need and not a
subsample's noisy guess of it. Work grows with the groups an item touches, not its rows.

A forecast then reads what is left per row and future cycle (``RowSet.remaining``): after
sponsorship (what a guaranteed draft could get: ``possible``) and after every booked item
(``available``). Contention per line item comes from the subsample's allocation matrix
(impressions per item and node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from backbeat.catalog.vocabulary import TIER_RANK, Tier
from backbeat.forecast.projection import Projection
from backbeat.forecast.sample import WEEK_HOURS, SupplySample
from backbeat.observability import log
from backbeat.serving.snapshot import ServableLineItem

RESERVING_TIERS = (Tier.SPONSORSHIP.value, Tier.GUARANTEED.value)


def reserved_goal(item: ServableLineItem) -> float | None:
    """Lifetime goal in impressions: the goal itself, or the budget at the fixed CPM."""
    if item.goal_impressions:
        return float(item.goal_impressions)
    if item.budget_micros and item.cpm_micros > 0:
        return item.budget_micros * 1000 / item.cpm_micros
    return None


def remaining_need(
    item: ServableLineItem, *, now: float, delivered: Mapping[int, int] | None
) -> float:
    goal = reserved_goal(item)
    if goal is None or item.end_ts <= now:
        return 0.0
    if delivered is not None:
        return max(goal - float(delivered.get(item.id, 0)), 0.0)
    length = item.end_ts - item.start_ts
    ahead = item.end_ts - max(now, item.start_ts)
    return goal * (ahead / length if length > 0 else 1.0)


@dataclass
class BookedAllocation:
    items: list[ServableLineItem]  # the reserving items, in HWM's index order
    need: np.ndarray  # (m,) remaining need
    alpha: np.ndarray  # (m,) full-sample shares
    allocated: np.ndarray  # (m,) what HWM gives each on the subsample
    group_of_row: np.ndarray  # int32 booked-eligibility group of each sample row
    bucket_hours: int  # time resolution of ``remaining`` (24, or 168 for huge books)
    remaining: dict[int, np.ndarray]  # tier rank -> (groups, buckets) float32 share left
    sub_rows: np.ndarray  # subsample row indices
    sub_nodes_hour: np.ndarray  # (cycles * R,) future hour index of each node
    taken: sparse.csr_matrix | None  # (m, cycles * R) impressions each item takes per node
    taken_by_cycle: list[sparse.csr_matrix] = field(default_factory=list)  # (m, R) each


def _item_hours(item: ServableLineItem, projection: Projection) -> tuple[int, int]:
    """Future hour indices [lo, hi) whose start lies in the item's remaining flight."""
    base = projection.hour0 * 3600.0
    lo = int(np.ceil((max(item.start_ts, projection.now) - base) / 3600.0 - 1e-9))
    hi = int(np.ceil((item.end_ts - base) / 3600.0 - 1e-9))
    return max(lo, 0), min(hi, projection.hours)


def compute_booked(
    sample: SupplySample,
    projection: Projection,
    line_items: Sequence[ServableLineItem],
    *,
    delivered: Mapping[int, int] | None = None,
    allocation_rows: int = 8000,
    seed: int = 0,
    pool: np.ndarray | None = None,
) -> BookedAllocation:
    """The booked allocation; the HWM subsample is drawn from ``pool`` rows (default: all)."""
    now = projection.now
    items = [
        item
        for item in line_items
        if item.tier in RESERVING_TIERS
        and remaining_need(item, now=now, delivered=delivered) > 0
        and item.start_ts < projection.end
    ]
    items.sort(key=lambda item: (item.tier_rank, item.id))
    m = len(items)
    need = np.array([remaining_need(i, now=now, delivered=delivered) for i in items])
    matcher = sample.matcher
    n = sample.size
    rng = np.random.default_rng(seed)
    cycles, period = projection.cycles, projection.period
    full_window = projection.window(now, projection.end)
    unit = projection.scale * full_window[None, :]  # (S, H) requests per sample weight

    # Pass 1: signatures of booked eligibility and the subsample's eligibility.
    pool = np.arange(n) if pool is None else np.asarray(pool, dtype=np.int64)
    sub_count = min(pool.shape[0], allocation_rows)
    sub_rows = (
        np.sort(rng.choice(pool, size=sub_count, replace=False)) if sub_count else np.zeros(0, int)
    )
    signature = np.zeros(n, dtype=np.uint64)
    keys = rng.integers(1, 2**63, size=m, dtype=np.int64).astype(np.uint64)
    sub_eligible: list[np.ndarray] = []
    for position, item in enumerate(items):
        mask = matcher.match(item.targeting)
        np.bitwise_xor(signature, keys[position], out=signature, where=mask)
        sub_eligible.append(np.flatnonzero(mask[sub_rows]))

    # HWM on the subsample: node = (week j, subsample row r), one future hour each.
    sub_weight = sample.weight[sub_rows]
    total_weight = float(sample.weight.sum())
    if sub_weight.sum() > 0:
        sub_weight = sub_weight * (total_weight / float(sub_weight.sum()))
    sub_stratum = sample.stratum[sub_rows].astype(np.int64)
    sub_first = projection.hfirst[projection.phase(sample.how[sub_rows])]
    node_hour = (np.arange(cycles)[:, None] * period + sub_first[None, :]).reshape(-1)
    node_supply = np.tile(sub_weight, cycles) * unit[np.tile(sub_stratum, cycles), node_hour]
    eligible: list[np.ndarray] = []
    for position, item in enumerate(items):
        lo, hi = _item_hours(item, projection)
        rows = sub_eligible[position]
        nodes = (np.arange(cycles)[:, None] * sub_count + rows[None, :]).reshape(-1)
        hour = node_hour[nodes]
        eligible.append(nodes[(hour >= lo) & (hour < hi)])
    alpha_sub = np.zeros(m)
    allocated = np.zeros(m)
    taken: sparse.csr_matrix | None = None
    if m:
        from backbeat.forecast.allocation.hwm import hwm_allocate

        sub_supply = np.array([float(node_supply[nodes].sum()) for nodes in eligible])
        order = np.lexsort((sub_supply, np.array([item.tier_rank for item in items])))
        result = hwm_allocate(node_supply, eligible, need, order)
        alpha_sub, allocated = result.alpha, result.allocated
        taken = _taken_matrix(node_supply, eligible, alpha_sub, result.order)

    # Groups: rows alike for every booked targeting. Time in buckets of a day (a week when
    # days x groups would not fit in memory), each item active for a share of a bucket.
    if n:
        _, group_of_row = np.unique(signature, return_inverse=True)
        group_of_row = group_of_row.astype(np.int32).reshape(-1)
    else:
        group_of_row = np.zeros(0, dtype=np.int32)
    groups = int(group_of_row.max()) + 1 if n else 0
    bucket = 24 if groups * (projection.hours // 24) <= 20_000_000 else WEEK_HOURS
    buckets = projection.hours // bucket
    first = projection.hfirst[projection.phase(sample.how)]
    bucket_supply = np.zeros(groups * buckets)
    flat_group = group_of_row.astype(np.int64) * buckets
    for cycle in range(cycles):
        hour = first + cycle * period
        bucket_supply += np.bincount(
            flat_group + hour // bucket,
            weights=sample.weight * unit[sample.stratum, hour],
            minlength=groups * buckets,
        )
    bucket_supply = bucket_supply.reshape(groups, buckets)

    # Pass 2: per group and bucket, the sum of the shares of the items taking it, each
    # share rescaled from the subsample's eligible supply to the full sample's.
    share = {
        rank: np.zeros((groups, buckets), dtype=np.float64)
        for rank in (TIER_RANK[Tier.SPONSORSHIP], TIER_RANK[Tier.GUARANTEED])
    }
    edges = np.arange(buckets + 1) * bucket
    alpha = np.zeros(m)
    for position, item in enumerate(items):
        lo, hi = _item_hours(item, projection)
        active = np.clip(
            (np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo)) / bucket, 0.0, 1.0
        )
        days = np.flatnonzero(active)
        if days.size == 0:
            continue
        mask = matcher.match(item.targeting)
        member = np.flatnonzero(np.bincount(group_of_row[mask], minlength=groups))
        block = np.ix_(member, days)
        full_supply = float((bucket_supply[block] * active[days][None, :]).sum())
        sub_supply_item = float(node_supply[eligible[position]].sum())
        if sub_supply_item > 0 and full_supply > 0:
            alpha[position] = min(1.0, alpha_sub[position] * sub_supply_item / full_supply)
        else:
            alpha[position] = 1.0 if full_supply > 0 else 0.0
        for rank, sums in share.items():
            if item.tier_rank <= rank:
                sums[block] += alpha[position] * active[days]
    remaining = {
        rank: np.clip(1.0 - sums, 0.0, 1.0).astype(np.float32) for rank, sums in share.items()
    }
    log.info(
        "booked allocation computed",
        reserving=m,
        groups=groups,
        bucket_hours=bucket,
        subsample=sub_count,
        demand=float(need.sum()),
        allocated_subsample=float(allocated.sum()),
    )
    return BookedAllocation(
        items=items,
        need=need,
        alpha=alpha,
        allocated=allocated,
        group_of_row=group_of_row,
        bucket_hours=bucket,
        remaining=remaining,
        sub_rows=sub_rows,
        sub_nodes_hour=node_hour,
        taken=taken,
        taken_by_cycle=(
            []
            if taken is None
            else [
                taken[:, cycle * sub_count : (cycle + 1) * sub_count].tocsr()
                for cycle in range(cycles)
            ]
        ),
    )


def _taken_matrix(
    supply: np.ndarray, eligible: Sequence[np.ndarray], alpha: np.ndarray, order: np.ndarray
) -> sparse.csr_matrix:
    """Impressions each item takes per node under HWM's online rule (``min(alpha, left)``)."""
    left = np.ones(supply.shape[0])
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for item in order:
        nodes = np.unique(eligible[item])
        share = np.minimum(alpha[item], left[nodes])
        left[nodes] -= share
        keep = share > 0
        rows.append(np.full(int(keep.sum()), item, dtype=np.int32))
        cols.append(nodes[keep].astype(np.int32))
        data.append((share * supply[nodes])[keep].astype(np.float32))
    m = len(eligible)
    if not rows:
        return sparse.csr_matrix((m, supply.shape[0]), dtype=np.float32)
    return sparse.csr_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
        shape=(m, supply.shape[0]),
        dtype=np.float32,
    )

"""The guaranteed allocation plan (HWM or SHALE) from the forecast's supply sample.

The graph is the forecaster's (``forecast.booked``): the reserving line items (sponsorship
and guaranteed with a goal left, still in flight) and their remaining need; supply nodes
are *atoms* (sample rows alike for every booked targeting, in one stratum and hour of
week — identical requests as far as the book can tell) in each future week of the
horizon, each standing for its sample weight times the supply forecast of its stratum in
that hour. An item is eligible for a node when its targeting matches the atom and the
node's hour lies in its remaining flight. Allocation order: sponsorship before
guaranteed, then scarcest first.

The plan written for servers (``serving.plan``) carries per line item its rank, ``α``
(and SHALE's ``θ``, ``V``), the share of its eligible supply it takes and that supply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from backbeat.forecast.allocation.graph import merge_identical
from backbeat.forecast.allocation.hwm import hwm_allocate
from backbeat.forecast.allocation.shale import shale_allocate
from backbeat.forecast.traffic_curve import CurveTally
from backbeat.observability import log
from backbeat.serving.pacing import PlanEntry
from backbeat.serving.plan import AllocationPlan
from backbeat.serving.snapshot import ServableLineItem

if TYPE_CHECKING:
    from backbeat.forecast.service import Forecaster

__all__ = ["PlanProblem", "plan_from_forecaster", "plan_problem", "solve_plan"]

HOUR = 3600.0


@dataclass(frozen=True)
class PlanProblem:
    """The allocation graph of the booked guaranteed line items over forecast supply."""

    items: list[ServableLineItem]
    supply: np.ndarray  # (n,) impressions per node
    eligible: list[np.ndarray]  # per item, node indices
    demand: np.ndarray  # (m,) remaining need
    order: np.ndarray  # allocation order


def _atoms(
    forecaster: Forecaster, masks: list[np.ndarray], rows: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows alike for every item's targeting, in one stratum and phase: (of_row, stratum, phase, weight)."""
    sample, projection = forecaster.sample, forecaster.projection
    rng = np.random.default_rng(0)
    signature = np.zeros(rows.size, dtype=np.uint64)
    for mask, key in zip(
        masks,
        rng.integers(1, 2**63, size=len(masks), dtype=np.int64).astype(np.uint64),
        strict=True,
    ):
        signature[mask] ^= key
    phase = projection.phase(sample.how[rows]).astype(np.int64)
    stratum = sample.stratum[rows].astype(np.int64)
    key = np.stack((signature.view(np.int64), stratum, phase), axis=1)
    _, first, of_row = np.unique(key, axis=0, return_index=True, return_inverse=True)
    of_row = of_row.reshape(-1)
    weight = np.bincount(of_row, weights=sample.weight[rows] * scale, minlength=first.size)
    return of_row, stratum[first], phase[first], weight


def plan_problem(forecaster: Forecaster, *, rows: int = 20_000, seed: int = 0) -> PlanProblem:
    """The graph over the sample, or over a random ``rows`` of it (weights scaled to the whole).

    Like the forecaster's own booked allocation, a large sample is subsampled: the graph's
    edges grow with rows × weeks × items, and a plan's per-item numbers need far fewer
    rows than a forecast of a narrow targeting. Nodes of identical eligibility are then
    merged (exact; ``graph.merge_identical``).
    """
    booked, projection, sample = forecaster.booked, forecaster.projection, forecaster.sample
    items, demand = list(booked.items), np.asarray(booked.need, dtype=np.float64)
    if not items or sample.size == 0:
        return PlanProblem(items, np.zeros(0), [np.zeros(0, np.int64) for _ in items], demand,
                           np.arange(len(items), dtype=np.int64))  # fmt: skip
    picked = np.arange(sample.size)
    if sample.size > rows:
        picked = np.sort(np.random.default_rng(seed).choice(sample.size, rows, replace=False))
    kept = float(sample.weight[picked].sum())
    scale = float(sample.weight.sum()) / kept if kept > 0 else 1.0
    masks = [np.asarray(sample.matcher.match(item.targeting))[picked] for item in items]
    of_row, atom_stratum, atom_phase, atom_weight = _atoms(forecaster, masks, picked, scale)
    count, cycles, period = atom_weight.size, projection.cycles, projection.period
    hours_total = projection.hours
    unit = projection.scale * projection.window(projection.now, projection.end)[None, :]
    first = projection.hfirst[atom_phase].astype(np.int64)
    node_hour = (np.arange(cycles, dtype=np.int64)[:, None] * period + first[None, :]).reshape(-1)
    valid = node_hour < hours_total
    hour_index = np.minimum(node_hour, max(hours_total - 1, 0))
    supply = np.zeros(cycles * count)
    if count and hours_total:
        supply = np.tile(atom_weight, cycles) * unit[np.tile(atom_stratum, cycles), hour_index]
        supply = np.where(valid, supply, 0.0)
    base = projection.hour0 * HOUR
    eligible: list[np.ndarray] = []
    for item, mask in zip(items, masks, strict=True):
        member = np.flatnonzero(np.bincount(of_row[mask], minlength=count))
        lo = int(np.ceil((max(item.start_ts, projection.now) - base) / HOUR - 1e-9))
        hi = int(np.ceil((item.end_ts - base) / HOUR - 1e-9))
        nodes = (np.arange(cycles, dtype=np.int64)[:, None] * count + member[None, :]).reshape(-1)
        hours = node_hour[nodes]
        eligible.append(nodes[(hours >= max(lo, 0)) & (hours < hi) & (supply[nodes] > 0)])
    # Keep only nodes someone may take: the solvers' work is per node and per edge.
    used = np.unique(np.concatenate(eligible)) if eligible else np.zeros(0, dtype=np.int64)
    remap = np.full(supply.size, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    eligible = [remap[nodes] for nodes in eligible]
    supply, eligible, _ = merge_identical(supply[used], eligible)
    totals = np.array([float(supply[nodes].sum()) for nodes in eligible])
    tiers = np.array([item.tier_rank for item in items], dtype=np.int64)
    order = np.lexsort((np.arange(len(items)), totals, tiers)) if items else np.zeros(0, np.int64)
    return PlanProblem(items, supply, eligible, demand, order.astype(np.int64))


def solve_plan(
    problem: PlanProblem, algorithm: str, *, passes: int = 40
) -> tuple[dict[int, PlanEntry], np.ndarray]:
    """Plan entries per line item id and what each is expected to deliver."""
    m = len(problem.items)
    if m == 0:
        return {}, np.zeros(0)
    totals = np.array([float(problem.supply[nodes].sum()) for nodes in problem.eligible])
    rank = np.empty(m, dtype=np.int64)
    rank[problem.order] = np.arange(m)
    entries: dict[int, PlanEntry] = {}
    if algorithm == "hwm":
        result = hwm_allocate(problem.supply, problem.eligible, problem.demand, problem.order)
        allocated = result.allocated
        for j, item in enumerate(problem.items):
            entries[item.id] = PlanEntry(
                _share(allocated[j], totals[j]),
                int(np.ceil(totals[j])),
                rank=int(rank[j]),
                alpha=float(result.alpha[j]),
            )
        return entries, allocated
    if algorithm != "shale":
        raise ValueError(f"unknown plan algorithm {algorithm!r}")
    shale = shale_allocate(
        problem.supply, problem.eligible, problem.demand, problem.order, passes=passes
    )
    for j, item in enumerate(problem.items):
        entries[item.id] = PlanEntry(
            _share(shale.allocated[j], totals[j]),
            int(np.ceil(totals[j])),
            rank=int(rank[j]),
            alpha=float(shale.alpha[j]),
            theta=float(shale.theta[j]),
            weight=float(shale.weight[j]),
            dual=float(shale.dual[j]),
        )
    return entries, shale.allocated


def _share(allocated: float, total: float) -> float:
    return float(min(1.0, allocated / total)) if total > 0 else 0.0


def plan_from_forecaster(
    forecaster: Forecaster,
    *,
    algorithm: str = "shale",
    catalog_version: int | None = None,
    min_curve_samples: int = 1000,
) -> AllocationPlan:
    """The plan servers load, with the traffic curve learned from the same sample."""
    started = time.perf_counter()
    problem = plan_problem(forecaster)
    entries, allocated = solve_plan(problem, algorithm)
    log.info(
        "allocation plan computed",
        algorithm=algorithm,
        line_items=len(problem.items),
        nodes=int(problem.supply.size),
        edges=int(sum(nodes.size for nodes in problem.eligible)),
        demand=float(problem.demand.sum()),
        allocated=float(allocated.sum()),
        seconds=round(time.perf_counter() - started, 3),
    )
    sample = forecaster.sample
    ts = np.asarray(sample.table.ts, dtype=np.float64)
    tally = CurveTally()
    if ts.size:
        tally.weights = np.bincount(
            (ts // HOUR).astype(np.int64) % 24, weights=sample.weight, minlength=24
        ).tolist()
        tally.samples = int(ts.size)
        tally.first, tally.last = float(ts.min()), float(ts.max())
    learned = tally.samples >= min_curve_samples
    curve = tally.curve(min_samples=min_curve_samples)
    observed = curve.between(tally.first, tally.last) if tally.first is not None else 0.0
    return AllocationPlan(
        generated_at=forecaster.now,
        entries=entries,
        curve=curve.hourly if learned else None,
        opportunities=int(sample.source_rows),
        observed_days=float(observed),
        algorithm=algorithm,
        catalog_version=catalog_version,
    )

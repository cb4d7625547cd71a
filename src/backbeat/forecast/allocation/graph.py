"""The supply–demand graph of guaranteed allocation, as flat edge arrays for numpy.

Supply nodes ``i`` (groups of identical requests, ``s_i`` impressions each) and contracts
``j`` (guaranteed line items, ``d_j`` impressions wanted) are joined by an edge where the
contract's targeting and flight admit the node. Edges are stored contract by contract
(CSR order), so per-contract sums are ``np.add.reduceat`` and per-node sums ``np.bincount``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Graph", "solve_hinges", "solve_ramps"]


@dataclass(frozen=True)
class Graph:
    """Supply, demand and eligibility of one allocation problem."""

    supply: np.ndarray  # (n,) float
    demand: np.ndarray  # (m,) float
    edge_contract: np.ndarray  # (E,) int, non-decreasing
    edge_node: np.ndarray  # (E,) int
    starts: np.ndarray  # (m + 1,) CSR offsets of each contract's edges

    @classmethod
    def build(cls, supply: np.ndarray, eligible: Sequence[np.ndarray], demand: np.ndarray) -> Graph:
        supply = np.asarray(supply, dtype=np.float64)
        demand = np.asarray(demand, dtype=np.float64)
        m = len(eligible)
        if supply.ndim != 1 or demand.shape != (m,):
            raise ValueError(
                f"supply must be (n,) and demand ({m},); got {supply.shape}, {demand.shape}"
            )
        if not (np.all(np.isfinite(supply)) and np.all(np.isfinite(demand))):
            raise ValueError("supply and demand must be finite")
        if np.any(supply < 0) or np.any(demand < 0):
            raise ValueError("supply and demand must be non-negative")
        nodes = [np.unique(np.asarray(found, dtype=np.int64)) for found in eligible]
        for found in nodes:
            if found.size and (found[0] < 0 or found[-1] >= supply.size):
                raise ValueError("eligible node index out of range")
        sizes = np.array([found.size for found in nodes], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        edge_node = np.concatenate(nodes) if m else np.zeros(0, dtype=np.int64)
        edge_contract = np.repeat(np.arange(m, dtype=np.int64), sizes)
        return cls(supply, demand, edge_contract, edge_node.astype(np.int64), starts)

    @property
    def n(self) -> int:
        return int(self.supply.size)

    @property
    def m(self) -> int:
        return int(self.demand.size)

    def eligible_supply(self) -> np.ndarray:
        """``S_j``: the supply each contract could take if it were alone."""
        return np.bincount(
            self.edge_contract, weights=self.supply[self.edge_node], minlength=self.m
        )

    def nodes_of(self, j: int) -> np.ndarray:
        return self.edge_node[self.starts[j] : self.starts[j + 1]]


def solve_hinges(
    group: np.ndarray, a: np.ndarray, w: np.ndarray, target: np.ndarray, groups: int
) -> np.ndarray:
    """Per group ``g``, the ``x`` with ``Σ_{e∈g} w_e · max(0, x − a_e) = target_g``.

    The left side is piecewise linear, zero below the smallest ``a`` and increasing
    after it, so with ``target_g > 0`` and positive weights the root is unique. It is
    found exactly for all groups at once: sort each group's breakpoints, evaluate the
    sum at every breakpoint with segmented prefix sums, and solve the one linear piece
    that crosses the target. Groups without edges (or without weight) get NaN.
    """
    result = np.full(groups, np.nan)
    keep = w > 0
    group, a, w = group[keep], a[keep], w[keep]
    if group.size == 0:
        return result
    # One float sort key (group, then a squeezed into [0, 0.5)) sorts twice as fast as
    # lexsort; breakpoints closer than ~1e-9 of their range may swap, which moves the root
    # by no more than that.
    span = float(a.max() - a.min())
    key = group + (a - a.min()) * (0.5 / span if span > 0 else 0.0)
    order = np.argsort(key)
    group, a, w = group[order], a[order], w[order]
    counts = np.bincount(group, minlength=groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    cum_w = np.cumsum(w)
    cum_wa = np.cumsum(w * a)
    base_w = np.where(starts > 0, cum_w[np.maximum(starts - 1, 0)], 0.0)
    base_wa = np.where(starts > 0, cum_wa[np.maximum(starts - 1, 0)], 0.0)
    in_w = cum_w - base_w[group]  # Σ w over this edge and the group's earlier ones
    in_wa = cum_wa - base_wa[group]
    # The sum at this edge's own breakpoint counts only the earlier edges.
    at_break = a * (in_w - w) - (in_wa - w * a)
    below = at_break < target[group]
    last = starts + np.bincount(group, weights=below, minlength=groups).astype(np.int64) - 1
    present = counts > 0
    last = last[present]
    result[present] = (target[present] + in_wa[last]) / in_w[last]
    return result


def solve_ramps(lo: np.ndarray, hi: np.ndarray, w: np.ndarray, target: float) -> float | None:
    """The smallest ``x`` with ``Σ w_e · clamp(x − lo_e, 0, hi_e − lo_e) = target``.

    Each term is a ramp from 0 at ``lo`` up to ``w·(hi − lo)`` at ``hi``; the sum is
    piecewise linear and non-decreasing. None when even its top is below ``target``.
    """
    if target <= 0:
        return float(lo.min()) if lo.size else 0.0
    keep = (w > 0) & (hi > lo)
    lo, hi, w = lo[keep], hi[keep], w[keep]
    if lo.size == 0 or float(np.sum(w * (hi - lo))) < target:
        return None
    points = np.concatenate((lo, hi))
    slopes = np.concatenate((w, -w))
    order = np.argsort(points, kind="stable")
    points, slopes = points[order], slopes[order]
    slope_after = np.cumsum(slopes)  # slope on [points[k], points[k + 1])
    gains = slope_after[:-1] * np.diff(points)
    values = np.concatenate(([0.0], np.cumsum(gains)))  # sum at each point
    k = int(np.searchsorted(values, target, side="left"))
    if k == 0:
        return float(points[0])
    k -= 1  # the crossing is in [points[k], points[k + 1]]
    slope = slope_after[k]
    if slope <= 0:
        return float(points[k + 1])
    return float(points[k] + (target - values[k]) / slope)


def merge_identical(
    supply: np.ndarray, eligible: Sequence[np.ndarray], *, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Merge nodes eligible for exactly the same contracts: ``(supply, eligible, node_map)``.

    Exact for HWM, SHALE and the LP: nodes with one eligibility set are treated alike by
    all three (same share, same ``β``), so only their total supply matters. Sets are told
    apart by a 128-bit random signature (a collision is vanishingly unlikely).
    ``node_map[i]`` is the merged node of original node ``i`` (-1: eligible for none).
    """
    supply = np.asarray(supply, dtype=np.float64)
    rng = np.random.default_rng(seed)
    signature = np.zeros((supply.size, 2), dtype=np.uint64)
    seen = np.zeros(supply.size, dtype=bool)
    for nodes in eligible:
        nodes = np.asarray(nodes, dtype=np.int64)
        key = rng.integers(1, 2**63, size=2, dtype=np.int64).astype(np.uint64)
        signature[nodes] ^= key
        seen[nodes] = True
    used = np.flatnonzero(seen)
    _, first, inverse = np.unique(signature[used], axis=0, return_index=True, return_inverse=True)
    node_map = np.full(supply.size, -1, dtype=np.int64)
    node_map[used] = inverse.reshape(-1)
    merged_supply = np.bincount(node_map[used], weights=supply[used], minlength=first.size).astype(
        np.float64
    )
    merged = [np.unique(node_map[np.asarray(nodes, dtype=np.int64)]) for nodes in eligible]
    return merged_supply, merged, node_map

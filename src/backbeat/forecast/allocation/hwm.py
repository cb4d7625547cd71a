"""HWM ("High Water Mark"): a compact allocation plan for guaranteed contracts.

From Chen, Ma, Mandalapu, Nagarajan, Shanmugasundaram, Vassilvitskii, Vee, Yu and Zien,
"Ad serving using a compact allocation plan" (EC 2012). A bipartite graph joins supply
nodes ``i`` (groups of identical ad requests, ``s_i`` impressions each) to the contracts
``j`` whose targeting admits them (``Γ(j)``); contract ``j`` wants ``d_j`` impressions.

Offline, contracts are taken in an *allocation order* (ascending eligible supply
``S_j = Σ_{i∈Γ(j)} s_i``: the scarcest first, unless an order is given, e.g. by tier, then
scarcity), with the remaining supply ``r_i = s_i`` at the start. Each contract gets the
smallest share ``α_j`` solving::

    Σ_{i∈Γ(j)} min(r_i, α_j · s_i) = d_j          (α_j := 1 if no α ≤ 1 does)

and then ``r_i ← r_i − min(r_i, α_j · s_i)``. The plan is ``(order, α)``: one number per
contract.

Online, an impression of node ``i`` walks its eligible contracts in allocation order and
gives each ``x_ij = min(α_j, 1 − Σ_{k before j} x_ik)``; it goes to ``j`` with probability
``x_ij`` and to the auction with what is left. That is the offline step divided by
``s_i``, so ``allocated`` below is exactly what the online rule delivers on this supply.

``Σ min(r_i, α s_i)`` is piecewise linear and increasing in ``α`` with a breakpoint at
``r_i / s_i`` per node, so ``α_j`` is found exactly by sorting the breakpoints (no
bisection tolerance), vectorised with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["HwmResult", "default_order", "hwm_allocate", "solve_share"]


@dataclass(frozen=True)
class HwmResult:
    """The HWM plan and what it delivers on the supply it was computed from."""

    alpha: np.ndarray  # (m,) share of each eligible node's supply per contract
    allocated: np.ndarray  # (m,) impressions each contract gets
    taken: np.ndarray  # (n,) supply consumed per supply node
    order: np.ndarray  # contract indices in allocation order


def default_order(supply: np.ndarray, eligible: Sequence[np.ndarray]) -> np.ndarray:
    """Contracts by ascending eligible supply (ties by index): the scarcest choose first."""
    totals = np.array([float(supply[nodes].sum()) for nodes in eligible], dtype=np.float64)
    return np.argsort(totals, kind="stable")


def solve_share(remaining: np.ndarray, supply: np.ndarray, demand: float) -> float:
    """The smallest ``α ∈ [0, 1]`` with ``Σ min(remaining, α·supply) = demand`` (1 if none).

    ``remaining`` and ``supply`` are the contract's eligible nodes (``remaining ≤ supply``).
    """
    if demand <= 0:
        return 0.0
    positive = supply > 0
    remaining, supply = remaining[positive], supply[positive]
    if remaining.sum() <= demand:
        return 1.0
    breaks = remaining / supply  # α at which each node is used up
    order = np.argsort(breaks, kind="stable")
    breaks, remaining, supply = breaks[order], remaining[order], supply[order]
    saturated = np.concatenate(([0.0], np.cumsum(remaining)))  # P[k] = Σ_{l<k} r_l
    linear = np.concatenate((np.cumsum(supply[::-1])[::-1], [0.0]))  # Q[k] = Σ_{l≥k} s_l
    at_breaks = saturated[:-1] + breaks * linear[:-1]  # f(breaks[k]), non-decreasing
    k = int(np.searchsorted(at_breaks, demand, side="left"))
    # For α in [breaks[k-1], breaks[k]], nodes before k are used up and the rest give α·s.
    alpha = (demand - saturated[k]) / linear[k]
    return float(min(max(alpha, 0.0), 1.0))


def hwm_allocate(
    supply: np.ndarray,
    eligible: Sequence[np.ndarray],
    demand: np.ndarray,
    order: np.ndarray | None = None,
) -> HwmResult:
    """Run HWM over ``supply`` (n,) for contracts with ``eligible`` node indices and ``demand``.

    Args:
        supply: impressions each supply node stands for (a weighted sample opportunity or
            a group of identical ones).
        eligible: per contract ``j``, an integer array of the nodes it may take.
        demand: (m,) impressions each contract still needs.
        order: contract indices in allocation order; default ``default_order``.
    """
    supply = np.asarray(supply, dtype=np.float64)
    demand = np.asarray(demand, dtype=np.float64)
    m = len(eligible)
    if demand.shape != (m,):
        raise ValueError(f"demand has shape {demand.shape}, expected ({m},)")
    if np.any(supply < 0) or np.any(demand < 0):
        raise ValueError("supply and demand must be non-negative")
    nodes_of = [np.unique(np.asarray(nodes, dtype=np.int64)) for nodes in eligible]
    order = default_order(supply, nodes_of) if order is None else np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(m)):
        raise ValueError("order must be a permutation of the contracts")
    remaining = supply.copy()
    alpha = np.zeros(m, dtype=np.float64)
    allocated = np.zeros(m, dtype=np.float64)
    for j in order:
        nodes = nodes_of[j]
        if nodes.size == 0:
            alpha[j] = 1.0 if demand[j] > 0 else 0.0
            continue
        share = solve_share(remaining[nodes], supply[nodes], float(demand[j]))
        alpha[j] = share
        take = np.minimum(remaining[nodes], share * supply[nodes])
        remaining[nodes] -= take
        allocated[j] = float(take.sum())
    np.maximum(remaining, 0.0, out=remaining)
    return HwmResult(alpha=alpha, allocated=allocated, taken=supply - remaining, order=order)

"""Splitting a budget across draft sub-campaigns to maximise one goal.

Each draft ``k`` has a response curve: the goal it reaches as a function of its budget
``b``. Its impressions are ``i(b) = min(b · 1000 / cpm_k, A_k)`` (``A_k``: what the forecast
says it can still get, so no draft is given more than it can deliver), and the goal is a
concave function of impressions:

* ``impressions``: ``i``; ``clicks`` / ``conversions``: ``rate_k · i`` (forecast rates);
* ``reach``: ``U_k (1 − e^{−i/U_k})`` — each of ``U_k`` listeners hears a Poisson number
  of impressions — with ``U_k`` fitted so the curve passes through the forecast reach at
  the forecast impressions (linear when the forecast says every impression is a new listener).

The problem ``max Σ_k f_k(b_k)`` s.t. ``Σ_k b_k ≤ B``, ``min_k ≤ b_k ≤ min(max_k, A_k·cpm_k/1000)``
is concave and separable. Each ``f_k`` is represented exactly (linear goals) or by its
chords at ``segments`` breakpoints (reach: relative error below 1e-5 with the default) as a
concave piecewise-linear function, and then the greedy on marginal return is optimal
(a fractional knapsack): give every draft its minimum, sort all segments by value per unit
of money, and fill them best first until the budget is spent. Money is integer micros, so
the split adds up exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

__all__ = ["GOALS", "BudgetSplit", "DraftCurve", "reach_universe", "split_budget"]

GOALS = ("impressions", "reach", "clicks", "conversions")
MICROS = 1_000_000


@dataclass(frozen=True)
class DraftCurve:
    """One draft's response: price, what it can deliver, and its goal per impression."""

    cpm_micros: int
    available: float  # impressions it can still get
    rate: float = 1.0  # goal units per impression (linear goals)
    universe: float | None = None  # reach: U (None: linear, every impression a new listener)
    min_micros: int = 0
    max_micros: int | None = None

    @property
    def cap_micros(self) -> int:
        """Most budget it can use: its maximum, or what buys all it can deliver."""
        deliverable = (
            math.floor(self.available * self.cpm_micros / 1000) if self.cpm_micros > 0 else 0
        )
        return deliverable if self.max_micros is None else min(self.max_micros, deliverable)

    def impressions(self, micros: float) -> float:
        if self.cpm_micros <= 0:
            return 0.0
        return min(micros * 1000.0 / self.cpm_micros, self.available)

    def value(self, micros: float) -> float:
        shown = self.impressions(micros)
        if self.universe is None:
            return self.rate * shown
        return self.rate * self.universe * -math.expm1(-shown / self.universe)


def reach_universe(impressions: float, reach: float) -> float | None:
    """``U`` with ``U (1 − e^{−impressions/U}) = reach``; None when reach ≥ impressions (linear)."""
    if impressions <= 0 or reach <= 0:
        return None
    if reach >= impressions * (1 - 1e-9):
        return None

    def gap(universe: float) -> float:
        return universe * -math.expm1(-impressions / universe) - reach

    # U (1 − e^{−I/U}) rises with U from 0 towards I, and is below U: the root is above
    # ``reach`` (at ``reach`` itself when the listeners are saturated to float precision).
    if gap(reach) >= 0:
        return reach
    high = max(reach * 2.0, 1.0)
    while gap(high) < 0:
        high *= 2.0
    return float(brentq(gap, reach, high, xtol=1e-9 * reach, maxiter=200))


@dataclass(frozen=True)
class BudgetSplit:
    micros: list[int]  # per draft
    values: list[float]  # the goal each reaches
    total: float
    unallocated_micros: int
    marginal: float  # goal per currency unit of the last segment funded (the shadow price)


def split_budget(
    curves: list[DraftCurve], total_micros: int, *, segments: int = 256
) -> BudgetSplit:
    """The optimal split of ``total_micros`` over ``curves`` (see the module docstring).

    Raises ValueError when the minimums alone exceed the budget or a draft's minimum is
    more than it can use (the API turns those into 422 problems before calling).
    """
    floors = [curve.min_micros for curve in curves]
    caps = [curve.cap_micros for curve in curves]
    if sum(floors) > total_micros:
        raise ValueError("the minimum budgets add up to more than the total")
    for floor, cap in zip(floors, caps, strict=True):
        if floor > cap:
            raise ValueError("a minimum budget is more than the draft can deliver")
    starts: list[np.ndarray] = []
    widths: list[np.ndarray] = []
    slopes: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    for k, curve in enumerate(curves):
        room = caps[k] - floors[k]
        if room <= 0:
            continue
        pieces = 1 if curve.universe is None else segments
        edges = np.unique(np.linspace(floors[k], caps[k], pieces + 1).round().astype(np.int64))
        values = np.array([curve.value(float(edge)) for edge in edges])
        width = np.diff(edges)
        slope = np.diff(values) / width
        starts.append(edges[:-1])
        widths.append(width)
        slopes.append(slope)
        owners.append(np.full(width.size, k))
    micros = list(floors)
    left = total_micros - sum(floors)
    marginal = 0.0
    if starts:
        width = np.concatenate(widths)
        slope = np.concatenate(slopes)
        owner = np.concatenate(owners)
        # Best value per micro first; a draft's own segments are already in falling order
        # (concave), and the stable sort keeps them so for ties.
        order = np.argsort(-slope, kind="stable")
        for index in order:
            if left <= 0 or slope[index] <= 0:
                break
            take = int(min(width[index], left))
            micros[int(owner[index])] += take
            left -= take
            marginal = float(slope[index]) * MICROS
    values = [curve.value(float(amount)) for curve, amount in zip(curves, micros, strict=True)]
    return BudgetSplit(
        micros=micros,
        values=values,
        total=float(math.fsum(values)),
        unallocated_micros=total_micros - sum(micros),
        marginal=marginal,
    )

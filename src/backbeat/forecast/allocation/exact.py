"""The exact optimum of a guaranteed-allocation problem, with HiGHS: the yardstick for plans.

* ``max_delivery`` — the LP: maximise delivered guaranteed impressions
  ``Σ y_e`` over edge flows ``y_e = s_i x_ij ≥ 0`` with ``Σ_{i∈Γ(j)} y_ij ≤ d_j`` and
  ``Σ_{j∈Γ(i)} y_ij ≤ s_i`` (a transportation problem; its optimum is the least
  under-delivery any allocation can reach).
* ``representative`` — SHALE's QP (``shale`` module docstring) solved exactly: the
  optimum of representativeness plus the under-delivery penalty.

Both return per-contract deliveries and per-node consumption, like the plan algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np

from backbeat.forecast.allocation.graph import Graph

__all__ = ["ExactResult", "max_delivery", "representative"]


@dataclass(frozen=True)
class ExactResult:
    allocated: np.ndarray  # (m,)
    taken: np.ndarray  # (n,)
    objective: float
    status: str
    flows: np.ndarray  # (E,) impressions per edge, in ``Graph`` edge order


def _solver() -> highspy.Highs:
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    return highs


def _matrix(graph: Graph, node_coefficient: np.ndarray, contract_coefficient: np.ndarray):
    """Column-wise: edge ``e`` is in its contract's row and in row ``m + node``."""
    edges = graph.edge_contract.size
    index = np.empty(2 * edges, dtype=np.int32)
    index[0::2] = graph.edge_contract
    index[1::2] = graph.m + graph.edge_node
    value = np.empty(2 * edges)
    value[0::2] = contract_coefficient
    value[1::2] = node_coefficient
    start = np.arange(0, 2 * edges + 1, 2, dtype=np.int32)
    return start, index, value


def _finish(highs: highspy.Highs, graph: Graph, flows: np.ndarray) -> ExactResult:
    allocated = np.bincount(graph.edge_contract, weights=flows, minlength=graph.m)
    taken = np.bincount(graph.edge_node, weights=flows, minlength=graph.n)
    return ExactResult(
        allocated=allocated,
        taken=taken,
        objective=float(highs.getInfo().objective_function_value),
        status=highs.modelStatusToString(highs.getModelStatus()),
        flows=flows,
    )


def max_delivery(graph: Graph) -> ExactResult:
    """The LP optimum: most guaranteed impressions deliverable."""
    edges = graph.edge_contract.size
    lp = highspy.HighsLp()
    lp.num_col_ = edges
    lp.num_row_ = graph.m + graph.n
    lp.col_cost_ = np.full(edges, -1.0)
    lp.col_lower_ = np.zeros(edges)
    lp.col_upper_ = graph.supply[graph.edge_node]
    lp.row_lower_ = np.full(graph.m + graph.n, -highspy.kHighsInf)
    lp.row_upper_ = np.concatenate((graph.demand, graph.supply))
    start, index, value = _matrix(graph, np.ones(edges), np.ones(edges))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = start
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    lp.a_matrix_.num_col_ = edges
    lp.a_matrix_.num_row_ = graph.m + graph.n
    highs = _solver()
    highs.passModel(lp)
    highs.run()
    flows = np.asarray(highs.getSolution().col_value[:edges])
    return _finish(highs, graph, flows)


def representative(
    graph: Graph,
    *,
    weight: np.ndarray | None = None,
    penalty: float | np.ndarray = 1000.0,
) -> ExactResult:
    """SHALE's QP solved exactly: variables ``x_e`` (shares) then ``u_j`` (under-delivery)."""
    m, edges = graph.m, graph.edge_contract.size
    weight = np.ones(m) if weight is None else np.asarray(weight, dtype=np.float64)
    penalty = np.broadcast_to(np.asarray(penalty, dtype=np.float64), (m,))
    totals = graph.eligible_supply()
    theta = np.divide(graph.demand, totals, out=np.zeros(m), where=totals > 0)
    theta = np.minimum(theta, 1.0)
    s = graph.supply[graph.edge_node]
    contract = graph.edge_contract
    usable = theta[contract] > 0
    # Contracts without demand get x fixed at 0 (their θ is 0, the quadratic undefined).
    curvature = np.where(usable, s * weight[contract] / np.where(usable, theta[contract], 1.0), 0.0)
    lp = highspy.HighsLp()
    lp.num_col_ = edges + m
    lp.num_row_ = m + graph.n
    lp.col_cost_ = np.concatenate((-s * weight[contract] * usable, penalty))
    lp.col_lower_ = np.zeros(edges + m)
    lp.col_upper_ = np.concatenate((np.where(usable, 1.0, 0.0), np.full(m, highspy.kHighsInf)))
    lp.row_lower_ = np.concatenate((graph.demand, np.full(graph.n, -highspy.kHighsInf)))
    lp.row_upper_ = np.concatenate((np.full(m, highspy.kHighsInf), np.ones(graph.n)))
    start, index, value = _matrix(graph, np.ones(edges), s)
    start = np.concatenate((start, start[-1] + np.arange(1, m + 1, dtype=np.int32)))
    index = np.concatenate((index, np.arange(m, dtype=np.int32)))
    value = np.concatenate((value, np.ones(m)))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = start
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    lp.a_matrix_.num_col_ = edges + m
    lp.a_matrix_.num_row_ = m + graph.n
    hessian = highspy.HighsHessian()
    hessian.dim_ = edges + m
    hessian.format_ = highspy.HessianFormat.kTriangular
    diagonal = np.concatenate((np.maximum(curvature, 1e-12), np.zeros(m)))
    nonzero = np.flatnonzero(diagonal > 0)
    counts = np.zeros(edges + m, dtype=np.int32)
    counts[nonzero] = 1
    hessian.start_ = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    hessian.index_ = nonzero.astype(np.int32)
    hessian.value_ = diagonal[nonzero]
    model = highspy.HighsModel()
    model.lp_ = lp
    model.hessian_ = hessian
    highs = _solver()
    highs.passModel(model)
    highs.run()
    x = np.asarray(highs.getSolution().col_value[:edges])
    return _finish(highs, graph, x * s)

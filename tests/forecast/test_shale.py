"""SHALE: KKT structure on hand-worked cases, the online rule re-implemented plainly, and the exact QP."""

from __future__ import annotations

import numpy as np
import pytest

from backbeat.forecast.allocation.exact import representative
from backbeat.forecast.allocation.graph import Graph
from backbeat.forecast.allocation.shale import shale_allocate


def test_lone_contract_takes_the_same_share_of_every_node() -> None:
    # Alone, the representative allocation is x_ij = θ = d / S on every node.
    supply = np.array([100.0, 300.0, 600.0])
    result = shale_allocate(supply, [np.array([0, 1, 2])], np.array([250.0]))
    assert result.theta == pytest.approx([0.25])
    assert result.allocated == pytest.approx([250.0])
    assert result.taken == pytest.approx(0.25 * supply)


def test_two_contracts_share_a_node_as_the_kkt_conditions_say() -> None:
    # Nodes: 0 (100, only A), 1 (100, A and B), 2 (100, only B). A wants 150, B wants 150.
    # By symmetry x_A0 = x_B2 = 1 would leave 50 each to take from node 1: the optimum
    # of the QP splits node 1 evenly and fills both contracts.
    result = shale_allocate(
        np.array([100.0, 100.0, 100.0]),
        [np.array([0, 1]), np.array([1, 2])],
        np.array([150.0, 150.0]),
    )
    assert result.allocated == pytest.approx([150.0, 150.0], rel=1e-3)
    assert result.taken == pytest.approx([100.0, 100.0, 100.0], rel=1e-3)


def _plain_online(supply, eligible, alpha, theta, weight, order, dual):
    """The serving rule per node: β by bisection over the duals, then shares in order."""
    m = len(eligible)
    rank = {int(j): k for k, j in enumerate(order)}
    delivered = np.zeros(m)
    for node, amount in enumerate(supply):
        here = sorted((j for j in range(m) if node in set(eligible[j].tolist())), key=rank.get)

        def wanted(beta, j, level=alpha):
            return max(0.0, theta[j] * (1 + (level[j] - beta) / weight[j]))

        beta = 0.0
        if sum(wanted(0.0, j, dual) for j in here) > 1:
            lo, hi = 0.0, max(dual[j] + weight[j] for j in here)
            for _ in range(200):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if sum(wanted(mid, j, dual) for j in here) > 1 else (lo, mid)
            beta = (lo + hi) / 2
        left = 1.0
        for j in here:
            x = min(wanted(beta, j), left)
            delivered[j] += x * amount
            left -= x
    return delivered


def _random_problem(seed: int, n: int = 60, m: int = 12, load: float = 0.9):
    rng = np.random.default_rng(seed)
    supply = rng.lognormal(3, 1, n)
    country, device = rng.integers(0, 4, n), rng.integers(0, 3, n)
    eligible = []
    for _ in range(m):
        mask = np.isin(country, rng.choice(4, rng.integers(1, 4), replace=False))
        if rng.random() < 0.5:
            mask &= device == rng.integers(0, 3)
        eligible.append(np.flatnonzero(mask))
    totals = np.array([supply[e].sum() for e in eligible])
    demand = totals * rng.uniform(0.3, 1.7, m) * load * supply.sum() / totals.sum()
    return supply, eligible, demand


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_allocated_is_what_the_serving_rule_delivers(seed: int) -> None:
    supply, eligible, demand = _random_problem(seed)
    result = shale_allocate(supply, eligible, demand)
    plain = _plain_online(
        supply, eligible, result.alpha, result.theta, result.weight, result.order, result.dual
    )
    assert result.allocated == pytest.approx(plain, rel=1e-6, abs=1e-6)
    assert np.all(result.taken <= supply * (1 + 1e-9))


@pytest.mark.parametrize("seed", [11, 12])
def test_close_to_the_exact_qp_when_everything_fits(seed: int) -> None:
    supply, eligible, demand = _random_problem(seed, load=0.5)
    result = shale_allocate(supply, eligible, demand, passes=30)
    graph = Graph.build(supply, eligible, demand)
    exact = representative(graph)
    assert exact.status == "Optimal"
    # Both deliver every goal ...
    assert exact.allocated == pytest.approx(demand, rel=1e-4)
    assert result.allocated == pytest.approx(demand, rel=1e-4)

    # ... and SHALE's shares are near the QP's (representativeness).
    def cost(taken_per_edge):
        s = supply[graph.edge_node]
        theta = result.theta[graph.edge_contract]
        x = taken_per_edge / s
        return 0.5 * float(np.sum(s / theta * (x - theta) ** 2))

    assert cost(_edge_flows(graph, result)) <= cost(exact.flows) * 1.10 + 1e-6


def _edge_flows(graph: Graph, result) -> np.ndarray:
    from backbeat.forecast.allocation.shale import _take

    remaining = np.ones(graph.n)
    flows = np.zeros(graph.edge_contract.size)
    for j in result.order:
        lo, hi = graph.starts[j], graph.starts[j + 1]
        nodes = graph.edge_node[lo:hi]
        share = _take(
            remaining[nodes], result.beta[nodes], result.alpha[j], result.theta[j], result.weight[j]
        )
        remaining[nodes] -= share
        flows[lo:hi] = share * graph.supply[nodes]
    return flows

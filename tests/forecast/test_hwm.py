"""HWM: a hand-worked case and, on random graphs, a plain re-implementation of the online rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.forecast.allocation.hwm import hwm_allocate


def test_hand_worked_case() -> None:
    # Three nodes of 100, 100, 200 impressions; A sees node 0, B nodes 0-1, C all three.
    # Order by eligible supply: A (100), B (200), C (400).
    #   A: min(100, 100α) = 50                         -> α = 0.5, left 50, 100, 200
    #   B: min(50, 100α) + min(100, 100α) = 120        -> 50 + 100α = 120, α = 0.7; left 0, 30, 200
    #   C: 0 + min(30, 100α) + min(200, 200α) = 150    -> 30 + 200α = 150, α = 0.6; left 0, 0, 80
    result = hwm_allocate(
        np.array([100.0, 100.0, 200.0]),
        [np.array([0]), np.array([0, 1]), np.array([0, 1, 2])],
        np.array([50.0, 120.0, 150.0]),
    )
    assert result.order.tolist() == [0, 1, 2]
    assert result.alpha == pytest.approx([0.5, 0.7, 0.6])
    assert result.allocated == pytest.approx([50.0, 120.0, 150.0])
    assert result.taken == pytest.approx([100.0, 100.0, 120.0])


def test_infeasible_contract_takes_all_it_can_and_order_overrides() -> None:
    supply = np.array([100.0, 100.0])
    eligible = [np.array([0, 1]), np.array([1])]
    demand = np.array([150.0, 80.0])
    # Default order: the scarce contract 1 first (80 of node 1), then contract 0 gets
    # 100 + 20 = 120 < 150 with α capped at 1.
    result = hwm_allocate(supply, eligible, demand)
    assert result.order.tolist() == [1, 0]
    assert result.alpha == pytest.approx([1.0, 0.8])
    assert result.allocated == pytest.approx([120.0, 80.0])
    # Contract 0 first: α = 0.75 takes 75 + 75; contract 1 then finds 25 left.
    forced = hwm_allocate(supply, eligible, demand, order=np.array([0, 1]))
    assert forced.alpha == pytest.approx([0.75, 1.0])
    assert forced.allocated == pytest.approx([150.0, 25.0])
    assert forced.taken == pytest.approx([75.0, 100.0])


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        hwm_allocate(np.array([1.0]), [np.array([0])], np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        hwm_allocate(np.array([1.0]), [np.array([0])], np.array([1.0]), order=np.array([1]))
    with pytest.raises(ValueError):
        hwm_allocate(np.array([-1.0]), [np.array([0])], np.array([1.0]))


def _online(supply, eligible, alpha, order):
    """The serving rule, impression by impression-group, in plain Python."""
    m = len(eligible)
    delivered = [0.0] * m
    rank = {int(j): position for position, j in enumerate(order)}
    for node, amount in enumerate(supply):
        left = 1.0
        for j in sorted((j for j in range(m) if node in set(eligible[j])), key=rank.get):
            x = min(float(alpha[j]), left)
            delivered[j] += x * amount
            left -= x
    return delivered


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 8).flatmap(
        lambda n: st.tuples(
            st.lists(st.floats(0, 1000), min_size=n, max_size=n),
            st.lists(
                st.tuples(st.sets(st.integers(0, n - 1), max_size=n), st.floats(0, 1500)),
                min_size=1,
                max_size=6,
            ),
        )
    )
)
def test_online_rule_delivers_the_offline_allocation(case) -> None:
    supply_list, contracts = case
    supply = np.array(supply_list)
    eligible = [np.array(sorted(nodes), dtype=np.int64) for nodes, _ in contracts]
    demand = np.array([d for _, d in contracts])
    result = hwm_allocate(supply, eligible, demand)
    online = _online(supply_list, eligible, result.alpha, result.order)
    assert result.allocated == pytest.approx(online, rel=1e-9, abs=1e-6)
    assert np.all(result.allocated <= demand + 1e-6)
    assert np.all(result.taken <= supply + 1e-6)
    for j, nodes in enumerate(eligible):
        # Either the goal is met, or the contract took every bit it saw left (α = 1).
        if result.allocated[j] < demand[j] - 1e-6:
            assert result.alpha[j] == 1.0
        else:
            assert result.allocated[j] == pytest.approx(demand[j], abs=1e-6)
        if nodes.size:
            assert 0.0 <= result.alpha[j] <= 1.0

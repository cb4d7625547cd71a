"""The budget dual price: a hand-worked sequence of steps, and spend following the budget."""

from __future__ import annotations

import numpy as np
import pytest

from backbeat.promotion.pacing import DualPacer, target_spend


def test_hand_worked_dual_steps():
    pacer = DualPacer(step=20.0)
    flight = {"budget": 1000.0, "start_ts": 0.0, "end_ts": 100.0}
    # Half-way, 600 spent against 500 due: error 0.1, λ = 0 + 20 × 0.1 = 2, multiplier 1/3.
    assert pacer.update(1, spent=600, now=50, **flight) == pytest.approx(2.0)
    assert pacer.multiplier(1) == pytest.approx(1 / 3)
    # 620 against 600: λ = 2 + 20 × 0.02 = 2.4.
    assert pacer.update(1, spent=620, now=60, **flight) == pytest.approx(2.4)
    # Underspending 700 against 800: λ = 2.4 − 2 = 0.4; again: max(0, 0.4 − 2) = 0.
    assert pacer.update(1, spent=700, now=80, **flight) == pytest.approx(0.4)
    assert pacer.update(1, spent=800, now=90, **flight) == 0.0
    assert pacer.multiplier(1) == 1.0
    assert pacer.multiplier(2) == 1.0  # a campaign never updated bids its full value
    assert target_spend(1000, 0, 100, -5) == 0 and target_spend(1000, 0, 100, 500) == 1000


def simulate(paced: bool, steps: int = 100, budget: float = 100.0, seed: int = 1) -> list[float]:
    """Each step: 50 opportunities; we win when value × multiplier beats a rival's bid; a win
    costs 0.05. Unpaced, wins come 1.75× too fast and the budget is gone by step ~57."""
    rng = np.random.default_rng(seed)
    pacer = DualPacer()
    spent, curve = 0.0, []
    for step in range(steps):
        multiplier = pacer.multiplier(7) if paced else 1.0
        values, rivals = rng.random(50), rng.uniform(0, 0.6, 50)
        for value, rival in zip(values, rivals, strict=True):
            if spent + 0.05 > budget:
                break
            if value * multiplier > rival:
                spent += 0.05
        curve.append(spent)
        pacer.update(7, budget=budget, spent=spent, start_ts=0, end_ts=steps, now=step + 1)
    return curve


def test_spend_follows_the_budget_over_the_flight():
    paced, unpaced = simulate(True), simulate(False)
    assert unpaced[59] >= 99.9  # without the dual price the budget runs out early
    for step in (24, 49, 74):
        due = 100.0 * (step + 1) / 100
        assert abs(paced[step] - due) <= 0.1 * due + 1.0, (step, paced[step], due)
    assert 95.0 <= paced[-1] <= 100.0

"""Budget pacing by a dual price per campaign: spend follows the budget over the flight.

Each campaign's budget constraint has a Lagrange multiplier λ ≥ 0; bids are scaled by the
pacing multiplier 1 / (1 + λ). After each update period, λ moves by a projected
(sub)gradient step on the constraint "spend so far ≤ the budget's even share of the
flight so far": λ ← max(0, λ + η · (spent − target) / budget). Overspending raises λ
(lower scores, fewer exposures); underspending lowers it back to 0 (full value).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_STEP = 20.0
MAX_LAMBDA = 50.0


def target_spend(budget: float, start_ts: float, end_ts: float, now: float) -> float:
    """The even share of the budget due by ``now``."""
    if now <= start_ts:
        return 0.0
    if now >= end_ts:
        return budget
    return budget * (now - start_ts) / (end_ts - start_ts)


@dataclass
class DualPacer:
    step: float = DEFAULT_STEP
    lambdas: dict[int, float] = field(default_factory=dict)

    def update(
        self,
        campaign_id: int,
        *,
        budget: float,
        spent: float,
        start_ts: float,
        end_ts: float,
        now: float,
    ) -> float:
        """One dual step for a campaign; returns its new λ."""
        current = self.lambdas.get(campaign_id, 0.0)
        if budget <= 0:
            self.lambdas[campaign_id] = MAX_LAMBDA
            return MAX_LAMBDA
        error = (spent - target_spend(budget, start_ts, end_ts, now)) / budget
        updated = min(MAX_LAMBDA, max(0.0, current + self.step * error))
        self.lambdas[campaign_id] = updated
        return updated

    def multiplier(self, campaign_id: int) -> float:
        return 1.0 / (1.0 + self.lambdas.get(campaign_id, 0.0))

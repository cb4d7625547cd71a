"""``POST /v1/budget-allocations``: split a budget over draft sub-campaigns for one goal.

Every draft is validated like a line item and forecast (the forecaster the app keeps
built, bulk path); its forecast becomes a response curve (``forecast.allocation.budget``)
and the split is the optimum of the concave separable problem. Every bad draft is
reported with its index and reason in one 422; nothing is answered then. Any key may ask
(it books nothing); advertiser keys get forecasts with contention as totals only.
"""

# No ``from __future__ import annotations``: FastAPI must see the real schema classes.

import math
from typing import Any

from fastapi import APIRouter, Request

from backbeat.api.deps import PrincipalDep
from backbeat.api.routes.forecasts import current_forecaster, invalid_drafts, parse_drafts
from backbeat.errors import InvalidInput
from backbeat.forecast.allocation.budget import DraftCurve, reach_universe, split_budget
from backbeat.forecast.allocation.schemas import (
    BudgetAllocationOut,
    BudgetAllocationRequest,
    BudgetDraft,
)
from backbeat.forecast.schemas import BulkError
from backbeat.types import from_micros, to_micros

router = APIRouter(prefix="/v1/budget-allocations", tags=["forecasts"])


def _curve(draft: BudgetDraft, result: Any, goal: str) -> tuple[DraftCurve, dict[str, Any]]:
    delivered = max(float(result.delivered), 0.0)
    available = max(float(result.available.value), 0.0)
    per_impression = {
        "clicks": result.clicks.value / delivered if delivered > 0 else 0.0,
        "conversions": result.conversions.value / delivered if delivered > 0 else 0.0,
    }
    universe = reach_universe(delivered, float(result.reach.value))
    rate = 1.0 if goal in ("impressions", "reach") else per_impression[goal]
    curve = DraftCurve(
        cpm_micros=to_micros(draft.cpm),
        available=available,
        rate=rate,
        universe=universe if goal == "reach" else None,
        min_micros=to_micros(draft.min_budget) if draft.min_budget is not None else 0,
        max_micros=to_micros(draft.max_budget) if draft.max_budget is not None else None,
    )
    return curve, {"universe": universe, **per_impression}


@router.post(
    "",
    response_model=BudgetAllocationOut,
    responses={422: {"description": "Invalid drafts, each with its index and reason"}},
)
def create_budget_allocation(
    body: BudgetAllocationRequest, request: Request, principal: PrincipalDep
) -> Any:
    """The budget per draft that maximises the goal (impressions, reach, clicks, conversions)."""
    drafts, errors = parse_drafts(body.drafts, BudgetDraft)
    if errors:
        return invalid_drafts(errors, request)
    forecaster = current_forecaster(request)
    queries = [draft.to_query() for draft in drafts if draft is not None]
    for index, query in enumerate(queries):
        try:
            forecaster.check(query)
        except InvalidInput as error:  # e.g. a flight beyond the forecast horizon
            errors.append(BulkError(index=index, reason=error.reason, detail=error.detail))
    if errors:
        return invalid_drafts(errors, request)
    # One batch over the bulk subsample: a few passes per batch rather than ~40 per draft.
    results = forecaster.forecast_many(queries, advertiser_id=principal.advertiser_id)
    curves: list[DraftCurve] = []
    facts: list[dict[str, Any]] = []
    for index, (draft, result) in enumerate(zip(drafts, results, strict=True)):
        assert draft is not None
        curve, fact = _curve(draft, result, body.goal)
        if curve.min_micros > curve.cap_micros:
            errors.append(
                BulkError(
                    index=index,
                    reason="min-above-deliverable",
                    detail=f"min_budget is more than the {from_micros(curve.cap_micros)} "
                    "this draft can deliver",
                )
            )
        curves.append(curve)
        facts.append(fact)
    if errors:
        return invalid_drafts(errors, request)
    total = to_micros(body.total_budget)
    if sum(curve.min_micros for curve in curves) > total:
        raise InvalidInput(
            "the drafts' minimum budgets add up to more than total_budget",
            reason="budget-below-minimums",
        )
    split = split_budget(curves, total)
    allocations = []
    for index, (draft, curve, fact, micros, value) in enumerate(
        zip(drafts, curves, facts, split.micros, split.values, strict=True)
    ):
        assert draft is not None
        shown = curve.impressions(float(micros))
        universe = fact["universe"]
        reach = shown if universe is None else universe * -math.expm1(-shown / universe)
        allocations.append(
            {
                "index": index,
                "name": draft.name,
                "budget": from_micros(micros),
                "max_deliverable_budget": from_micros(curve.cap_micros),
                "impressions": round(shown, 3),
                "reach": round(reach, 3),
                "clicks": round(fact["clicks"] * shown, 3),
                "conversions": round(fact["conversions"] * shown, 3),
                "goal_value": round(value, 3),
            }
        )
    return {
        "goal": body.goal,
        "total_budget": body.total_budget,
        "allocated_budget": from_micros(total - split.unallocated_micros),
        "unallocated_budget": from_micros(split.unallocated_micros),
        "goal_value": round(split.total, 3),
        "marginal_value": split.marginal,
        "allocations": allocations,
        "note": forecaster.note,
    }

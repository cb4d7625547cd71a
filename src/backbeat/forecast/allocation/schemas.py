"""Budget-allocation requests and answers: drafts are forecast drafts with a budget range."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from backbeat.catalog.schemas import Amount, Input, MoneyOut
from backbeat.forecast.schemas import MAX_BULK, ForecastDraft

Goal = Literal["impressions", "reach", "clicks", "conversions"]


class BudgetDraft(ForecastDraft):
    """A draft sub-campaign: a forecast draft (flight, targeting, CPM…) and its budget range."""

    name: Annotated[str, Field(max_length=200)] | None = None
    min_budget: Amount | None = None  # type: ignore[valid-type]
    max_budget: Amount | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _budget_range(self) -> BudgetDraft:
        if self.cpm <= 0:
            raise PydanticCustomError("zero_cpm", "a draft needs a positive cpm to buy anything")
        if (
            self.min_budget is not None
            and self.max_budget is not None
            and self.min_budget > self.max_budget
        ):
            raise PydanticCustomError("min_above_max", "min_budget is above max_budget")
        return self


class BudgetAllocationRequest(Input):
    total_budget: Amount  # type: ignore[valid-type]
    goal: Goal = "impressions"
    drafts: Annotated[list[Any], Field(min_length=1, max_length=MAX_BULK)]


class DraftAllocation(BaseModel):
    index: int
    name: str | None
    budget: MoneyOut  # type: ignore[valid-type]
    max_deliverable_budget: MoneyOut  # type: ignore[valid-type]
    impressions: float
    reach: float
    clicks: float
    conversions: float
    goal_value: float


class BudgetAllocationOut(BaseModel):
    goal: Goal
    total_budget: MoneyOut  # type: ignore[valid-type]
    allocated_budget: MoneyOut  # type: ignore[valid-type]
    unallocated_budget: MoneyOut  # type: ignore[valid-type]
    goal_value: float
    marginal_value: float = Field(description="Goal per currency unit of the last money spent")
    allocations: list[DraftAllocation]
    note: str | None = None


__all__ = [
    "BudgetAllocationOut",
    "BudgetAllocationRequest",
    "BudgetDraft",
    "DraftAllocation",
    "Goal",
]

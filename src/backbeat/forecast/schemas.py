"""Forecast requests and answers (Pydantic), validated with the line items' own validators.

A draft is what a line item would be: flight, tier, CPM (a money string), targeting in the
line-item language, frequency caps, goal and slots, so a bad draft fails with the reason a
bad line item would (``end-before-start``, ``unknown-targeting-key``, ``negative-amount``…).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from backbeat.catalog.schemas import Amount, Caps, Id, Input, _check_targeting, _require_order
from backbeat.catalog.vocabulary import Tier
from backbeat.forecast.service import ForecastQuery
from backbeat.types import to_micros

try:  # RFC 3339 text only, where the catalog has it (same as campaign flights)
    from backbeat.catalog.schemas import Instant  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older catalog schemas
    Instant = AwareDatetime  # type: ignore[misc]

MAX_BULK = 1000
GroupBy = Literal[
    "day", "hour", "countries", "devices", "platforms", "surfaces", "segments", "genres"
]


class ForecastDraft(Input):
    """A draft line item to forecast."""

    start_at: Instant  # type: ignore[valid-type]
    end_at: Instant  # type: ignore[valid-type]
    tier: Tier = Tier.GUARANTEED
    cpm: Amount = Field(default=0, description='Money string, e.g. "12.50"')  # type: ignore[assignment]
    targeting: dict[str, Any] = Field(default_factory=dict)
    frequency_caps: Caps = []
    goal_impressions: Annotated[int, Field(ge=1, le=10**12)] | None = None
    slots: Annotated[list[Id], Field(min_length=1, max_length=1000)] | None = None
    group_by: Annotated[list[GroupBy], Field(max_length=8)] = []

    @field_validator("targeting", mode="before")
    @classmethod
    def _targeting(cls, value: Any) -> Any:
        return _check_targeting(value)

    @model_validator(mode="after")
    def _flight(self) -> ForecastDraft:
        _require_order(self.start_at, self.end_at)
        return self

    def to_query(self) -> ForecastQuery:
        return ForecastQuery(
            start_at=self.start_at,
            end_at=self.end_at,
            tier=self.tier.value,
            cpm_micros=to_micros(self.cpm),
            targeting=self.targeting,
            frequency_caps=[cap.model_dump() for cap in self.frequency_caps],
            goal_impressions=self.goal_impressions,
            slots=self.slots,
            group_by=list(dict.fromkeys(self.group_by)),
        )


class BulkForecastRequest(Input):
    drafts: Annotated[list[Any], Field(min_length=1, max_length=MAX_BULK)]
    skip_invalid: bool = False


class EstimateOut(BaseModel):
    value: float
    low: float
    high: float


class ContendingOut(BaseModel):
    line_item_id: int | None = Field(
        description="The booked line item; null for the total shown to advertiser keys"
    )
    impressions: float


class BreakdownRow(BaseModel):
    key: str
    matched: float
    available: float


class ForecastOut(BaseModel):
    matched: EstimateOut
    possible: EstimateOut
    available: EstimateOut
    reach: EstimateOut
    average_frequency: EstimateOut
    clicks: EstimateOut
    conversions: EstimateOut
    contending: list[ContendingOut]
    breakdown: dict[str, list[BreakdownRow]]
    note: str | None = None


class BulkError(BaseModel):
    index: int
    reason: str
    detail: str


class BulkForecastOut(BaseModel):
    forecasts: list[ForecastOut | None] = Field(
        description="One per draft, in order; null for a skipped invalid draft"
    )
    errors: list[BulkError]

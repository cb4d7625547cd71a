"""Request and response shapes of promotion campaigns and scores (same conventions as ads)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backbeat.catalog.schemas import (
    Amount,
    CountryCode,
    Currency,
    Id,
    Input,
    MoneyOut,
    Name,
    Output,
    _require_order,
)
from backbeat.catalog.vocabulary import Status
from backbeat.promotion.models import (
    DEFAULT_ATTRIBUTION_DAYS,
    DEFAULT_EXCLUSION_DAYS,
    DEFAULT_EXPOSURE_CAP,
)
from backbeat.promotion.vocabulary import Audience, ItemType, PriceModel, PromotionSurface

ITEM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:._\-]{0,127}$"
MAX_CANDIDATES = 500

ItemId = Annotated[str, StringConstraints(pattern=ITEM_ID_PATTERN)]
ListenerId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[!-~]+$")]


def _positive(value: Decimal) -> Decimal:
    if value == 0:
        raise PydanticCustomError("zero_price", "price must be above zero")
    return value


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise PydanticCustomError("duplicate_values", "list values must be unique")
    return values


Price = Annotated[Amount, AfterValidator(_positive)]
Surfaces = Annotated[
    list[PromotionSurface], Field(min_length=1, max_length=10), AfterValidator(_unique)
]
Markets = Annotated[list[CountryCode], Field(max_length=300), AfterValidator(_unique)]
Audiences = Annotated[list[Audience], Field(max_length=5), AfterValidator(_unique)]
ExposureCap = Annotated[int, Field(ge=1, le=100)]
AttributionDays = Annotated[int, Field(ge=1, le=90)]
ExclusionDays = Annotated[int, Field(ge=0, le=365)]


class PromotionCampaignCreate(Input):
    advertiser_id: Id | None = Field(
        default=None, description="Defaults to the caller's advertiser"
    )
    name: Name
    item_type: ItemType = ItemType.RELEASE
    item_id: ItemId = Field(description="The promoted release, track or artist id")
    artist_id: ItemId
    surfaces: Surfaces = [PromotionSurface.HOME_FEED]
    markets: Markets = Field(default_factory=list, description="Countries; empty means all")
    audiences: Audiences = Field(
        default_factory=list, description="Artist-listener segments; empty means all"
    )
    start_at: AwareDatetime
    end_at: AwareDatetime
    budget: Amount
    currency: Currency = "USD"
    price_model: PriceModel = PriceModel.CPM
    price: Price
    exposure_cap: ExposureCap = DEFAULT_EXPOSURE_CAP
    attribution_days: AttributionDays = DEFAULT_ATTRIBUTION_DAYS
    exclusion_days: ExclusionDays = DEFAULT_EXCLUSION_DAYS

    @model_validator(mode="after")
    def _flight(self) -> PromotionCampaignCreate:
        _require_order(self.start_at, self.end_at)
        return self


class PromotionCampaignUpdate(Input):
    name: Name | None = None
    surfaces: Surfaces | None = None
    markets: Markets | None = None
    audiences: Audiences | None = None
    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    budget: Amount | None = None
    price_model: PriceModel | None = None
    price: Price | None = None
    exposure_cap: ExposureCap | None = None
    attribution_days: AttributionDays | None = None
    exclusion_days: ExclusionDays | None = None

    @model_validator(mode="after")
    def _flight(self) -> PromotionCampaignUpdate:
        _require_order(self.start_at, self.end_at)
        return self


class PromotionCampaignRead(Output):
    id: int
    advertiser_id: int
    name: str
    item_type: ItemType
    item_id: str
    artist_id: str
    surfaces: list[PromotionSurface]
    markets: list[str]
    audiences: list[Audience]
    start_at: datetime
    end_at: datetime
    budget: MoneyOut
    currency: str
    price_model: PriceModel
    price: MoneyOut
    exposure_cap: int
    attribution_days: int
    exclusion_days: int
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime


# --- scores ------------------------------------------------------------------------


class Candidate(Input):
    item_id: ItemId


class ScoreRequest(Input):
    listener_id: ListenerId
    surface: PromotionSurface
    country: CountryCode
    candidates: Annotated[list[Candidate], Field(min_length=1, max_length=MAX_CANDIDATES)]
    explain: bool = False


class ScoredItem(BaseModel):
    item_id: str
    campaign_id: int
    score: float = Field(description="p_conversion × price per exposure × pacing multiplier")
    p_conversion: float


class ExcludedItem(BaseModel):
    item_id: str
    reason: str


class ScoreResponse(BaseModel):
    scores: list[ScoredItem]
    excluded: list[ExcludedItem] | None = None
    model_version: str | None = None

"""Request and response shapes of the management API (Pydantic), apart from the ORM.

Validation failures carry a machine-readable error ``type`` (``end_before_start``,
``negative_amount``, ``unknown_targeting_key``, ``missing_media`` …) which the API
turns into the problem's ``reason``.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlsplit

import pycountry
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backbeat.catalog.targeting import COUNTRY_CODES, validate_targeting
from backbeat.catalog.vocabulary import (
    MIME_TYPES,
    AuctionType,
    CapPeriod,
    Pacing,
    Position,
    Status,
    Surface,
    Tier,
)
from backbeat.errors import InvalidTargeting
from backbeat.types import format_money

MAX_AMOUNT = Decimal(10) ** 12
CURRENCIES = frozenset(currency.alpha_3 for currency in pycountry.currencies)


def _check_amount(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise PydanticCustomError("invalid_amount", "amount must be a finite number")
    if value < 0:
        raise PydanticCustomError("negative_amount", "amount must not be negative")
    if value >= MAX_AMOUNT:
        raise PydanticCustomError("amount_too_large", "amount must be below 10^12")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        raise PydanticCustomError("amount_too_precise", "amount has more than 6 decimal places")
    return value


def _check_currency(value: str) -> str:
    if value not in CURRENCIES:
        raise PydanticCustomError("unknown_currency", "currency must be an ISO 4217 code, e.g. USD")
    return value


# RFC 3986 characters only (no brackets: players and the VAST XSD's anyURI refuse them),
# and every % starts a valid escape.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not _URI_CHARS.fullmatch(value)
    ):
        raise PydanticCustomError(
            "invalid_url", "must be an absolute http(s) URL of RFC 3986 characters"
        )
    return value


def _check_targeting(value: Any) -> dict[str, list[Any]]:
    try:
        return validate_targeting(value)
    except InvalidTargeting as error:
        raise PydanticCustomError(error.reason.replace("-", "_"), error.detail) from None


Amount = Annotated[Decimal, AfterValidator(_check_amount)]
MoneyOut = Annotated[Decimal, PlainSerializer(format_money, return_type=str)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_check_currency)]
# Characters XML 1.0, JSON and PostgreSQL text all accept, minus controls: no NUL (PostgreSQL),
# no C0/C1 controls or DEL, no lone surrogates (not UTF-8), no U+FFFE/U+FFFF (not XML).
# Names go into VAST XML, so one bad character would break every answer that picks them.
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def check_text(value: str) -> str:
    """Refuse text that XML 1.0, JSON or PostgreSQL would refuse or mangle."""
    bad = _UNSAFE_TEXT.search(value)
    if bad is not None:
        raise PydanticCustomError(
            "invalid_characters",
            "text may not contain control characters, U+FFFE/U+FFFF or surrogates "
            "(found U+{code:04X} at {at})",
            {"code": ord(bad.group()), "at": bad.start()},
        )
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(check_text),
]
# A DNS name (letters, digits, hyphens; dots between labels), e.g. ``velo.example``.
_DOMAIN = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z"
)


def _check_domain(value: str) -> str:
    check_text(value)
    if not _DOMAIN.match(value):
        raise PydanticCustomError("invalid_domain", "domain must be a DNS name such as example.com")
    return value.lower()


Domain = Annotated[str, StringConstraints(max_length=253), AfterValidator(_check_domain)]


def _rfc3339(value: Any) -> Any:
    # JSON has no datetime type: only RFC 3339 text is a datetime (``0`` is not 1970). A
    # missing offset passes here so AwareDatetime names it (``timezone_aware``).
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise PydanticCustomError(
            "invalid_datetime", "must be an RFC 3339 date-time string, e.g. 2026-01-01T00:00:00Z"
        )
    return value


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})?\Z"
)
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
Url = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_check_url)]
Category = Annotated[str, StringConstraints(pattern=r"^IAB\d{1,2}(-\d{1,2})?$")]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]


def _check_country(value: str) -> str:
    if value not in COUNTRY_CODES:
        raise PydanticCustomError("unknown_country", "country must be an ISO 3166-1 alpha-2 code")
    return value


CountryCode = Annotated[str, AfterValidator(_check_country)]


_RESERVES = TypeAdapter(Annotated[dict[CountryCode, Amount], Field(max_length=300)])


def _amounts_as_text(reserves: Any) -> dict[str, str]:
    # Validated as amounts, kept as their exact text: a JSON column has no exact decimal type.
    return {
        country: str(amount)
        for country, amount in sorted(_RESERVES.validate_python(reserves).items())
    }


CountryReserves = Annotated[dict[str, str], BeforeValidator(_amounts_as_text)]


class Input(BaseModel):
    """Unknown fields are an error: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class FrequencyCap(BaseModel):
    """At most ``count`` ads per listener in each fixed UTC window of ``length`` × ``period``
    (e.g. 3 per 6 hours), or over the whole flight."""

    model_config = ConfigDict(extra="forbid")

    count: Annotated[int, Field(ge=1, le=100_000)]
    period: CapPeriod
    length: Annotated[int, Field(ge=1, le=1000)] = 1


Caps = Annotated[list[FrequencyCap], Field(max_length=5)]


def _require_order(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise PydanticCustomError("end_before_start", "end_at must be after start_at")


# --- advertisers -------------------------------------------------------------------


class AdvertiserCreate(Input):
    name: Name
    domain: Domain | None = None
    category: Category | None = None


class AdvertiserUpdate(Input):
    name: Name | None = None
    domain: Domain | None = None
    category: Category | None = None


class AdvertiserRead(Output):
    id: int
    name: str
    domain: str | None
    category: str | None
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime


# --- campaigns ---------------------------------------------------------------------


class CampaignCreate(Input):
    advertiser_id: Id | None = Field(
        default=None, description="Defaults to the caller's advertiser"
    )
    name: Name
    start_at: Instant
    end_at: Instant
    total_budget: Amount
    currency: Currency = "USD"
    frequency_caps: Caps = []

    @model_validator(mode="after")
    def _flight(self) -> CampaignCreate:
        _require_order(self.start_at, self.end_at)
        return self


class CampaignUpdate(Input):
    name: Name | None = None
    start_at: Instant | None = None
    end_at: Instant | None = None
    total_budget: Amount | None = None
    frequency_caps: Caps | None = None

    @model_validator(mode="after")
    def _flight(self) -> CampaignUpdate:
        _require_order(self.start_at, self.end_at)
        return self


class CampaignRead(Output):
    id: int
    advertiser_id: int
    name: str
    start_at: datetime
    end_at: datetime
    total_budget: MoneyOut
    currency: str
    frequency_caps: list[FrequencyCap]
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime


# --- line items --------------------------------------------------------------------


class LineItemFields(Input):
    """Fields shared by create and update; ``{}`` targets everyone, ``null`` is refused."""

    targeting: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _one_way_to_cap(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("frequency_cap") is not None
            and data.get("frequency_caps") is not None
        ):
            raise PydanticCustomError(
                "conflicting_caps", "give frequency_cap or frequency_caps, not both"
            )
        return data

    @field_validator("targeting", mode="before")
    @classmethod
    def _targeting(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError(
                "null_not_allowed", "targeting must be an object; {} targets everyone"
            )
        return _check_targeting(value)


class LineItemCreate(LineItemFields):
    campaign_id: Id
    name: Name
    tier: Tier
    cpm: Amount
    budget: Amount | None = None
    goal_impressions: Annotated[int, Field(ge=1, le=10**12)] | None = None
    daily_budget: Amount | None = None
    pacing: Pacing = Pacing.EVEN
    frequency_cap: FrequencyCap | None = Field(default=None, description="Shorthand for one cap")
    frequency_caps: Caps | None = None


class LineItemUpdate(LineItemFields):
    name: Name | None = None
    tier: Tier | None = None
    cpm: Amount | None = None
    budget: Amount | None = None
    goal_impressions: Annotated[int, Field(ge=1, le=10**12)] | None = None
    daily_budget: Amount | None = None
    pacing: Pacing | None = None
    frequency_cap: FrequencyCap | None = Field(default=None, description="Shorthand for one cap")
    frequency_caps: Caps | None = None


class LineItemRead(Output):
    id: int
    campaign_id: int
    advertiser_id: int
    name: str
    tier: Tier
    cpm: MoneyOut
    budget: MoneyOut | None
    goal_impressions: int | None
    daily_budget: MoneyOut | None
    pacing: Pacing
    frequency_cap: FrequencyCap | None
    frequency_caps: list[FrequencyCap]
    targeting: dict[str, Any]
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime


# --- creatives ---------------------------------------------------------------------


class CreativeFields(Input):
    @model_validator(mode="before")
    @classmethod
    def _media_present(cls, data: Any) -> Any:
        # "No media" is its own reason: a creative without audio cannot serve.
        if isinstance(data, dict) and "media_url" in data and not data["media_url"]:
            raise PydanticCustomError("missing_media", "a creative needs a media_url")
        return data


class CreativeCreate(CreativeFields):
    line_item_id: Id
    name: Name
    media_url: Url
    mime_type: Annotated[str, Field(json_schema_extra={"enum": sorted(MIME_TYPES)})] = "audio/mpeg"
    duration_ms: Annotated[int, Field(ge=1_000, le=600_000)]
    bitrate_kbps: Annotated[int, Field(ge=8, le=3_000)] | None = None
    click_url: Url | None = None
    categories: Annotated[list[Category], Field(max_length=20)] = []

    @model_validator(mode="before")
    @classmethod
    def _media_required(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("media_url"):
            raise PydanticCustomError("missing_media", "a creative needs a media_url")
        return data

    @field_validator("mime_type")
    @classmethod
    def _mime(cls, value: str) -> str:
        if value not in MIME_TYPES:
            raise PydanticCustomError("unsupported_mime_type", "mime_type must be an audio type")
        return value


class CreativeUpdate(CreativeFields):
    name: Name | None = None
    media_url: Url | None = None
    mime_type: str | None = None
    duration_ms: Annotated[int, Field(ge=1_000, le=600_000)] | None = None
    bitrate_kbps: Annotated[int, Field(ge=8, le=3_000)] | None = None
    click_url: Url | None = None
    categories: Annotated[list[Category], Field(max_length=20)] | None = None

    @field_validator("mime_type")
    @classmethod
    def _mime(cls, value: str | None) -> str | None:
        if value is not None and value not in MIME_TYPES:
            raise PydanticCustomError("unsupported_mime_type", "mime_type must be an audio type")
        return value


class CreativeRead(Output):
    id: int
    line_item_id: int
    advertiser_id: int
    name: str
    media_url: str
    mime_type: str
    duration_ms: int
    bitrate_kbps: int | None
    click_url: str | None
    categories: list[str]
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime


# --- ad slots ----------------------------------------------------------------------


class AdSlotCreate(Input):
    name: Name
    surface: Surface
    position: Position
    reserve_cpm: Amount = Decimal(0)
    currency: Currency = "USD"
    reserve_by_country: CountryReserves = Field(default_factory=dict)
    auction: AuctionType = AuctionType.SECOND_PRICE


class AdSlotUpdate(Input):
    name: Name | None = None
    surface: Surface | None = None
    position: Position | None = None
    reserve_cpm: Amount | None = None
    reserve_by_country: CountryReserves | None = None
    auction: AuctionType | None = None


class AdSlotRead(Output):
    id: int
    name: str
    surface: Surface
    position: Position
    reserve_cpm: MoneyOut
    currency: str
    reserve_by_country: dict[str, MoneyOut]
    auction: AuctionType
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime


# --- lists and keys ----------------------------------------------------------------

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int
    limit: int
    offset: int


class ApiKeyCreated(BaseModel):
    id: int
    advertiser_id: int | None = Field(description="None for an ad inserter (ssai) key")
    role: str = Field(description="advertiser or ssai")
    prefix: str
    key: str = Field(description="Shown once; only its hash is stored")

"""ORM models: promotion campaigns (booked like ads), precomputed scores, counted delivery."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import JSON, BigInteger, Date, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from backbeat.catalog.models import Versioned
from backbeat.db import Base
from backbeat.types import Money, UTCDateTime, utcnow

DEFAULT_EXPOSURE_CAP = 1
DEFAULT_ATTRIBUTION_DAYS = 14
DEFAULT_EXCLUSION_DAYS = 21


class PromotionCampaign(Versioned, Base):
    """A promoted artist, release or track: where, to whom, when, and at what price."""

    __tablename__ = "promotion_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advertiser_id: Mapped[int] = mapped_column(
        ForeignKey("advertisers.id"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    item_type: Mapped[str] = mapped_column(String(16), nullable=False)
    item_id: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    artist_id: Mapped[str] = mapped_column(String(128), nullable=False)
    surfaces: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    markets: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    audiences: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    budget: Mapped[Decimal] = mapped_column(Money, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    price_model: Mapped[str] = mapped_column(String(8), nullable=False)
    price: Mapped[Decimal] = mapped_column(Money, nullable=False)
    exposure_cap: Mapped[int] = mapped_column(Integer, nullable=False, default=DEFAULT_EXPOSURE_CAP)
    attribution_days: Mapped[int] = mapped_column(
        Integer, nullable=False, default=DEFAULT_ATTRIBUTION_DAYS
    )
    exclusion_days: Mapped[int] = mapped_column(
        Integer, nullable=False, default=DEFAULT_EXCLUSION_DAYS
    )


class PromotionScore(Base):
    """A precomputed p(conversion) of one listener for one promoted item (the batch job's store)."""

    __tablename__ = "promotion_scores"

    listener_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    p_conversion: Mapped[float] = mapped_column(Float, nullable=False)
    model_version: Mapped[str] = mapped_column(String(64), nullable=False)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class _DeliveryCounts:
    exposures: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    reach: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    clicks: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    conversions_new: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    conversions_reactivated: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    conversions_amplified: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    spend: Mapped[Decimal] = mapped_column(Money(scale=9), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)


class PromotionDeliveryDaily(_DeliveryCounts, Base):
    """Counted promotion delivery of one campaign in one UTC day (reach: distinct that day)."""

    __tablename__ = "promotion_delivery_daily"

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class PromotionDeliveryTotal(_DeliveryCounts, Base):
    """Flight-to-date totals of one campaign; reach is distinct listeners over the whole flight."""

    __tablename__ = "promotion_delivery_totals"

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)

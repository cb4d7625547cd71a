"""Report tables written by the counting jobs and read by the reports API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from backbeat.db import Base
from backbeat.types import Money, UTCDateTime


class DeliveryHourly(Base):
    """Client-confirmed delivery of one line item in one UTC hour (de-duplicated by decision)."""

    __tablename__ = "delivery_hourly"

    line_item_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    impressions: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    starts: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    first_quartiles: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    midpoints: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    third_quartiles: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    completes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    clicks: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    spend: Mapped[Decimal] = mapped_column(Money(scale=9), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)


class RejectedHourly(Base):
    """Tracking hits refused (forged, expired, malformed), by reason; never counted as delivery."""

    __tablename__ = "rejected_hourly"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class ListenerFrequency(Base):
    """Counted impressions of one line item to one listener (by a hash of the listener id).

    Written in the same transaction as the hourly counts, once per newly counted
    impression, so the frequency distribution is exactly-once like the delivery it
    describes. Only a 64-bit hash of the listener id is stored.
    """

    __tablename__ = "listener_frequency"

    line_item_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    listener_hash: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    impressions: Mapped[int] = mapped_column(BigInteger, nullable=False)

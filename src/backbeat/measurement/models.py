"""Measurement tables: download reports per UTC day, and the state of incremental delivery counting."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backbeat.db import Base
from backbeat.types import UTCDateTime


class DownloadDaily(Base):
    """IAB downloads of one episode on one UTC day (per app, or ``""`` when not split by app)."""

    __tablename__ = "download_daily"

    date: Mapped[date] = mapped_column(Date, primary_key=True)
    episode_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    app: Mapped[str] = mapped_column(String(200), primary_key=True, default="")
    show_id: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    downloads: Mapped[int] = mapped_column(BigInteger, nullable=False)


class AdDeliveryDaily(Base):
    """Dynamically inserted ads delivered in full within counted downloads, per UTC day."""

    __tablename__ = "ad_delivery_daily"

    date: Mapped[date] = mapped_column(Date, primary_key=True)
    episode_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    ad_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    delivered: Mapped[int] = mapped_column(BigInteger, nullable=False)


class DownloadRun(Base):
    """One download count written to the report tables: what it read and what it left out.

    The daily tables hold only counted downloads; the lines a run excluded (by IAB rule:
    bots, pre-fetch, too few bytes, ...) and rejected (unparseable) are kept here by reason,
    so the dashboard can show why requests did not count.
    """

    __tablename__ = "download_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    first_day: Mapped[date | None] = mapped_column(Date)
    last_day: Mapped[date | None] = mapped_column(Date)
    lines: Mapped[int] = mapped_column(BigInteger, nullable=False)
    counted: Mapped[int] = mapped_column(BigInteger, nullable=False)
    excluded: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    rejected: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class CountingState(Base):
    """Where an incremental counting job stands, committed with the counts it produced.

    ``positions`` is the JSON of every source position already consumed (event-log segment
    offsets, or Kafka ``topic:partition`` next offsets); the totals are cumulative so a
    run reports the same numbers however the work was split into runs.
    """

    __tablename__ = "counting_state"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    positions: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    events_read: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rejected: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    bad_records: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    torn_tails: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    damaged_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    watermark: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    runs: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class CountedEvent(Base):
    """De-duplication state: the copy of (decision, event type) that was counted.

    Kept only while a tracking URL for the decision can still be valid (``expires``, in
    event time); after that a genuine copy can no longer arrive.
    """

    __tablename__ = "counted_event"

    decision_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, nullable=False)
    line_item_id: Mapped[int] = mapped_column(Integer, nullable=False)
    campaign_id: Mapped[int] = mapped_column(Integer, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    price_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires: Mapped[float] = mapped_column(Float, nullable=False, index=True)


class RejectedRecord(Base):
    """A record the counting job set aside (undecodable or invalid), kept for inspection."""

    __tablename__ = "rejected_record"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[str] = mapped_column(String(200), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    excerpt: Mapped[str] = mapped_column(Text, nullable=False)


class EventLogDamage(Base):
    """A damaged region found in the middle of a segment; counting goes past it once accepted."""

    __tablename__ = "eventlog_damage"

    segment: Mapped[str] = mapped_column(String(200), primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    length: Mapped[int] = mapped_column(BigInteger, nullable=False)

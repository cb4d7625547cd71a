"""ORM models of what is booked: advertisers, campaigns, line items, creatives, ad slots."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from backbeat.catalog.vocabulary import Pacing, Status
from backbeat.db import Base
from backbeat.types import Money, UTCDateTime, utcnow


class Versioned:
    """Optimistic concurrency: every UPDATE checks and bumps ``version`` (a stale write fails)."""

    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=Status.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


class Advertiser(Versioned, Base):
    __tablename__ = "advertisers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    domain: Mapped[str | None] = mapped_column(String(253))
    category: Mapped[str | None] = mapped_column(String(64))

    campaigns: Mapped[list[Campaign]] = relationship(back_populates="advertiser")


class ApiKey(Base):
    """An API key; only its SHA-256 digest is stored.

    ``role`` is ``advertiser`` (tied to ``advertiser_id``) or ``ssai``: a server-side ad
    inserter, the one caller whose ``X-Device-IP``/``X-Device-User-Agent`` are believed.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advertiser_id: Mapped[int | None] = mapped_column(
        ForeignKey("advertisers.id"), nullable=True, index=True
    )
    role: Mapped[str] = mapped_column(
        String(16), nullable=False, default="advertiser", server_default="advertiser"
    )
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UiSessionRevocation(Base):
    """A dashboard session ended by sign-out: its cookie is refused until it would expire.

    Sessions are signed cookies (no server-side store), so sign-out alone could only ask
    the browser to forget the cookie; a copied cookie is refused by this row instead.
    Rows past ``expires_at`` are purged on the next sign-out.
    """

    __tablename__ = "ui_session_revocations"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class Campaign(Versioned, Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advertiser_id: Mapped[int] = mapped_column(
        ForeignKey("advertisers.id"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    total_budget: Mapped[Decimal] = mapped_column(Money, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    frequency_caps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)

    advertiser: Mapped[Advertiser] = relationship(back_populates="campaigns")
    line_items: Mapped[list[LineItem]] = relationship(back_populates="campaign")


class LineItem(Versioned, Base):
    """A sub-campaign: what to buy (tier, price, goal, budget, pacing, cap, targeting)."""

    __tablename__ = "line_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    advertiser_id: Mapped[int] = mapped_column(
        ForeignKey("advertisers.id"), nullable=False, index=True
    )
    tier: Mapped[str] = mapped_column(String(16), nullable=False)
    cpm: Mapped[Decimal] = mapped_column(Money, nullable=False)
    budget: Mapped[Decimal | None] = mapped_column(Money)
    goal_impressions: Mapped[int | None] = mapped_column(BigInteger)
    pacing: Mapped[str] = mapped_column(String(8), nullable=False, default=Pacing.EVEN)
    daily_budget: Mapped[Decimal | None] = mapped_column(Money)
    frequency_caps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    targeting: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)

    @property
    def frequency_cap(self) -> dict[str, Any] | None:
        """The first cap: shorthand for line items with one cap."""
        return self.frequency_caps[0] if self.frequency_caps else None

    @frequency_cap.setter
    def frequency_cap(self, cap: dict[str, Any] | None) -> None:
        self.frequency_caps = [] if cap is None else [cap]

    campaign: Mapped[Campaign] = relationship(back_populates="line_items")
    creatives: Mapped[list[Creative]] = relationship(back_populates="line_item")


class Creative(Versioned, Base):
    """An audio ad: the file a player fetches and where a click goes."""

    __tablename__ = "creatives"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    line_item_id: Mapped[int] = mapped_column(
        ForeignKey("line_items.id"), nullable=False, index=True
    )
    advertiser_id: Mapped[int] = mapped_column(
        ForeignKey("advertisers.id"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    media_url: Mapped[str] = mapped_column(Text, nullable=False)
    mime_type: Mapped[str] = mapped_column(String(32), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    bitrate_kbps: Mapped[int | None] = mapped_column(Integer)
    click_url: Mapped[str | None] = mapped_column(Text)
    categories: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)

    line_item: Mapped[LineItem] = relationship(back_populates="creatives")


class AdSlot(Versioned, Base):
    """Inventory: a place where ads run, with the lowest CPM it accepts."""

    __tablename__ = "ad_slots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    surface: Mapped[str] = mapped_column(String(16), nullable=False)
    position: Mapped[str] = mapped_column(String(16), nullable=False)
    reserve_cpm: Mapped[Decimal] = mapped_column(Money, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    reserve_by_country: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False, default=dict)
    auction: Mapped[str] = mapped_column(String(16), nullable=False, default="second_price")


class CatalogState(Base):
    """One row whose ``version`` grows on every catalog write; servers poll it to refresh."""

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

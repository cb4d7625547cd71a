"""Report tables the download pipeline writes: downloads and delivered DAI ads per UTC day."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, String
from sqlalchemy.orm import Mapped, mapped_column

from backbeat.db import Base


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

"""Promotion campaigns as a catalog resource: the same create/read/list/update/status rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backbeat.catalog.service import ADVERTISERS, Resource
from backbeat.db import Base
from backbeat.errors import InvalidInput
from backbeat.promotion.models import PromotionCampaign


def _check_flight(values: dict[str, Any], existing: Base | None) -> None:
    # A PATCH may move one end only: check it against the stored other end.
    start = values.get("start_at", getattr(existing, "start_at", None))
    end = values.get("end_at", getattr(existing, "end_at", None))
    if isinstance(start, datetime) and isinstance(end, datetime) and end <= start:
        raise InvalidInput("end_at must be after start_at", reason="end-before-start")


# List filters as the other catalog lists have them (``?advertiser_id=``), where the catalog
# layer supports declaring them.
_FILTERS = {"filters": ("advertiser_id",)} if "filters" in Resource.__dataclass_fields__ else {}

PROMOTION_CAMPAIGNS = Resource(
    "promotion_campaign",
    PromotionCampaign,
    "advertiser_id",
    ADVERTISERS,
    check=_check_flight,
    **_FILTERS,  # type: ignore[arg-type]
)

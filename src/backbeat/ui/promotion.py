"""Promotion campaigns on the dashboard: reach, clicks, conversions by type, cost per conversion.

Read through ``promotion.service``'s resource (same isolation as the API) and
``promotion.reporting.promotion_report`` (the function behind ``GET /v1/reports/promotion``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from backbeat.catalog.auth import Principal
from backbeat.catalog.service import get_object
from backbeat.promotion.reporting import promotion_report
from backbeat.promotion.service import PROMOTION_CAMPAIGNS
from backbeat.ui.views import first_page


def _report(session: Session, campaign: Any) -> dict[str, Any]:
    return promotion_report(
        session=session,
        campaign_id=campaign.id,
        start=campaign.start_at.date(),
        end=(campaign.end_at + timedelta(days=1)).date(),
    )


def promotion_overview(session: Session, principal: Principal) -> list[dict[str, Any]]:
    campaigns = first_page(session, principal, PROMOTION_CAMPAIGNS)
    return [{"campaign": c, "totals": _report(session, c)["totals"]} for c in campaigns]


def promotion_campaign(session: Session, principal: Principal, campaign_id: int) -> dict[str, Any]:
    campaign = get_object(
        session=session, resource=PROMOTION_CAMPAIGNS, object_id=campaign_id, principal=principal
    )
    report = _report(session, campaign)
    days = report["days"]
    chart = {
        "labels": [day["day"].isoformat() for day in days],
        "series": {
            "Exposures": [day["exposures"] for day in days],
            "Clicks": [day["clicks"] for day in days],
            "Conversions": [day["conversions"] for day in days],
        },
    }
    return {"campaign": campaign, "totals": report["totals"], "days": days, "chart": chart}

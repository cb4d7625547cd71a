"""The dashboard's window on forecasting: a live forecast while booking, and forecast vs actual.

Both ask the forecaster the app keeps built in the background (the one behind
``POST /v1/forecasts``), with a draft validated by the API's ``ForecastDraft``; an
advertiser sees contention only as a total, as through the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from backbeat.api.problems import validation_problem
from backbeat.api.routes.forecasts import current_forecaster
from backbeat.catalog.auth import Principal
from backbeat.catalog.models import Campaign, LineItem
from backbeat.errors import BackbeatError, InvalidInput
from backbeat.forecast.schemas import ForecastDraft

FIGURES = ("matched", "possible", "available", "reach")


def available(request: Request | None = None) -> bool:
    """Whether this app runs a forecaster (built or still building)."""
    if request is None:
        return True
    return getattr(request.app.state, "forecasts", None) is not None


def _window(
    campaign: Campaign, now: datetime, horizon_end: float | None
) -> tuple[datetime, datetime]:
    """What is left of the flight, within the forecaster's horizon."""
    start = max(campaign.start_at, now)
    end = campaign.end_at
    if horizon_end is not None:
        end = min(end, datetime.fromtimestamp(horizon_end, UTC))
    return start, end


def forecast_draft(
    request: Request,
    principal: Principal,
    campaign: Campaign,
    now: datetime,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """Forecast a draft line item over the rest of its campaign's flight (JSON-ready)."""
    forecaster = current_forecaster(request)  # 503 forecast-unavailable until first build
    projection = getattr(forecaster, "projection", None)
    start, end = _window(campaign, now, getattr(projection, "end", None))
    if end <= start:
        raise InvalidInput(
            "nothing left of the flight within the forecast horizon", reason="flight-in-past"
        )
    body = {**fields, "start_at": start.isoformat(), "end_at": end.isoformat()}
    try:
        draft = ForecastDraft.model_validate(body)
    except ValidationError as error:
        found = validation_problem(list(error.errors()), "", skip_loc=0)
        raise InvalidInput(found["detail"], reason=found["reason"]) from None
    result = forecaster.forecast(draft.to_query(), advertiser_id=principal.advertiser_id).to_dict()
    answer: dict[str, Any] = {name: round(result[name]["value"]) for name in FIGURES}
    answer["interval"] = {name: [result[name]["low"], result[name]["high"]] for name in FIGURES}
    answer["start_at"], answer["end_at"] = start.isoformat(), end.isoformat()
    if result.get("note"):
        answer["note"] = result["note"]
    return answer


def forecast_vs_actual(
    request: Request,
    principal: Principal,
    item: LineItem,
    campaign: Campaign,
    delivered: int,
    now: datetime,
) -> dict[str, Any] | None:
    """Delivered so far, plus what the forecaster expects for the rest of the flight.

    No forecast is stored at booking time, so the comparison is: the goal, what was
    delivered, the forecast of what is still available to this line item, and the
    projected total (delivered + min(available, what is left of the goal)).
    """
    if not available(request) or now >= campaign.end_at:
        return None
    fields = {
        "tier": item.tier,
        "cpm": str(item.cpm),
        "targeting": item.targeting,
        "frequency_caps": item.frequency_caps,
    }
    try:
        rest = forecast_draft(request, principal, campaign, now, fields)
    except BackbeatError as error:
        return {"error": error.detail}
    goal = item.goal_impressions
    remaining = max(goal - delivered, 0) if goal else None
    expected = rest["available"] if remaining is None else min(rest["available"], remaining)
    return {
        "goal": goal,
        "delivered": delivered,
        "forecast_available": rest["available"],
        "forecast_matched": rest["matched"],
        "projected_total": delivered + expected,
        "projected_share": (delivered + expected) / goal if goal else None,
        "window": f"{rest['start_at'][:16]} → {rest['end_at'][:16]} UTC",
        "note": rest.get("note"),
    }

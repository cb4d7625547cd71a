"""Forecasts of draft line items: one (``POST /v1/forecasts``) or up to 1,000 at once (``/bulk``).

Any key may forecast. An advertiser key sees contention only as a total (never another
advertiser's line items). The answer comes from the forecaster the app keeps built in the
background; until its first build a forecast is ``503 forecast-unavailable``; with no
supply history yet, figures are zeros with a ``note``.
"""

# No ``from __future__ import annotations``: FastAPI must see the real schema classes.

import threading
import time
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from backbeat.api.deps import PrincipalDep
from backbeat.api.problems import problem, validation_problem
from backbeat.errors import InvalidInput
from backbeat.forecast.metrics import FORECAST_LATENCY
from backbeat.forecast.refresh import ForecastHolder
from backbeat.forecast.schemas import (
    BulkError,
    BulkForecastOut,
    BulkForecastRequest,
    ForecastDraft,
    ForecastOut,
)
from backbeat.forecast.service import Forecaster, ForecastUnavailable

router = APIRouter(prefix="/v1/forecasts", tags=["forecasts"])


def current_forecaster(request: Request) -> Forecaster:
    holder: ForecastHolder | None = getattr(request.app.state, "forecasts", None)
    if holder is None:
        raise ForecastUnavailable("forecasting is not running in this process")
    return holder.current


def _answer(
    forecaster: Forecaster, draft: ForecastDraft, advertiser_id: int | None, *, bulk: bool = False
) -> dict:
    started = time.perf_counter()
    result = forecaster.forecast(draft.to_query(), advertiser_id=advertiser_id, bulk=bulk)
    FORECAST_LATENCY.observe(time.perf_counter() - started)
    return result.to_dict()


@router.post("", response_model=ForecastOut)
def create_forecast(body: ForecastDraft, request: Request, principal: PrincipalDep) -> Any:
    """Matched, possible and available impressions, reach, clicks and conversions of a draft."""
    return _answer(current_forecaster(request), body, principal.advertiser_id)


D = TypeVar("D", bound=BaseModel)


def parse_drafts(raws: list[Any], model: type[D]) -> tuple[list[D | None], list[BulkError]]:
    """Each raw draft validated alone: the drafts (None where invalid) and every error."""
    drafts: list[D | None] = []
    errors: list[BulkError] = []
    for index, raw in enumerate(raws):
        try:
            drafts.append(model.model_validate(raw))
        except ValidationError as error:
            found = validation_problem(list(error.errors()), "", skip_loc=0)
            errors.append(BulkError(index=index, reason=found["reason"], detail=found["detail"]))
            drafts.append(None)
    return drafts, errors


def invalid_drafts(errors: list[BulkError], request: Request) -> JSONResponse:
    """One 422 problem listing every bad draft with its index and reason; nothing answered."""
    errors.sort(key=lambda error: error.index)
    first = errors[0]
    return problem(
        422,
        "Invalid drafts",
        "invalid-drafts",
        f"{len(errors)} invalid draft(s); first: #{first.index} {first.detail}",
        request.url.path,
        errors=[error.model_dump() for error in errors],
    )


@router.post(
    "/bulk",
    response_model=BulkForecastOut,
    responses={422: {"description": "Invalid drafts, each with its index and reason"}},
)
def create_forecasts(body: BulkForecastRequest, request: Request, principal: PrincipalDep) -> Any:
    """Up to 1,000 drafts; every invalid one is reported (422) unless ``skip_invalid``.

    Answers come from the forecaster's bulk subsample (faster; intervals account for it).
    """
    drafts, errors = parse_drafts(body.drafts, ForecastDraft)
    if errors and not body.skip_invalid:  # shape errors first: no forecaster needed
        return invalid_drafts(errors, request)
    forecaster = current_forecaster(request)
    for index, draft in enumerate(drafts):
        if draft is None:
            continue
        try:
            forecaster.check(draft.to_query())
        except InvalidInput as error:  # e.g. a flight beyond the horizon
            errors.append(BulkError(index=index, reason=error.reason, detail=error.detail))
            drafts[index] = None
    errors.sort(key=lambda error: error.index)
    if errors and not body.skip_invalid:
        return invalid_drafts(errors, request)
    return {
        "forecasts": answer_many(forecaster, drafts, principal.advertiser_id),
        "errors": [error.model_dump() for error in errors],
    }


def answer_many(
    forecaster: Forecaster, drafts: list[ForecastDraft | None], advertiser_id: int | None
) -> list[dict | None]:
    """The valid drafts answered in one batch (``forecast_many``: a few passes over the
    bulk subsample per batch rather than ~40 per draft), each at its draft's index."""
    valid = [index for index, draft in enumerate(drafts) if draft is not None]
    started = time.perf_counter()
    results = forecaster.forecast_many(
        [drafts[index].to_query() for index in valid],  # type: ignore[union-attr]
        advertiser_id=advertiser_id,
    )
    if valid:  # the latency of one draft, as the single-draft route observes it
        FORECAST_LATENCY.observe((time.perf_counter() - started) / len(valid))
    answers: list[dict | None] = [None] * len(drafts)
    for index, result in zip(valid, results, strict=True):
        answers[index] = result.to_dict()
    return answers


def start_forecasting(app: Any, services: Any, clock: Any, stop: threading.Event) -> ForecastHolder:
    """Keep a forecaster built in a background thread: at start, when the served book
    changes (the ad server's snapshot version: no extra query) and every
    ``forecast_refresh_seconds``. Requests only read ``app.state.forecasts``."""
    settings = services.settings

    def version() -> object:
        return services.ad_server.snapshot.version

    def delivered() -> dict[int, int]:
        from backbeat.reporting.service import delivered_so_far

        with services.sessions() as session:
            return {
                item: impressions for item, (_, impressions) in delivered_so_far(session)[0].items()
            }

    def build() -> Forecaster:
        now = clock()
        line_items = services.ad_server.snapshot.line_items
        return Forecaster.build(
            settings.resolved_event_log_dir,
            line_items,
            now=now,
            history_days=settings.forecast_history_days,
            delivered=delivered(),
        )

    def rebook(current: Forecaster) -> Forecaster:
        return current.rebook(services.ad_server.snapshot.line_items, delivered=delivered())

    holder = ForecastHolder(
        build=build,
        rebook=rebook,
        version=version,
        max_age_seconds=settings.forecast_refresh_seconds,
        poll_seconds=max(settings.catalog_poll_seconds, 0.2),
    )
    app.state.forecasts = holder
    threading.Thread(target=holder.run, args=(stop,), name="forecaster", daemon=True).start()
    return holder

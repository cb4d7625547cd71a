"""Dashboard pages under ``/ui/``: sign-in, overview, campaigns, line items, booking, podcasts.

Pages are rendered on the server (Jinja2, autoescaped); charts are drawn by the vendored
Chart.js from data in ``<script type="application/json">`` blocks. Every form post carries
a CSRF token bound to the session. Reads and writes go through ``catalog.service`` and
``reporting.service`` under the signed-in principal, like the API.
"""

from __future__ import annotations

import csv
import functools
import io
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel
from sqlalchemy import select

from backbeat.api.deps import ServicesDep, SessionDep
from backbeat.catalog import schemas
from backbeat.catalog.auth import ROLE_ADVERTISER, authenticate, hash_key
from backbeat.catalog.models import ApiKey, Campaign, LineItem
from backbeat.catalog.service import (
    CAMPAIGNS,
    CREATIVES,
    LINE_ITEMS,
    Resource,
    create_object,
    get_object,
    set_status,
    update_object,
)
from backbeat.catalog.vocabulary import MIME_TYPES, CapPeriod, Pacing, Status, Tier
from backbeat.errors import BackbeatError, InvalidInput, NotFound, PermissionDenied
from backbeat.observability import log
from backbeat.reporting.frequency import frequency_distribution
from backbeat.types import format_money
from backbeat.ui import forecasting, forms
from backbeat.ui.context import (
    LoginRequired,
    Viewer,
    codec,
    context,
    revoke_session,
    services_of,
    viewer,
)
from backbeat.ui.session import COOKIE, LIFETIME_SECONDS, LOGIN_COOKIE
from backbeat.ui.views import (
    PacingView,
    advertiser_names,
    campaign_items,
    campaign_lines,
    campaign_view,
    default_granularity,
    delivery_series,
    first_page,
    flight_range,
    get_campaign,
    get_line_item,
    item_creatives,
    overview,
)

HERE = Path(__file__).parent
environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["money"] = format_money
templates = Jinja2Templates(env=environment)
router = APIRouter(prefix="/ui", include_in_schema=False)
ACTIONS = {"pause": Status.PAUSED, "activate": Status.ACTIVE}
GRANULARITIES = ("hour", "day")


# --- plumbing ------------------------------------------------------------------------


async def form_data(request: Request) -> dict[str, str]:
    """An urlencoded form body (the only kind these pages post), size-limited."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidInput("forms are posted urlencoded", reason="unsupported-media-type")
    body = await request.body()
    if len(body) > forms.MAX_FORM_BYTES:
        raise InvalidInput("form is too large", reason="form-too-large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("form is not valid urlencoded UTF-8", reason="invalid-form") from None
    return dict(pairs)


FormDep = Annotated[dict[str, str], Depends(form_data)]


def render(
    request: Request, name: str, values: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, values, status_code=status_code)


def error_page(request: Request, error: BackbeatError) -> HTMLResponse:
    status = 404 if isinstance(error, NotFound) else error.status
    return render(
        request,
        "error.html",
        {"status": status, "title": error.title, "detail": error.detail, "reason": error.reason},
        status_code=status,
    )


def page(handler: Callable[..., Response]) -> Callable[..., Response]:
    """No session: redirect to sign-in; a refusal (404, 403, 422 …) as an HTML page."""

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Response:
        request: Request = kwargs["request"]
        try:
            return handler(*args, **kwargs)
        except LoginRequired:
            if request.method == "GET":
                return RedirectResponse("/ui/login", status_code=303)
            return render(
                request,
                "error.html",
                {
                    "status": 401,
                    "title": "Signed out",
                    "detail": "sign in again",
                    "reason": "login-required",
                },
                status_code=401,
            )
        except BackbeatError as error:
            return error_page(request, error)

    return wrapped


def posted(request: Request, services: Any, db: Any, form: dict[str, str]) -> Viewer:
    """The viewer of a form post whose CSRF token matches its session."""
    view = viewer(request, services, db)
    if not codec(request).csrf_ok(view.ui, form.get("csrf")):
        raise PermissionDenied("the form is stale or forged; reload the page", reason="csrf")
    return view


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=LIFETIME_SECONDS,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def _commit(view: Viewer) -> None:
    view.db.commit()
    view.services.ad_server.poke()


# --- sign-in -------------------------------------------------------------------------


def _login_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(18)
    response = render(
        request, "login.html", {"login_csrf": token, "error": error}, status_code=status_code
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
def login(request: Request, services: ServicesDep, db: SessionDep, form: FormDep) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    given = form.get("csrf", "")
    if not expected or not secrets.compare_digest(expected.encode(), given.encode()):
        return _login_page(request, "The sign-in form expired; try again.", 403)
    key = form.get("api_key", "").strip()
    try:
        principal = authenticate(session=db, key=key, admin_key=services.settings.admin_key)
    except BackbeatError as error:
        log.info("dashboard sign-in refused", reason=error.reason)  # never the key
        return _login_page(request, "Unknown or revoked API key.", 401)
    key_id = None
    if not principal.is_admin:
        if principal.role != ROLE_ADVERTISER or principal.advertiser_id is None:
            log.info("dashboard sign-in refused", reason="not-a-dashboard-key")
            return _login_page(request, "This key cannot sign in to the dashboard.", 403)
        key_id = db.execute(select(ApiKey.id).where(ApiKey.key_hash == hash_key(key))).scalar_one()
    ui = codec(request).new(
        admin=principal.is_admin,
        advertiser_id=principal.advertiser_id,
        key_id=key_id,
        admin_key=services.settings.admin_key,
        now=time.time(),
    )
    log.info("dashboard sign-in", advertiser_id=principal.advertiser_id)
    response = see_other("/ui/")
    set_session_cookie(response, request, codec(request).encode(ui))
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
@page
def logout(request: Request, services: ServicesDep, db: SessionDep, form: FormDep) -> Response:
    view = posted(request, services, db, form)
    revoke_session(db, view.ui, time.time())
    log.info("dashboard sign-out", advertiser_id=view.ui.advertiser_id)
    response = see_other("/ui/login")
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.post("/switch")
@page
def switch(request: Request, services: ServicesDep, db: SessionDep, form: FormDep) -> Response:
    """The admin narrows every page to one advertiser (or back to all)."""
    view = posted(request, services, db, form)
    view.real.require_admin()
    raw = form.get("advertiser_id", "").strip()
    target = int(raw) if raw.isdigit() and 0 < int(raw) < 2**31 else None
    if target is not None and target not in advertiser_names(db, view.real):
        raise NotFound(f"advertiser {target} not found", reason="advertiser-not-found")
    response = see_other("/ui/")
    set_session_cookie(
        response, request, codec(request).encode(codec(request).viewing(view.ui, target))
    )
    return response


# --- overview ------------------------------------------------------------------------


def _supply(view: Viewer) -> list[dict[str, Any]]:
    """No-fill reasons per slot from the decision log (admin: slots are the publisher's)."""
    from backbeat.catalog.service import SLOTS

    tally = supply_tally(view.request)
    if tally is None:
        return []
    slots = first_page(view.db, view.real, SLOTS)
    by_slot, complete = tally.by_slot()
    return [{"slot": slot, "supply": by_slot.get(slot.id), "complete": complete} for slot in slots]


def supply_tally(request: Request) -> Any:
    from backbeat.ui.supply import NoFillTally

    state = request.app.state
    tally = getattr(state, "ui_supply", None)
    if tally is None:
        directory = services_of(request).settings.resolved_event_log_dir
        tally = state.ui_supply = NoFillTally(Path(directory))
    return tally


@router.get("/")
@page
def home(request: Request, services: ServicesDep, db: SessionDep) -> Response:
    view = viewer(request, services, db)
    pacing = PacingView(services.ad_server)
    campaigns = overview(db, view.principal, pacing, view.now)
    supply = _supply(view) if view.principal.is_admin else []
    names = advertiser_names(db, view.real) if view.is_admin else {}
    return render(
        request,
        "overview.html",
        context(view, campaigns=campaigns, supply=supply, advertisers=names),
    )


# --- campaigns -----------------------------------------------------------------------


def _granularity(request: Request, default: str) -> str:
    value = request.query_params.get("granularity", default)
    return value if value in GRANULARITIES else default


@router.get("/campaigns/new")
@page
def new_campaign(request: Request, services: ServicesDep, db: SessionDep) -> Response:
    view = viewer(request, services, db)
    return _campaign_form(view, None, {}, forms.FormErrors())


def _campaign_form(
    view: Viewer,
    campaign: Campaign | None,
    values: dict[str, Any],
    errors: forms.FormErrors,
    status_code: int = 200,
) -> Response:
    names = advertiser_names(view.db, view.principal) if view.principal.is_admin else {}
    return render(
        view.request,
        "campaign_form.html",
        context(
            view,
            campaign=campaign,
            values=values,
            errors=errors.fields,
            advertisers=names,
            periods=[p.value for p in CapPeriod],
        ),
        status_code=status_code,
    )


def _write(
    view: Viewer,
    errors: forms.FormErrors,
    schema: type[BaseModel],
    body: dict[str, Any],
    action: Callable[[dict[str, Any]], Any],
    *,
    exclude_unset: bool = False,
) -> Any:
    """Validate with the API's schema and write with the API's service; None on refusal."""
    if errors:
        return None
    model = forms.validate(schema, body, errors)
    if model is None:
        return None
    values = (
        model.model_dump(exclude_unset=True)
        if exclude_unset
        else model.model_dump(exclude_none=True)
    )
    try:
        obj = action(values)
        _commit(view)
    except BackbeatError as error:  # invalid, a parent not found, a conflict, a stale version
        view.db.rollback()
        forms.record_error(error, errors)
        return None
    return obj


def _create(
    view: Viewer,
    errors: forms.FormErrors,
    schema: type[BaseModel],
    body: dict[str, Any],
    resource: Resource,
) -> Any:
    """Create one catalog object from a form as ``POST`` on the API would; None on refusal."""
    return _write(
        view,
        errors,
        schema,
        body,
        lambda values: create_object(
            session=view.db, resource=resource, values=values, principal=view.real
        ),
    )


def _update(
    view: Viewer,
    errors: forms.FormErrors,
    schema: type[BaseModel],
    body: dict[str, Any],
    resource: Resource,
    object_id: int,
    form: dict[str, str],
) -> Any:
    """``PATCH`` one catalog object from a form, at the version the form was drawn from."""
    return _write(
        view,
        errors,
        schema,
        body,
        lambda values: update_object(
            session=view.db,
            resource=resource,
            object_id=object_id,
            changes=values,
            principal=view.real,
            expected_version=_version(form),
        ),
        exclude_unset=True,
    )


@router.post("/campaigns/new")
@page
def create_campaign(
    request: Request, services: ServicesDep, db: SessionDep, form: FormDep
) -> Response:
    view = posted(request, services, db, form)
    errors = forms.FormErrors()
    body = forms.campaign_body(form, create=True)
    if view.is_admin and view.ui.viewing and "advertiser_id" not in body:
        body["advertiser_id"] = view.ui.viewing  # the advertiser the admin is looking at
    campaign = _create(view, errors, schemas.CampaignCreate, body, CAMPAIGNS)
    if campaign is None:
        return _campaign_form(view, None, form, errors, 422)
    return see_other(f"/ui/campaigns/{campaign.id}")


@router.get("/campaigns/{campaign_id}")
@page
def campaign_page(
    campaign_id: int, request: Request, services: ServicesDep, db: SessionDep
) -> Response:
    view = viewer(request, services, db)
    campaign = get_campaign(db, view.principal, campaign_id)
    start, end = flight_range(campaign, view.now)
    granularity = _granularity(request, default_granularity(start, end))
    lines = campaign_lines(db, campaign, view.now, granularity)
    items = campaign_items(db, view.principal, campaign.id)
    names = advertiser_names(db, view.principal)
    pacing = PacingView(services.ad_server)
    summary = campaign_view(
        db, campaign, items, names, pacing, view.now, granularity=granularity, lines=lines
    )
    goal = sum((row.goal or 0) for row in summary.line_items) or None
    series, rows = delivery_series(
        lines,
        line_item_ids=[item.id for item in items],
        campaign=campaign,
        now=view.now,
        granularity=granularity,
        goal=goal,
        pacing=pacing,
        session=db,
    )
    from backbeat.ui.views import Totals

    totals = Totals()
    for line in lines:
        totals.add(line)
    return render(
        request,
        "campaign.html",
        context(
            view,
            campaign=campaign,
            summary=summary,
            granularity=granularity,
            series=series.as_json(),
            rows=rows,
            totals=totals,
            funnel={
                "labels": [n for n, _ in totals.funnel()],
                "series": {"Listeners": [v for _, v in totals.funnel()]},
            },
            csv_url=f"/ui/campaigns/{campaign.id}/delivery.csv?granularity={granularity}",
        ),
    )


@router.get("/campaigns/{campaign_id}/delivery.csv")
@page
def campaign_csv(
    campaign_id: int, request: Request, services: ServicesDep, db: SessionDep
) -> Response:
    """The numbers behind the campaign's charts: ``delivery_report`` rows, as CSV."""
    view = viewer(request, services, db)
    campaign = get_campaign(db, view.principal, campaign_id)
    start, end = flight_range(campaign, view.now)
    granularity = _granularity(request, default_granularity(start, end))
    lines = campaign_lines(db, campaign, view.now, granularity)
    raw = request.query_params.get("line_item_id", "")
    if raw:
        if not raw.isdigit():
            raise InvalidInput("line_item_id must be an id", reason="invalid-line-item-id")
        lines = [line for line in lines if line.line_item_id == int(raw)]
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ["period_start", "line_item_id", "line_item_name", "impressions", "starts",
               "first_quartiles", "midpoints", "third_quartiles", "completes", "clicks",
               "spend", "currency"]  # fmt: skip
    writer.writerow(columns)
    for line in lines:
        writer.writerow([_csv_value(line, c) for c in columns])
    name = f"campaign-{campaign.id}-delivery-{granularity}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _csv_value(line: Any, column: str) -> Any:
    value = getattr(line, column)
    if column == "period_start":
        return value.isoformat()
    return format_money(value) if column == "spend" else value  # as the API writes money


@router.get("/campaigns/{campaign_id}/edit")
@page
def edit_campaign_form(
    campaign_id: int, request: Request, services: ServicesDep, db: SessionDep
) -> Response:
    view = viewer(request, services, db)
    campaign = get_campaign(db, view.principal, campaign_id)
    return _campaign_form(view, campaign, _campaign_values(campaign), forms.FormErrors())


def _campaign_values(campaign: Campaign) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": campaign.name,
        "start_at": campaign.start_at.strftime("%Y-%m-%dT%H:%M"),
        "end_at": campaign.end_at.strftime("%Y-%m-%dT%H:%M"),
        "total_budget": str(campaign.total_budget),
        "currency": campaign.currency,
        "version": str(campaign.version),
    }
    values.update(_cap_values(campaign.frequency_caps))
    return values


def _cap_values(caps: list[dict[str, Any]]) -> dict[str, str]:
    values = {}
    for i, cap in enumerate(caps[: forms.MAX_CAPS]):
        values[f"cap_count_{i}"] = str(cap.get("count", ""))
        values[f"cap_period_{i}"] = str(cap.get("period", ""))
        values[f"cap_length_{i}"] = str(cap.get("length", ""))
    return values


def _version(form: dict[str, str]) -> int | None:
    raw = form.get("version", "")
    return int(raw) if raw.isdigit() and len(raw) < 10 else None


@router.post("/campaigns/{campaign_id}/edit")
@page
def edit_campaign(
    campaign_id: int, request: Request, services: ServicesDep, db: SessionDep, form: FormDep
) -> Response:
    view = posted(request, services, db, form)
    campaign = get_campaign(db, view.principal, campaign_id)
    errors = forms.FormErrors()
    body = forms.campaign_body(form, create=False)
    body.setdefault("frequency_caps", [])
    updated = _update(view, errors, schemas.CampaignUpdate, body, CAMPAIGNS, campaign_id, form)
    if updated is None:
        return _campaign_form(view, campaign, form, errors, 422)
    return see_other(f"/ui/campaigns/{campaign_id}")


def _status_route(resource: Resource, path: str, back: Callable[[Any], str]) -> None:
    for action, target in ACTIONS.items():
        _add_status_route(resource, path, action, target, back)


def _add_status_route(
    resource: Resource, path: str, action: str, target: Status, back: Callable[[Any], str]
) -> None:
    @router.post(f"/{path}/{{object_id}}/{action}", name=f"ui_{action}_{resource.name}")
    @page
    def change_status(
        object_id: int, request: Request, services: ServicesDep, db: SessionDep, form: FormDep
    ) -> Response:
        view = posted(request, services, db, form)
        get_object(session=db, resource=resource, object_id=object_id, principal=view.principal)
        obj = set_status(
            session=db, resource=resource, object_id=object_id, status=target,
            principal=view.real,
        )  # fmt: skip
        _commit(view)
        return see_other(back(obj))


_status_route(CAMPAIGNS, "campaigns", lambda obj: f"/ui/campaigns/{obj.id}")
_status_route(LINE_ITEMS, "line-items", lambda obj: f"/ui/line-items/{obj.id}")
_status_route(CREATIVES, "creatives", lambda obj: f"/ui/line-items/{obj.line_item_id}")


# --- line items ----------------------------------------------------------------------


def _line_item_form(
    view: Viewer,
    campaign: Campaign,
    item: LineItem | None,
    values: dict[str, Any],
    errors: forms.FormErrors,
    status_code: int = 200,
) -> Response:
    return render(
        view.request,
        "line_item_form.html",
        context(
            view,
            campaign=campaign,
            item=item,
            values=values,
            errors=errors.fields,
            tiers=[t.value for t in Tier],
            pacings=[p.value for p in Pacing],
            periods=[p.value for p in CapPeriod],
            forecast_url="/ui/forecast.json" if forecasting.available(view.request) else None,
        ),
        status_code=status_code,
    )


@router.get("/campaigns/{campaign_id}/line-items/new")
@page
def new_line_item(
    campaign_id: int, request: Request, services: ServicesDep, db: SessionDep
) -> Response:
    view = viewer(request, services, db)
    campaign = get_campaign(db, view.principal, campaign_id)
    defaults = {"tier": "guaranteed", "pacing": "even", "targeting": "{}"}
    return _line_item_form(view, campaign, None, defaults, forms.FormErrors())


@router.post("/campaigns/{campaign_id}/line-items/new")
@page
def create_line_item(
    campaign_id: int, request: Request, services: ServicesDep, db: SessionDep, form: FormDep
) -> Response:
    view = posted(request, services, db, form)
    campaign = get_campaign(db, view.principal, campaign_id)
    errors = forms.FormErrors()
    body = forms.line_item_body(form, errors, campaign_id=campaign.id)
    item = _create(view, errors, schemas.LineItemCreate, body, LINE_ITEMS)
    if item is None:
        return _line_item_form(view, campaign, None, form, errors, 422)
    return see_other(f"/ui/line-items/{item.id}")


def _line_item_values(item: LineItem) -> dict[str, Any]:
    import orjson

    values: dict[str, Any] = {
        "name": item.name,
        "tier": item.tier,
        "cpm": str(item.cpm),
        "budget": "" if item.budget is None else str(item.budget),
        "daily_budget": "" if item.daily_budget is None else str(item.daily_budget),
        "goal_impressions": "" if item.goal_impressions is None else str(item.goal_impressions),
        "pacing": item.pacing,
        "targeting": orjson.dumps(item.targeting, option=orjson.OPT_INDENT_2).decode(),
        "version": str(item.version),
    }
    values.update(_cap_values(item.frequency_caps))
    return values


@router.get("/line-items/{line_item_id}")
@page
def line_item_page(
    line_item_id: int, request: Request, services: ServicesDep, db: SessionDep
) -> Response:
    view = viewer(request, services, db)
    item = get_line_item(db, view.principal, line_item_id)
    campaign = get_campaign(db, view.principal, item.campaign_id)
    start, end = flight_range(campaign, view.now)
    granularity = _granularity(request, default_granularity(start, end))
    lines = campaign_lines(db, campaign, view.now, granularity)
    pacing = PacingView(services.ad_server)
    summary = campaign_view(
        db, campaign, [item], {}, pacing, view.now, granularity=granularity, lines=lines
    )
    row = summary.line_items[0]
    series, rows = delivery_series(
        lines,
        line_item_ids=[item.id],
        campaign=campaign,
        now=view.now,
        granularity=granularity,
        goal=row.goal,
        pacing=pacing,
        session=db,
    )
    forecast = forecasting.forecast_vs_actual(
        request, view.principal, item, campaign, row.totals.impressions, view.now
    )
    heard = frequency_distribution(db, item.id)
    frequency = {
        "labels": [f"{b.low}+" if b.high is None else str(b.low) for b in heard.buckets],
        "series": {"Listeners": [b.listeners for b in heard.buckets]},
        "reach": heard.reach,
        "average": None if heard.average_frequency is None else round(heard.average_frequency, 2),
    }
    return render(
        request,
        "line_item.html",
        context(
            view,
            campaign=campaign,
            item=item,
            row=row,
            granularity=granularity,
            series=series.as_json(),
            rows=rows,
            funnel={
                "labels": [n for n, _ in row.totals.funnel()],
                "series": {"Listeners": [v for _, v in row.totals.funnel()]},
            },
            creatives=item_creatives(db, view.principal, item.id),
            csv_url=f"/ui/campaigns/{campaign.id}/delivery.csv?granularity={granularity}&line_item_id={item.id}",
            mime_types=sorted(MIME_TYPES),
            creative_values={"mime_type": "audio/mpeg"},
            creative_errors={},
            forecast=forecast,
            frequency=frequency,
        ),
    )


@router.get("/line-items/{line_item_id}/edit")
@page
def edit_line_item_form(
    line_item_id: int, request: Request, services: ServicesDep, db: SessionDep
) -> Response:
    view = viewer(request, services, db)
    item = get_line_item(db, view.principal, line_item_id)
    campaign = get_campaign(db, view.principal, item.campaign_id)
    return _line_item_form(view, campaign, item, _line_item_values(item), forms.FormErrors())


@router.post("/line-items/{line_item_id}/edit")
@page
def edit_line_item(
    line_item_id: int, request: Request, services: ServicesDep, db: SessionDep, form: FormDep
) -> Response:
    view = posted(request, services, db, form)
    item = get_line_item(db, view.principal, line_item_id)
    campaign = get_campaign(db, view.principal, item.campaign_id)
    errors = forms.FormErrors()
    body = forms.line_item_body(form, errors, campaign_id=None)
    updated = _update(view, errors, schemas.LineItemUpdate, body, LINE_ITEMS, line_item_id, form)
    if updated is None:
        return _line_item_form(view, campaign, item, form, errors, 422)
    return see_other(f"/ui/line-items/{line_item_id}")


@router.post("/line-items/{line_item_id}/creatives")
@page
def create_creative(
    line_item_id: int, request: Request, services: ServicesDep, db: SessionDep, form: FormDep
) -> Response:
    view = posted(request, services, db, form)
    item = get_line_item(db, view.principal, line_item_id)
    errors = forms.FormErrors()
    body = forms.creative_body(form, line_item_id=item.id)
    creative = _create(view, errors, schemas.CreativeCreate, body, CREATIVES)
    if creative is None:
        return render(
            request,
            "creative_form.html",
            context(
                view,
                item=item,
                creative_values=form,
                creative_errors=errors.fields,
                mime_types=sorted(MIME_TYPES),
            ),
            status_code=422,
        )
    return see_other(f"/ui/line-items/{item.id}")


# --- podcasts and forecasts ----------------------------------------------------------


@router.get("/podcasts")
@page
def podcasts(request: Request, services: ServicesDep, db: SessionDep) -> Response:
    from backbeat.ui import podcasts as podcast_views

    view = viewer(request, services, db)
    view.real.require_admin()  # downloads are the publisher's numbers, not an advertiser's
    data = podcast_views.downloads(db, request.query_params.get("show"))
    return render(request, "podcasts.html", context(view, data=data))


@router.get("/podcasts/downloads.csv")
@page
def podcasts_csv(request: Request, services: ServicesDep, db: SessionDep) -> Response:
    from backbeat.ui import podcasts as podcast_views

    view = viewer(request, services, db)
    view.real.require_admin()
    data = podcast_views.downloads(db, request.query_params.get("show"))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date", "show_id", "episode_id", "app", "downloads"])
    writer.writerows(data.rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="downloads.csv"'},
    )


@router.get("/forecast.json")
def forecast_json(request: Request, services: ServicesDep, db: SessionDep) -> Response:
    """A live forecast of the draft on the booking form (matched, available, reach)."""
    try:
        view = viewer(request, services, db)
        raw = request.query_params.get("campaign_id", "")
        if not raw.isdigit():
            raise InvalidInput("campaign_id must be an id", reason="invalid-campaign-id")
        campaign = get_campaign(db, view.principal, int(raw))
        errors = forms.FormErrors()
        fields = forms.forecast_fields(dict(request.query_params), errors)
        if errors:
            reason, message = errors.summary  # type: ignore[misc]
            raise InvalidInput(message, reason=reason)
        answer = forecasting.forecast_draft(request, view.principal, campaign, view.now, fields)
    except LoginRequired:
        return JSONResponse({"reason": "login-required", "detail": "sign in"}, status_code=401)
    except BackbeatError as error:
        status = 404 if isinstance(error, NotFound) else error.status
        return JSONResponse({"reason": error.reason, "detail": error.detail}, status_code=status)
    return JSONResponse(answer)


@router.get("/promotion")
@page
def promotion_list(request: Request, services: ServicesDep, db: SessionDep) -> Response:
    from backbeat.ui.promotion import promotion_overview

    view = viewer(request, services, db)
    rows = promotion_overview(db, view.principal)
    return render(request, "promotion.html", context(view, rows=rows))


@router.get("/promotion/{campaign_id}")
@page
def promotion_page(
    campaign_id: int, request: Request, services: ServicesDep, db: SessionDep
) -> Response:
    from backbeat.ui.promotion import promotion_campaign

    view = viewer(request, services, db)
    data = promotion_campaign(db, view.principal, campaign_id)
    return render(request, "promotion_campaign.html", context(view, data=data))


def _creative_form(
    view: Viewer, creative: Any, item: LineItem, values: dict[str, Any], errors: forms.FormErrors,
    status_code: int = 200,
) -> Response:  # fmt: skip
    return render(
        view.request,
        "creative_form.html",
        context(
            view,
            item=item,
            creative_values=values,
            creative_errors=errors.fields,
            mime_types=sorted(MIME_TYPES),
            creative_action=f"/ui/creatives/{creative.id}/edit",
            creative_title=f"Edit {creative.name}",
            creative_button="Save",
        ),
        status_code=status_code,
    )


@router.get("/creatives/{creative_id}/edit")
@page
def edit_creative_form(
    creative_id: int, request: Request, services: ServicesDep, db: SessionDep
) -> Response:
    view = viewer(request, services, db)
    creative = get_object(
        session=db, resource=CREATIVES, object_id=creative_id, principal=view.principal
    )
    item = get_line_item(db, view.principal, creative.line_item_id)
    values = {
        "name": creative.name,
        "media_url": creative.media_url,
        "mime_type": creative.mime_type,
        "duration_ms": str(creative.duration_ms),
        "bitrate_kbps": "" if creative.bitrate_kbps is None else str(creative.bitrate_kbps),
        "click_url": creative.click_url or "",
        "categories": ", ".join(creative.categories),
        "version": str(creative.version),
    }
    return _creative_form(view, creative, item, values, forms.FormErrors())


@router.post("/creatives/{creative_id}/edit")
@page
def edit_creative(
    creative_id: int, request: Request, services: ServicesDep, db: SessionDep, form: FormDep
) -> Response:
    view = posted(request, services, db, form)
    creative = get_object(
        session=db, resource=CREATIVES, object_id=creative_id, principal=view.principal
    )
    item = get_line_item(db, view.principal, creative.line_item_id)
    errors = forms.FormErrors()
    updated = _update(
        view,
        errors,
        schemas.CreativeUpdate,
        forms.creative_changes(form),
        CREATIVES,
        creative_id,
        form,
    )
    if updated is None:
        return _creative_form(view, creative, item, form, errors, 422)
    return see_other(f"/ui/line-items/{item.id}")

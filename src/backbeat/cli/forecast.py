"""``backbeat forecast``: forecast a draft line item from the local event log and book.

``backbeat forecast --start 2026-12-01T00:00:00Z --end 2026-12-08T00:00:00Z --targeting
'{"countries": ["US"]}'`` prints matched, possible and available impressions, reach,
clicks and conversions with their 80% intervals (``--json`` for the API's answer). The
draft is validated exactly like the API's (and a line item's); bad input is a message
and a non-zero exit. Subcommands (``backtest``) hang off the same group.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import orjson

from backbeat.errors import InvalidInput

if TYPE_CHECKING:
    from backbeat.config import Settings

FIGURES = (
    "matched",
    "possible",
    "available",
    "reach",
    "average_frequency",
    "clicks",
    "conversions",
)


def _draft(values: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from backbeat.api.problems import validation_problem
    from backbeat.forecast.schemas import ForecastDraft

    try:
        return ForecastDraft.model_validate(values)
    except ValidationError as error:
        problem = validation_problem(list(error.errors()), "", skip_loc=0)
        raise InvalidInput(problem["detail"], reason=problem["reason"]) from None


def _json_option(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"{name} is not valid JSON: {error}", reason="invalid-json") from None


def build_forecaster(settings: Settings, *, now: float, history_days: float | None) -> Any:
    """The forecaster over ``var/``'s event log and the database's servable book."""
    from backbeat.db import ensure_migrated, make_engine, make_session_factory
    from backbeat.db import migrate as run_migrations
    from backbeat.forecast.service import Forecaster
    from backbeat.reporting.service import delivered_so_far
    from backbeat.serving.snapshot import load_snapshot

    if settings.is_embedded_database:
        run_migrations(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    ensure_migrated(engine)
    with make_session_factory(engine)() as session:
        snapshot = load_snapshot(session, now=datetime.fromtimestamp(now, UTC))
        delivered = {
            item: impressions for item, (_, impressions) in delivered_so_far(session)[0].items()
        }
    engine.dispose()
    return Forecaster.build(
        settings.resolved_event_log_dir,
        snapshot.line_items,
        now=now,
        history_days=history_days,
        delivered=delivered,
    )


@click.group(invoke_without_command=True)
@click.option("--start", "start_at", help="Flight start, RFC 3339 (e.g. 2026-12-01T00:00:00Z).")
@click.option("--end", "end_at", help="Flight end, RFC 3339.")
@click.option("--targeting", default="{}", show_default=True, help="Targeting expression (JSON).")
@click.option(
    "--tier",
    default="guaranteed",
    show_default=True,
    help="sponsorship, guaranteed, non_guaranteed or house.",
)
@click.option("--cpm", default="0", show_default=True, help="CPM as a money string.")
@click.option("--goal", "goal_impressions", type=int, help="Goal in impressions.")
@click.option("--frequency-caps", help='Caps (JSON), e.g. \'[{"count": 3, "period": "day"}]\'.')
@click.option("--slot", "slots", type=int, multiple=True, help="Ad slot id (repeatable).")
@click.option(
    "--group-by",
    multiple=True,
    help="day, hour, countries, devices, platforms, surfaces, segments or genres (repeatable).",
)
@click.option("--history-days", type=float, help="Read only the last N days of the log.")
@click.option("--now", type=float, help="Forecast as of this epoch time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
@click.pass_context
def forecast(
    ctx: click.Context,
    start_at: str | None,
    end_at: str | None,
    targeting: str,
    tier: str,
    cpm: str,
    goal_impressions: int | None,
    frequency_caps: str | None,
    slots: tuple[int, ...],
    group_by: tuple[str, ...],
    history_days: float | None,
    now: float | None,
    as_json: bool,
) -> None:
    """Forecast a draft line item: impressions, reach, clicks and conversions it can get."""
    if ctx.invoked_subcommand is not None:
        return
    if not start_at or not end_at:
        raise click.UsageError("--start and --end are required")
    values: dict[str, Any] = {
        "start_at": start_at,
        "end_at": end_at,
        "tier": tier,
        "cpm": cpm,
        "targeting": _json_option(targeting, "--targeting"),
        "group_by": list(group_by),
    }
    if goal_impressions is not None:
        values["goal_impressions"] = goal_impressions
    if frequency_caps is not None:
        values["frequency_caps"] = _json_option(frequency_caps, "--frequency-caps")
    if slots:
        values["slots"] = list(slots)
    draft = _draft(values)
    settings: Settings = ctx.obj
    moment = time.time() if now is None else now
    forecaster = build_forecaster(settings, now=moment, history_days=history_days)
    result = forecaster.forecast(draft.to_query())
    body = result.to_dict()
    if as_json:
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'':<18} {'value':>14} {'80% low':>14} {'80% high':>14}")
    for name in FIGURES:
        figure = body[name]
        click.echo(
            f"{name:<18} {figure['value']:>14,.1f} {figure['low']:>14,.1f} {figure['high']:>14,.1f}"
        )
    if body["contending"]:
        click.echo("contending line items (impressions taken from this draft's supply):")
        for entry in body["contending"][:20]:
            click.echo(f"  {entry['line_item_id']}: {entry['impressions']:,.0f}")
    for key, rows in body["breakdown"].items():
        click.echo(f"by {key}:")
        for row in rows:
            click.echo(
                f"  {row['key']:<12} matched {row['matched']:>14,.0f}  available {row['available']:>14,.0f}"
            )
    if body.get("note"):
        click.echo(f"note: {body['note']}")


def _register_backtest() -> None:
    from backbeat.cli.backtest import backtest

    forecast.add_command(backtest)


_register_backtest()

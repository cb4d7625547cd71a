"""``backbeat plan``: compute the allocation plan from the decision log and write it for servers.

Run it periodically (say hourly, from cron or a systemd timer): servers reload the file
when it changes, so a fresh plan takes effect without a restart.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from backbeat.config import Settings

DAY = 86400


def default_plan_path(settings: Settings) -> Path:
    """Where servers look for the plan unless configured otherwise."""
    configured: Path | None = getattr(settings, "allocation_plan_path", None)
    if configured is not None:
        return Path(configured)
    from backbeat.serving.allocation import DEFAULT_PLAN_NAME

    return settings.var_dir / DEFAULT_PLAN_NAME


@click.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Plan file to write [default: the configured plan path, var/allocation-plan.json].",
)
@click.option(
    "--lookback-days",
    type=click.FloatRange(min=0.01),
    default=7.0,
    show_default=True,
    help="How much of the decision log to forecast supply from.",
)
@click.option(
    "--at",
    "at",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]),
    help="UTC time the plan starts to apply [default: now].",
)
@click.pass_obj
def plan(
    settings: Settings, output: Path | None, lookback_days: float, at: datetime | None
) -> None:
    """Compute the allocation plan (share of supply per guaranteed line item) and write it."""
    from backbeat.db import ensure_migrated, make_engine, make_session_factory, session_scope
    from backbeat.db import migrate as run_migrations
    from backbeat.reporting.service import delivered_so_far
    from backbeat.serving.allocation import compute_plan, read_opportunities, write_plan
    from backbeat.serving.snapshot import load_snapshot

    now = at.replace(tzinfo=UTC).timestamp() if at is not None else time.time()
    if settings.is_embedded_database:
        run_migrations(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        ensure_migrated(engine)
        with session_scope(make_session_factory(engine)) as session:
            snapshot = load_snapshot(session, now=datetime.fromtimestamp(now, UTC))
            counted, _ = delivered_so_far(session)
    finally:
        engine.dispose()
    result = compute_plan(
        line_items=snapshot.line_items,
        opportunities=read_opportunities(
            Path(settings.resolved_event_log_dir), since=now - lookback_days * DAY, until=now
        ),
        delivered={item_id: impressions for item_id, (_, impressions) in counted.items()},
        now=now,
    )
    path = output or default_plan_path(settings)
    write_plan(result, path)
    curve = "learned" if result.curve is not None else "default"
    click.echo(
        f"planned {len(result.entries)} line items from {result.opportunities} sampled "
        f"opportunities over {result.observed_days:.2f} days of traffic ({curve} curve); "
        f"wrote {path}"
    )

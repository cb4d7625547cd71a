"""``backbeat plan``: compute the guaranteed allocation plan and write it for servers.

SHALE (default) or HWM over the forecast's supply sample (``forecast.allocation.planner``);
``--algorithm share`` writes the simple share-of-remaining plan, which is also the fallback
when the decision log has no history yet. Servers reload the file when it changes, so a
fresh plan takes effect without a restart. ``--every SECONDS`` keeps re-planning on that
schedule, and as soon as the book changes (catalog version), until interrupted.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from backbeat.config import Settings


DAY = 86400


def default_plan_path(settings: Settings) -> Path:
    """Where servers look for the plan unless configured otherwise."""
    configured: Path | None = getattr(settings, "allocation_plan_path", None)
    if configured is not None:
        return Path(configured)
    from backbeat.serving.plan import DEFAULT_PLAN_NAME

    return settings.var_dir / DEFAULT_PLAN_NAME


def _book(settings: Settings, now: float):  # type: ignore[no-untyped-def]
    from backbeat.catalog.service import catalog_version
    from backbeat.db import ensure_migrated, make_engine, make_session_factory, session_scope
    from backbeat.reporting.service import delivered_so_far
    from backbeat.serving.snapshot import load_snapshot

    engine = make_engine(settings.resolved_database_url)
    try:
        ensure_migrated(engine)
        with session_scope(make_session_factory(engine)) as session:
            snapshot = load_snapshot(session, now=datetime.fromtimestamp(now, UTC))
            counted, _ = delivered_so_far(session)
            version = catalog_version(session)
    finally:
        engine.dispose()
    delivered = {item_id: impressions for item_id, (_, impressions) in counted.items()}
    return snapshot, delivered, version


def _version(settings: Settings) -> int:
    from backbeat.catalog.service import catalog_version
    from backbeat.db import make_engine, make_session_factory, session_scope

    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return catalog_version(session)
    finally:
        engine.dispose()


def make_plan(settings: Settings, *, algorithm: str, lookback_days: float, now: float):  # type: ignore[no-untyped-def]
    """Compute the plan from the configured book and decision log."""
    from backbeat.forecast.allocation.planner import plan_from_forecaster
    from backbeat.forecast.allocation.share import compute_plan, read_opportunities
    from backbeat.forecast.service import Forecaster

    snapshot, delivered, version = _book(settings, now)
    log_dir = Path(settings.resolved_event_log_dir)
    if algorithm != "share":
        forecaster = Forecaster.build(
            log_dir,
            snapshot.line_items,
            now=now,
            history_days=lookback_days,
            delivered=delivered,
        )
        if forecaster.sample.size:
            return plan_from_forecaster(forecaster, algorithm=algorithm, catalog_version=version)
    plan = compute_plan(
        line_items=snapshot.line_items,
        opportunities=read_opportunities(log_dir, since=now - lookback_days * DAY, until=now),
        delivered=delivered,
        now=now,
    )
    return replace(plan, catalog_version=version)  # servers see which book it was made for


@click.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Plan file to write [default: the configured plan path, var/allocation-plan.json].",
)
@click.option(
    "--algorithm",
    type=click.Choice(["shale", "hwm", "share"]),
    default="shale",
    show_default=True,
    help="SHALE (near-optimal), HWM (greedy by scarcity) or the simple share plan.",
)
@click.option(
    "--lookback-days",
    type=click.FloatRange(min=0.01),
    default=28.0,
    show_default=True,
    help="How much of the decision log to forecast supply from.",
)
@click.option(
    "--at",
    "at",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]),
    help="UTC time the plan starts to apply [default: now].",
)
@click.option(
    "--every",
    type=click.FloatRange(min=1.0),
    help="Keep re-planning every SECONDS (and when the book changes) until interrupted.",
)
@click.pass_obj
def plan(
    settings: Settings,
    output: Path | None,
    algorithm: str,
    lookback_days: float,
    at: datetime | None,
    every: float | None,
) -> None:
    """Compute the allocation plan for guaranteed line items and write it for servers."""
    from backbeat.db import migrate as run_migrations
    from backbeat.serving.plan import write_plan

    if settings.is_embedded_database:
        run_migrations(settings.resolved_database_url)
    path = output or default_plan_path(settings)
    while True:
        now = at.replace(tzinfo=UTC).timestamp() if at is not None else time.time()
        started = time.perf_counter()
        result = make_plan(settings, algorithm=algorithm, lookback_days=lookback_days, now=now)
        write_plan(result, path)
        curve = "learned" if result.curve is not None else "default"
        click.echo(
            f"planned {len(result.entries)} line items ({result.algorithm}) from "
            f"{result.opportunities} sampled opportunities over {result.observed_days:.2f} days "
            f"of traffic ({curve} curve) in {time.perf_counter() - started:.1f}s; wrote {path}"
        )
        if every is None:
            return
        # The version the plan was made from (read with its book), not the version now: a
        # change committed while planning must still trigger the next plan.
        version = result.catalog_version
        if version is None:
            version = _version(settings)
        deadline = time.monotonic() + every
        while time.monotonic() < deadline:
            time.sleep(min(max(settings.catalog_poll_seconds, 1.0), every))
            if _version(settings) != version:
                break  # the book changed: re-plan now

"""The demo's past: weeks of simulated listening written straight into the event log.

Forecasts read the decision log; a fresh demo has one replayed day of it. This step adds
``weeks`` of simulated opportunities (and the impressions, clicks and conversions that
followed) ending where the replayed day begins, written with the event log's batch writer
rather than over HTTP, so that forecasts on the demo book answer with real numbers. It
then prints one example forecast.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console

from backbeat.config import Settings
from backbeat.serving.request import listening_app
from backbeat.simulation import TrafficConfig, simulate_traffic
from backbeat.simulation.profiles import SLOTS
from backbeat.simulation.records import HistoryStats, write_history

DAY = timedelta(days=1)


def demo_slot_ids(slots: list[dict[str, Any]]) -> tuple[int, ...]:
    """The booked slot ids in the simulator's slot order (matched by surface and position)."""
    by_kind = {(slot["surface"], slot["position"]): int(slot["id"]) for slot in slots}
    return tuple(by_kind[kind] for kind in SLOTS)


def write_demo_history(
    settings: Settings,
    slots: list[dict[str, Any]],
    *,
    until: datetime,
    weeks: int = 4,
    daily_requests: int = 4000,
    listeners: int = 6000,
    seed: int = 7,
) -> HistoryStats:
    """Simulate ``weeks`` of traffic ending at ``until`` into the configured event log."""
    config = TrafficConfig.starting(
        until - weeks * 7 * DAY,
        days=weeks * 7,
        daily_requests=daily_requests,
        listeners=listeners,
        seed=seed,
        slot_ids=demo_slot_ids(slots),
    )
    traffic = simulate_traffic(config)
    return write_history(settings.resolved_event_log_dir, traffic, app_of=listening_app)


def add_history_and_forecast(
    console: Console,
    settings: Settings,
    booked: dict[str, Any],
    *,
    replayed_day: datetime,
    daily_requests: int,
    listeners: int,
    seed: int,
) -> HistoryStats:
    """The demo's history step: write the past, then show what a forecast now says."""
    started = time.monotonic()
    stats = write_demo_history(
        settings,
        booked["slots"],
        until=replayed_day,
        daily_requests=daily_requests,
        listeners=listeners * 4,  # a month's audience is larger than a day's
        seed=seed,
    )
    console.print(
        f"[bold]History[/]: {stats.opportunities:,} simulated opportunities over 4 weeks before "
        f"{replayed_day:%Y-%m-%d} ({stats.impressions:,} impressions, {stats.clicks:,} clicks, "
        f"{stats.conversions:,} conversions) written to the event log in "
        f"{time.monotonic() - started:.1f} s"
    )
    print_example_forecast(console, settings, start=replayed_day + DAY)
    return stats


def print_example_forecast(console: Console, settings: Settings, *, start: datetime) -> None:
    """US mobile for the week after the replayed day, as a guaranteed buy at a $18 CPM."""
    from backbeat.db import make_engine, make_session_factory
    from backbeat.forecast.service import Forecaster, ForecastQuery
    from backbeat.serving.snapshot import load_snapshot

    started = time.monotonic()
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            line_items = list(load_snapshot(session, now=start).line_items)
    finally:
        engine.dispose()
    forecaster = Forecaster.build(
        settings.resolved_event_log_dir, line_items, now=start.timestamp()
    )
    targeting = {"countries": ["US"], "devices": ["mobile"]}
    result = forecaster.forecast(
        ForecastQuery(
            start_at=start,
            end_at=start + 7 * DAY,
            tier="guaranteed",
            cpm_micros=18_000_000,
            targeting=targeting,
        )
    )
    console.print(
        f"[bold]Forecast[/], US mobile, {start:%Y-%m-%d} + 7 days, as a guaranteed buy at $18 CPM "
        f"(built and answered in {time.monotonic() - started:.1f} s):"
    )
    for name in ("matched", "possible", "available", "reach", "clicks", "conversions"):
        estimate = getattr(result, name)
        console.print(
            f"  {name:<12}{estimate.value:>12,.0f}   80% interval {estimate.low:,.0f}–{estimate.high:,.0f}"
        )

"""``backbeat forecast backtest``: forecast a simulated week from the weeks before it, then serve it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import orjson

if TYPE_CHECKING:
    from backbeat.config import Settings


@click.command()
@click.option(
    "--weeks",
    default=4,
    show_default=True,
    type=click.IntRange(1, 12),
    help="Weeks of simulated history the forecaster learns from (k).",
)
@click.option(
    "--combinations",
    default=200,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Random targeting combinations forecast.",
)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--daily-requests",
    default=10_000,
    show_default=True,
    type=click.IntRange(100, 10_000_000),
    help="Simulated ad requests per day.",
)
@click.option("--listeners", default=40_000, show_default=True, type=click.IntRange(10, 10_000_000))
@click.option(
    "--sample",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.001, 1.0),
    help="Decision-log sampling rate of the simulated history.",
)
@click.option(
    "--sample-by",
    type=click.Choice(["request", "listener"]),
    default="request",
    show_default=True,
    help="Keep the sample per request (as the ad server does) or per listener (id hash).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def backtest(
    settings: Settings,
    weeks: int, combinations: int, seed: int, daily_requests: int, listeners: int,
    sample: float, sample_by: str, as_json: bool,
) -> None:  # fmt: skip
    """Simulate weeks 1..k+1, forecast week k+1 from weeks 1..k, run the ad server on week
    k+1, and report WAPE of supply, reach, clicks and delivered guaranteed impressions and
    the coverage of the 80% intervals."""
    from backbeat.forecast.backtest import BacktestConfig, format_report, run_backtest
    from backbeat.observability import configure_logging

    # Logs go to stderr: stdout is the report (JSON for machines).
    configure_logging(settings.log_level, json=settings.log_json)

    report = run_backtest(
        BacktestConfig(
            weeks=weeks,
            combinations=combinations,
            seed=seed,
            daily_requests=daily_requests,
            listeners=listeners,
            sample=sample,
            sample_by=sample_by,
        )  # fmt: skip
    )
    if as_json:
        click.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        click.echo(format_report(report))

"""``backbeat measure ...`` and ``backbeat classify-ua``: measurement jobs from the command line.

``measure downloads`` and ``measure ads`` run the Beam pipeline on the local runner;
``--runner NAME`` and any other ``--beam_option=value`` after the options are passed to
Beam's ``PipelineOptions`` unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from backbeat.measurement.accesslogs import FORMATS
from backbeat.measurement.downloads.quality import DEFAULT_MAX_BOT_SHARE
from backbeat.measurement.downloads.report import DownloadReport
from backbeat.measurement.downloads.spec import Window

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.group()
def measure() -> None:
    """Count podcast downloads and ad delivery from logs (Apache Beam pipelines)."""


@click.command("classify-ua")
@click.option("--referer", help="Referer to match against web players (browsers only).")
def classify_ua(referer: str | None) -> None:
    """Classify user agents (one per line on stdin) by the OPAWG lists; print JSON lines."""
    from backbeat.measurement.useragents import classify

    for line in sys.stdin:
        info = classify(line.rstrip("\r\n"), referer)
        click.echo(orjson.dumps(info.to_dict()).decode())


def _common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("logs", nargs=-1, required=True),
        click.option(
            "--episodes",
            required=True,
            type=click.Path(dir_okay=False),
            help="Episode catalog CSV.",
        ),
        click.option(
            "--window",
            type=click.Choice([w.value for w in Window]),
            default="calendar",
            show_default=True,
        ),
        click.option(
            "--format", "fmt", type=click.Choice(FORMATS), default="combined", show_default=True
        ),
        click.option(
            "--exclude-ips",
            type=click.Path(dir_okay=False),
            help="Data-centre CIDR ranges, one per line.",
        ),
        click.option(
            "--rejects",
            type=click.Path(dir_okay=False),
            help="Write malformed lines here (JSON Lines).",
        ),
        click.option(
            "--parquet",
            type=click.Path(file_okay=False),
            help="Also write date-partitioned Parquet here.",
        ),
        click.option(
            "--max-bot-share",
            type=click.FloatRange(0, 1),
            default=DEFAULT_MAX_BOT_SHARE,
            show_default=True,
        ),
        click.option("--runner", help="Beam runner (default: the local DirectRunner)."),
        click.option(
            "--to-database", is_flag=True, help="Also replace the days in the configured database."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _job(logs: tuple[str, ...], runner: str | None, to_database: bool, **fields: Any) -> Any:
    from backbeat.measurement.downloads.pipeline import DownloadJob

    if to_database:
        settings = click.get_current_context().find_root().obj
        fields["database_url"] = settings.resolved_database_url
    beam_args = [arg for arg in logs if arg.startswith("--")]
    paths = [arg for arg in logs if not arg.startswith("--")]
    if runner:
        beam_args.insert(0, f"--runner={runner}")
    return DownloadJob(logs=paths, beam_args=beam_args, **fields)


def _echo_summary(report: DownloadReport) -> None:
    click.echo(
        f"{report.lines} lines: {report.accepted} counted requests, {sum(report.downloads.values())} downloads"
    )
    for title, counts in (
        ("excluded requests", report.excluded),
        ("rejected lines", report.rejected),
    ):
        click.echo(f"{title} by reason: {sum(counts.values())}")
        for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            click.echo(f"  {reason:<28} {count}")


@measure.command(context_settings=_PASS_THROUGH)
@_common_options
@click.option(
    "--output", required=True, type=click.Path(dir_okay=False), help="Report CSV to write."
)
@click.option("--by", type=click.Choice(["app"]), help="Add an app column.")
def downloads(logs: tuple[str, ...], runner: str | None, by: str | None, **fields: Any) -> None:
    """Count IAB downloads per date and episode from access LOGS into a CSV report."""
    from backbeat.measurement.downloads.pipeline import execute

    _echo_summary(execute(_job(logs, runner, by_app=by == "app", **fields)))


@measure.command(context_settings=_PASS_THROUGH)
@_common_options
@click.option(
    "--stitch-map",
    required=True,
    type=click.Path(dir_okay=False),
    help="episode_id,ad_id,byte_start,byte_end CSV.",
)
@click.option(
    "--output",
    "ads_output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Delivered-ads CSV to write.",
)
def ads(logs: tuple[str, ...], runner: str | None, **fields: Any) -> None:
    """Count dynamically inserted ads delivered in full within counted downloads."""
    from backbeat.measurement.downloads.pipeline import execute

    report = execute(_job(logs, runner, **fields))
    _echo_summary(report)
    click.echo(f"{sum(report.ads.values())} ads delivered")


COMMANDS: list[click.Command] = [measure, classify_ua]

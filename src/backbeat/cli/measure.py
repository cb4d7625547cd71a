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


def run_report(
    settings: Any, *, full: bool, accept_damage: bool, batch_records: int, from_kafka: bool
) -> None:
    """``backbeat report``: count new delivery events, committing each batch with its position.

    From the local event log, promotion delivery is recounted too (``backbeat promotion
    report`` does that alone); from Kafka only ad delivery is counted.
    """
    from backbeat.db import ensure_migrated, make_engine, make_session_factory, session_scope
    from backbeat.db import migrate as run_migrations
    from backbeat.reporting.counting import CountingPolicy

    if settings.is_embedded_database:
        run_migrations(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    ensure_migrated(engine)
    policy = CountingPolicy(ttl_seconds=settings.tracking_ttl_seconds)
    factory = make_session_factory(engine)
    if from_kafka:
        from backbeat.reporting.kafka_counting import count_from_kafka, kafka_source

        with session_scope(factory) as session:
            run = count_from_kafka(
                session=session,
                source=kafka_source(settings),
                policy=policy,
                full=full,
                batch_records=batch_records,
                commit=None if full else session.commit,
            )
        click.echo(
            f"read {run.totals.events_read} events from Kafka ({run.new_records} new), "
            f"{run.totals.rows_written} hourly rows ({run.totals.duplicates} duplicates ignored, "
            f"{run.totals.rejected} rejected, {run.bad_records} bad records set aside)"
        )
        return
    from backbeat.reporting.service import count_event_log

    with session_scope(factory) as session:
        run = count_event_log(
            session=session,
            event_log_dir=settings.resolved_event_log_dir,
            policy=policy,
            full=full,
            accept_damage=accept_damage,
            batch_records=batch_records,
            # A full recount is one transaction, so readers never see it half done.
            commit=None if full else session.commit,
        )
    totals = run.totals
    click.echo(
        f"read {totals.events_read} events ({run.new_records} new), wrote "
        f"{totals.rows_written} hourly rows ({totals.duplicates} duplicates ignored, "
        f"{totals.rejected} rejected, {run.bad_records} bad records set aside, "
        f"{totals.torn_tails} torn tails skipped, {run.damaged_bytes} damaged bytes accepted)"
    )
    _recount_promotion(settings, factory)


def _recount_promotion(settings: Any, factory: Any) -> None:
    """Promotion delivery from the same log: part of the one recount (replaced, never added)."""
    from backbeat.db import session_scope
    from backbeat.promotion.reporting import run_promotion_report

    with session_scope(factory) as session:
        run = run_promotion_report(session=session, event_log_dir=settings.resolved_event_log_dir)
    click.echo(
        f"promotion: read {run.events_read} events, {run.campaigns} campaigns, "
        f"{run.daily_rows} daily rows ({run.duplicates} duplicates ignored, "
        f"{run.unattributed_conversions} conversions unattributed)"
    )

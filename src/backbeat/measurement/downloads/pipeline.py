"""Count podcast downloads (and DAI ad delivery) from access logs with Apache Beam.

Runs on Beam's local runner by default; any other runner by its usual options, e.g.::

    python -m backbeat.measurement.downloads.pipeline --episodes episodes.csv \\
        --output downloads.csv logs/*.log --runner DaskRunner --dask_gateway ...

Unknown options are passed to Beam's ``PipelineOptions`` untouched. The run fails
(non-zero exit) when the data-quality checks fail; nothing is published then.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from backbeat.errors import InvalidInput
from backbeat.measurement.accesslogs import COMBINED, FORMATS
from backbeat.measurement.downloads.catalog import load_catalog
from backbeat.measurement.downloads.outputs import (
    REJECTS,
    STAGED,
    WriteStagedFn,
    ad_rows,
    copy_rejects,
    download_columns,
    downloads_table,
    load_staged,
    stage,
    write_csv,
    write_day_partitions,
)
from backbeat.measurement.downloads.quality import DEFAULT_MAX_BOT_SHARE, check_quality
from backbeat.measurement.downloads.report import DownloadReport
from backbeat.measurement.downloads.rules import IpRanges
from backbeat.measurement.downloads.sources import (
    DEFAULT_CHUNK_BYTES,
    ReadLogChunkFn,
    SplitLogFileFn,
)
from backbeat.measurement.downloads.spec import DownloadRules, Window
from backbeat.measurement.downloads.stitching import load_stitch_map
from backbeat.measurement.downloads.transforms import DEFAULT_BUCKETS, DownloadCounts


@dataclass
class DownloadJob:
    """One count: inputs, rules and where results go."""

    logs: list[str]
    episodes: str
    output: str | None = None
    window: Window = Window.CALENDAR
    fmt: str = COMBINED
    by_app: bool = False
    exclude_ips: str | None = None
    stitch_map: str | None = None
    ads_output: str | None = None
    rejects: str | None = None
    parquet: str | None = None
    max_bot_share: float = DEFAULT_MAX_BOT_SHARE
    num_buckets: int = DEFAULT_BUCKETS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    staging: str | None = None
    database_url: str | None = None
    beam_args: list[str] = field(default_factory=list)


def read_ip_ranges(path: str | None) -> IpRanges:
    """A file of CIDR ranges, one per line; ``#`` starts a comment."""
    if path is None:
        return IpRanges()
    try:
        text = Path(path).read_text("utf-8")
        return IpRanges(line.split("#", 1)[0] for line in text.splitlines())
    except OSError as exc:
        raise InvalidInput(f"cannot read IP ranges {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InvalidInput(f"bad IP range in {path}: {exc}") from exc


def build_rules(job: DownloadJob) -> DownloadRules:
    """Load the catalog, stitch map and IP ranges a job names."""
    return DownloadRules(
        catalog=load_catalog(job.episodes),
        window=Window(job.window),
        by_app=job.by_app,
        data_centres=read_ip_ranges(job.exclude_ips),
        ad_slots=load_stitch_map(job.stitch_map) if job.stitch_map else (),
    )


def check_logs_exist(patterns: Sequence[str]) -> None:
    """Fail before starting a pipeline when a log path matches nothing."""
    if not patterns:
        raise InvalidInput("no log files given")
    for pattern, result in zip(patterns, FileSystems.match(list(patterns)), strict=True):
        if not result.metadata_list:
            raise InvalidInput(f"no log file matches {pattern}", path=pattern)


def build_pipeline(
    pipeline: beam.Pipeline,
    *,
    logs: Sequence[str],
    rules: DownloadRules,
    staging: str,
    fmt: str = COMBINED,
    num_buckets: int = DEFAULT_BUCKETS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> None:
    """Wire reads, :class:`DownloadCounts` and the staged writes."""
    lines = (
        pipeline
        | "ListLogPatterns" >> beam.Create(list(logs))
        | "MatchLogFiles" >> fileio.MatchAll()
        | "SplitLogFiles" >> beam.ParDo(SplitLogFileFn(chunk_bytes))
        | "SpreadChunks" >> beam.Reshuffle()
        | "ReadLogChunks" >> beam.ParDo(ReadLogChunkFn())
    )
    counts = lines | "CountDownloads" >> DownloadCounts(rules, fmt, num_buckets)
    staged = [
        counts[name]
        | f"Collect{name.title()}" >> beam.combiners.ToList()
        | f"Label{name.title()}" >> beam.Map(stage, name)
        for name in STAGED
    ]
    staged.append(counts[REJECTS] | "LabelRejects" >> beam.Map(stage, REJECTS))
    _ = (
        staged
        | "MergeStaged" >> beam.Flatten()
        | "WriteStaged" >> beam.ParDo(WriteStagedFn(staging))
    )


def count_with_beam(job: DownloadJob, rules: DownloadRules, staging: str) -> DownloadReport:
    """Run the pipeline (runner from ``job.beam_args``) and read back its staged results."""
    check_logs_exist(job.logs)
    options = PipelineOptions(job.beam_args or ["--runner=DirectRunner"])
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline,
            logs=job.logs,
            rules=rules,
            staging=staging,
            fmt=job.fmt,
            num_buckets=job.num_buckets,
            chunk_bytes=job.chunk_bytes,
        )
    return load_staged(staging)


def publish(job: DownloadJob, rules: DownloadRules, report: DownloadReport, staging: str) -> None:
    """Write the outputs a job asked for; Parquet days are replaced, never appended."""
    if job.output:
        write_csv(report.rows(job.by_app), job.output, download_columns(job.by_app))
    if job.ads_output:
        write_csv(ad_rows(report.ads), job.ads_output, ["date", "episode_id", "ad_id", "delivered"])
    if job.rejects:
        copy_rejects(staging, job.rejects)
    if job.parquet:
        write_day_partitions(
            downloads_table(report, rules.catalog), f"{job.parquet}/downloads", report.days
        )
    if job.database_url:
        write_database(job.database_url, rules, report)


def write_database(url: str, rules: DownloadRules, report: DownloadReport) -> None:
    """Replace the covered days in the report tables (schema must be migrated)."""
    from backbeat.db import ensure_migrated, make_engine, make_session_factory, session_scope
    from backbeat.measurement.downloads.database import replace_days

    engine = make_engine(url)
    try:
        ensure_migrated(engine)
        with session_scope(make_session_factory(engine)) as session:
            replace_days(session=session, report=report, catalog=rules.catalog)
    finally:
        engine.dispose()


def execute(job: DownloadJob) -> DownloadReport:
    """Count, check data quality, then publish; raises :class:`InvalidInput` on bad input."""
    if job.fmt not in FORMATS:
        raise InvalidInput(f"unknown log format {job.fmt!r}; use one of {', '.join(FORMATS)}")
    rules = build_rules(job)
    with tempfile.TemporaryDirectory(prefix="backbeat-downloads-") as local_staging:
        staging = job.staging or local_staging
        report = count_with_beam(job, rules, staging)
        check_quality(report, job.max_bot_share)
        publish(job, rules, report, staging)
    return report


def parse_args(argv: Sequence[str] | None) -> DownloadJob:
    """Our arguments; everything else is Beam's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", help="access-log files or glob patterns")
    parser.add_argument("--episodes", required=True, help="episode catalog CSV")
    parser.add_argument("--output", help="downloads report CSV")
    parser.add_argument("--window", choices=[w.value for w in Window], default="calendar")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default=COMBINED)
    parser.add_argument("--by", choices=["app"], help="also break down by app")
    parser.add_argument("--exclude-ips", help="file of data-centre CIDR ranges")
    parser.add_argument("--stitch-map", help="DAI stitch map CSV")
    parser.add_argument("--ads-output", help="delivered-ads report CSV")
    parser.add_argument("--rejects", help="malformed lines as JSON Lines")
    parser.add_argument("--parquet", help="root of date-partitioned Parquet outputs")
    parser.add_argument("--max-bot-share", type=float, default=DEFAULT_MAX_BOT_SHARE)
    parser.add_argument("--num-buckets", type=int, default=DEFAULT_BUCKETS)
    parser.add_argument("--staging", help="shared directory for worker outputs")
    parser.add_argument("--database-url", help="also replace the days in the report tables here")
    known, beam_args = parser.parse_known_args(argv)
    options = vars(known)
    by = options.pop("by")
    return DownloadJob(**options, by_app=by == "app", beam_args=beam_args)


def run(argv: Sequence[str] | None = None) -> DownloadReport:
    """Entry point: parse arguments, run, print the accounting summary as JSON."""
    report = execute(parse_args(argv))
    summary = {"lines": report.lines, "counted": report.accepted, "excluded": report.excluded}
    print(json.dumps({**summary, "rejected": report.rejected}, sort_keys=True))  # noqa: T201
    return report


if __name__ == "__main__":
    run()

"""Hourly and daily download counts with backfill, calling the same pipeline code as the CLI.

Each run counts one UTC day (the run's data interval start) and replaces that day's
outputs, so hourly runs refresh today's numbers and re-runs or backfills never double a
day. Configuration comes from the environment of the Airflow workers:

- ``BACKBEAT_ACCESS_LOGS``: log path pattern with ``{date}`` (``YYYY-MM-DD``), e.g.
  ``/data/cdn/{date}/*.log``
- ``BACKBEAT_EPISODES_CSV``: the episode catalog
- ``BACKBEAT_MEASUREMENT_DIR``: output root (``downloads-{date}.csv``, ``rejects-{date}.jsonl``,
  ``parquet/downloads/date=.../``)
- optional ``BACKBEAT_LOG_FORMAT`` (``combined``/``jsonl``), ``BACKBEAT_DATA_CENTRE_IPS``,
  ``BACKBEAT_MAX_BOT_SHARE``, ``BACKBEAT_BEAM_ARGS`` (e.g. ``--runner=DataflowRunner ...``)
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

START = datetime(2026, 1, 1)
DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(minutes=5)}


def count_day(date: str) -> dict[str, Any]:
    """Count one UTC day's downloads and publish its outputs (replacing earlier ones)."""
    from backbeat.measurement.downloads.pipeline import DownloadJob, execute
    from backbeat.measurement.downloads.quality import DEFAULT_MAX_BOT_SHARE

    out = os.environ["BACKBEAT_MEASUREMENT_DIR"]
    report = execute(
        DownloadJob(
            logs=[os.environ["BACKBEAT_ACCESS_LOGS"].format(date=date)],
            episodes=os.environ["BACKBEAT_EPISODES_CSV"],
            output=f"{out}/downloads-{date}.csv",
            rejects=f"{out}/rejects-{date}.jsonl",
            parquet=f"{out}/parquet",
            fmt=os.environ.get("BACKBEAT_LOG_FORMAT", "combined"),
            exclude_ips=os.environ.get("BACKBEAT_DATA_CENTRE_IPS"),
            max_bot_share=float(os.environ.get("BACKBEAT_MAX_BOT_SHARE", DEFAULT_MAX_BOT_SHARE)),
            beam_args=shlex.split(os.environ.get("BACKBEAT_BEAM_ARGS", "")),
        )
    )
    return {
        "date": date,
        "lines": report.lines,
        "downloads": sum(report.downloads.values()),
        "excluded": sum(report.excluded.values()),
        "rejected": sum(report.rejected.values()),
    }


@dag(
    dag_id="backbeat_downloads_daily",
    schedule="@daily",
    start_date=START,
    catchup=True,  # backfills every day since START
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["backbeat", "measurement"],
)
def downloads_daily() -> None:
    """Final count of each UTC day once its logs are complete."""

    @task
    def count(ds: str | None = None) -> dict[str, Any]:
        assert ds is not None
        return count_day(ds)

    count()


@dag(
    dag_id="backbeat_downloads_hourly",
    schedule="@hourly",
    start_date=START,
    catchup=False,  # hourly refreshes only matter for today; the daily DAG backfills
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["backbeat", "measurement"],
)
def downloads_hourly() -> None:
    """Refresh the current UTC day's counts every hour."""

    @task
    def count(data_interval_start: datetime | None = None) -> dict[str, Any]:
        assert data_interval_start is not None
        return count_day(data_interval_start.strftime("%Y-%m-%d"))

    count()


daily = downloads_daily()
hourly = downloads_hourly()

"""Where a count's results go: staged JSON from the pipeline, then CSV, rejects and Parquet.

Workers only write small staged files; publishing happens after the data-quality checks
pass, and each day's Parquet partition is replaced whole, so a re-run never doubles a day.
"""

from __future__ import annotations

import csv
import json
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from backbeat.measurement.downloads.catalog import Catalog
from backbeat.measurement.downloads.report import DownloadReport

STAGED = ("downloads", "ads", "stats")
REJECTS = "rejects"


def stage(items: Any, name: str) -> tuple[str, Any]:
    """Label a staged output for :class:`WriteStagedFn`."""
    return name, items


class WriteStagedFn(beam.DoFn):
    """Write labelled results under the staging directory through Beam's file systems.

    One sink for every output, because the DaskRunner only computes a pipeline's last leaf.
    """

    def __init__(self, staging: str) -> None:
        self.staging = staging

    def process(self, element: tuple[str, Any]) -> None:
        name, items = element
        if name == REJECTS:
            path = f"{self.staging}/{REJECTS}/part-{uuid.uuid4().hex}.jsonl"
            payload = "".join(f"{line}\n" for line in reject_lines(items))
        else:
            path = f"{self.staging}/{name}.json"
            payload = json.dumps(items)
        with FileSystems.create(path) as handle:
            handle.write(payload.encode("utf-8"))


def reject_lines(batch: pa.RecordBatch) -> Iterable[str]:
    """Rejects as JSON lines: ``{"reason": ..., "line": ...}``."""
    for reason, line in zip(batch["reason"].to_pylist(), batch["line"].to_pylist(), strict=True):
        yield json.dumps({"reason": reason, "line": line}, ensure_ascii=False)


def _read_json(path: str) -> list[Any]:
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))  # type: ignore[no-any-return]


def load_staged(staging: str) -> DownloadReport:
    """Assemble the report the pipeline staged."""
    report = DownloadReport()
    for (date, episode_id, app), count in _read_json(f"{staging}/downloads.json"):
        report.downloads[date, episode_id, app] += count
    for (date, episode_id, ad_id), count in _read_json(f"{staging}/ads.json"):
        report.ads[date, episode_id, ad_id] += count
    for (kind, reason), count in _read_json(f"{staging}/stats.json"):
        if kind == "lines":
            report.lines += count
        elif kind == "accepted":
            report.accepted += count
        else:
            getattr(report, kind)[reason] += count
    return report


def copy_rejects(staging: str, target: str | Path) -> int:
    """Concatenate the staged reject parts into one JSON Lines file; returns lines written."""
    parts = FileSystems.match([f"{staging}/{REJECTS}/*.jsonl"])[0].metadata_list
    written = 0
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for part in sorted(parts, key=lambda m: m.path):
            with FileSystems.open(part.path) as handle:
                data = handle.read()
            out.write(data)
            written += data.count(b"\n")
    return written


def write_csv(rows: list[dict[str, object]], path: str | Path, columns: list[str]) -> None:
    """Write report rows (atomically: a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(target)


def download_columns(by_app: bool) -> list[str]:
    return ["date", "episode_id", *(["app"] if by_app else []), "downloads"]


def ad_rows(ads: Counter[tuple[str, str, str]]) -> list[dict[str, object]]:
    return [
        {"date": d, "episode_id": e, "ad_id": a, "delivered": n}
        for (d, e, a), n in sorted(ads.items())
    ]


def write_day_partitions(table: pa.Table, root: str | Path, days: Iterable[str] = ()) -> list[str]:
    """Write ``root/date=YYYY-MM-DD/part-0.parquet`` per date, replacing each day written.

    ``days`` are the days the run covered: each is replaced even when it has no rows now.
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    written = []
    for day in sorted(set(table["date"].to_pylist()) | set(days)):
        part = table.filter(pa.compute.equal(table["date"], day)).drop_columns(["date"])
        final = base / f"date={day}"
        fresh = base / f".date={day}.{uuid.uuid4().hex}"
        fresh.mkdir()
        pq.write_table(part, fresh / "part-0.parquet")
        old = base / f".old-date={day}.{uuid.uuid4().hex}"
        if final.exists():
            final.rename(old)
        fresh.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        written.append(day)
    return written


def downloads_table(report: DownloadReport, catalog: Catalog) -> pa.Table:
    """The report with each episode's show, for Parquet and the database."""
    show = {e.episode_id: e.show_id for e in catalog.episodes}
    rows = sorted(
        report.downloads.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")
    )
    return pa.table(
        {
            "date": [d for (d, _, _), _ in rows],
            "episode_id": [e for (_, e, _), _ in rows],
            "show_id": [show[e] for (_, e, _), _ in rows],
            "app": [a for (_, _, a), _ in rows],
            "downloads": pa.array([n for _, n in rows], pa.int64()),
        },
        schema=pa.schema(
            [
                ("date", pa.string()),
                ("episode_id", pa.string()),
                ("show_id", pa.string()),
                ("app", pa.string()),
                ("downloads", pa.int64()),
            ]
        ),
    )

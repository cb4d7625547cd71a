"""The feature pipeline on Apache Beam: listening history + exposures → point-in-time rows.

Same conventions as the measurement pipelines: Beam's local runner by default, any runner
by its options; workers write staged parts, the driver checks data quality and publishes
only when every check passes (the run fails with the checks' messages otherwise).

Stages: per listens part, plays per (artist, day) → summed → popularity (a side input);
per part, the listeners' histories and exposures → :func:`features.compute` → a staged
Parquet part and its row/label counts.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from backbeat.observability import log
from backbeat.promotion import features
from backbeat.promotion.dataset import DataSet, read_columns, read_exposures
from backbeat.promotion.metrics import PIPELINE_ROWS, PIPELINE_RUNS, PIPELINE_SECONDS
from backbeat.promotion.quality import QualityBounds, check_quality

NAMESPACE = "backbeat.promotion"
DEFAULT_ATTRIBUTION_DAYS = 14
LISTEN_COLUMNS = ["listener", "artist", "ts"]


@dataclass
class FeatureJob:
    data: Path
    output: Path
    attribution_days: int = DEFAULT_ATTRIBUTION_DAYS
    bounds: QualityBounds = field(default_factory=QualityBounds)
    beam_args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FeatureRun:
    rows: int
    labels: int
    listens: int
    seconds: float
    path: Path


class DailyCountsFn(beam.DoFn):
    """Plays per (artist, day) of one listens part."""

    def __init__(self, start_ts: int, artists: int, days: int) -> None:
        self.start_ts, self.artists, self.days = start_ts, artists, days

    def process(self, path: str) -> Iterator[np.ndarray]:
        listens = read_columns(path, ["artist", "ts"])
        Metrics.counter(NAMESPACE, "listens").inc(len(listens["ts"]))
        yield features.daily_counts(
            listens["artist"], listens["ts"], self.start_ts, self.artists, self.days
        )


class SumArrays(beam.CombineFn):  # type: ignore[misc]
    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=np.int64)

    def add_input(self, total: np.ndarray, counts: np.ndarray) -> np.ndarray:
        total += counts
        return total

    def merge_accumulators(self, totals: Any) -> np.ndarray:
        merged = self.create_accumulator()
        for total in totals:
            merged += total
        return merged

    def extract_output(self, total: np.ndarray) -> np.ndarray:
        return total


class PartFeaturesFn(beam.DoFn):
    """Feature rows for the exposures of the listeners of one listens part."""

    def __init__(
        self,
        exposure_files: list[str],
        genre_of_artist: np.ndarray,
        parts: int,
        start_ts: int,
        attribution_days: int,
        staging: str,
    ) -> None:
        self.exposure_files = exposure_files
        self.genre_of_artist = genre_of_artist
        self.parts, self.start_ts = parts, start_ts
        self.attribution = attribution_days * features.DAY
        self.staging = staging

    def process(self, element: tuple[int, str], daily: np.ndarray) -> Iterator[dict[str, int]]:
        part, path = element
        popularity = features.Popularity.from_counts(self.start_ts, daily)
        exposures = read_exposures(self.exposure_files)
        mine = exposures["listener"] % self.parts == part
        exposures = {name: column[mine] for name, column in exposures.items()}
        listens = read_columns(path, LISTEN_COLUMNS)
        table = part_features(
            listens, exposures, self.genre_of_artist, popularity, self.attribution
        )
        pq.write_table(table, f"{self.staging}/part-{part:05d}.parquet")
        Metrics.counter(NAMESPACE, "rows").inc(table.num_rows)
        yield {"rows": table.num_rows, "labels": int(np.sum(table.column("label").to_numpy()))}


def part_features(
    listens: dict[str, np.ndarray],
    exposures: dict[str, np.ndarray],
    genre_of_artist: np.ndarray,
    popularity: features.Popularity,
    attribution_seconds: int,
) -> pa.Table:
    """Rows for every exposure in ``exposures``; ``listens`` must hold those listeners' plays."""
    genre_of = np.asarray(genre_of_artist, np.int64)
    order = np.argsort(listens["listener"], kind="stable")
    listeners_sorted = listens["listener"][order]
    e_order = np.lexsort((exposures["exposure_id"], exposures["ts"], exposures["listener"]))
    exposures = {name: column[e_order] for name, column in exposures.items()}
    blocks: list[np.ndarray] = []
    for listener in np.unique(exposures["listener"]):
        lo, hi = np.searchsorted(listeners_sorted, [listener, listener + 1])
        rows = order[lo:hi]
        artist = listens["artist"][rows].astype(np.int64)
        e_lo, e_hi = np.searchsorted(exposures["listener"], [listener, listener + 1])
        mine = slice(e_lo, e_hi)
        history = features.ListenerHistory.build(
            listens["ts"][rows],
            artist,
            genre_of[np.clip(artist, 0, len(genre_of) - 1)],
            exposure_ts=exposures["ts"][mine],
            exposure_artist=exposures["artist"][mine],
            click_ts=exposures["click_ts"][mine],
            conversion_ts=exposures["conversion_ts"][mine],
        )
        surface = np.array(
            [features.SURFACE_CODES.get(str(s), 0) for s in exposures["surface"][mine]]
        )
        blocks.append(
            features.compute(
                history,
                exposures["ts"][mine],
                exposures["artist"][mine],
                exposures["genre"][mine],
                surface,
                popularity,
            )
        )
    matrix = np.vstack(blocks) if blocks else np.zeros((0, len(features.FEATURES)))
    delay = exposures["conversion_ts"] - exposures["ts"]
    label = exposures["converted"].astype(bool) & (delay >= 0) & (delay <= attribution_seconds)
    columns: dict[str, Any] = {
        "exposure_id": exposures["exposure_id"].astype(str),
        "listener": exposures["listener"].astype(np.int32),
        "release": exposures["release"].astype(np.int32),
        "artist": exposures["artist"].astype(np.int32),
        "ts": exposures["ts"].astype(np.int64),
    }
    for index, name in enumerate(features.FEATURES):
        columns[name] = matrix[:, index]
    columns["label"] = label.astype(np.int8)
    click_delay = exposures["click_ts"] - exposures["ts"]
    columns["clicked"] = ((click_delay >= 0) & (click_delay <= attribution_seconds)).astype(np.int8)
    columns["conversion_type"] = np.where(label, exposures["conversion_type"].astype(str), "")
    return pa.table(columns)


def build_pipeline(
    pipeline: beam.Pipeline, data: DataSet, staging: str, attribution_days: int
) -> None:
    manifest = data.manifest
    start_ts, end_ts = int(manifest["start_ts"]), int(manifest["end_ts"])
    artists = data.artists()
    n_artists = int(artists["artist"].max()) + 1
    genre_of_artist = np.full(n_artists, -1, dtype=np.int64)
    genre_of_artist[artists["artist"]] = artists["genre"]
    days = max(1, (end_ts - start_ts) // features.DAY)
    parts = data.listen_parts()
    daily = (
        pipeline
        | "ListenParts" >> beam.Create(parts)
        | "DailyCounts" >> beam.ParDo(DailyCountsFn(start_ts, n_artists, days))
        | "SumCounts" >> beam.CombineGlobally(SumArrays((n_artists, days)))
    )
    _ = (
        pipeline
        | "NumberedParts" >> beam.Create(list(enumerate(parts)))
        | "SpreadParts" >> beam.Reshuffle()
        | "Features"
        >> beam.ParDo(
            PartFeaturesFn(
                data.exposure_files(),
                genre_of_artist,
                len(parts),
                start_ts,
                attribution_days,
                staging,
            ),
            beam.pvalue.AsSingleton(daily),
        )
        | "SumStats" >> beam.CombineGlobally(_sum_stats)
        | "WriteStats" >> beam.Map(_write_stats, staging)
    )


def _sum_stats(stats: Any) -> dict[str, int]:
    total = {"rows": 0, "labels": 0}
    for item in stats:
        for key in total:
            total[key] += item[key]
    return total


def _write_stats(stats: dict[str, int], staging: str) -> None:
    Path(staging, "stats.json").write_text(json.dumps(stats))


def load_staged(staging: Path) -> dict[str, np.ndarray]:
    """The staged parts as one table, in a stable order (time, then exposure id)."""
    parts = sorted(staging.glob("part-*.parquet"))
    if not parts:
        return {}
    table = pa.concat_tables([pq.read_table(path) for path in parts])
    columns = {name: table.column(name).to_numpy() for name in table.column_names}
    order = np.lexsort((columns["exposure_id"], columns["ts"]))
    return {name: column[order] for name, column in columns.items()}


def previous_rows(output: Path) -> int | None:
    record = output / "last_run.json"
    if not record.exists():
        return None
    return int(json.loads(record.read_text())["rows"])


def run_features(job: FeatureJob) -> FeatureRun:
    """Run the pipeline, check data quality, then publish ``features.parquet`` under ``output``."""
    data = DataSet(job.data)
    data.check()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="backbeat-promotion-") as staging:
            options = PipelineOptions(job.beam_args or ["--runner=DirectRunner"])
            with beam.Pipeline(options=options) as pipeline:
                build_pipeline(pipeline, data, staging, job.attribution_days)
            columns = load_staged(Path(staging))
            staged = json.loads(Path(staging, "stats.json").read_text())
        if staged["rows"] != len(columns.get("label", ())):
            raise RuntimeError("staged parts and pipeline counts disagree")
        check_quality(columns, previous_rows(job.output), job.bounds)
    except Exception:
        PIPELINE_RUNS.labels("failed").inc()
        raise
    job.output.mkdir(parents=True, exist_ok=True)
    path = job.output / "features.parquet"
    pq.write_table(pa.table(columns), path, compression="zstd")
    seconds = time.perf_counter() - started
    run = FeatureRun(
        rows=len(columns["label"]),
        labels=int(columns["label"].sum()),
        listens=int(data.manifest.get("counts", {}).get("listens", 0)),
        seconds=seconds,
        path=path,
    )
    (job.output / "last_run.json").write_text(json.dumps({"rows": run.rows, "labels": run.labels}))
    PIPELINE_RUNS.labels("published").inc()
    PIPELINE_ROWS.set(run.rows)
    PIPELINE_SECONDS.set(seconds)
    log.info(
        "promotion features published", rows=run.rows, labels=run.labels, seconds=round(seconds, 2)
    )
    return run


def read_features(path: Path) -> dict[str, np.ndarray]:
    return read_columns(path)


def run(argv: Sequence[str] | None = None) -> FeatureRun:  # pragma: no cover - thin wrapper
    """``python -m backbeat.promotion.pipeline DATA OUTPUT [beam options]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("output")
    known, beam_args = parser.parse_known_args(argv)
    return run_features(FeatureJob(Path(known.data), Path(known.output), beam_args=beam_args))


if __name__ == "__main__":  # pragma: no cover
    run()

"""Delivery counting as a Beam pipeline over the event records new since the last run.

The steps themselves are plain Python in :mod:`backbeat.measurement.delivery_deltas`
(small batches run them in process without importing Beam); this module wraps them in
DoFns and runs them on a runner.

The same conventions as the download pipeline (``measurement/downloads``): DoFns named
``VerbNounFn``, composites named for what they produce, results staged as JSON through
:class:`~backbeat.measurement.downloads.outputs.WriteStagedFn` (one sink, so the Dask
runner computes every output) and read back by the caller, which commits them.

Inputs and outputs are described in :mod:`~backbeat.measurement.delivery_deltas`.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from backbeat.measurement.delivery_deltas import (
    BUCKETS,
    COUNTED_TYPES,
    Copy,
    DeltaBatch,
    Key,
    as_json,
    batches,
    count_batch,
    delta_batch,
    merge_results,
    resolve_bucket,
)
from backbeat.measurement.downloads.outputs import WriteStagedFn, _read_json, stage


class CountBatchFn(beam.DoFn):  # type: ignore[misc]
    """A batch of records → per-bucket earliest copies (accumulators, not rows) and stats.

    Working on batches keeps Beam's per-element cost off the hot path, as the download
    pipeline does with Arrow batches; the shuffle carries one accumulator per key.
    """

    def __init__(
        self, counted_types: frozenset[str] = COUNTED_TYPES, buckets: int = BUCKETS
    ) -> None:
        self.counted_types = counted_types
        self.buckets = buckets

    def process(self, batch: Sequence[tuple[str, bytes]]) -> Iterator[Any]:
        stats, per_bucket = count_batch(batch, self.counted_types, self.buckets)
        yield beam.pvalue.TaggedOutput("stats", stats)
        yield from per_bucket.items()


class ResolveBucketFn(beam.DoFn):  # type: ignore[misc]
    """Merge a bucket's accumulators and resolve each key against the counted state."""

    def process(
        self,
        element: tuple[int, Iterable[dict[Key, tuple[Copy | None, int]]]],
        counted: Mapping[Key, Copy],
    ) -> Iterator[dict[str, Any]]:
        yield resolve_bucket(element[1], counted)


class DeliveryDeltas(beam.PTransform):  # type: ignore[misc]
    """Batches of records → one staged result: deltas, state, rejections, bad records, stats."""

    def __init__(
        self,
        counted: Mapping[Key, Copy],
        staging: str,
        counted_types: frozenset[str] = COUNTED_TYPES,
        buckets: int = BUCKETS,
    ) -> None:
        super().__init__()
        self.counted = counted
        self.staging = staging
        self.counted_types = counted_types
        self.buckets = buckets

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        state_path = Path(self.staging) / "counted.pickle"
        state_path.write_bytes(pickle.dumps(dict(self.counted), protocol=pickle.HIGHEST_PROTOCOL))
        counted = (
            batches.pipeline
            | "CountedStateFile" >> beam.Create([str(state_path)])
            | "CountedState" >> beam.Map(_load_batch)
        )
        parsed = batches | "CountBatches" >> beam.ParDo(
            CountBatchFn(self.counted_types, self.buckets)
        ).with_outputs("stats", main="buckets")
        resolved = (
            parsed.buckets
            | "GroupBuckets" >> beam.GroupByKey()
            | "ResolveBuckets" >> beam.ParDo(ResolveBucketFn(), beam.pvalue.AsSingleton(counted))
        )
        return (
            (resolved, parsed.stats)
            | "AllParts" >> beam.Flatten()
            | "MergeResults" >> beam.CombineGlobally(merge_results)
            | "AsJson" >> beam.Map(lambda result: stage(as_json(result), "result"))
            | "WriteStaged" >> beam.ParDo(WriteStagedFn(self.staging))
        )


def _load_batch(path: str) -> Any:
    """Unpickle a file this module staged (input batches, the counted state)."""
    with open(path, "rb") as handle:
        return pickle.load(handle)  # type: ignore[no-any-return]  # noqa: S301 - our own file


def count_on_beam(
    records: Sequence[tuple[str, bytes]],
    counted: Mapping[Key, Copy],
    *,
    beam_args: Sequence[str],
    counted_types: frozenset[str],
) -> DeltaBatch:
    options = PipelineOptions(list(beam_args) or ["--runner=DirectRunner"])
    with tempfile.TemporaryDirectory(prefix="backbeat-delivery-") as staging:
        # Batches go through files, not beam.Create: Create pickles and bz2-compresses its
        # values into the pipeline definition, which costs more than the counting.
        paths = []
        for number, batch in enumerate(batches(records)):
            path = Path(staging) / f"input-{number:06d}.pickle"
            path.write_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
            paths.append(str(path))
        with beam.Pipeline(options=options) as pipeline:
            _ = (
                pipeline
                | "BatchFiles" >> beam.Create(paths, reshuffle=False)
                | "ReadBatches" >> beam.Map(_load_batch)
                | "DeliveryDeltas" >> DeliveryDeltas(counted, staging, counted_types)
            )
        return delta_batch(_read_json(f"{staging}/result.json"))  # type: ignore[arg-type]

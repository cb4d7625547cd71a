"""Delivery counting as a Beam pipeline over the event records new since the last run.

The same conventions as the download pipeline (``measurement/downloads``): DoFns named
``VerbNounFn``, composites named for what they produce, results staged as JSON through
:class:`~backbeat.measurement.downloads.outputs.WriteStagedFn` (one sink, so the Dask
runner computes every output) and read back by the caller, which commits them.

Input: batches of ``(position, payload)`` pairs and, as a side input, the copy already
counted for each (decision, event type) the new records mention. Each batch is folded into
per-bucket accumulators (earliest copy and number of copies per key), so the shuffle
carries accumulators rather than rows, as the download pipeline carries Arrow batches.
Output: count and spend deltas per
(line item, UTC hour, event type) — a copy counted before and now superseded by an earlier
copy moves to the earlier copy's hour, so the totals equal "the earliest copy counts"
however the log was split into runs — plus the new de-duplication state, tracker
rejections per hour and reason, records set aside as bad, duplicates and the event-time
watermark. Spend is integer CPM micros (the sum over impressions; / 10⁹ gives the
currency amount exactly).
"""

from __future__ import annotations

import math
import pickle
import re
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions

from backbeat.events import DELIVERY_EVENTS, EventType
from backbeat.measurement.downloads.outputs import WriteStagedFn, _read_json, stage

HOUR = 3600
CURRENCY = re.compile(r"[A-Z]{3}")
# Bounds from the catalog: a CPM below 10^12 with 6 decimals, ids that fit the columns.
MAX_PRICE_MICROS = 10**18
MAX_ID = 2**31 - 1
EXCERPT_CHARS = 500
# Event types counted by default; a caller may count others (e.g. promotion's exposures)
# by passing its own set: everything downstream is keyed by the type's name.
COUNTED_TYPES: frozenset[str] = frozenset(event.value for event in DELIVERY_EVENTS)
TRACKING_ONLY = frozenset({EventType.REJECTED.value, EventType.ERROR.value})


class Copy(NamedTuple):
    """The facts of one copy of a counted event; tuples order earliest first."""

    ts: float
    line_item_id: int
    campaign_id: int
    currency: str
    price_micros: int


Key = tuple[str, str]  # (decision id, event type)


def hour_start(ts: float) -> int:
    return int(ts // HOUR) * HOUR


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _excerpt(payload: bytes) -> str:
    return payload[:EXCERPT_CHARS].decode("utf-8", "replace")


class ParseDeliveryEventFn(beam.DoFn):  # type: ignore[misc]
    """Decode and validate one record; bad ones go to the ``bad`` output with a reason.

    Main output: ``((decision, type), Copy)`` for counted types. ``rejected``: tracker
    rejections as ``((hour, reason), 1)``. ``ts``: every valid timestamp (watermark).
    ``read``: one per tracking hit or bad record.
    Other kinds (opportunities, errors, conversions) are read and not counted here.
    """

    def __init__(self, counted_types: frozenset[str] = COUNTED_TYPES) -> None:
        self.counted_types = counted_types

    def process(self, element: tuple[str, bytes]) -> Iterator[Any]:
        position, payload = element
        try:
            record = orjson.loads(payload)
        except orjson.JSONDecodeError:
            yield beam.pvalue.TaggedOutput("read", 1)
            yield beam.pvalue.TaggedOutput("bad", (position, "malformed-json", _excerpt(payload)))
            return
        reason = _problem(record, self.counted_types)
        if reason is not None:
            yield beam.pvalue.TaggedOutput("read", 1)
            yield beam.pvalue.TaggedOutput("bad", (position, reason, _excerpt(payload)))
            return
        kind, ts = record["type"], float(record["ts"])
        if kind in self.counted_types or kind in TRACKING_ONLY:
            # "Events read" are tracking hits; decision-log and ledger records are not.
            yield beam.pvalue.TaggedOutput("read", 1)
        yield beam.pvalue.TaggedOutput("ts", ts)
        if kind == EventType.REJECTED:
            why = str(record.get("reason") or "unknown")[:32]
            yield beam.pvalue.TaggedOutput("rejected", ((hour_start(ts), why), 1))
        elif kind in self.counted_types:
            yield (
                (record["decision_id"], kind),
                Copy(
                    ts,
                    record["line_item_id"],
                    record.get("campaign_id") or 0,
                    record["currency"],
                    record.get("price_micros") or 0,
                ),
            )


def _problem(record: Any, counted_types: frozenset[str]) -> str | None:
    """Why a record cannot be counted, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        return "malformed-record"
    ts = record.get("ts")
    if type(ts) not in (int, float) or not math.isfinite(ts) or ts < 0:
        return "invalid-timestamp"
    if record["type"] not in counted_types:
        return None
    decision = record.get("decision_id")
    if not isinstance(decision, str) or not 0 < len(decision) <= 64:
        return "invalid-decision-id"
    if not _is_int(record.get("line_item_id"), 1, MAX_ID):
        return "invalid-line-item"
    if not _is_int(record.get("campaign_id") or 0, 0, MAX_ID):
        return "invalid-campaign"
    if not _is_int(record.get("price_micros") or 0, 0, MAX_PRICE_MICROS):
        return "invalid-price"
    currency = record.get("currency")
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        return "invalid-currency"
    return None


class EarliestCopyFn(beam.CombineFn):  # type: ignore[misc]
    """Per (decision, type): the earliest copy and how many copies there were."""

    def create_accumulator(self) -> tuple[Copy | None, int]:
        return None, 0

    def add_input(self, acc: tuple[Copy | None, int], copy: Copy) -> tuple[Copy | None, int]:
        best, n = acc
        return (copy if best is None or copy < best else best), n + 1

    def merge_accumulators(
        self, accumulators: Iterable[tuple[Copy | None, int]]
    ) -> tuple[Copy | None, int]:
        best: Copy | None = None
        total = 0
        for copy, n in accumulators:
            total += n
            if copy is not None and (best is None or copy < best):
                best = copy
        return best, total

    def extract_output(self, acc: tuple[Copy | None, int]) -> tuple[Copy | None, int]:
        return acc


def _delta(copy: Copy, kind: str, sign: int) -> tuple[tuple[Any, ...], tuple[int, int]]:
    spend = copy.price_micros if kind == EventType.IMPRESSION else 0
    key = (copy.line_item_id, hour_start(copy.ts), copy.campaign_id, copy.currency, kind)
    return key, (sign, sign * spend)


def resolve(key: Key, copy: Copy, n: int, prior: Copy | None) -> tuple[list[Any], Copy | None, int]:
    """Deltas, new state (or None) and duplicates for one key's earliest new copy.

    A copy earlier than the one counted before (it arrived in a later run) moves the count
    to its own hour, as a full recount would date it.
    """
    if prior is None:
        return [_delta(copy, key[1], +1)], copy, n - 1
    if copy < prior:
        return [_delta(prior, key[1], -1), _delta(copy, key[1], +1)], copy, n
    return [], None, n


def _bucket(key: Key, buckets: int) -> int:
    return zlib.crc32(key[0].encode()) % buckets


class CountBatchFn(beam.DoFn):  # type: ignore[misc]
    """A batch of records → per-bucket earliest copies (accumulators, not rows) and stats.

    Working on batches keeps Beam's per-element cost off the hot path, as the download
    pipeline does with Arrow batches; the shuffle carries one accumulator per key.
    """

    def __init__(self, counted_types: frozenset[str] = COUNTED_TYPES, buckets: int = 8) -> None:
        self.counted_types = counted_types
        self.buckets = buckets

    def process(self, batch: Sequence[tuple[str, bytes]]) -> Iterator[Any]:
        parse = ParseDeliveryEventFn(self.counted_types)
        earliest = EarliestCopyFn()
        per_bucket: dict[int, dict[Key, tuple[Copy | None, int]]] = {}
        rejected: dict[tuple[int, str], int] = {}
        bad: list[tuple[str, str, str]] = []
        read = 0
        watermark = 0.0
        for element in batch:
            for out in parse.process(element):
                if not isinstance(out, beam.pvalue.TaggedOutput):
                    key, copy = out
                    accumulators = per_bucket.setdefault(_bucket(key, self.buckets), {})
                    acc = accumulators.get(key) or earliest.create_accumulator()
                    accumulators[key] = earliest.add_input(acc, copy)
                elif out.tag == "read":
                    read += out.value
                elif out.tag == "ts":
                    watermark = max(watermark, out.value)
                elif out.tag == "rejected":
                    hour_reason, n = out.value
                    rejected[hour_reason] = rejected.get(hour_reason, 0) + n
                else:
                    bad.append(out.value)
        yield beam.pvalue.TaggedOutput(
            "stats",
            {"read": read, "watermark": watermark, "rejected": rejected, "bad": bad},
        )
        yield from per_bucket.items()


class ResolveBucketFn(beam.DoFn):  # type: ignore[misc]
    """Merge a bucket's accumulators and resolve each key against the counted state."""

    def process(
        self,
        element: tuple[int, Iterable[dict[Key, tuple[Copy | None, int]]]],
        counted: Mapping[Key, Copy],
    ) -> Iterator[dict[str, Any]]:
        _, parts = element
        earliest = EarliestCopyFn()
        merged: dict[Key, tuple[Copy | None, int]] = {}
        for part in parts:
            for key, acc in part.items():
                previous = merged.get(key)
                merged[key] = (
                    acc if previous is None else earliest.merge_accumulators([previous, acc])
                )
        deltas: dict[tuple[Any, ...], list[int]] = {}
        state: dict[Key, Copy] = {}
        duplicates = 0
        for key, (copy, n) in merged.items():
            assert copy is not None
            changes, new_state, dup = resolve(key, copy, n, counted.get(key))
            for delta_key, (count, spend) in changes:
                total = deltas.setdefault(delta_key, [0, 0])
                total[0] += count
                total[1] += spend
            if new_state is not None:
                state[key] = new_state
            duplicates += dup
        yield {"deltas": deltas, "state": state, "duplicates": duplicates}


def merge_results(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Fold per-batch stats and per-bucket results into one result (associative)."""
    out: dict[str, Any] = {
        "deltas": {}, "state": {}, "duplicates": 0, "read": 0, "watermark": 0.0,
        "rejected": {}, "bad": [],
    }  # fmt: skip
    for part in parts:
        for key, (count, spend) in part.get("deltas", {}).items():
            total = out["deltas"].setdefault(key, [0, 0])
            total[0] += count
            total[1] += spend
        out["state"].update(part.get("state", {}))
        out["duplicates"] += part.get("duplicates", 0)
        out["read"] += part.get("read", 0)
        out["watermark"] = max(out["watermark"], part.get("watermark", 0.0))
        for key, n in part.get("rejected", {}).items():
            out["rejected"][key] = out["rejected"].get(key, 0) + n
        out["bad"] += part.get("bad", [])
    return out


def _as_json(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "deltas": [[*key, count, spend] for key, (count, spend) in result["deltas"].items()],
        "state": [[list(key), list(copy)] for key, copy in result["state"].items()],
        "duplicates": result["duplicates"],
        "read": result["read"],
        "watermark": result["watermark"],
        "rejected": [[*key, n] for key, n in result["rejected"].items()],
        "bad": [list(row) for row in result["bad"]],
    }


class DeliveryDeltas(beam.PTransform):  # type: ignore[misc]
    """Batches of records → one staged result: deltas, state, rejections, bad records, stats."""

    def __init__(
        self,
        counted: Mapping[Key, Copy],
        staging: str,
        counted_types: frozenset[str] = COUNTED_TYPES,
        buckets: int = 8,
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
            | "AsJson" >> beam.Map(lambda result: stage(_as_json(result), "result"))
            | "WriteStaged" >> beam.ParDo(WriteStagedFn(self.staging))
        )


@dataclass(slots=True)
class DeltaBatch:
    """What one pipeline run produced, ready to be committed."""

    # (line item, hour epoch, campaign, currency, type, count delta, spend micros delta)
    deltas: list[tuple[int, int, int, str, str, int, int]] = field(default_factory=list)
    state: dict[Key, Copy] = field(default_factory=dict)
    rejected: list[tuple[int, str, int]] = field(default_factory=list)
    bad: list[tuple[str, str, str]] = field(default_factory=list)
    duplicates: int = 0
    watermark: float = 0.0
    read: int = 0


# Starting a Beam runner costs seconds; below this many records the same DoFns and
# CombineFns are applied in this process (as Beam's own DoFn tests call them).
DEFAULT_BEAM_MIN_RECORDS = 50_000


def count_deltas(
    records: Sequence[tuple[str, bytes]],
    counted: Mapping[Key, Copy],
    *,
    beam_args: Sequence[str] = (),
    counted_types: frozenset[str] = COUNTED_TYPES,
    beam_min_records: int = DEFAULT_BEAM_MIN_RECORDS,
) -> DeltaBatch:
    """Count ``records`` against the copies already ``counted``.

    On a Beam runner (``beam_args``, DirectRunner by default) when the batch has at least
    ``beam_min_records`` records or a runner is named; otherwise by applying the
    pipeline's own DoFns and CombineFns in process, which gives the same result without a
    runner's start-up cost on the small batches of frequent runs.
    """
    if beam_args or len(records) >= beam_min_records:
        return _count_on_beam(records, counted, beam_args=beam_args, counted_types=counted_types)
    return _count_in_process(records, counted, counted_types=counted_types)


BATCH_RECORDS = 5_000


def _batches(records: Sequence[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    return [list(records[i : i + BATCH_RECORDS]) for i in range(0, len(records), BATCH_RECORDS)]


def _delta_batch(result: dict[str, Any]) -> DeltaBatch:
    return DeltaBatch(
        deltas=[tuple(row) for row in result["deltas"]],  # type: ignore[misc]
        state={(key[0], key[1]): Copy(*copy) for key, copy in result["state"]},
        rejected=[tuple(row) for row in result["rejected"]],  # type: ignore[misc]
        bad=[tuple(row) for row in result["bad"]],  # type: ignore[misc]
        duplicates=int(result["duplicates"]),
        watermark=float(result["watermark"]),
        read=int(result["read"]),
    )


def _load_batch(path: str) -> Any:
    """Unpickle a file this module staged (input batches, the counted state)."""
    with open(path, "rb") as handle:
        return pickle.load(handle)  # type: ignore[no-any-return]  # noqa: S301 - our own file


def _count_on_beam(
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
        for number, batch in enumerate(_batches(records)):
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
        return _delta_batch(_read_json(f"{staging}/result.json"))  # type: ignore[arg-type]


def _count_in_process(
    records: Sequence[tuple[str, bytes]],
    counted: Mapping[Key, Copy],
    *,
    counted_types: frozenset[str],
) -> DeltaBatch:
    """The pipeline's DoFns applied in order, with a dict as the shuffle."""
    count = CountBatchFn(counted_types)
    parts: list[dict[str, Any]] = []
    buckets: dict[int, list[dict[Key, tuple[Copy | None, int]]]] = {}
    for batch in _batches(records):
        for out in count.process(batch):
            if isinstance(out, beam.pvalue.TaggedOutput):
                parts.append(out.value)
            else:
                buckets.setdefault(out[0], []).append(out[1])
    resolve_fn = ResolveBucketFn()
    for element in buckets.items():
        parts.extend(resolve_fn.process(element, counted))
    return _delta_batch(_as_json(merge_results(parts)))

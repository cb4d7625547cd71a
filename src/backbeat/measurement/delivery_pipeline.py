"""Delivery counting as a Beam pipeline over the event records new since the last run.

The same conventions as the download pipeline (``measurement/downloads``): DoFns named
``VerbNounFn``, composites named for what they produce, results staged as JSON through
:class:`~backbeat.measurement.downloads.outputs.WriteStagedFn` (one sink, so the Dask
runner computes every output) and read back by the caller, which commits them.

Input: ``(position, payload)`` pairs and, as a side input, the copy already counted for
each (decision, event type) the new records mention. Output: count and spend deltas per
(line item, UTC hour, event type) — a copy counted before and now superseded by an earlier
copy moves to the earlier copy's hour, so the totals equal "the earliest copy counts"
however the log was split into runs — plus the new de-duplication state, tracker
rejections per hour and reason, records set aside as bad, duplicates and the event-time
watermark. Spend is integer CPM micros (the sum over impressions; / 10⁹ gives the
currency amount exactly).
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
STAGED = ("deltas", "state", "rejected", "bad", "duplicates", "watermark", "read")


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


class ResolveAgainstCountedFn(beam.DoFn):  # type: ignore[misc]
    """Compare each new earliest copy with the copy already counted (side input)."""

    def process(
        self, element: tuple[Key, tuple[Copy, int]], counted: Mapping[Key, Sequence[Any]]
    ) -> Iterator[Any]:
        key, (copy, n) = element
        prior_fields = counted.get(key)
        prior = Copy(*prior_fields) if prior_fields is not None else None
        if prior is None:
            yield _delta(copy, key[1], +1)
            yield beam.pvalue.TaggedOutput("state", (list(key), list(copy)))
            duplicates = n - 1
        elif copy < prior:
            # An earlier copy arrived in a later run: it dates the event, as in a full recount.
            yield _delta(prior, key[1], -1)
            yield _delta(copy, key[1], +1)
            yield beam.pvalue.TaggedOutput("state", (list(key), list(copy)))
            duplicates = n
        else:
            duplicates = n
        if duplicates:
            yield beam.pvalue.TaggedOutput("duplicates", duplicates)


def _sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    count = spend = 0
    for c, s in pairs:
        count += c
        spend += s
    return count, spend


class DeliveryDeltas(beam.PTransform):  # type: ignore[misc]
    """Records → staged deltas, state, rejections, bad records, duplicates, watermark."""

    def __init__(
        self,
        counted: Mapping[Key, Copy],
        staging: str,
        counted_types: frozenset[str] = COUNTED_TYPES,
    ) -> None:
        super().__init__()
        self.counted = counted
        self.staging = staging
        self.counted_types = counted_types

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        parsed = records | "ParseEvents" >> beam.ParDo(
            ParseDeliveryEventFn(self.counted_types)
        ).with_outputs("bad", "rejected", "ts", "read", main="copies")
        counted = records.pipeline | "CountedState" >> beam.Create(
            [(key, tuple(copy)) for key, copy in self.counted.items()]
        )
        resolved = (
            parsed.copies
            | "EarliestCopy" >> beam.CombinePerKey(EarliestCopyFn())
            | "ResolveAgainstCounted"
            >> beam.ParDo(ResolveAgainstCountedFn(), beam.pvalue.AsDict(counted)).with_outputs(
                "state", "duplicates", main="deltas"
            )
        )
        deltas = (
            resolved.deltas
            | "SumDeltas" >> beam.CombinePerKey(_sum_pairs)
            | "DeltaRows" >> beam.Map(lambda kv: [*kv[0], *kv[1]])
        )
        rejected = (
            parsed.rejected
            | "SumRejected" >> beam.CombinePerKey(sum)
            | "RejectedRows" >> beam.Map(lambda kv: [*kv[0], kv[1]])
        )
        staged = [
            deltas
            | "ListDeltas" >> beam.combiners.ToList()
            | "StageDeltas" >> beam.Map(stage, "deltas"),
            resolved.state
            | "ListState" >> beam.combiners.ToList()
            | "StageState" >> beam.Map(stage, "state"),
            rejected
            | "ListRejected" >> beam.combiners.ToList()
            | "StageRejected" >> beam.Map(stage, "rejected"),
            parsed.bad
            | "ListBad" >> beam.combiners.ToList()
            | "StageBad" >> beam.Map(lambda rows: stage([list(r) for r in rows], "bad")),
            resolved.duplicates
            | "SumDuplicates" >> beam.CombineGlobally(sum)
            | "StageDuplicates" >> beam.Map(stage, "duplicates"),
            parsed.ts
            | "Watermark" >> beam.CombineGlobally(lambda values: max(values, default=0.0))
            | "StageWatermark" >> beam.Map(stage, "watermark"),
            parsed.read
            | "SumRead" >> beam.CombineGlobally(sum)
            | "StageRead" >> beam.Map(stage, "read"),
        ]
        return (
            staged
            | "MergeStaged" >> beam.Flatten()
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


def _count_on_beam(
    records: Sequence[tuple[str, bytes]],
    counted: Mapping[Key, Copy],
    *,
    beam_args: Sequence[str],
    counted_types: frozenset[str],
) -> DeltaBatch:
    options = PipelineOptions(list(beam_args) or ["--runner=DirectRunner"])
    with tempfile.TemporaryDirectory(prefix="backbeat-delivery-") as staging:
        with beam.Pipeline(options=options) as pipeline:
            _ = (
                pipeline
                | "NewRecords" >> beam.Create(list(records), reshuffle=False)
                | "DeliveryDeltas" >> DeliveryDeltas(counted, staging, counted_types)
            )
        return DeltaBatch(
            deltas=[tuple(row) for row in _read_json(f"{staging}/deltas.json")],  # type: ignore[misc]
            state={
                (key[0], key[1]): Copy(*copy) for key, copy in _read_json(f"{staging}/state.json")
            },
            rejected=[tuple(row) for row in _read_json(f"{staging}/rejected.json")],  # type: ignore[misc]
            bad=[tuple(row) for row in _read_json(f"{staging}/bad.json")],  # type: ignore[misc]
            duplicates=int(_read_json(f"{staging}/duplicates.json") or 0),
            watermark=float(_read_json(f"{staging}/watermark.json") or 0),
            read=int(_read_json(f"{staging}/read.json") or 0),
        )


def _count_in_process(
    records: Sequence[tuple[str, bytes]],
    counted: Mapping[Key, Copy],
    *,
    counted_types: frozenset[str],
) -> DeltaBatch:
    batch = DeltaBatch()
    parse = ParseDeliveryEventFn(counted_types)
    earliest = EarliestCopyFn()
    accumulators: dict[Key, tuple[Copy | None, int]] = {}
    rejected: dict[tuple[int, str], int] = {}
    for element in records:
        for out in parse.process(element):
            if not isinstance(out, beam.pvalue.TaggedOutput):
                key, copy = out
                acc = accumulators.get(key) or earliest.create_accumulator()
                accumulators[key] = earliest.add_input(acc, copy)
            elif out.tag == "read":
                batch.read += out.value
            elif out.tag == "ts":
                batch.watermark = max(batch.watermark, out.value)
            elif out.tag == "rejected":
                key_r, n = out.value
                rejected[key_r] = rejected.get(key_r, 0) + n
            elif out.tag == "bad":
                batch.bad.append(out.value)
    resolve = ResolveAgainstCountedFn()
    deltas: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for key, acc in accumulators.items():
        for out in resolve.process((key, earliest.extract_output(acc)), counted):
            if not isinstance(out, beam.pvalue.TaggedOutput):
                deltas.setdefault(out[0], []).append(out[1])
            elif out.tag == "state":
                (decision, kind), copy = out.value
                batch.state[(decision, kind)] = Copy(*copy)
            elif out.tag == "duplicates":
                batch.duplicates += out.value
    batch.deltas = [(*key, *_sum_pairs(pairs)) for key, pairs in deltas.items()]  # type: ignore[misc]
    batch.rejected = [(*key, n) for key, n in rejected.items()]  # type: ignore[misc]
    return batch

"""Delivery counting without a runner: the pipeline's steps as plain Python.

:mod:`backbeat.measurement.delivery_pipeline` runs these steps on Beam for large batches;
small batches run them here, in process. Importing Beam costs seconds, so it is left to
the runs that need a runner: the API and frequent small runs never load it.

Input: batches of ``(position, payload)`` pairs and, as a side input, the copy already
counted for each (decision, event type) the new records mention. Each batch is folded into
per-bucket accumulators (earliest copy and number of copies per key), so a shuffle carries
accumulators rather than rows. Output: count and spend deltas per
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
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from backbeat.events import DELIVERY_EVENTS, EventType

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


class Tagged(NamedTuple):
    """A side output (``read``, ``ts``, ``rejected``, ``bad``, ``stats``) and its value."""

    tag: str
    value: Any


def parse_record(element: tuple[str, bytes], counted_types: frozenset[str]) -> Iterator[Any]:
    """Decode and validate one record; bad ones go to the ``bad`` output with a reason.

    Main output: ``((decision, type), Copy)`` for counted types. ``rejected``: tracker
    rejections as ``((hour, reason), 1)``. ``ts``: every valid timestamp (watermark).
    ``read``: one per tracking hit or bad record.
    Other kinds (opportunities, errors, conversions) are read and not counted here.
    """
    position, payload = element
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError:
        yield Tagged("read", 1)
        yield Tagged("bad", (position, "malformed-json", _excerpt(payload)))
        return
    reason = _problem(record, counted_types)
    if reason is not None:
        yield Tagged("read", 1)
        yield Tagged("bad", (position, reason, _excerpt(payload)))
        return
    kind, ts = record["type"], float(record["ts"])
    if kind in counted_types or kind in TRACKING_ONLY:
        # "Events read" are tracking hits; decision-log and ledger records are not.
        yield Tagged("read", 1)
    yield Tagged("ts", ts)
    if kind == EventType.REJECTED:
        why = str(record.get("reason") or "unknown")[:32]
        yield Tagged("rejected", ((hour_start(ts), why), 1))
    elif kind in counted_types:
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


def add_copy(acc: tuple[Copy | None, int] | None, copy: Copy) -> tuple[Copy | None, int]:
    """Per (decision, type): fold one copy into (earliest copy, number of copies)."""
    best, n = acc or (None, 0)
    return (copy if best is None or copy < best else best), n + 1


def merge_accumulators(accumulators: Iterable[tuple[Copy | None, int]]) -> tuple[Copy | None, int]:
    best: Copy | None = None
    total = 0
    for copy, n in accumulators:
        total += n
        if copy is not None and (best is None or copy < best):
            best = copy
    return best, total


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


BUCKETS = 8


def _bucket(key: Key, buckets: int) -> int:
    return zlib.crc32(key[0].encode()) % buckets


def count_batch(
    batch: Sequence[tuple[str, bytes]], counted_types: frozenset[str], buckets: int
) -> tuple[dict[str, Any], dict[int, dict[Key, tuple[Copy | None, int]]]]:
    """A batch of records → its stats and per-bucket earliest copies (accumulators, not rows)."""
    per_bucket: dict[int, dict[Key, tuple[Copy | None, int]]] = {}
    rejected: dict[tuple[int, str], int] = {}
    bad: list[tuple[str, str, str]] = []
    read = 0
    watermark = 0.0
    for element in batch:
        for out in parse_record(element, counted_types):
            if not isinstance(out, Tagged):
                key, copy = out
                accumulators = per_bucket.setdefault(_bucket(key, buckets), {})
                accumulators[key] = add_copy(accumulators.get(key), copy)
            elif out.tag == "read":
                read += out.value
            elif out.tag == "ts":
                watermark = max(watermark, out.value)
            elif out.tag == "rejected":
                hour_reason, n = out.value
                rejected[hour_reason] = rejected.get(hour_reason, 0) + n
            else:
                bad.append(out.value)
    stats = {"read": read, "watermark": watermark, "rejected": rejected, "bad": bad}
    return stats, per_bucket


def resolve_bucket(
    parts: Iterable[dict[Key, tuple[Copy | None, int]]], counted: Mapping[Key, Copy]
) -> dict[str, Any]:
    """Merge a bucket's accumulators and resolve each key against the counted state."""
    merged: dict[Key, tuple[Copy | None, int]] = {}
    for part in parts:
        for key, acc in part.items():
            previous = merged.get(key)
            merged[key] = acc if previous is None else merge_accumulators([previous, acc])
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
    return {"deltas": deltas, "state": state, "duplicates": duplicates}


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


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "deltas": [[*key, count, spend] for key, (count, spend) in result["deltas"].items()],
        "state": [[list(key), list(copy)] for key, copy in result["state"].items()],
        "duplicates": result["duplicates"],
        "read": result["read"],
        "watermark": result["watermark"],
        "rejected": [[*key, n] for key, n in result["rejected"].items()],
        "bad": [list(row) for row in result["bad"]],
    }


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
        from backbeat.measurement.delivery_pipeline import count_on_beam

        return count_on_beam(records, counted, beam_args=beam_args, counted_types=counted_types)
    return _count_in_process(records, counted, counted_types=counted_types)


BATCH_RECORDS = 5_000


def batches(records: Sequence[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    return [list(records[i : i + BATCH_RECORDS]) for i in range(0, len(records), BATCH_RECORDS)]


def delta_batch(result: dict[str, Any]) -> DeltaBatch:
    return DeltaBatch(
        deltas=[tuple(row) for row in result["deltas"]],  # type: ignore[misc]
        state={(key[0], key[1]): Copy(*copy) for key, copy in result["state"]},
        rejected=[tuple(row) for row in result["rejected"]],  # type: ignore[misc]
        bad=[tuple(row) for row in result["bad"]],  # type: ignore[misc]
        duplicates=int(result["duplicates"]),
        watermark=float(result["watermark"]),
        read=int(result["read"]),
    )


def _count_in_process(
    records: Sequence[tuple[str, bytes]],
    counted: Mapping[Key, Copy],
    *,
    counted_types: frozenset[str],
) -> DeltaBatch:
    """The pipeline's steps applied in order, with a dict as the shuffle."""
    parts: list[dict[str, Any]] = []
    buckets: dict[int, list[dict[Key, tuple[Copy | None, int]]]] = {}
    for batch in batches(records):
        stats, per_bucket = count_batch(batch, counted_types, BUCKETS)
        parts.append(stats)
        for bucket, accumulators in per_bucket.items():
            buckets.setdefault(bucket, []).append(accumulators)
    parts.extend(resolve_bucket(bucket_parts, counted) for bucket_parts in buckets.values())
    return delta_batch(as_json(merge_results(parts)))

"""Beam transforms counting downloads from batches of log lines; batch and streaming share them.

Elements are Arrow arrays / record batches, not one Python object per line: parse and
rule steps work a batch at a time, the shuffle is keyed by a hash bucket of the
listener, and each bucket is counted vectorised (:mod:`batch`).

DoFns with several outputs emit ``(tag, value)`` envelopes on their one output and
``Route`` steps split them, instead of ``TaggedOutput``: Beam's DaskRunner (2.77) hands
every tagged output of a ParDo to every consumer, and the pipeline must run there too.
Dead letters (rejects) are still a separate, tagged stream with a ``Metrics`` counter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window

from backbeat.measurement.accesslogs import COMBINED
from backbeat.measurement.downloads.batch import (
    HIT_SCHEMA,
    assess_batch,
    compact_hits,
    count_bucket,
    parse_batch,
    requests_per_day,
    split_by_bucket,
)
from backbeat.measurement.downloads.rules import DAY_US
from backbeat.measurement.downloads.spec import DownloadRules

NAMESPACE = "backbeat.downloads"
REQUESTS = "requests"
REJECTS = "rejects"
STATS = "stats"
HITS = "hits"
DOWNLOADS = "downloads"
ADS = "ads"
PANES = "panes"
DEFAULT_BUCKETS = 64


def _stats(kind: str, counts: dict[str, int]) -> Iterator[tuple[str, Any]]:
    for reason, count in counts.items():
        if not count:
            continue
        Metrics.counter(NAMESPACE, f"{kind}-{reason}").inc(count)
        yield STATS, ((kind, str(reason)), count)


def payloads(envelope: tuple[str, Any], tag: str) -> Iterator[Any]:
    """The value of an envelope carrying ``tag``."""
    if envelope[0] == tag:
        yield envelope[1]


def route(envelopes: beam.PCollection, label: str, *tags: str) -> dict[str, beam.PCollection]:
    """Split an envelope stream into one PCollection per tag."""
    return {tag: envelopes | f"{label}{tag.title()}" >> beam.FlatMap(payloads, tag) for tag in tags}


class ParseLogBatchFn(beam.DoFn):
    """Parse a batch of raw lines; malformed lines go to the ``rejects`` output with a reason."""

    def __init__(self, fmt: str = COMBINED) -> None:
        self.fmt = fmt

    def process(self, lines: pa.Array) -> Iterator[Any]:
        parsed, rejects = parse_batch(lines, self.fmt)
        yield STATS, (("lines", ""), len(lines))
        yield from _stats("rejected", Counter(rejects["reason"].to_pylist()))
        if rejects.num_rows:
            yield REJECTS, rejects
        if parsed.num_rows:
            yield REQUESTS, parsed


class AssessRequestsFn(beam.DoFn):
    """Apply the per-request rules; excluded requests are counted by reason."""

    def __init__(self, rules: DownloadRules) -> None:
        self.rules = rules

    def process(self, parsed: pa.RecordBatch) -> Iterator[Any]:
        hits, excluded = assess_batch(parsed, self.rules)
        yield from _stats("excluded", excluded)
        yield from _stats("accepted", {"": hits.num_rows})
        yield from _stats("days", requests_per_day(hits))
        if hits.num_rows:
            yield HITS, hits


class SplitByBucketFn(beam.DoFn):
    """Key sub-batches by a hash bucket of (listener IP, episode) for the shuffle."""

    def __init__(self, num_buckets: int = DEFAULT_BUCKETS) -> None:
        self.num_buckets = num_buckets

    def process(self, hits: pa.RecordBatch) -> Iterator[tuple[int, pa.RecordBatch]]:
        yield from split_by_bucket(hits, self.num_buckets)


class CompactHitsCombineFn(beam.CombineFn):  # type: ignore[misc]
    """A bucket's hits reduced to what the rules still need (:func:`compact_hits`).

    The accumulator is a list of Arrow tables, compacted whenever the rows added since the
    last compaction outnumber the compacted ones (amortised linear). With combiner lifting
    each bundle pre-combines, so the shuffle carries compacted state, not every hit.
    """

    def __init__(self, rules: DownloadRules, min_rows: int = 65_536) -> None:
        self.rules = rules
        self.min_rows = min_rows

    def create_accumulator(self) -> list[pa.Table]:
        return []

    def _compact(self, parts: list[pa.Table]) -> list[pa.Table]:
        if not parts:
            return parts
        return [compact_hits(pa.concat_tables(parts), self.rules)]

    def add_input(self, acc: list[pa.Table], batch: pa.RecordBatch) -> list[pa.Table]:
        acc.append(pa.Table.from_batches([batch]))
        pending = sum(t.num_rows for t in acc[1:])
        if pending >= max(self.min_rows, acc[0].num_rows):
            acc = self._compact(acc)
        return acc

    def merge_accumulators(self, accumulators: Iterable[list[pa.Table]]) -> list[pa.Table]:
        return self._compact([t for acc in accumulators for t in acc])

    def compact(self, acc: list[pa.Table]) -> list[pa.Table]:
        return self._compact(acc)

    def extract_output(self, acc: list[pa.Table]) -> pa.Table:
        parts = self._compact(acc)
        return parts[0] if parts else pa.Table.from_batches([], HIT_SCHEMA)


class CountBucketDownloadsFn(beam.DoFn):
    """Count the downloads and delivered ads among one bucket's (compacted) hits."""

    def __init__(self, rules: DownloadRules) -> None:
        self.rules = rules

    def process(self, element: tuple[int, pa.Table]) -> Iterator[Any]:
        _, table = element
        downloads, ads = count_bucket(table, self.rules)
        Metrics.counter(NAMESPACE, "downloads").inc(sum(downloads.values()))
        for key, count in downloads.items():
            yield DOWNLOADS, (key, count)
        for key, count in ads.items():
            yield ADS, (key, count)


class CountStreamingPaneFn(beam.DoFn):
    """Count one bucket's window so far; each pane replaces the previous one for that bucket."""

    def __init__(self, rules: DownloadRules) -> None:
        self.rules = rules

    def process(
        self,
        element: tuple[int, Iterable[pa.RecordBatch]],
        win: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[dict[str, Any]]:
        bucket, batches = element
        table = pa.Table.from_batches(list(batches))
        downloads, ads = count_bucket(table, self.rules)
        if pane.timing == beam.utils.windowed_value.PaneInfoTiming.LATE:
            Metrics.counter(NAMESPACE, "late-panes").inc()
        yield {
            "window_start_us": int(win.start.micros),
            "bucket": bucket,
            "pane_index": pane.index,
            "late": pane.timing == beam.utils.windowed_value.PaneInfoTiming.LATE,
            "requests": table.num_rows,
            "downloads": dict(downloads),
            "ads": dict(ads),
        }


class BucketedHits(beam.PTransform):  # type: ignore[misc]
    """Counting hits grouped by listener bucket, with line accounting and rejects.

    Output is a dict: ``keyed`` ``(bucket, record batch)``, ``stats``
    ``((kind, reason), n)`` (not yet summed) and ``rejects`` (record batches of
    ``reason``, ``line``).
    """

    def __init__(self, rules: DownloadRules, fmt: str, num_buckets: int) -> None:
        super().__init__()
        self.rules = rules
        self.fmt = fmt
        self.num_buckets = num_buckets

    def expand(self, lines: beam.PCollection) -> dict[str, beam.PCollection]:
        parsed = route(
            lines | "ParseLogLines" >> beam.ParDo(ParseLogBatchFn(self.fmt)),
            "RouteParsed",
            REQUESTS,
            REJECTS,
            STATS,
        )
        assessed = route(
            parsed[REQUESTS] | "ApplyRequestRules" >> beam.ParDo(AssessRequestsFn(self.rules)),
            "RouteAssessed",
            HITS,
            STATS,
        )
        keyed = assessed[HITS] | "KeyByListenerBucket" >> beam.ParDo(
            SplitByBucketFn(self.num_buckets)
        )
        stats = (parsed[STATS], assessed[STATS]) | "MergeStats" >> beam.Flatten()
        return {"keyed": keyed, "stats": stats, "rejects": parsed[REJECTS]}


class DownloadCounts(beam.PTransform):  # type: ignore[misc]
    """Downloads, delivered ads, line accounting and rejects from batches of log lines.

    Output is a dict: ``downloads`` ``((date, episode_id, app), n)``, ``ads``
    ``((date, episode_id, ad_id), n)``, ``stats`` ``((kind, reason), n)`` and ``rejects``
    (record batches of ``reason``, ``line``).
    """

    def __init__(
        self, rules: DownloadRules, fmt: str = COMBINED, num_buckets: int = DEFAULT_BUCKETS
    ) -> None:
        super().__init__()
        self.rules = rules
        self.fmt = fmt
        self.num_buckets = num_buckets

    def expand(self, lines: beam.PCollection) -> dict[str, beam.PCollection]:
        hits = lines | "BucketHits" >> BucketedHits(self.rules, self.fmt, self.num_buckets)
        counted = route(
            hits["keyed"]
            | "CompactBucketHits" >> beam.CombinePerKey(CompactHitsCombineFn(self.rules))
            | "CountInBucket" >> beam.ParDo(CountBucketDownloadsFn(self.rules)),
            "RouteCounts",
            DOWNLOADS,
            ADS,
        )
        return {
            "downloads": counted[DOWNLOADS] | "SumDownloads" >> beam.CombinePerKey(sum),
            "ads": counted[ADS] | "SumAds" >> beam.CombinePerKey(sum),
            "stats": hits["stats"] | "SumStats" >> beam.CombinePerKey(sum),
            "rejects": hits["rejects"],
        }


def lines_to_array(lines: list[str]) -> pa.Array:
    """A batch of streamed lines as an Arrow array."""
    return pa.array(lines, pa.string())


class StreamingDownloadPanes(beam.PTransform):  # type: ignore[misc]
    """Download panes per UTC day from an unbounded, event-timestamped stream of log lines.

    The same parse, rule and bucket steps as :class:`DownloadCounts`, inside daily
    event-time windows. Panes fire at the watermark and again for each late element
    within ``allowed_lateness_s``; they accumulate, so a later pane for a (day, bucket)
    replaces the earlier one, and ``late`` panes show what late data changed.
    Rolling first-touch windows need the whole day's history and are batch-only.
    """

    def __init__(
        self,
        rules: DownloadRules,
        fmt: str = COMBINED,
        num_buckets: int = DEFAULT_BUCKETS,
        allowed_lateness_s: int = 3600,
    ) -> None:
        super().__init__()
        self.rules = rules
        self.fmt = fmt
        self.num_buckets = num_buckets
        self.allowed_lateness_s = allowed_lateness_s

    def expand(self, lines: beam.PCollection) -> dict[str, beam.PCollection]:
        windowed = lines | "WindowByUtcDay" >> beam.WindowInto(
            window.FixedWindows(DAY_US // 1_000_000),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=self.allowed_lateness_s,
        )
        batches = (
            windowed
            | "BatchLines" >> beam.BatchElements(min_batch_size=1, max_batch_size=10_000)
            | "LinesToArrow" >> beam.Map(lines_to_array)
        )
        hits = batches | "BucketHits" >> BucketedHits(self.rules, self.fmt, self.num_buckets)
        panes = (
            hits["keyed"]
            | "GroupByBucket" >> beam.GroupByKey()
            | "CountPane" >> beam.ParDo(CountStreamingPaneFn(self.rules))
        )
        return {PANES: panes, "stats": hits["stats"], "rejects": hits["rejects"]}


def fold_panes(panes: Iterable[dict[str, Any]]) -> tuple[Counter[Any], Counter[Any], int]:
    """Latest pane per (day, bucket) summed: downloads, ads and requests that arrived late."""
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    on_time: dict[tuple[int, int], int] = {}
    for pane in panes:
        key = (pane["window_start_us"], pane["bucket"])
        if key not in latest or pane["pane_index"] > latest[key]["pane_index"]:
            latest[key] = pane
        if not pane["late"]:
            on_time[key] = max(on_time.get(key, 0), pane["requests"])
    downloads: Counter[Any] = Counter()
    ads: Counter[Any] = Counter()
    late = 0
    for key, pane in latest.items():
        downloads.update(pane["downloads"])
        ads.update(pane["ads"])
        late += pane["requests"] - on_time.get(key, 0)
    return downloads, ads, late

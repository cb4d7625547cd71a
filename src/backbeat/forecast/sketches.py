"""Distinct listeners of a targeting from Apache DataSketches theta sketches of the whole log.

Why: the supply sample keeps a share of listeners, so its Horvitz-Thompson count of a
small audience is noisy; a theta sketch per targeting value and day, built from every
listener of the decision log, answers unions (values of one key, days of a window),
intersections (keys) and differences (``not``) with bounded memory (at most ``2^lg_k``
hashes each) and a stated error (``get_lower_bound``/``get_upper_bound``).

The algebra is exact only where set algebra over *listeners* equals the targeting over
*requests*: "a listener with a US request and a listener with a news request" is "a
listener with a US news request" only if one of the two keys never changes within a
listener. So each key is classed at build time as listener-level (constant per listener
in the history: country, device, segments...) or request-level (genre, daypart...); an
expression with at most one request-level key is answered here (a request-level ``not``
as the union of the key's other values and "absent"; a listener-level one by
``theta_a_not_b``); anything else (two request-level keys, ``any``, nested ``not``,
unknown keys) returns None and reach falls back to the sample.

Days are counted back from ``now`` (day ``j`` holds ``[now - (j + 1) d, now - j d)``), and a
slice always ends at ``now``: so each value keeps, for every ``n``, the union of its last
``n`` days (built once as a running union), and a draft's key costs one union of its
values' sketches, cached (LRU) per value set and slice: a batch of drafts over the same
flight shares them. Memory: at most ``days x values x 2^lg_k`` hashes of 8 bytes.
"""

from __future__ import annotations

import atexit
import math
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasketches import (
    compact_theta_sketch,
    theta_a_not_b,
    theta_intersection,
    theta_union,
    update_theta_sketch,
)

from backbeat.forecast.history import OpportunityTable
from backbeat.forecast.sample import listener_hashes
from backbeat.serving.targeting_index import split_expression

DAY = 86400.0
LG_K = 12  # 4,096 hashes per sketch: relative standard error about 1/sqrt(4096) = 1.6%
ABSENT = -1
# A key is listener-level when its listeners show at most this many extra values each
# (on average: travellers, a new phone).
LISTENER_LEVEL_SHARE = 0.005


@dataclass(frozen=True)
class Audience:
    """Distinct listeners (scaled to the whole audience) and the standard error."""

    estimate: float
    sigma: float


# Every built instance, to free its sketches before the interpreter shuts nanobind down
# (it reports sketches still alive then, e.g. in a cached forecaster, as leaks).
_LIVE: weakref.WeakSet[AudienceSketches] = weakref.WeakSet()


@atexit.register
def _release() -> None:
    for sketches in list(_LIVE):
        sketches.sketches.clear()
        sketches.everyone.clear()
        sketches._cache.clear()
        sketches._audiences.clear()


def _empty() -> compact_theta_sketch:
    return update_theta_sketch(LG_K).compact()


@dataclass(eq=False)  # identity: instances are tracked in a weak set
class AudienceSketches:
    """Compact theta sketches of listener ids per (key, value code) and slice of days."""

    now: float
    days: int
    lg_k: int
    codes: dict[str, dict[Any, int]]  # key -> value -> code (as the table coded it)
    # (key, code) -> [listeners with the value in the last n + 1 days for n in 0..days-1]
    sketches: dict[tuple[str, int], list[compact_theta_sketch]]
    everyone: list[compact_theta_sketch]
    listener_level: frozenset[str]
    scale: float = 1.0  # 1 / the decision log's listener sampling rate
    log_rate: float = 1.0
    cache_entries: int = 2048
    _cache: OrderedDict[tuple[Any, ...], compact_theta_sketch] = field(
        default_factory=OrderedDict, repr=False
    )
    # Whole expressions' sketches: an LRU of their own, so they never evict key unions.
    _audiences: OrderedDict[tuple[Any, ...], compact_theta_sketch] = field(
        default_factory=OrderedDict, repr=False
    )

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        table: OpportunityTable,
        *,
        now: float,
        max_days: int = 35,
        lg_k: int = LG_K,
        max_values: int = 64,
    ) -> AudienceSketches | None:
        """Sketches of the last ``max_days`` days of ``table`` for every key with at most
        ``max_values`` values; None when the log mixes listener sampling rates, or
        sampling by listener and by request (its counts cannot be scaled by one number)."""
        if table.size == 0:
            return None
        by_listener = table.listener_sampled()
        rates = np.unique(table.rate[by_listener])
        if rates.size > 1 or (rates.size and not by_listener.all()):
            return None
        log_rate = float(rates[0]) if rates.size else 1.0
        span = max(now - float(table.ts.min()), DAY)
        days = int(min(max_days, math.ceil(span / DAY)))
        bucket = np.floor_divide(now - table.ts, DAY).astype(np.int64)
        recent = np.flatnonzero((bucket >= 0) & (bucket < days))
        bucket = bucket[recent]
        listener = table.listener[recent].astype(np.int64)
        hashes = listener_hashes(table.listeners).view(np.int64)
        population = max(len(table.listeners), 1)

        def sketch_groups(codes: np.ndarray, rows_listener: np.ndarray, rows_bucket: np.ndarray):
            """One compact sketch per (code, bucket) of the distinct listeners in it."""
            composite = ((codes.astype(np.int64) + 1) * days + rows_bucket) * population + (
                rows_listener
            )
            unique = _sorted_unique(composite)
            group = unique // population
            who = unique % population
            starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
            ends = np.append(starts[1:], unique.size)
            out: dict[tuple[int, int], compact_theta_sketch] = {}
            for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                sketch = update_theta_sketch(lg_k)
                for value in hashes[who[start:end]].tolist():
                    sketch.update(value)
                sketch.trim()
                key = int(group[start])
                out[(key // days - 1, key % days)] = sketch.compact()
            return out

        daily: dict[tuple[str, int], list[compact_theta_sketch | None]] = {}
        codes: dict[str, dict[Any, int]] = {}
        listener_level = set()
        for key, column in table.single.items():
            vocab = table.vocab[key]
            if len(vocab) > max_values:
                continue
            codes[key] = dict(vocab.codes)
            values = column[recent]
            for (code, day), sketch in sketch_groups(values, listener, bucket).items():
                daily.setdefault((key, code), [None] * days)[day] = sketch
            if _constant_per_listener(column.astype(np.int64), table.listener):
                listener_level.add(key)
        if 0 < len(table.segment_vocab) <= max_values:
            codes["segments"] = dict(table.segment_vocab.codes)
            lengths = np.diff(table.segment_ptr)
            entry_rows = np.repeat(np.arange(table.size), lengths)
            keep = np.isin(entry_rows, recent)
            rows = entry_rows[keep]
            row_bucket = np.floor_divide(now - table.ts[rows], DAY).astype(np.int64)
            groups = sketch_groups(
                table.segment_codes[keep], table.listener[rows].astype(np.int64), row_bucket
            )
            for (code, day), sketch in groups.items():
                daily.setdefault(("segments", code), [None] * days)[day] = sketch
            # Segments are listener-level when each listener's list never changes.
            signature = np.zeros(table.size, dtype=np.int64)
            np.add.at(
                signature,
                entry_rows,
                (table.segment_codes.astype(np.int64) + 1) * 0x9E3779B1 % (1 << 36),
            )
            if _constant_per_listener(signature, table.listener):
                listener_level.add("segments")
        everyone_groups = sketch_groups(np.zeros(recent.size, dtype=np.int64), listener, bucket)
        everyone_daily: list[compact_theta_sketch | None] = [None] * days
        for (_, day), sketch in everyone_groups.items():
            everyone_daily[day] = sketch
        sketches = {key: _running_unions(buckets, lg_k) for key, buckets in daily.items()}
        everyone = _running_unions(everyone_daily, lg_k)
        built = cls(
            now=now,
            days=days,
            lg_k=lg_k,
            codes=codes,
            sketches=sketches,
            everyone=everyone,
            listener_level=frozenset(listener_level),
            scale=1.0 / log_rate,
            log_rate=log_rate,
        )
        _LIVE.add(built)
        return built

    # -- answering --------------------------------------------------------------------------

    def audience(
        self,
        expression: Mapping[str, Any],
        *,
        days: int,
        slots: Sequence[int] | None = None,
    ) -> Audience | None:
        """Distinct listeners with a request the expression (and ``slots``) admits in the
        last ``days`` days before ``now``; None when the algebra cannot express it."""
        if not 1 <= days <= self.days:
            return None
        split = split_expression(expression)
        if split.residual:
            return None
        includes = dict(split.includes)
        if slots:
            values = frozenset(slots)
            includes["slots"] = includes["slots"] & values if "slots" in includes else values
        excludes: dict[str, frozenset[Any]] = {}
        for key, values in split.excludes.items():
            if key not in self.codes:
                return None
            if key in self.listener_level:
                excludes[key] = frozenset(values)
                continue
            if key == "segments":  # a row's other segments do not make "not a" true
                return None
            # A request-level ``not``: the requests with any other value (or none).
            allowed = frozenset(self.codes[key]) - frozenset(values)
            others = includes[key] & allowed if key in includes else allowed
            includes[key] = others | {None}
        if any(key not in self.codes for key in includes):
            return None
        if sum(key not in self.listener_level for key in includes) > 1:
            return None
        # The whole expression's sketch, cached too: bulk drafts repeat targetings over
        # flights of the same length, and the intersection was most of a draft's cost here.
        cache_key = (frozenset(includes.items()), frozenset(excludes.items()), days)
        found = self._cached(cache_key, self._audiences)
        if found is not None:
            return self._scaled(found)
        parts = [self._key_union(key, values, days) for key, values in sorted(includes.items())]
        if parts:
            result = parts[0]
            if len(parts) > 1:
                intersection = theta_intersection()
                for part in sorted(parts, key=lambda sketch: sketch.get_estimate()):
                    intersection.update(part)
                result = intersection.get_result()
        else:
            result = self.everyone[days - 1]
        for key, values in sorted(excludes.items()):
            if result.is_empty():
                break
            result = theta_a_not_b().compute(result, self._key_union(key, values, days))
        return self._scaled(self._store(cache_key, result, self._audiences))

    def _scaled(self, sketch: compact_theta_sketch) -> Audience:
        estimate = sketch.get_estimate()
        sigma = (sketch.get_upper_bound(1) - sketch.get_lower_bound(1)) / 2.0
        # A log that kept listeners with probability r: each logged one stands for 1/r, a
        # binomial thinning on top of the sketch's own error.
        thinning = estimate * (1.0 - self.log_rate) * self.scale**2
        return Audience(estimate * self.scale, math.sqrt((sigma * self.scale) ** 2 + thinning))

    def _key_union(self, key: str, values: Iterable[Any], days: int) -> compact_theta_sketch:
        """Listeners with a request of one of ``values`` of ``key`` (None: absent) in the
        last ``days`` days."""
        table = self.codes[key]
        codes = sorted({ABSENT if value is None else table.get(value, -2) for value in values})
        codes = [code for code in codes if code != -2]
        cache_key = (key, tuple(codes), days)
        found = self._cached(cache_key)
        if found is not None:
            return found
        per_value = [self._value_union(key, code, days) for code in codes]
        return self._store(cache_key, _union(per_value, self.lg_k))

    def _value_union(self, key: str, code: int, days: int) -> compact_theta_sketch:
        running = self.sketches.get((key, code))
        return _empty() if running is None else running[days - 1]

    def _cached(
        self,
        key: tuple[Any, ...],
        cache: OrderedDict[tuple[Any, ...], compact_theta_sketch] | None = None,
    ) -> compact_theta_sketch | None:
        cache = self._cache if cache is None else cache
        found = cache.get(key)
        if found is not None:
            cache.move_to_end(key)
        return found

    def _store(
        self,
        key: tuple[Any, ...],
        sketch: compact_theta_sketch,
        cache: OrderedDict[tuple[Any, ...], compact_theta_sketch] | None = None,
    ) -> compact_theta_sketch:
        cache = self._cache if cache is None else cache
        cache[key] = sketch
        if len(cache) > self.cache_entries:
            cache.popitem(last=False)
        return sketch

    @property
    def retained(self) -> int:
        """Hashes held by the day sketches (8 bytes each): the memory they take."""
        count = sum(sketch.num_retained for sketch in self.everyone)
        for running in self.sketches.values():
            count += sum(sketch.num_retained for sketch in running)
        return count


def _running_unions(
    daily: Sequence[compact_theta_sketch | None], lg_k: int
) -> list[compact_theta_sketch]:
    """``out[n]``: the union of days ``0..n`` (one two-sketch union per day)."""
    out: list[compact_theta_sketch] = []
    current = _empty()
    for sketch in daily:
        if sketch is not None:
            current = _union([current, sketch], lg_k)
        out.append(current)
    return out


def _union(sketches: Sequence[compact_theta_sketch], lg_k: int) -> compact_theta_sketch:
    if not sketches:
        return _empty()
    if len(sketches) == 1:
        return sketches[0]
    union = theta_union(lg_k)
    for sketch in sketches:
        union.update(sketch)
    return union.get_result()


def _constant_per_listener(values: np.ndarray, listener: np.ndarray) -> bool:
    """Listeners show at most ``LISTENER_LEVEL_SHARE`` extra ``values`` each, on average."""
    if values.size == 0:
        return True
    pairs = _sorted_unique(listener.astype(np.int64) * (1 << 42) + (values - values.min()))
    owners = pairs >> 42
    listeners = int(np.count_nonzero(np.diff(owners))) + 1
    changing = int(np.count_nonzero(owners[1:] == owners[:-1]))  # a second value each
    return changing <= LISTENER_LEVEL_SHARE * listeners


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy 2's hashing unique was 30x slower on these)."""
    ordered = np.sort(values)
    if ordered.size == 0:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]

"""The supply sample: a listener-hash sample of the decision log, stratified, weighted to totals.

Why by listener: a listener is kept or dropped with all of their requests, so the sample
keeps each kept listener's whole history and distinct listeners (reach) and per-listener
counts (frequency caps) stay estimable: a listener kept with probability ``p`` stands for
``1/p`` listeners (Horvitz-Thompson), like a theta sketch with ``theta = p``.

Why stratified: a listener's keep probability depends on the stratum (country x device)
of their first request, ``p = min(1, max(budget share, min_rows / stratum rows))``, so a
small market keeps at least ``min_rows`` requests however big the rest of the log is.

Each kept row weighs ``1 / (decision-log sampling rate x p)``: the weights of the sample
sum to the ad requests the servers saw (the log keeps a share ``sample`` of requests).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from backbeat.forecast.history import OpportunityTable
from backbeat.forecast.matching import Matcher

HOUR = 3600
WEEK_HOURS = 168
# 1970-01-01 was a Thursday: shift so that hour-of-week 0 is Monday 00:00 UTC.
_EPOCH_WEEK_OFFSET_HOURS = 3 * 24
OTHER = "*"


def hour_of_week(ts: np.ndarray | float) -> np.ndarray:
    hours = np.floor_divide(np.asarray(ts, dtype=np.float64), HOUR).astype(np.int64)
    return (hours + _EPOCH_WEEK_OFFSET_HOURS) % WEEK_HOURS


def listener_hashes(listeners: list[str]) -> np.ndarray:
    """A stable 64-bit hash per listener id (BLAKE2b), the same in every process."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
            for key in listeners
        ),
        dtype=np.uint64,
        count=len(listeners),
    )


def unit_interval(hashes: np.ndarray) -> np.ndarray:
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def strata_of(
    table: OpportunityTable, keys: tuple[str, ...], *, min_share: float
) -> tuple[np.ndarray, list[str]]:
    """A stratum code per row from ``keys``; values rarer than ``min_share`` pool as ``*``."""
    combined = np.zeros(table.size, dtype=np.int64)
    names: list[list[str]] = [[]]
    for key in keys:
        column = table.single[key]
        vocab = table.vocab[key]
        counts = np.bincount(column + 1, minlength=len(vocab) + 1)
        common = counts[1:] >= max(1.0, min_share * table.size)
        mapping = np.full(len(vocab) + 1, -1, dtype=np.int64)  # index code+1 -> level
        labels = [OTHER]
        for code in np.flatnonzero(common):
            mapping[code + 1] = len(labels)
            labels.append(str(vocab.values[code]))
        level = np.where(mapping[column + 1] < 0, 0, mapping[column + 1])
        combined = combined * len(labels) + level
        names = [[*prefix, label] for prefix in names for label in labels]
    unique, codes = np.unique(combined, return_inverse=True)
    return codes.astype(np.int32), ["/".join(names[int(value)]) for value in unique]


@dataclass
class SupplySample:
    """The kept rows, their weights and what reach and time need of them."""

    table: OpportunityTable
    weight: np.ndarray  # float64: requests each row stands for
    keep: np.ndarray  # float64: the row's listener keep probability p
    listener_hash: np.ndarray  # uint64 per row
    how: np.ndarray  # int16 hour of week (UTC, Monday 00:00 = 0)
    stratum: np.ndarray  # int32 supply-model stratum
    strata: list[str]
    source_stratum: np.ndarray  # int32 stratum of every decision-log row (supply totals)
    source_rows: int  # decision-log rows the sample was drawn from
    start: float  # first and last request time of the history
    end: float
    matcher: Matcher

    @property
    def size(self) -> int:
        return self.table.size


def draw_sample(
    table: OpportunityTable,
    *,
    max_rows: int = 1_000_000,
    min_rows: int = 20_000,
    sample_strata: tuple[str, ...] = ("countries", "devices"),
    supply_strata: tuple[str, ...] = ("countries",),
    max_supply_strata: int = 8,
    seed: int = 0,
) -> SupplySample:
    """Keep listeners by hash, at a per-stratum rate, up to about ``max_rows`` requests."""
    n = table.size
    hashes = listener_hashes(table.listeners)
    if seed:
        hashes = hashes ^ np.uint64(
            int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=8).digest(), "little")
        )
    stratum, _ = strata_of(table, sample_strata, min_share=0.001)
    supply_stratum, supply_names = strata_of(
        table, supply_strata, min_share=_share_for(table, supply_strata, max_supply_strata)
    )
    if n == 0:
        keep_rows = np.zeros(0, dtype=np.int64)
        p_row = np.zeros(0)
    else:
        counts = np.bincount(stratum).astype(np.float64)
        base = min(1.0, max_rows / n)
        p_stratum = np.minimum(1.0, np.maximum(base, min_rows / np.maximum(counts, 1.0)))
        # A listener's stratum is that of their first request in the log.
        first = np.full(len(table.listeners), -1, dtype=np.int64)
        order = np.arange(n - 1, -1, -1)
        first[table.listener[order]] = stratum[order]
        p_listener = np.where(first >= 0, p_stratum[np.maximum(first, 0)], 1.0)
        kept_listener = unit_interval(hashes) < p_listener
        keep_rows = np.flatnonzero(kept_listener[table.listener])
        p_row = p_listener[table.listener[keep_rows]]
    kept = table.take(keep_rows)
    weight = 1.0 / (kept.rate * p_row) if kept.size else np.zeros(0)
    return SupplySample(
        table=kept,
        weight=weight,
        keep=p_row,
        listener_hash=hashes[kept.listener] if kept.size else np.zeros(0, dtype=np.uint64),
        how=hour_of_week(kept.ts).astype(np.int16),
        stratum=supply_stratum[keep_rows],
        strata=supply_names,
        source_stratum=supply_stratum,
        source_rows=n,
        start=float(table.ts.min()) if n else 0.0,
        end=float(table.ts.max()) if n else 0.0,
        matcher=Matcher(kept),
    )


def _share_for(table: OpportunityTable, keys: tuple[str, ...], limit: int) -> float:
    """The smallest share that leaves at most ``limit`` values per key (the rest pool)."""
    if not table.size or not keys:
        return 1.0
    counts = np.sort(np.bincount(table.single[keys[0]] + 1)[1:])[::-1]
    if len(counts) < limit:
        return 0.0
    return float(counts[limit - 1]) / table.size + 1e-12

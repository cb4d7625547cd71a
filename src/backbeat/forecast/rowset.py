"""The per-request arrays a forecast reads, laid out for few passes over the matched rows.

A forecast touches each matched row a handful of times: its cell (stratum x hour of week)
for the supply projection, its weight times the booked allocation's remaining share per
future week (``weighted_remaining``, precomputed), its listener for reach and sampling
error, and a small matrix of per-row figures (click and conversion expectations and
measured outcomes) summed in one gather. A ``RowSet`` is either the whole sample or a
listener-hash subsample of it (the bulk path): same arrays, fewer rows, weights scaled up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backbeat.forecast.booked import BookedAllocation
from backbeat.forecast.history import OpportunityTable
from backbeat.forecast.matching import Matcher
from backbeat.forecast.projection import Projection
from backbeat.forecast.sample import SupplySample, listener_hashes, unit_interval

# Columns of ``RowSet.figures``.
CLICKS, CONVERSIONS, MEASURED_CLICKS, MEASURED_CONVERSIONS = range(4)


@dataclass
class RowSet:
    table: OpportunityTable
    matcher: Matcher
    weight: np.ndarray  # float64 requests per row
    cell: np.ndarray  # int32 stratum * period + phase
    listener: np.ndarray  # int32 listener code (dense over the set's listeners for a subset)
    listener_keep: np.ndarray  # float64 keep probability per listener code
    ts: np.ndarray
    rate: np.ndarray  # decision-log thinning within a listener (1 if sampled by listener)
    # ``listener_keep`` folds in the log's rate when it sampled by listener hash.
    figures: np.ndarray  # (n, 4) float64, see the column constants
    remaining: dict[int, np.ndarray]  # tier rank -> (cycles, n) float32 weight x share left
    booked_rows: np.ndarray  # positions of the allocation subsample's rows in this set
    start: float  # first request of the history

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])


def make_rowset(
    sample: SupplySample,
    booked: BookedAllocation,
    projection: Projection,
    rows: np.ndarray | None,
    *,
    click_rate: np.ndarray,
    conversion_rate: np.ndarray,
    thinning: float = 1.0,
) -> RowSet:
    """The arrays of ``rows`` of the sample (None: all), weights divided by ``thinning``.

    The set's rows are ordered by cell (stable), so the matched rows of a targeting, taken
    in increasing order, come grouped by cell: a forecast sums them per cell with one
    ``reduceat`` over contiguous runs instead of a scattered ``bincount`` per future cycle.
    """
    source = np.arange(sample.size) if rows is None else np.asarray(rows, dtype=np.int64)
    source_cell = (
        sample.stratum[source].astype(np.int64) * projection.period
        + projection.phase(sample.how[source])
    ).astype(np.int32)
    order = np.argsort(source_cell, kind="stable")
    pick = source[order]
    table = sample.table.take(pick)
    weight = sample.weight[pick] / thinning
    keep = sample.keep[pick] * thinning
    # A log sampled by listener hash keeps a listener whole with probability ``rate``
    # (independent of the sample's own hash): it multiplies the listener's keep
    # probability, and the row is not thinned within the listener. Sampled per request,
    # the rate thins each listener's rows instead (distinct listeners cannot be scaled).
    by_listener = table.listener_sampled()
    keep = np.where(by_listener, keep * table.rate, keep)
    row_rate = np.where(by_listener, 1.0, table.rate)
    if rows is None:
        listener = table.listener
        listener_keep = np.ones(len(table.listeners))
    else:  # dense codes over the subset's own listeners: per-listener arrays stay small
        _, listener = np.unique(table.listener, return_inverse=True)
        listener = listener.astype(np.int32).reshape(-1)
        listener_keep = np.ones(int(listener.max()) + 1 if listener.size else 0)
    listener_keep[listener] = keep
    outcomes = table.outcomes
    n = table.size
    figures = np.zeros((n, 4))
    figures[:, CLICKS] = weight * click_rate[pick]
    figures[:, CONVERSIONS] = weight * conversion_rate[pick]
    if "click" in outcomes:
        figures[:, MEASURED_CLICKS] = outcomes["click"] & outcomes.get("impression", True)
    if "conversion" in outcomes:
        figures[:, MEASURED_CONVERSIONS] = outcomes["conversion"] & outcomes.get("impression", True)
    # Supply left per row and future cycle: its group's share left in the bucket of the
    # hour the row stands for in that cycle, times its weight.
    group = booked.group_of_row[pick]
    first = projection.hfirst[projection.phase(sample.how[pick])]
    remaining = {}
    for rank, left in booked.remaining.items():
        table_left = np.empty((projection.cycles, n), dtype=np.float32)
        for cycle in range(projection.cycles):
            bucket = (first + cycle * projection.period) // booked.bucket_hours
            table_left[cycle] = left[group, bucket] * weight
        remaining[rank] = table_left
    # The allocation subsample's rows in this set (a subset: the nearest kept row, as
    # before the reordering), then through the reordering.
    if rows is None:
        positions = booked.sub_rows
    else:
        positions = np.searchsorted(source, booked.sub_rows)
        positions = np.minimum(positions, max(n - 1, 0))
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    positions = inverse[positions] if n else positions
    return RowSet(
        table=table,
        matcher=Matcher(table),
        weight=weight,
        cell=source_cell[order],
        listener=listener,
        listener_keep=listener_keep,
        ts=table.ts,
        rate=row_rate,
        figures=figures,
        remaining=remaining,
        booked_rows=positions,
        start=sample.start,
    )


def bulk_rows(sample: SupplySample, target: int, *, salt: int = 0x5EED) -> tuple[np.ndarray, float]:
    """A listener-hash subsample of about ``target`` rows and its keep share."""
    if sample.size <= target:
        return np.arange(sample.size), 1.0
    share = target / sample.size
    hashes = listener_hashes([f"{salt}:{key}" for key in sample.table.listeners])
    kept = unit_interval(hashes) < share
    return np.flatnonzero(kept[sample.table.listener]), share

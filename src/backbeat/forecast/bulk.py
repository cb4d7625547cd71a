"""The sums of many drafts at once: what ``Forecaster.forecast`` sums per draft, per batch.

Why: one draft's sums are some forty numpy calls over its ~10,000 matched rows of the bulk
subsample; the calls' fixed cost, not the rows, held bulk forecasts near 400 per second,
and ``flatnonzero`` over every row of a mask cost more than the sums. Here a batch of
drafts whose flights span the same window cycles (and share a tier level) is answered
together: matched rows from Roaring bitmaps of the targeting leaves (``Matcher.bitmap``),
concatenated and summed per (draft, cell) run with one ``reduceat`` per window cycle, per
draft and listener with one ``bincount`` (sampling error), and contention with one sparse
product over the allocation subsample's nodes.

The arithmetic is the per-draft path's (``Forecaster._sums``, ``_sampling_error``,
``_contending``) reordered: per-cell sums are ``reduceat`` over the same runs; only the
order of the final additions differs (the tests compare both paths).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pyroaring import BitMap
from scipy import sparse

from backbeat.catalog.vocabulary import TIER_RANK, Tier
from backbeat.forecast.booked import BookedAllocation
from backbeat.forecast.matching import bitmap_rows, rows_bitmap
from backbeat.forecast.projection import Projection
from backbeat.forecast.rowset import (
    CLICKS,
    CONVERSIONS,
    MEASURED_CLICKS,
    MEASURED_CONVERSIONS,
    RowSet,
)


@dataclass
class DraftSums:
    """A draft's sums before reach, caps and intervals (both forecast paths make these)."""

    matched: float
    possible: float  # before frequency caps
    available: float  # before frequency caps
    sigma_by_stratum: np.ndarray  # supply model standard error per stratum
    sampling_error: float  # relative, of the sample's weighted sum
    rows: np.ndarray  # matched rows of the row set reach, rates and sampling error read
    figures: np.ndarray  # (4,) sums of ``RowSet.figures`` over ``rows``
    weight: float  # sample weight of ``rows``
    taken: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, dtype=np.int64), np.zeros(0))
    )  # booked item positions and the impressions each takes (batch path only)


class BulkIndex:
    """Arrays of one row set that every batch reads, built once per forecaster.

    Per-row quantities are paired into complex numbers (real, imaginary) so one 1-D
    ``take`` and one ``reduceat`` sum two of them (the parts add independently, in float64
    as the per-draft path does); the measured outcomes, a few hundred rows, are bitmaps.
    """

    def __init__(self, rowset: RowSet, projection: Projection, booked: BookedAllocation) -> None:
        self.rowset = rowset
        self.projection = projection
        self.booked = booked
        figures = rowset.figures
        self.weight_conversions = rowset.weight + 1j * figures[:, CONVERSIONS]
        within = rowset.weight * rowset.weight * (1.0 - rowset.rate)
        self.within_clicks = within + 1j * figures[:, CLICKS]
        self.measured = []
        for column in (MEASURED_CLICKS, MEASURED_CONVERSIONS):
            where = np.flatnonzero(figures[:, column])
            self.measured.append((rows_bitmap(where), figures[:, column].copy()))
        available, possible = TIER_RANK[Tier.GUARANTEED], TIER_RANK[Tier.SPONSORSHIP]
        # In float64 (exact copies of the float32 tables): a float32 ``reduceat`` summing
        # in float64 casts through a buffer, slower than reading twice the bytes.
        self.available = rowset.remaining[available].astype(np.float64)  # (cycles, n)
        self.both = rowset.remaining[available] + 1j * rowset.remaining[possible].astype(
            np.float64
        )  # available + 1j * after sponsorship, (cycles, n) complex128
        self.listeners = int(rowset.listener_keep.shape[0])
        self.unkept = 1.0 - np.minimum(rowset.listener_keep, 1.0)  # the bulk path's share is 1
        period = projection.period
        self.hour_in_cycle = (np.arange(period) - projection.phase0) % period  # phase -> hour
        # Allocation nodes reordered row-major (row, cycle): a draft's nodes of one row over
        # its window cycles are adjacent rows of ``taken_t`` (fewer cache misses).
        self.sub_count = sub = int(booked.sub_rows.shape[0])
        self.cycles = cycles = projection.cycles
        node = (np.arange(cycles)[None, :] * sub + np.arange(sub)[:, None]).reshape(-1)
        self.node_hour = booked.sub_nodes_hour[node] if sub else np.zeros(0, dtype=np.int64)
        self.taken_t: sparse.csr_matrix | None = None
        if booked.taken is not None and booked.items and rowset.booked_rows.size:
            self.taken_t = sparse.csr_matrix(booked.taken.T, dtype=np.float64)[node]
        # Subsample rows per row set row (several may share one): first position in
        # ``sub_order`` and how many, looked up by row.
        self.sub_order = np.argsort(rowset.booked_rows, kind="stable")
        booked_rows, first, many = np.unique(
            rowset.booked_rows[self.sub_order], return_index=True, return_counts=True
        )
        self.sub_first = np.zeros(rowset.size, dtype=np.int64)
        self.sub_first[booked_rows] = first
        self.sub_many = np.zeros(rowset.size, dtype=np.int64)
        self.sub_many[booked_rows] = many
        self.booked_bitmap = rows_bitmap(booked_rows)


def windows(projection: Projection, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``Projection.window`` of many flights at once, (drafts, hours), the same arithmetic."""
    edges = (projection.hour0 + np.arange(projection.hours + 1)) * float(3600)
    lo = np.maximum(edges[None, :-1], np.maximum(starts, projection.now)[:, None])
    hi = np.minimum(edges[None, 1:], ends[:, None])
    return np.clip((hi - lo) / 3600, 0.0, 1.0)


def batch_sums(
    index: BulkIndex,
    bitmaps: Sequence[BitMap],
    fractions: np.ndarray,
    cycles: range,
    level: int | None,
) -> list[DraftSums]:
    """Sums of the drafts whose matched rows are ``bitmaps`` (one per draft), flights
    ``fractions`` (drafts, hours) all within window ``cycles``, possible at ``level``."""
    rowset, projection = index.rowset, index.projection
    count = len(bitmaps)
    period = projection.period
    strata = projection.scale.shape[0]
    found = [bitmap_rows(bitmap) for bitmap in bitmaps]
    sizes = np.array([part.shape[0] for part in found], dtype=np.int64)
    rows = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    if rows.size == 0:
        return [_nothing(part, strata) for part in found]
    # Rows of a draft come in row order and rows are ordered by cell: (draft, cell) runs.
    cell = np.take(rowset.cell, rows)
    change = np.empty(rows.shape[0], dtype=bool)
    np.not_equal(cell[1:], cell[:-1], out=change[1:])
    firsts = np.cumsum(sizes) - sizes
    filled = sizes > 0
    change[firsts[filled]] = True
    starts = np.flatnonzero(change)
    run_cell = cell[starts].astype(np.int64)
    run_draft = np.searchsorted(firsts, starts, side="right") - 1
    run_stratum = run_cell // period
    run_hour = index.hour_in_cycle[run_cell % period]
    weight_conversions = np.take(index.weight_conversions, rows)
    paired = np.add.reduceat(weight_conversions, starts)
    run_weight = paired.real.copy()

    both = level == TIER_RANK[Tier.SPONSORSHIP]  # possible: what sponsorship leaves
    run_matched = np.zeros(starts.shape[0])
    run_sigma = np.zeros(starts.shape[0])
    run_left = np.zeros(starts.shape[0], dtype=np.complex128 if both else np.float64)
    scale, sigma = projection.scale, projection.sigma
    for cycle in cycles:
        hour = cycle * period + run_hour
        fraction = fractions[run_draft, hour]
        factor = scale[run_stratum, hour] * fraction
        run_matched += factor * run_weight
        run_sigma += sigma[run_stratum, hour] * fraction * run_weight
        source = index.both[cycle] if both else index.available[cycle]
        run_left += factor * np.add.reduceat(np.take(source, rows), starts, dtype=run_left.dtype)
    matched = np.bincount(run_draft, weights=run_matched, minlength=count)
    by_stratum = np.bincount(
        run_draft * strata + run_stratum, weights=run_sigma, minlength=count * strata
    ).reshape(count, strata)
    available = np.bincount(run_draft, weights=run_left.real, minlength=count)
    if both:
        possible = np.bincount(run_draft, weights=run_left.imag, minlength=count)
    else:
        possible = matched if level is None else available

    # Per draft: weight and conversions (from the runs), the within-listener variance term
    # and clicks, the listener-cluster term from one bincount over (draft, listener), the
    # measured outcomes from their bitmaps.
    run_bounds = np.searchsorted(run_draft, np.arange(count))
    per_draft = np.zeros((2, count), dtype=np.complex128)
    per_draft[0, filled] = np.add.reduceat(paired, run_bounds[filled])
    per_draft[1, filled] = np.add.reduceat(np.take(index.within_clicks, rows), firsts[filled])
    listeners = index.listeners
    cluster = np.repeat(np.arange(count) * listeners, sizes)
    cluster += np.take(rowset.listener, rows)
    per_listener = np.bincount(
        cluster, weights=weight_conversions.real, minlength=count * listeners
    ).reshape(count, listeners)
    between = np.einsum("ij,ij,j->i", per_listener, per_listener, index.unkept)
    total, within = per_draft[0].real, per_draft[1].real
    sampling = np.zeros(count)
    positive = total > 0
    sampling[positive] = np.sqrt(between[positive] + within[positive]) / total[positive]
    figures = np.zeros((count, 4))
    figures[:, CLICKS] = per_draft[1].imag
    figures[:, CONVERSIONS] = per_draft[0].imag
    for column, (where, values) in zip(
        (MEASURED_CLICKS, MEASURED_CONVERSIONS), index.measured, strict=True
    ):
        for i, bitmap in enumerate(bitmaps):
            hits = bitmap & where
            if hits:
                figures[i, column] = float(values[bitmap_rows(hits)].sum())

    taken = _taken(index, bitmaps, fractions, cycles)
    return [
        DraftSums(
            matched=float(matched[i]),
            possible=float(possible[i]),
            available=float(available[i]),
            sigma_by_stratum=by_stratum[i],
            sampling_error=float(sampling[i]),
            rows=found[i],
            figures=figures[i],
            weight=float(total[i]),
            taken=taken[i],
        )
        for i in range(count)
    ]


def _nothing(rows: np.ndarray, strata: int) -> DraftSums:
    return DraftSums(0.0, 0.0, 0.0, np.zeros(strata), 0.0, rows, np.zeros(4), 0.0)


def _taken(
    index: BulkIndex, bitmaps: Sequence[BitMap], fractions: np.ndarray, cycles: range
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Impressions each booked item takes from each draft's matched nodes of the allocation
    subsample in its window: one sparse (drafts x nodes) by (nodes x items) product."""
    count = len(bitmaps)
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
    if index.taken_t is None or not len(cycles):
        return [empty] * count
    # The subsample's rows each draft matches (a row set row may stand for several).
    hits = [bitmap_rows(bitmap & index.booked_bitmap) for bitmap in bitmaps]
    hit = np.concatenate(hits)
    first, many = index.sub_first[hit], index.sub_many[hit]
    spread_at = np.repeat(first - (np.cumsum(many) - many), many) + np.arange(int(many.sum()))
    row = index.sub_order[spread_at]
    per_draft = np.bincount(
        np.repeat(np.arange(count), [part.shape[0] for part in hits]),
        weights=many,
        minlength=count,
    ).astype(np.int64)
    # Nodes (cycle, row) draft by draft: a CSR matrix built directly, no sorting.
    nodes = (row[:, None] * index.cycles + np.arange(cycles.start, cycles.stop)).reshape(-1)
    drafts = np.repeat(np.arange(count), per_draft * len(cycles))
    weight = fractions[drafts, index.node_hour[nodes]]
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(per_draft * len(cycles), out=indptr[1:])
    spread = sparse.csr_matrix((weight, nodes, indptr), shape=(count, index.taken_t.shape[0]))
    taken = spread @ index.taken_t
    return [
        (
            taken.indices[taken.indptr[i] : taken.indptr[i + 1]].astype(np.int64),
            taken.data[taken.indptr[i] : taken.indptr[i + 1]],
        )
        for i in range(count)
    ]

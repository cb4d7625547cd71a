"""Click and conversion rates per impression, from measured history, shrunk where data is thin.

A rate is estimated per cell (device x position), shrunk toward the overall rate by a
beta prior whose strength comes from the data (empirical Bayes, method of moments: how
much the cells' rates vary beyond binomial noise). Each audience segment gets a lift (its
rate over the overall rate), shrunk toward 1 the same way. A request's rate is its cell's
rate times the lifts of its segments, scaled so the history's predicted clicks equal the
clicks measured. With no history the rate is 0 and forecasts say so with a note.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backbeat.forecast.history import OpportunityTable

MIN_STRENGTH = 10.0
MAX_STRENGTH = 1e7


def shrink(
    successes: np.ndarray, trials: np.ndarray, prior_mean: float, strength: float
) -> np.ndarray:
    """Posterior mean under a Beta(strength * mean, strength * (1 - mean)) prior."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    return (successes + strength * prior_mean) / (trials + strength)


def prior_strength(successes: np.ndarray, trials: np.ndarray) -> float:
    """Beta prior strength ``a + b`` from the cells' spread (method of moments).

    The observed variance of cell rates is the prior's variance plus binomial noise; what
    is left after the noise is the prior's ``mean (1 - mean) / (strength + 1)``. No spread
    beyond noise means full pooling (the largest strength).
    """
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    used = trials > 0
    if used.sum() < 2:
        return MAX_STRENGTH
    n, k = trials[used], successes[used]
    mean = k.sum() / n.sum()
    if mean <= 0.0 or mean >= 1.0:
        return MAX_STRENGTH
    rates = k / n
    weights = n / n.sum()
    observed = float(np.sum(weights * (rates - mean) ** 2))
    noise = float(np.sum(weights * mean * (1 - mean) / n))
    between = observed - noise
    if between <= 0:
        return MAX_STRENGTH
    return float(np.clip(mean * (1 - mean) / between - 1.0, MIN_STRENGTH, MAX_STRENGTH))


@dataclass(frozen=True)
class RateModel:
    """Per-row rates over a table and the evidence behind them."""

    rate: np.ndarray  # float64 per row: expected outcomes per impression
    overall: float
    impressions: int
    outcomes: int


def fit_rates(history: OpportunityTable, target: OpportunityTable, kind: str) -> RateModel:
    """Rates of ``kind`` (``click`` or ``conversion``) fitted on ``history``, per row of ``target``."""
    shown = history.outcomes.get("impression")
    hits = history.outcomes.get(kind)
    if shown is None or hits is None or not shown.any():
        return RateModel(np.zeros(target.size), 0.0, 0, 0)
    hits = hits & shown
    impressions = int(shown.sum())
    outcomes = int(hits[shown].sum())
    overall = outcomes / impressions
    if outcomes == 0:
        return RateModel(np.zeros(target.size), 0.0, impressions, 0)
    # Cells: device x position, shrunk toward the overall rate.
    cell_of = _cells(history)
    cells = int(cell_of.max()) + 1 if cell_of.size else 1
    n = np.bincount(cell_of[shown], minlength=cells).astype(np.float64)
    k = np.bincount(cell_of[shown], weights=hits[shown].astype(np.float64), minlength=cells)
    cell_rate = shrink(k, n, overall, prior_strength(k, n))
    # Segment lifts, shrunk toward 1 (their rate toward the overall rate).
    segments = len(history.segment_vocab)
    rows = np.repeat(np.arange(history.size), np.diff(history.segment_ptr))
    on = shown[rows]
    seg_n = np.bincount(history.segment_codes[on], minlength=segments).astype(np.float64)
    seg_k = np.bincount(
        history.segment_codes[on], weights=hits[rows][on].astype(np.float64), minlength=segments
    )
    lift = shrink(seg_k, seg_n, overall, prior_strength(seg_k, seg_n)) / overall
    predicted_history = _row_rates(history, cell_of, cell_rate, lift, overall)
    expected = float(predicted_history[shown].sum())
    calibration = outcomes / expected if expected > 0 else 1.0
    # The target's codes share the history's vocabularies (same table or a subset of it).
    rate = _row_rates(target, _cells(target), cell_rate, lift, overall) * calibration
    return RateModel(np.clip(rate, 0.0, 1.0), overall, impressions, outcomes)


def _cells(table: OpportunityTable) -> np.ndarray:
    devices = table.single["devices"].astype(np.int64) + 1
    positions = table.single["positions"].astype(np.int64) + 1
    width = len(table.vocab["positions"]) + 1
    return devices * width + positions


def _row_rates(
    table: OpportunityTable,
    cell_of: np.ndarray,
    cell_rate: np.ndarray,
    lift: np.ndarray,
    overall: float,
) -> np.ndarray:
    known = cell_of < cell_rate.shape[0]
    base = np.where(known, cell_rate[np.minimum(cell_of, cell_rate.shape[0] - 1)], overall)
    if table.segment_codes.size == 0 or lift.size == 0:
        return base
    rows = np.repeat(np.arange(table.size), np.diff(table.segment_ptr))
    codes = table.segment_codes
    seg_lift = np.where(codes < lift.shape[0], lift[np.minimum(codes, lift.shape[0] - 1)], 1.0)
    log_lift = np.bincount(rows, weights=np.log(np.maximum(seg_lift, 1e-9)), minlength=table.size)
    return base * np.exp(log_lift)

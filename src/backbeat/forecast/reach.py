"""Distinct listeners and the effect of frequency caps, from the listener-hash sample.

The sample keeps whole listeners, each with probability ``p`` by a hash of their id, so
the matched rows' distinct listeners weighted ``1/p`` estimate the distinct listeners of
the matched requests (Horvitz-Thompson: a theta sketch whose theta is ``p``); its
variance is ``sum((1 - p) / p^2)`` over the listeners found.

For a future window of length ``L`` the estimate is read from the last ``L`` of history
(its frequency, requests per listener, is what a window of that length shows) and applied
to the window's forecast volume: ``reach = forecast impressions / frequency``. Windows
longer than the history extrapolate the reach curve ``reach ~ t^kappa`` measured at half
and the whole history.

A draft delivering only a share ``q`` of the matched requests reaches a listener with
``f`` of them with probability ``1 - (1 - q)^f``; frequency caps bound each listener's
count per cap window (windows aligned to UTC like the ad server's counters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backbeat.catalog.vocabulary import CAP_PERIOD_SECONDS
from backbeat.forecast.sample import SupplySample


@dataclass(frozen=True)
class Cap:
    count: int
    window_seconds: float | None  # None: whole flight


def caps_from(documents: Sequence[dict]) -> list[Cap]:
    caps = []
    for cap in documents or ():
        period = CAP_PERIOD_SECONDS[str(cap["period"])]
        caps.append(
            Cap(
                int(cap["count"]),
                None if period is None else float(period * int(cap.get("length", 1))),
            )
        )
    return caps


@dataclass(frozen=True)
class ReachEstimate:
    reach: float  # distinct listeners of the delivered impressions
    relative_error: float  # standard error / reach (sampling)
    cap_factor: float  # share of matched requests a capped draft can use
    listeners_found: int


def distinct_listeners(sample: SupplySample, rows: np.ndarray) -> float:
    """Horvitz-Thompson distinct listeners among ``rows``."""
    if rows.size == 0:
        return 0.0
    listeners = sample.table.listener[rows]
    seen = np.zeros(len(sample.table.listeners), dtype=bool)
    seen[listeners] = True
    found = np.flatnonzero(seen)
    keep = np.ones(len(sample.table.listeners))
    keep[listeners] = sample.keep[rows]
    return float((1.0 / keep[found]).sum())


def estimate_reach(
    sample: SupplySample,
    matched_rows: np.ndarray,
    *,
    now: float,
    window_seconds: float,
    forecast_impressions: float,
    delivered: float,
    caps: Sequence[Cap] = (),
) -> ReachEstimate:
    """Reach and cap effect of delivering ``delivered`` of ``forecast_impressions`` matched."""
    if matched_rows.size == 0 or forecast_impressions <= 0:
        return ReachEstimate(0.0, 0.0, 1.0, 0)
    ts = sample.table.ts[matched_rows]
    span = max(now - sample.start, 3600.0)
    length = min(window_seconds, span)
    rows = matched_rows[ts >= now - length]
    if rows.size == 0:
        rows = matched_rows
        length = span
    extend = window_seconds / length if window_seconds > length else 1.0
    kappa = 1.0
    if extend > 1.0:
        half = matched_rows[ts >= now - length / 2]
        whole = distinct_listeners(sample, rows)
        part = distinct_listeners(sample, half)
        if part > 0 and whole > part:
            kappa = float(np.clip(math.log(whole / part) / math.log(2.0), 0.0, 1.0))
    listener = sample.table.listener[rows]
    counts_per_row = 1.0 / sample.table.rate[rows]  # requests each row stands for
    codes, inverse = np.unique(listener, return_inverse=True)
    inverse = inverse.reshape(-1)
    per_listener = np.bincount(inverse, weights=counts_per_row)
    p = sample.keep[rows][np.unique(inverse, return_index=True)[1]]
    # The slice's volume against the forecast: the same listeners, more or fewer requests.
    slice_volume = float((per_listener / p).sum())
    reach_growth = extend**kappa
    volume = forecast_impressions / (slice_volume * reach_growth) if slice_volume > 0 else 1.0
    frequency = per_listener * volume  # each listener's matched requests in the window
    capped = frequency.copy()
    for cap in caps:
        if cap.window_seconds is None or cap.window_seconds >= window_seconds:
            capped = np.minimum(capped, cap.count)
        else:
            buckets = np.floor_divide(sample.table.ts[rows], cap.window_seconds).astype(np.int64)
            pair, pair_inverse = np.unique(
                inverse.astype(np.int64) * (1 << 40) + (buckets - buckets.min()),
                return_inverse=True,
            )
            pair_inverse = pair_inverse.reshape(-1)
            per_pair = np.bincount(pair_inverse, weights=counts_per_row) * volume
            owner = (pair >> 40).astype(np.int64)
            usable = np.bincount(
                owner, weights=np.minimum(per_pair, cap.count), minlength=codes.size
            )
            capped = np.minimum(capped, usable * (window_seconds / length) / extend)
    total = float((frequency / p).sum())
    usable_total = float((capped / p).sum())
    cap_factor = usable_total / total if total > 0 else 1.0
    share = min(max(delivered / usable_total, 0.0), 1.0) if usable_total > 0 else 0.0
    reached = (
        1.0 - np.power(1.0 - share, np.maximum(capped, 0.0))
        if share < 1.0
        else ((capped > 0).astype(np.float64))
    )
    reach = float((reached / p).sum()) * reach_growth
    variance = float((reached**2 * (1.0 - p) / p**2).sum()) * reach_growth**2
    relative = math.sqrt(variance) / reach if reach > 0 else 0.0
    return ReachEstimate(reach, relative, min(cap_factor, 1.0), int(codes.size))

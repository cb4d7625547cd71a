"""The sample projected onto future hours: what one sample row stands for, hour by hour.

The future is ``weeks`` whole weeks of hours from ``hour0`` (the current hour). A sample
row at hour of week ``k`` recurs once a week, at future hours ``hfirst[k] + 168 j``; in
each it stands for ``weight * scale[stratum, hour]`` requests, where ``scale`` is the
supply forecast of the cell over the sample weight of that cell. A forecast window is a
vector of hour fractions (the first and last hours may be partial).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backbeat.forecast.sample import HOUR, WEEK_HOURS, SupplySample, hour_of_week
from backbeat.forecast.supply import SupplyForecast


@dataclass(frozen=True)
class Projection:
    now: float
    hour0: int  # epoch hour of future hour 0 (the hour containing ``now``)
    weeks: int
    hfirst: np.ndarray  # (168,) future hour index of the first hour of each hour of week
    scale: np.ndarray  # (S, H): requests per unit of sample weight, per stratum and hour
    sigma: np.ndarray  # (S, H): standard error of ``scale``
    cell_weight: np.ndarray  # (S, 168): sample weight per cell

    @property
    def hours(self) -> int:
        return self.weeks * WEEK_HOURS

    @property
    def end(self) -> float:
        """The end of the horizon (epoch seconds)."""
        return float((self.hour0 + self.hours) * HOUR)

    def window(self, start: float, end: float) -> np.ndarray:
        """Fraction of each future hour inside ``[max(start, now), end)``."""
        start = max(start, self.now)
        edges = (self.hour0 + np.arange(self.hours + 1)) * float(HOUR)
        lo = np.maximum(edges[:-1], start)
        hi = np.minimum(edges[1:], end)
        return np.clip((hi - lo) / HOUR, 0.0, 1.0)

    def week_span(self, fractions: np.ndarray) -> range:
        """Weeks with any hour inside the window."""
        inside = np.flatnonzero(fractions > 0)
        if inside.size == 0:
            return range(0)
        return range(int(inside[0]) // WEEK_HOURS, int(inside[-1]) // WEEK_HOURS + 1)


def project(sample: SupplySample, forecast: SupplyForecast, *, now: float) -> Projection:
    weeks = forecast.horizon_hours // WEEK_HOURS
    hours = weeks * WEEK_HOURS
    strata = len(sample.strata)
    cell = sample.stratum.astype(np.int64) * WEEK_HOURS + sample.how
    cell_weight = np.bincount(cell, weights=sample.weight, minlength=strata * WEEK_HOURS).reshape(
        strata, WEEK_HOURS
    )
    future_how = hour_of_week((forecast.hour0 + np.arange(hours)) * float(HOUR)).astype(np.int64)
    base = cell_weight[:, future_how]  # (S, H)
    mean = forecast.mean[:strata, :hours]
    sigma = forecast.sigma[:strata, :hours]
    scale = np.divide(mean, base, out=np.zeros_like(mean), where=base > 0)
    sigma_scale = np.divide(sigma, base, out=np.zeros_like(sigma), where=base > 0)
    how0 = int(future_how[0]) if hours else 0
    hfirst = (np.arange(WEEK_HOURS) - how0) % WEEK_HOURS
    return Projection(
        now=now,
        hour0=forecast.hour0,
        weeks=weeks,
        hfirst=hfirst.astype(np.int64),
        scale=scale,
        sigma=sigma_scale,
        cell_weight=cell_weight,
    )

"""The sample projected onto future hours: what one sample row stands for, hour by hour.

The future is ``cycles`` whole periods of hours from ``hour0`` (the current hour); the
period is a week (168 hours) when the history spans a week, else a day (24). A sample row
at phase ``k`` (its hour of week, or of day) recurs once a period, at future hours
``hfirst[k] + period * j``; in each it stands for ``weight * scale[stratum, hour]``
requests, where ``scale`` is the supply forecast of the cell over the sample weight of
that cell. A forecast window is a vector of hour fractions (first and last may be partial).
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
    period: int  # 168 or 24
    cycles: int  # periods in the horizon
    hfirst: np.ndarray  # (period,) future hour index of the first hour of each phase
    scale: np.ndarray  # (S, H): requests per unit of sample weight, per stratum and hour
    sigma: np.ndarray  # (S, H): standard error of ``scale``
    cell_weight: np.ndarray  # (S, period): sample weight per cell

    @property
    def hours(self) -> int:
        return self.cycles * self.period

    @property
    def phase0(self) -> int:
        """Phase of future hour 0."""
        return int(np.argmin(self.hfirst))

    def phase(self, how: np.ndarray) -> np.ndarray:
        """Phase of a row from its hour of week."""
        return np.asarray(how, dtype=np.int64) % self.period

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

    def cycle_span(self, fractions: np.ndarray) -> range:
        """Periods with any hour inside the window."""
        inside = np.flatnonzero(fractions > 0)
        if inside.size == 0:
            return range(0)
        return range(int(inside[0]) // self.period, int(inside[-1]) // self.period + 1)


def project(sample: SupplySample, forecast: SupplyForecast, *, now: float) -> Projection:
    period = WEEK_HOURS if forecast.history_hours >= WEEK_HOURS else 24
    cycles = forecast.horizon_hours // period
    hours = cycles * period
    strata = len(sample.strata)
    cell = sample.stratum.astype(np.int64) * period + sample.how.astype(np.int64) % period
    cell_weight = np.bincount(cell, weights=sample.weight, minlength=strata * period).reshape(
        strata, period
    )
    future = hour_of_week((forecast.hour0 + np.arange(hours)) * float(HOUR)).astype(np.int64)
    future_phase = future % period
    base = cell_weight[:, future_phase]  # (S, H)
    mean = forecast.mean[:strata, :hours]
    sigma = forecast.sigma[:strata, :hours]
    scale = np.divide(mean, base, out=np.zeros_like(mean), where=base > 0)
    sigma_scale = np.divide(sigma, base, out=np.zeros_like(sigma), where=base > 0)
    phase0 = int(future_phase[0]) if hours else 0
    hfirst = (np.arange(period) - phase0) % period
    return Projection(
        now=now,
        hour0=forecast.hour0,
        period=period,
        cycles=cycles,
        hfirst=hfirst.astype(np.int64),
        scale=scale,
        sigma=sigma_scale,
        cell_weight=cell_weight,
    )

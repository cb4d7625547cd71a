"""Learning the daily traffic curve from the decision log (offline; servers only pace to it).

``CurveTally`` counts opportunities per UTC hour of day in one pass; ``learn_traffic_curve``
turns ``(ts, weight)`` pairs into a ``serving.pacing.TrafficCurve``. The plan carries the
learned curve to servers (``serving.plan``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from backbeat.serving.pacing import DEFAULT_CURVE, HOUR, TrafficCurve

__all__ = ["CurveTally", "learn_traffic_curve"]


class CurveTally:
    """Opportunities per UTC hour of day, for learning a curve in one pass over a log."""

    def __init__(self) -> None:
        self.weights = [0.0] * 24
        self.samples = 0
        self.first: float | None = None
        self.last: float | None = None

    def add(self, ts: float, weight: float = 1.0) -> None:
        self.weights[int(ts // HOUR) % 24] += weight
        self.samples += 1
        if self.first is None or ts < self.first:
            self.first = ts
        if self.last is None or ts > self.last:
            self.last = ts

    def coverage(self) -> list[float]:
        """How many hours of each hour of day the tally spans (partial hours count partly)."""
        covered = [0.0] * 24
        if self.first is None or self.last is None:
            return covered
        bucket = int(self.first // HOUR)
        while bucket * HOUR < self.last:
            seconds = min(self.last, (bucket + 1) * HOUR) - max(self.first, bucket * HOUR)
            covered[bucket % 24] += seconds / HOUR
            bucket += 1
        return covered

    def curve(
        self,
        *,
        fallback: Sequence[float] = DEFAULT_CURVE,
        min_samples: int = 1000,
        prior_hours: float = 0.05,
    ) -> TrafficCurve:
        """The learned curve, or ``fallback`` when the tally is too thin to say anything.

        Each hour's rate is its traffic over the time the tally spans it, shrunk towards the
        fallback's shape by ``prior_hours`` of pseudo-observation, so a thin hour (or one the
        log does not reach) takes the fallback's shape at the observed level rather than a
        noisy or zero weight that would starve or flood it.
        """
        if self.samples < min_samples:
            return TrafficCurve(fallback)
        covered = self.coverage()
        fallback_total = math.fsum(fallback)
        shape = [weight / fallback_total for weight in fallback]
        seen = [hour for hour in range(24) if covered[hour] > 0]
        level = math.fsum(self.weights[hour] for hour in seen) / math.fsum(
            shape[hour] * covered[hour] for hour in seen
        )
        if not level > 0:
            return TrafficCurve(fallback)
        hourly = [
            (self.weights[hour] + prior_hours * level * shape[hour]) / (covered[hour] + prior_hours)
            for hour in range(24)
        ]
        floor = 1e-3 * math.fsum(hourly) / 24
        return TrafficCurve([max(weight, floor) for weight in hourly])


def learn_traffic_curve(
    samples: Iterable[tuple[float, float]],
    *,
    fallback: Sequence[float] = DEFAULT_CURVE,
    min_samples: int = 1000,
) -> TrafficCurve:
    """A curve from ``(ts, weight)`` pairs: decision-log opportunities, weight 1/sample.

    ``backbeat.forecast.allocation.share.read_opportunities`` reads them from the event log.
    """
    tally = CurveTally()
    for ts, weight in samples:
        tally.add(ts, weight)
    return tally.curve(fallback=fallback, min_samples=min_samples)

"""The hidden truth of who clicks and converts, so forecasts of clicks and conversions can be checked.

A listener's click-through rate is a base rate by device (nobody clicks a smart speaker),
times a lift for each of their segments, times a lift by ad position; a click converts
with a base rate times segment lifts. Forecasting never sees these numbers, only the
clicks and conversions they produce in the event log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backbeat.simulation.audience import DEVICE_CLASSES
from backbeat.simulation.profiles import SEGMENTS, SLOTS

DEFAULT_CTR_BY_DEVICE = {
    "mobile": 0.011,
    "desktop": 0.008,
    "smart_speaker": 0.0006,
    "car": 0.0015,
    "connected_tv": 0.003,
}
DEFAULT_CTR_LIFT = {
    "auto-intender": 1.5,
    "coffee-lover": 1.1,
    "fitness": 1.2,
    "parents": 0.85,
    "students": 1.3,
    "travellers": 1.15,
    "gamers": 0.9,
}
DEFAULT_CONVERSION_LIFT = {
    "auto-intender": 1.8,
    "coffee-lover": 1.3,
    "fitness": 1.0,
    "parents": 1.2,
    "students": 0.6,
    "travellers": 1.4,
    "gamers": 0.8,
}
DEFAULT_POSITION_LIFT = {"interstitial": 0.8, "pre_roll": 1.0, "mid_roll": 1.2, "post_roll": 0.6}


@dataclass(frozen=True)
class ResponseModel:
    """Click and conversion probabilities; ``conversion_rate`` is per click."""

    ctr_by_device: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CTR_BY_DEVICE))
    ctr_lift: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CTR_LIFT))
    position_lift: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_POSITION_LIFT))
    conversion_rate: float = 0.05
    conversion_lift: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CONVERSION_LIFT))

    def _segment_lift(self, masks: np.ndarray, lifts: dict[str, float]) -> np.ndarray:
        # One product per distinct mask (2^segments of them), then a lookup.
        table = np.ones(1 << len(SEGMENTS))
        for bit, name in enumerate(SEGMENTS):
            has = (np.arange(table.size) >> bit & 1).astype(bool)
            table[has] *= lifts.get(name, 1.0)
        return table[masks]

    def click_probability(
        self, device_class: np.ndarray, segments: np.ndarray, slot: np.ndarray
    ) -> np.ndarray:
        """Per impression: device class index, segment mask, index into profiles.SLOTS."""
        base = np.array([self.ctr_by_device.get(name, 0.005) for name in DEVICE_CLASSES])
        position = np.array([self.position_lift.get(pos, 1.0) for _, pos in SLOTS])
        probability = base[device_class] * self._segment_lift(segments, self.ctr_lift)
        return np.minimum(probability * position[slot], 1.0)

    def conversion_probability(self, segments: np.ndarray) -> np.ndarray:
        """Per click."""
        lift = self._segment_lift(segments, self.conversion_lift)
        return np.minimum(self.conversion_rate * lift, 1.0)

"""Synthetic listeners and ad traffic with a realistic shape, for the demo, backtests, benchmarks and tests.

A shared lower layer: it knows the decision-log record format and the event log, never
the API, CLI or demo. See docs/simulation.md for the assumptions.
"""

from backbeat.simulation.audience import Audience, make_audience
from backbeat.simulation.outcomes import ResponseModel
from backbeat.simulation.traffic import Traffic, TrafficConfig, simulate_traffic

__all__ = [
    "Audience",
    "ResponseModel",
    "Traffic",
    "TrafficConfig",
    "make_audience",
    "simulate_traffic",
]

"""Prometheus metrics of the forecaster: answer latency, rebuild time, sample size."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FORECAST_LATENCY = Histogram(
    "backbeat_forecast_seconds",
    "Time to answer one forecast (in process, excluding HTTP)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
FORECAST_REBUILD_SECONDS = Histogram(
    "backbeat_forecast_rebuild_seconds",
    "Time to rebuild the forecaster (read log, sample, fit, allocate)",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
FORECAST_REBUILDS = Counter("backbeat_forecast_rebuilds_total", "Forecaster rebuilds", ["result"])
FORECAST_SAMPLE_ROWS = Gauge(
    "backbeat_forecast_sample_rows", "Requests in the supply sample", multiprocess_mode="max"
)
FORECAST_AGE = Gauge(
    "backbeat_forecast_built_timestamp_seconds",
    "When the forecaster in use was built (its history ends then)",
    multiprocess_mode="max",
)

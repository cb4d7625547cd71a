"""Prometheus metrics of the promotion pipeline runs and the scoring service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PIPELINE_ROWS = Gauge(
    "backbeat_promotion_feature_rows", "Training rows written by the last feature pipeline run"
)
PIPELINE_SECONDS = Gauge(
    "backbeat_promotion_feature_pipeline_seconds", "Duration of the last feature pipeline run"
)
PIPELINE_RUNS = Counter(
    "backbeat_promotion_feature_runs_total", "Feature pipeline runs by outcome", ["outcome"]
)
QUALITY_FAILURES = Counter(
    "backbeat_promotion_quality_failures_total", "Failed data-quality checks", ["check"]
)
TRAINING_AUC = Gauge(
    "backbeat_promotion_model_auc", "Holdout AUC of the last trained model", ["model"]
)
SCORE_SECONDS = Histogram(
    "backbeat_promotion_score_seconds",
    "Time to score one promotion request (in process)",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
)
SCORED_ITEMS = Counter(
    "backbeat_promotion_scored_items_total", "Candidates scored, by source", ["source"]
)
EXCLUDED_ITEMS = Counter(
    "backbeat_promotion_excluded_items_total", "Candidates left out, by reason", ["reason"]
)
SNAPSHOT_REFRESHES = Counter(
    "backbeat_promotion_snapshot_refreshes_total", "Promotion snapshot reloads", ["part"]
)

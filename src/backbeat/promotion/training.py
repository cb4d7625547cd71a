"""Train the conversion model reproducibly and register it; gate who becomes champion.

Reproducible means: a fixed time split (the last ``holdout_share`` of exposures by time is
the holdout), LightGBM with ``deterministic``, ``num_threads=1`` and ``force_row_wise``
and a seed, a logistic regression baseline (scikit-learn, lbfgs), and every output written
with sorted keys and rounded floats. The SHA-256 of the exact training matrix and of the
feature code go in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from backbeat.errors import InvalidInput
from backbeat.observability import log
from backbeat.promotion import features as feature_code
from backbeat.promotion.dataset import read_columns
from backbeat.promotion.evaluation import evaluate, rounded
from backbeat.promotion.metrics import TRAINING_AUC
from backbeat.promotion.model import (  # noqa: F401 - load_model re-exported for callers
    FEATURES,
    LIGHTGBM,
    LOGISTIC,
    ConversionModel,
    LightGBMModel,
    LogisticModel,
    _linear_inputs,
    load_model,
)
from backbeat.promotion.registry import CHALLENGER, CHAMPION, ModelVersion, Registry

LOG_FEATURES = [
    name for name in FEATURES if name not in ("genre_share_28d", "surface")
]  # counts and days: log1p for the linear baseline

LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.08,
    "num_leaves": 7,
    "min_data_in_leaf": 40,
    "lambda_l2": 1.0,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "deterministic": True,
    "num_threads": 1,
    "force_row_wise": True,
    "verbose": -1,
}


@dataclass
class TrainJob:
    features: Path
    registry: Path
    seed: int = 7
    model_kind: str = LIGHTGBM
    holdout_share: float = 0.2
    rounds: int = 120  # small trees, few of them: a 100-candidate request is one fast call
    params: dict[str, Any] = field(default_factory=dict)  # overrides, e.g. to test the gate


@dataclass(frozen=True)
class TrainResult:
    version: ModelVersion
    champion: str
    promoted: bool
    compared_with: str | None
    champion_auc_on_holdout: float | None


def data_hash(matrix: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256("|".join(FEATURES).encode())
    digest.update(np.ascontiguousarray(matrix, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int8).tobytes())
    return digest.hexdigest()


def split(
    columns: dict[str, np.ndarray], holdout_share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Time split: rows are in (time, exposure id) order; the latest share is the holdout."""
    order = np.lexsort((columns["exposure_id"], columns["ts"]))
    matrix = np.column_stack([columns[name][order].astype(np.float64) for name in FEATURES])
    labels = columns["label"][order].astype(np.int8)
    cut = int(len(labels) * (1 - holdout_share))
    if cut < 50 or len(labels) - cut < 50:
        raise InvalidInput(
            f"{len(labels)} training rows are too few to train and hold out", reason="too-few-rows"
        )
    for part, name in ((labels[:cut], "training"), (labels[cut:], "holdout")):
        if part.min() == part.max():
            raise InvalidInput(f"the {name} rows have a single label", reason="single-class")
    return matrix[:cut], labels[:cut], matrix[cut:], labels[cut:], cut


def fit_lightgbm(
    x: np.ndarray, y: np.ndarray, seed: int, rounds: int, overrides: dict[str, Any]
) -> str:
    params = {**LIGHTGBM_PARAMS, "seed": seed, **overrides}
    dataset = lgb.Dataset(
        x, label=y, feature_name=FEATURES, params={"verbose": -1}, free_raw_data=True
    )
    booster = lgb.train(params, dataset, num_boost_round=rounds)
    return str(booster.model_to_string())


def fit_logistic(x: np.ndarray, y: np.ndarray, seed: int) -> str:
    log_columns = np.array([FEATURES.index(name) for name in LOG_FEATURES])
    inputs = _linear_inputs(x, log_columns)
    mean = inputs.mean(axis=0)
    scale = inputs.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    model.fit((inputs - mean) / scale, y)
    spec = {
        "log_features": LOG_FEATURES,
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": model.coef_[0].tolist(),
        "intercept": float(model.intercept_[0]),
    }
    return json.dumps(spec, sort_keys=True, indent=1) + "\n"


def train(job: TrainJob) -> TrainResult:
    """Fit, evaluate on the holdout against baselines, register, and gate the champion."""
    if job.model_kind not in (LIGHTGBM, LOGISTIC):
        raise InvalidInput(f"unknown model kind {job.model_kind!r}", reason="unknown-model-kind")
    if not job.features.exists():
        raise InvalidInput(
            f"no features at {job.features}: run the feature pipeline first", reason="no-features"
        )
    columns = read_columns(job.features)
    x_train, y_train, x_hold, y_hold, cut = split(columns, job.holdout_share)
    if job.model_kind == LIGHTGBM:
        text = fit_lightgbm(x_train, y_train, job.seed, job.rounds, job.params)
        model: ConversionModel = LightGBMModel(text)
        model_file = "model.txt"
    else:
        text = fit_logistic(x_train, y_train, job.seed)
        model = LogisticModel(text)
        model_file = "model.json"
    predictions = model.predict(x_hold)
    baseline = LogisticModel(fit_logistic(x_train, y_train, job.seed)).predict(x_hold)
    popularity = x_hold[:, FEATURES.index(feature_code.BASELINE_FEATURE)]
    clicks = columns.get("clicked")
    clicks_per_conversion = (
        float(clicks.sum()) / max(1, int(columns["label"].sum())) if clicks is not None else 1.0
    )
    metrics = rounded(
        {
            "holdout": evaluate(y_hold, predictions),
            "popularity_baseline": {"auc": float(roc_auc_score(y_hold, popularity))},
            "logistic_baseline": evaluate(y_hold, baseline),
            "training": {"rows": int(len(y_train)), "positives": int(y_train.sum())},
        }
    )
    manifest = rounded(
        {
            "model_kind": job.model_kind,
            "seed": job.seed,
            "features": FEATURES,
            "feature_code_sha256": feature_code.feature_code_hash(),
            "training_data_sha256": data_hash(np.vstack([x_train, x_hold]), np.r_[y_train, y_hold]),
            "holdout_share": job.holdout_share,
            "holdout_from_ts": int(np.sort(columns["ts"])[cut]),
            "params": {**LIGHTGBM_PARAMS, "seed": job.seed, **job.params, "rounds": job.rounds}
            if job.model_kind == LIGHTGBM
            else {"C": 1.0, "solver": "lbfgs"},
            "clicks_per_conversion": clicks_per_conversion,
        }
    )
    registry = Registry(job.registry)
    version = registry.save(
        model_bytes=text.encode(), model_file=model_file, metrics=metrics, manifest=manifest
    )
    TRAINING_AUC.labels(job.model_kind).set(metrics["holdout"]["auc"])
    return _gate(registry, version, x_hold, y_hold)


def _gate(
    registry: Registry, candidate: ModelVersion, x_hold: np.ndarray, y_hold: np.ndarray
) -> TrainResult:
    """The candidate becomes champion unless the champion does better on the same holdout."""
    champion = registry.resolve(CHAMPION)
    new_auc = float(candidate.metrics["holdout"]["auc"])
    if champion is None or champion.version == candidate.version:
        registry.set_alias(CHAMPION, candidate.version)
        return TrainResult(candidate, candidate.version, True, None, None)
    if champion.manifest.get("features") == FEATURES:
        champion_auc = round(float(roc_auc_score(y_hold, load_model(champion).predict(x_hold))), 6)
    else:  # other features: only its own holdout figure is comparable at all
        champion_auc = float(champion.metrics["holdout"]["auc"])
    promoted = new_auc >= champion_auc
    if promoted:
        registry.set_alias(CHAMPION, candidate.version)
        if registry.aliases().get(CHALLENGER) == candidate.version:
            registry.set_alias(CHALLENGER, None)
    else:
        registry.set_alias(CHALLENGER, candidate.version)
    log.info(
        "promotion model gated",
        candidate=candidate.version,
        candidate_auc=new_auc,
        champion=champion.version,
        champion_auc=champion_auc,
        promoted=promoted,
    )
    current = candidate.version if promoted else champion.version
    return TrainResult(candidate, current, promoted, champion.version, champion_auc)

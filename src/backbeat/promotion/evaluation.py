"""Holdout metrics: AUC, log loss and calibration (expected calibration error and bins)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

CALIBRATION_BINS = 10


def calibration(
    y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-count bins of the predictions, and each bin's mean prediction vs rate."""
    order = np.argsort(p, kind="stable")
    table, ece = [], 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk) == 0:
            continue
        predicted, observed = float(p[chunk].mean()), float(y[chunk].mean())
        ece += len(chunk) / len(p) * abs(predicted - observed)
        table.append({"n": int(len(chunk)), "predicted": predicted, "observed": observed})
    return ece, table


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    ece, table = calibration(y, p)
    return {
        "auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": ece,
        "calibration": table,
        "rows": int(len(y)),
        "positives": int(y.sum()),
    }


def rounded(value: Any, digits: int = 6) -> Any:
    """Floats rounded everywhere in a JSON-able value, so metrics files compare byte for byte."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return value

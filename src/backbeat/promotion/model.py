"""The conversion model as the scorer uses it: loaded from the registry, predicting.

Apart from training (``promotion/training.py``, LightGBM and scikit-learn) so that
serving imports neither until a champion is loaded: LightGBM is imported in
:class:`LightGBMModel`, which the scorer builds in its background refresh, never per
request; a logistic champion needs only numpy.
"""

from __future__ import annotations

import json
from typing import Protocol

import numpy as np

from backbeat.promotion import features as feature_code
from backbeat.promotion.registry import ModelVersion

FEATURES = list(feature_code.FEATURES)
LIGHTGBM = "lightgbm"
LOGISTIC = "logistic"


class ConversionModel(Protocol):
    def predict(self, matrix: np.ndarray) -> np.ndarray: ...


class LightGBMModel:
    def __init__(self, text: str) -> None:
        import lightgbm as lgb  # seconds to import: only when a LightGBM champion loads

        self.booster = lgb.Booster(model_str=text)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(matrix, num_threads=1))


class LogisticModel:
    """A logistic regression from its JSON (no scikit-learn at serving time)."""

    def __init__(self, text: str) -> None:
        spec = json.loads(text)
        self.log_columns = np.array([FEATURES.index(name) for name in spec["log_features"]])
        self.mean = np.array(spec["mean"])
        self.scale = np.array(spec["scale"])
        self.coef = np.array(spec["coef"])
        self.intercept = float(spec["intercept"])

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        z = (_linear_inputs(matrix, self.log_columns) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))


def _linear_inputs(matrix: np.ndarray, log_columns: np.ndarray) -> np.ndarray:
    x = np.array(matrix, dtype=np.float64, copy=True)
    x[:, log_columns] = np.log1p(np.maximum(x[:, log_columns], 0))
    return x


def load_model(version: ModelVersion) -> ConversionModel:
    text = version.model_file.read_text()
    if version.manifest["model_kind"] == LIGHTGBM:
        return LightGBMModel(text)
    return LogisticModel(text)

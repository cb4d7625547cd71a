"""The dashboard's window on forecasting: a live forecast while booking, and forecast vs actual.

Calls the forecast service the API uses; until that service exists (or when it cannot
answer) the pages say so instead of showing numbers.
"""

from __future__ import annotations

import importlib
from typing import Any


def _service() -> Any:
    try:
        return importlib.import_module("backbeat.forecast.service")
    except ImportError:
        return None


def available() -> bool:
    module = _service()
    return module is not None and hasattr(module, "Forecaster")


def forecast_vs_actual(
    services: Any, item: Any, campaign: Any, delivered: int
) -> dict[str, Any] | None:
    """What was forecast for the line item's flight against what it delivered; None if unknown."""
    del services, item, campaign, delivered
    return None

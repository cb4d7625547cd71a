"""Forecasting: supply sample, supply models, reach, rates, availability, guaranteed allocation.

The public surface is ``Forecaster``, ``ForecastQuery``, ``ForecastResult`` and ``Estimate``
(``backbeat.forecast.service``), imported lazily so that light users of the package (the
allocation plan, say) do not pay for the forecaster's imports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Estimate", "ForecastQuery", "ForecastResult", "ForecastUnavailable", "Forecaster"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from backbeat.forecast import service

        return getattr(service, name)
    raise AttributeError(name)

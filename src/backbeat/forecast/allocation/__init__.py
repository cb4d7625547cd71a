"""Guaranteed allocation: the offline plan (HWM, SHALE), its exact check and budget splits."""

from __future__ import annotations

from backbeat.forecast.allocation.hwm import HwmResult, hwm_allocate

__all__ = ["HwmResult", "hwm_allocate"]

"""Shared constants of the promotion tests (a module, not conftest: two conftests would clash)."""

from __future__ import annotations

from datetime import UTC, datetime

# The data's end and the app's clock: listening history runs up to here.
DATA_END = datetime(2026, 9, 20, tzinfo=UTC)
NOW = DATA_END.timestamp() + 3600

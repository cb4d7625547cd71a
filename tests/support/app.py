"""The settings and clock every app-level test starts from (API, promotion, UI, faults)."""

from __future__ import annotations

from pathlib import Path

from backbeat.config import Settings
from backbeat.db import migrate
from factories import ADMIN_KEY

SIGNING_KEY = "test-signing-key-0123456789abcdef"


class FakeClock:
    """Wall-clock time that tests can move forward."""

    def __init__(self, now: float = 1_790_000_000.0) -> None:  # 2026-09-21 14:13 UTC
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_settings(database_url: str, var_dir: Path, **overrides: object) -> Settings:
    """Settings of a test app on a freshly migrated ``database_url``; ``overrides`` win."""
    migrate(database_url)
    values: dict[str, object] = {
        "var_dir": var_dir,
        "database_url": database_url,
        "admin_key": ADMIN_KEY,
        "signing_key": SIGNING_KEY,
        "public_base_url": "http://testserver",
        "log_json": False,
        "log_level": "WARNING",
        "catalog_poll_seconds": 0.2,
        "decision_log_sample": 0.0,  # tests of the decision log turn it on themselves
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]

"""An app on a fresh migrated database (SQLite and PostgreSQL) with a controllable clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backbeat.api.app import create_app
from backbeat.config import Settings
from backbeat.db import migrate
from factories import ADMIN_KEY


class FakeClock:
    """Wall-clock time that tests can move forward."""

    def __init__(self, now: float = 1_790_000_000.0) -> None:  # 2026-09-21
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    migrate(database_url)
    return Settings(
        var_dir=tmp_path / "var",
        database_url=database_url,
        admin_key=ADMIN_KEY,
        signing_key="test-signing-key-0123456789abcdef",
        public_base_url="http://testserver",
        log_json=False,
        log_level="WARNING",
        catalog_poll_seconds=0.2,
        decision_log_sample=0.0,  # tests of the decision log turn it on themselves
    )


@pytest.fixture
def client(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client

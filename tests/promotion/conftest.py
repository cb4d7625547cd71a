"""Promotion fixtures: a small synthetic data set generated once, and an app on it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backbeat.api.app import create_app
from backbeat.config import Settings
from backbeat.db import migrate
from factories import ADMIN_KEY

# The data's end and the app's clock: listening history runs up to here.
DATA_END = datetime(2026, 9, 20, tzinfo=UTC)
NOW = DATA_END.timestamp() + 3600


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
        decision_log_sample=0.0,
    )


@pytest.fixture
def client(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client

"""Dashboard fixtures: an app on a fresh migrated SQLite database with a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ui_support import FakeClock, make_settings

from backbeat.api.app import create_app


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'backbeat.db'}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def any_client(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[TestClient]:
    """A client on SQLite and, in a second run, on the tests' real PostgreSQL."""
    settings = make_settings(database_url, tmp_path / "var")
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client


@pytest.fixture
def client(sqlite_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[TestClient]:
    settings = make_settings(sqlite_url, tmp_path / "var")
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the browser tests left their screenshots."""
    import sys

    module = sys.modules.get("test_browser")
    shots = getattr(module, "SHOTS", None)
    if shots:
        terminalreporter.write_line(f"dashboard screenshots ({len(shots)}): {module.ARTIFACTS}")

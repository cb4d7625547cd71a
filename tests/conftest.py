"""Suite-wide fixtures: a clean environment, real PostgreSQL/Redis servers and a CLI runner.

``postgres_server`` and ``redis_server`` start real servers once per session (per xdist
worker) and skip when the binaries are missing, unless ``BACKBEAT_REQUIRE_POSTGRES=1`` /
``BACKBEAT_REQUIRE_REDIS=1`` (set by ``.ci/run``) turn the skip into a failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
from click.testing import CliRunner

from backbeat.config import get_settings

# Makes tests/support importable as ``support`` whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

from support.servers import (  # noqa: E402
    PostgresServer,
    RedisServer,
    find_postgres_bindir,
    find_redis_server,
    start_postgres,
    start_redis,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

REQUIRE_POSTGRES = "BACKBEAT_REQUIRE_POSTGRES"
REQUIRE_REDIS = "BACKBEAT_REQUIRE_REDIS"
KEPT_VARIABLES = frozenset({REQUIRE_POSTGRES, REQUIRE_REDIS})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests reaching a server through these fixtures get its marker, so `-m "not redis"` works
    # without every test remembering to mark itself.
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "postgres_server" in names:
            item.add_marker(pytest.mark.postgres)
        if "redis_server" in names or "redis_url" in names:
            item.add_marker(pytest.mark.redis)


def _required(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(message: str, variable: str) -> NoReturn:
    if _required(variable):
        pytest.fail(f"{message}, and {variable}=1 requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Drop ``BACKBEAT_*`` variables and the cached settings so each test starts from defaults."""
    for name in list(os.environ):
        if name.startswith("BACKBEAT_") and name not in KEPT_VARIABLES:
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session; ``.url`` points at its ``backbeat_test`` database."""
    if find_postgres_bindir() is None:
        _unavailable(
            "PostgreSQL binaries not found (install Debian's postgresql)", REQUIRE_POSTGRES
        )
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server for the whole session; tests may ``stop()``/``start()`` it (same port)."""
    if find_redis_server() is None:
        _unavailable("redis-server not found (install Debian's redis-server)", REQUIRE_REDIS)
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database; each test runs once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'backbeat.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    server.start()  # in case an earlier test's outage left it down
    url = server.create_database()
    yield url
    server.start()
    server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of database 0 on the session's Redis, emptied before the test."""
    redis_server.start()  # in case an earlier test's outage left it down
    with redis_server.client() as client:
        client.flushall()
    yield redis_server.url


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()

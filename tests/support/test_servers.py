"""The servers in ``support.servers`` really start, isolate tests and stop cleanly."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import pytest
import redis
import sqlalchemy as sa

from support.servers import find_postgres_bindir, find_redis_server, start_redis

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from support.servers import PostgresServer, RedisServer


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_environment_is_clean() -> None:
    leftovers = [
        name
        for name in os.environ
        if name.startswith("BACKBEAT_")
        and name not in {"BACKBEAT_REQUIRE_POSTGRES", "BACKBEAT_REQUIRE_REDIS"}
    ]
    assert leftovers == []


def test_postgres_answers_select_version(postgres_server: PostgresServer) -> None:
    engine = sa.create_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version()")).scalar_one()
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    finally:
        engine.dispose()
    assert version.startswith("PostgreSQL ")
    assert database == "backbeat_test"
    assert postgres_server.url.startswith("postgresql+psycopg://backbeat@127.0.0.1:")


def test_postgres_is_not_run_as_root(postgres_server: PostgresServer) -> None:
    with postgres_server.connect() as conn:
        data_directory = conn.execute("SHOW data_directory").fetchone()
    assert data_directory is not None
    assert os.stat(data_directory[0]).st_uid != 0


@pytest.mark.parametrize("run", ["first", "second"])
def test_database_url_is_fresh_and_empty(engine: sa.Engine, run: str) -> None:
    assert sa.inspect(engine).get_table_names() == []
    # Leave a table behind: the other run must not see it.
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE leftover (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO leftover (id) VALUES (1)"))


def test_postgres_param_carries_marker(request: pytest.FixtureRequest, database_url: str) -> None:
    marked = request.node.get_closest_marker("postgres") is not None
    assert marked == database_url.startswith("postgresql+psycopg://")


def test_created_databases_are_isolated_and_dropped(postgres_server: PostgresServer) -> None:
    first = postgres_server.create_database()
    second = postgres_server.create_database()
    engines = [sa.create_engine(first), sa.create_engine(second)]
    try:
        with engines[0].begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_in_first (id INTEGER)"))
        assert sa.inspect(engines[1]).get_table_names() == []
        # An open connection must not block the drop.
        with engines[0].connect():
            postgres_server.drop_database(first.rsplit("/", 1)[1])
    finally:
        for engine in engines:
            engine.dispose()
        postgres_server.drop_database(second.rsplit("/", 1)[1])
    names = postgres_server.list_databases()
    assert first.rsplit("/", 1)[1] not in names
    assert second.rsplit("/", 1)[1] not in names


def test_redis_ping_set_get(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"


@pytest.mark.parametrize("run", ["first", "second"])
def test_redis_url_is_flushed_between_tests(redis_url: str, run: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set(f"leftover-{run}", "1")


def test_redis_outage_restarts_on_same_port(redis_server: RedisServer, redis_url: str) -> None:
    port = redis_server.port
    with redis_server.down():
        assert not redis_server.is_running
        assert not _listening(port)
        with (
            redis.Redis.from_url(redis_url, socket_connect_timeout=0.5) as client,
            pytest.raises(redis.exceptions.ConnectionError),
        ):
            client.ping()
    assert redis_server.port == port
    assert redis_server.url == redis_url
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()


def test_postgres_outage_restarts_on_same_port(postgres_server: PostgresServer) -> None:
    url = postgres_server.url
    with postgres_server.down():
        assert not postgres_server.is_running
        assert not _listening(postgres_server.port)
    assert postgres_server.url == url
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


@pytest.mark.skipif(find_redis_server() is None, reason="redis-server not installed")
def test_closed_redis_leaves_nothing_running(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server:
        pid = server._proc.pid if server._proc else None
        port = server.port
        assert _listening(port)
    assert not server.is_running
    assert not _listening(port)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_find_postgres_bindir_points_at_server_binaries() -> None:
    bindir = find_postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not installed")
    assert (bindir / "initdb").exists()
    assert (bindir / "postgres").exists()

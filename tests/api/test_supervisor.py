"""``backbeat serve --workers N`` on real processes: a listening socket per worker
(``SO_REUSEPORT``) so kept-alive connections spread over the workers, a graceful stop on
SIGTERM, a dead worker replaced, and a clear refusal when the port is taken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from factories import ADMIN_KEY

ENV_KEYS = ("PATH", "HOME", "LANG", "SYSTEMROOT")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(tmp_path: Path) -> dict[str, str]:
    env = {key: os.environ[key] for key in ENV_KEYS if key in os.environ}
    env.update(
        BACKBEAT_VAR_DIR=str(tmp_path / "var"),
        BACKBEAT_ADMIN_KEY=ADMIN_KEY,
        BACKBEAT_PUBLIC_BASE_URL="http://127.0.0.1",
        BACKBEAT_LOG_LEVEL="ERROR",
        PYTHONPATH=os.pathsep.join(sys.path),
    )
    return env


def _serve(tmp_path: Path, port: int, workers: int = 2) -> subprocess.Popen[bytes]:
    """The server, its messages in ``serve.err`` (a pipe nobody reads would fill and block)."""
    errors = (tmp_path / "serve.err").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "backbeat.cli.main", "serve", "--port", str(port),
         "--workers", str(workers)],
        env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=errors,
        start_new_session=True,
    )  # fmt: skip


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def _workers(server: subprocess.Popen[bytes], count: int) -> set[int]:
    """The worker processes, once ``count`` of them answer (the spawn helper is not one)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.poll() is None, "server exited"
        workers = {pid for pid in _children(server.pid) if _sockets(pid)}
        if len(workers) >= count:
            return workers
        time.sleep(0.2)
    pytest.fail("workers did not start")


def _sockets(pid: int) -> set[int]:
    """Inodes of the sockets a process holds open."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _tcp(port: int, state: str) -> set[int]:
    """Inodes of IPv4 TCP sockets on local ``port`` in ``state`` (``0A`` listen, ``01``
    established), from ``/proc/net/tcp``."""
    inodes = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            inodes.add(int(fields[9]))
    return inodes


def _answering(port: int, workers: set[int]) -> None:
    """Until every worker has answered a request of its own (on fresh connections)."""
    answered: set[int] = set()
    deadline = time.monotonic() + 90
    while answered != workers and time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            if conn.recv(65536).startswith(b"HTTP/1.1 200"):
                established = _tcp(port, "01")
                answered |= {pid for pid in workers if _sockets(pid) & established}
    assert answered == workers


def _stop(server: subprocess.Popen[bytes]) -> int:
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        raise


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], set[int]]]:
    """``backbeat serve --workers 2`` with both workers answering; stopped (status 0) after."""
    port = _free_port()
    server = _serve(tmp_path, port)
    try:
        workers = _workers(server, 2)
        _answering(port, workers)
        yield port, server, workers
    finally:
        if server.poll() is None:
            assert _stop(server) == 0


def test_each_worker_listens_on_its_own_socket_and_connections_spread(two_workers):
    port, _server, workers = two_workers
    listening = _tcp(port, "0A")
    # Two listening sockets on one port, one in each worker (uvicorn's own supervisor
    # shares a single socket among all of them).
    assert len(listening) == 2
    held = {pid: _sockets(pid) & listening for pid in workers}
    assert sorted(len(inodes) for inodes in held.values()) == [1, 1]
    assert held[min(workers)] != held[max(workers)]
    # 32 kept-alive connections opened together: the kernel spreads them by address
    # hash, whichever worker is idle (one worker holding 28 or more: p < 3e-6).
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
    try:
        for conn in connections:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        for conn in connections:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        established = _tcp(port, "01")
        per_worker = Counter({pid: len(_sockets(pid) & established) for pid in workers})
        assert sum(per_worker.values()) == 32
        assert all(4 <= count <= 28 for count in per_worker.values()), per_worker
    finally:
        for conn in connections:
            conn.close()


def test_a_dead_worker_is_replaced_and_sigterm_stops_every_worker(two_workers):
    port, server, workers = two_workers
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = {pid for pid in _children(server.pid) if _sockets(pid) & _tcp(port, "0A")}
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the dead worker was not replaced")
    for _ in range(10):  # both workers answer again
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    survivors = _children(server.pid)
    assert _stop(server) == 0
    assert not any(Path(f"/proc/{pid}").exists() and _sockets(pid) for pid in survivors)


def test_a_taken_port_is_refused_with_a_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = _serve(tmp_path, port)
        try:
            status = server.wait(timeout=60)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
        assert status != 0
        assert b"in use" in (tmp_path / "serve.err").read_bytes()
        assert _tcp(port, "0A") == {taken_inode(taken)}


def taken_inode(sock: socket.socket) -> int:
    return int(os.readlink(f"/proc/self/fd/{sock.fileno()}")[8:-1])


def test_workers_that_cannot_start_stop_the_server_with_status_3(tmp_path):
    """A worker whose start fails (here: no database there) would fail again: the
    supervisor stops instead of restarting it forever."""
    env = _env(tmp_path)
    env["BACKBEAT_DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{_free_port()}/nothing"
    errors = (tmp_path / "serve.err").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "backbeat.cli.main", "serve", "--port", str(_free_port()),
         "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True,
    )  # fmt: skip
    try:
        status = server.wait(timeout=120)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert status == 3
    assert b"fail before serving" in (tmp_path / "serve.err").read_bytes()
    assert not _children(server.pid)


class _Dead:
    """A worker process that has already exited (``served``: after it started serving)."""

    def __init__(self, served: bool, exitcode: int = -9) -> None:
        self.exitcode = exitcode
        self.ready = threading.Event()
        if served:
            self.ready.set()

    def is_alive(self) -> bool:
        return False


def test_workers_dying_before_they_serve_stop_the_supervisor_after_three_in_a_row(monkeypatch):
    from backbeat.api.supervisor import EARLY_DEATHS, Supervisor

    supervisor = Supervisor("127.0.0.1", 0, 1, {})
    # A worker that served and died is replaced; each replacement then dies before serving.
    started = iter([_Dead(served=True), *(_Dead(served=False) for _ in range(EARLY_DEATHS))])
    starts = []
    monkeypatch.setattr(supervisor, "_start", lambda: starts.append(1) or next(started))
    supervisor._processes = [supervisor._start()]
    assert supervisor._watch() == 3
    assert len(starts) == 1 + EARLY_DEATHS  # the first, then one per death but the last


def test_a_worker_that_served_is_replaced_however_often_it_dies(monkeypatch):
    from backbeat.api.supervisor import Supervisor

    supervisor = Supervisor("127.0.0.1", 0, 1, {})
    starts = []

    def start() -> _Dead:
        starts.append(1)
        if len(starts) == 10:
            supervisor._stopping.set()
        return _Dead(served=True)

    monkeypatch.setattr(supervisor, "_start", start)
    supervisor._processes = [supervisor._start()]
    assert supervisor._watch() == 0
    assert len(starts) == 10

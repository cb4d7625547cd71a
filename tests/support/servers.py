"""Throwaway PostgreSQL and Redis servers started by the test suite itself.

Each server is a child process of pytest bound to a free port on 127.0.0.1, with its
files under a scratch directory. Servers stop on fixture teardown, at interpreter exit
(``atexit``) and, on Linux, when pytest itself dies (``PR_SET_PDEATHSIG``), so a
crashed or killed run does not leave them behind.

PostgreSQL refuses to run as root; when the tests run as root, ``initdb`` and
``postgres`` run as the ``postgres`` system user (created by Debian's package) in a
directory that user owns.

Both server classes share a lifecycle: ``stop()``/``start()`` pause and resume on the
same port (``down()`` wraps that as an outage), ``close()`` stops for good, and leaving
the ``with`` block closes. Usage::

    with start_postgres(tmp_path) as pg:
        url = pg.create_database()   # postgresql+psycopg://backbeat@127.0.0.1:PORT/test_...

    with start_redis(tmp_path) as redis_server:
        with redis_server.down():    # simulated outage; same port afterwards
            ...
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self, TypeVar

import psycopg
import redis
from psycopg import sql

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

__all__ = [
    "PostgresServer",
    "RedisServer",
    "ServerStartError",
    "find_postgres_bindir",
    "find_redis_server",
    "start_postgres",
    "start_redis",
]

HOST = "127.0.0.1"
POSTGRES_SYSTEM_USER = "postgres"
_PR_SET_PDEATHSIG = 1
_POLL_INTERVAL = 0.05
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ServerStartError(RuntimeError):
    """A test server did not become ready; the message carries the tail of its log."""


# --- discovery ---------------------------------------------------------------------------


def _is_server_bindir(path: Path) -> bool:
    return all(os.access(path / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_postgres_bindir() -> Path | None:
    """Return the directory holding ``initdb`` and ``postgres``, or None when not installed.

    Tries ``pg_config --bindir``, then ``PATH``, then the newest ``/usr/lib/postgresql/*/bin``.
    Debian's ``pg_config`` can come from ``libpq-dev`` without any server, hence the checks.
    """
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            bindir = Path(out.stdout.strip())
            if _is_server_bindir(bindir):
                return bindir
    initdb = shutil.which("initdb")
    if initdb and _is_server_bindir(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _is_server_bindir(p)]
    return max(candidates, key=_version_key, default=None)


def find_redis_server() -> Path | None:
    """Return the ``redis-server`` executable, or None when not installed."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    for candidate in (
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
        "/usr/local/bin/redis-server",
    ):
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


# --- process helpers ---------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """Build a ``preexec_fn`` making the child receive ``sig`` when pytest exits.

    Popen drops privileges before calling it, so the setting survives the switch to the
    ``postgres`` user (the kernel clears it on credential changes). It fires when the
    *thread* that spawned the child exits, which is fine because pytest runs fixtures
    on the main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _clean_env() -> dict[str, str]:
    # Inherited PGDATA/PGPORT/PGHOST... would redirect initdb or postgres elsewhere.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _terminate(
    proc: subprocess.Popen[bytes], signals: tuple[signal.Signals, ...], timeout: float
) -> None:
    for sig in signals:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class _Account:
    uid: int
    gid: int

    @classmethod
    def for_postgres(cls) -> _Account | None:
        """The account to run PostgreSQL as: None for the current user unless it is root."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            raise ServerStartError(
                f"running as root, but there is no {POSTGRES_SYSTEM_USER!r} user to run PostgreSQL as "
                "(install Debian's postgresql package, or run the tests as a normal user)"
            ) from None
        return cls(uid=entry.pw_uid, gid=entry.pw_gid)

    def can_traverse(self, path: Path) -> bool:
        """Whether this account can reach ``path`` (every ancestor searchable)."""
        for directory in (path, *path.parents):
            mode = directory.stat()
            if mode.st_uid == self.uid:
                bit = 0o100
            elif mode.st_gid == self.gid:
                bit = 0o010
            else:
                bit = 0o001
            if not mode.st_mode & bit:
                return False
        return True


def _wait_until(
    ready: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    log: Path,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerStartError(
                f"{what} exited with status {proc.returncode}:\n{_log_tail(log)}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServerStartError(f"{what} not ready after {timeout:.0f}s:\n{_log_tail(log)}")
        time.sleep(_POLL_INTERVAL)


# --- PostgreSQL --------------------------------------------------------------------------


class _ManagedServer:
    """Lifecycle shared by the test servers: spawn, wait until ready, stop, restart in place."""

    what = "server"
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)
    log_path: Path
    timeout: float
    port: int

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _popen(self, args: list[str], root: Path) -> subprocess.Popen[bytes]:
        """Spawn ``args`` in ``root`` in its own session, logging to ``log_path``.

        It dies with the tests' process (SIGTERM) and is not reached by a terminal's Ctrl-C.
        """
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                args,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self) -> None:
        self._proc = self._spawn()
        _wait_until(
            self._ready, proc=self._proc, timeout=self.timeout, what=self.what, log=self.log_path
        )

    def _launch_on_free_port(self) -> None:
        for attempt in range(3):
            self.port = free_port()
            try:
                self._launch()
                return
            except ServerStartError:
                self._stop_process()
                # Another process may have taken the port between free_port() and bind.
                if attempt == 2 or _port_is_free(self.port):
                    raise

    def _stop_process(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, self.stop_signals, timeout=10)
            self._proc = None

    def stop(self) -> None:
        """Stop the server, keeping its port (and data) for a later ``start()``. Idempotent."""
        self._stop_process()

    def start(self) -> None:
        """Start the server: on a free port the first time, on the same port afterwards."""
        if self.is_running:
            return
        if self.port:
            self._launch()
            return
        self._launch_on_free_port()

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Simulate an outage: stopped inside the block, back on the same port after."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _cleanup(self) -> None:
        """Remove scratch files after the final stop (nothing by default)."""

    def close(self) -> None:
        """Stop for good; registered with ``atexit``."""
        atexit.unregister(self.close)
        self._stop_process()
        self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


M = TypeVar("M", bound=_ManagedServer)


class PostgresServer(_ManagedServer):
    """A private PostgreSQL cluster listening on 127.0.0.1 with trust authentication."""

    what = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown, SIGQUIT its "immediate" one.
    stop_signals = (signal.SIGINT, signal.SIGQUIT)
    user = "backbeat"
    database = "backbeat_test"

    def __init__(
        self,
        *,
        bindir: Path,
        root: Path,
        account: _Account | None,
        remove_root: bool,
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.bindir = bindir
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "postgres.log"
        self.host = HOST
        self.port = 0
        self.timeout = timeout
        self._account = account
        self._remove_root = remove_root

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``backbeat_test`` database created at start."""
        return self.url_for(self.database)

    def url_for(self, name: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{name}"

    def conninfo_for(self, name: str) -> str:
        """libpq URL (what psycopg and psql accept) for database ``name``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{name}"

    def connect(self, name: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """Open an autocommit psycopg connection; the caller closes it."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=name,
            autocommit=True,
            connect_timeout=5,
        )

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a random ``test_…`` name by default); return its URL."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"unsuitable database name {name!r}")
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting any sessions a test left open."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def list_databases(self) -> list[str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate"
            ).fetchall()
        return sorted(str(row[0]) for row in rows)

    def _run(self, args: list[str]) -> None:
        account = self._account
        result = subprocess.run(
            args,
            cwd=self.root,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
        )
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace")
            raise ServerStartError(f"{args[0]} failed ({result.returncode}):\n{output}")

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                self.user,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            ]
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            # No unix socket: Debian's default directory may not exist or be writable here.
            "unix_socket_directories": "",
            # Durability buys nothing for a throwaway cluster and costs seconds per run.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "100",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        account = self._account
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                args,
                cwd=self.root,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C reaches pytest, which tears us down in order.
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGQUIT),
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
            )

    def _ready(self) -> bool:
        try:
            with self.connect():
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> None:
        """Start the server: initialise and pick a free port the first time, reuse both after."""
        if self.is_running:
            return
        if self.port:
            self._launch()
            return
        self._initdb()
        self._launch_on_free_port()
        self.create_database(self.database)

    def _cleanup(self) -> None:
        if self._remove_root:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(base_dir: Path, *, timeout: float = 30.0) -> PostgresServer:
    """Initialise and start a PostgreSQL cluster under ``base_dir``.

    When running as root and the ``postgres`` user cannot reach ``base_dir`` (pytest's
    ``/tmp/pytest-of-root`` is mode 0700), the cluster lives in a fresh directory under
    the system temp dir instead, removed again on ``close()``.

    Raises:
        FileNotFoundError: PostgreSQL's server binaries are not installed.
        ServerStartError: initdb failed or the server did not become ready.
    """
    bindir = find_postgres_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, postgres) not found")
    account = _Account.for_postgres()
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    if account is None or account.can_traverse(base_dir):
        root = Path(tempfile.mkdtemp(prefix="postgres-", dir=base_dir))
        remove_root = False
    else:
        scratch = Path(tempfile.gettempdir()).resolve()
        if not account.can_traverse(scratch):
            raise ServerStartError(
                f"the {POSTGRES_SYSTEM_USER!r} user can reach neither {base_dir} nor {scratch}"
            )
        root = Path(tempfile.mkdtemp(prefix="backbeat-postgres-", dir=scratch))
        remove_root = True
    if account is not None:
        os.chown(root, account.uid, account.gid)
    root.chmod(0o700)

    return started(
        PostgresServer(
            bindir=bindir, root=root, account=account, remove_root=remove_root, timeout=timeout
        )
    )


# --- Redis -------------------------------------------------------------------------------


class RedisServer(_ManagedServer):
    """A private, non-persistent Redis on 127.0.0.1 that can be stopped and restarted in place."""

    what = "redis-server"

    def __init__(self, *, executable: Path, root: Path, timeout: float = 10.0) -> None:
        super().__init__()
        self.executable = executable
        self.root = root
        self.log_path = root / "redis.log"
        self.host = HOST
        self.port = 0
        self.timeout = timeout

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self, *, timeout: float = 5.0) -> redis.Redis:
        """A client for database 0; the caller closes it (it is a context manager)."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            socket_connect_timeout=min(timeout, 1.0),
            socket_timeout=timeout,
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = [
            str(self.executable),
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.root),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        return self._popen(args, self.root)

    def _ready(self) -> bool:
        try:
            with self.client(timeout=0.5) as conn:
                return bool(conn.ping())
        except redis.exceptions.ConnectionError:
            return False


def start_redis(base_dir: Path, *, timeout: float = 10.0) -> RedisServer:
    """Start ``redis-server`` on a free port with its files under ``base_dir``.

    Raises:
        FileNotFoundError: ``redis-server`` is not installed.
        ServerStartError: the server did not answer PING in time.
    """
    executable = find_redis_server()
    if executable is None:
        raise FileNotFoundError("redis-server not found")
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="redis-", dir=base_dir))
    return started(RedisServer(executable=executable, root=root, timeout=timeout))


def started(server: M) -> M:
    """``server`` started, and closed at exit (or at once if it fails to start)."""
    atexit.register(server.close)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server

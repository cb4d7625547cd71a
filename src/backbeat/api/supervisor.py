"""Worker processes for ``backbeat serve --workers N``, each listening on a socket of its own.

uvicorn's own supervisor hands every worker one shared listening socket, and whichever
worker is idle when a connection arrives accepts it. Clients that keep a few connections
alive (a load balancer's upstream pool, an ad inserter) then often land on one worker,
which does all their work while the others idle (``bench/bench_ingest.py`` counts how
connections opened together spread). So each worker binds its own socket to the port with
``SO_REUSEPORT`` and the kernel spreads new connections over them by a hash of their
addresses, whichever worker is busy.

The supervisor stays small: it starts the workers (``spawn``: nothing of the parent's
state is inherited), forwards SIGTERM and SIGINT as a graceful stop (each worker finishes
its requests and commits its queued events), and replaces a worker that dies, unless
workers keep failing before they serve (a broken configuration would only die again).
"""

from __future__ import annotations

import errno
import multiprocessing
import signal
import socket
import threading
import time
from typing import Any

from backbeat.observability import log

APP = "backbeat.api.asgi:app"
STARTUP_FAILURE = 3  # uvicorn's exit code when a worker cannot start serving
STOP_TIMEOUT_S = 60.0
EARLY_DEATHS = 3  # workers in a row dead before serving: the configuration is broken
BACKLOG = 2048


class PortInUse(RuntimeError):
    """Another server listens on the address already."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def claim_port(host: str, port: int) -> int:
    """The port to serve on (port 0: a free one), refused if something listens on it.

    Reuse-port sockets of the same user would share a port silently with another server,
    so a plain socket tries it first.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUse(f"{host}:{port} is in use by another server") from None
            raise
        return int(probe.getsockname()[1])


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that shares the port with its siblings."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


def _serve_worker(options: dict[str, Any], host: str, port: int, ready: Any) -> None:
    """One worker process: its own socket, then uvicorn's server on it until told to stop."""
    import uvicorn

    config = uvicorn.Config(APP, host=host, port=port, **options)
    server = uvicorn.Server(config)
    sock = reuse_port_socket(host, port)

    def announce() -> None:  # the parent waits for every worker before saying it serves
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            ready.set()

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


class Supervisor:
    """Starts ``workers`` processes serving ``host:port`` and keeps them running."""

    def __init__(self, host: str, port: int, workers: int, options: dict[str, Any]) -> None:
        self.host, self.workers, self.options = host, workers, options
        self.port = claim_port(host, port)
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[Any] = []
        self._stopping = threading.Event()
        self._early_deaths = 0

    def _start(self) -> Any:
        ready = self._context.Event()
        process = self._context.Process(
            target=_serve_worker,
            args=(self.options, self.host, self.port, ready),
            name="backbeat-worker",
        )
        process.start()
        process.ready = ready  # type: ignore[attr-defined]
        return process

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status (0 after a graceful stop)."""
        previous = {
            sig: signal.signal(sig, lambda *_: self._stopping.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self._processes = [self._start() for _ in range(self.workers)]
            log.info("workers started", workers=self.workers, port=self.port, reuse_port=True)
            return self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self) -> int:
        while not self._stopping.wait(0.5):
            for index, process in enumerate(self._processes):
                if process.is_alive():
                    continue
                served = process.ready.is_set()
                self._early_deaths = 0 if served else self._early_deaths + 1
                if process.exitcode == STARTUP_FAILURE or self._early_deaths >= EARLY_DEATHS:
                    log.error("workers fail before serving; stopping", exit_code=process.exitcode)
                    return STARTUP_FAILURE
                log.warning(
                    "worker died; starting another", exit_code=process.exitcode, served=served
                )
                self._processes[index] = self._start()
        return 0

    def _stop_all(self) -> None:
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: uvicorn finishes requests, lifespans close
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self._processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker did not stop in time; killed", pid=process.pid)
                process.kill()
                process.join()

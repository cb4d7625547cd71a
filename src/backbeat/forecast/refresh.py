"""Keeping a forecaster ready off the request path: rebuilt in a background thread.

The holder rebuilds when the book changes (a version callable, the catalog version) and
every ``max_age_seconds`` (new history), never per request; requests read the last one
built. Until the first build finishes, ``current`` raises ``ForecastUnavailable`` (503).
A failed build is retried with exponential backoff (from ``poll_seconds`` up to
``max_age_seconds``), at once if the book changes or someone pokes: a build that keeps
failing must not burn a core in every worker.

With ``rebook``, a book change keeps the history, sample and supply model and recomputes
only what depends on the book (``Forecaster.rebook``). Book changes rebuild at most
``max_busy_share`` of the time: after a build that took ``d`` seconds, the next one for a
book change waits until ``d / max_busy_share`` seconds after the last started. Ad ops
editing line items every few seconds would otherwise keep every worker rebuilding beside
serving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from backbeat.forecast.metrics import (
    FORECAST_AGE,
    FORECAST_REBUILD_SECONDS,
    FORECAST_REBUILDS,
    FORECAST_SAMPLE_ROWS,
)
from backbeat.forecast.service import Forecaster, ForecastUnavailable
from backbeat.observability import log


class ForecastHolder:
    def __init__(
        self,
        *,
        build: Callable[[], Forecaster],
        version: Callable[[], object],
        max_age_seconds: float = 600.0,
        poll_seconds: float = 5.0,
        max_busy_share: float = 0.2,
        rebook: Callable[[Forecaster], Forecaster] | None = None,
    ) -> None:
        """``rebook(current)``, when given, answers a book change without a full build:
        the same history for the new book (``Forecaster.rebook``); the history itself is
        read again every ``max_age_seconds``."""
        self._build = build
        self._rebook = rebook
        self._version = version
        self.max_age_seconds = max_age_seconds
        self.poll_seconds = poll_seconds
        self._current: Forecaster | None = None
        self._built_version: object = None
        self._built_at = 0.0  # the last full build (new history)
        self.max_busy_share = max_busy_share
        self._next_rebook = 0.0  # a book change rebuilds from then on
        self._ready = threading.Event()
        self._poked = threading.Event()
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.failures = 0  # consecutive failed builds
        self._retry_at = 0.0
        self._failed_version: object = None

    @property
    def current(self) -> Forecaster:
        forecaster = self._current
        if forecaster is None:
            detail = "the forecaster is still being built from the decision log; retry shortly"
            if self.last_error:
                detail = f"the forecaster could not be built: {self.last_error}"
            raise ForecastUnavailable(detail)
        return forecaster

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def poke(self) -> None:
        """Rebuild at the next tick (e.g. right after a catalog change)."""
        self._poked.set()

    def rebuild(self) -> Forecaster | None:
        with self._lock:
            started = time.perf_counter()
            version: object = None
            current = self._current
            full = (
                self._rebook is None
                or current is None
                or time.monotonic() - self._built_at >= self.max_age_seconds
            )
            try:
                version = self._version()
                forecaster = self._build() if full else self._rebooked(current)
            except Exception as error:  # keep answering from the last good forecaster
                FORECAST_REBUILDS.labels("error").inc()
                self.last_error = f"{type(error).__name__}: {error}"
                self.failures += 1
                backoff = min(
                    self.poll_seconds * 2.0**self.failures,
                    max(self.max_age_seconds, self.poll_seconds),
                )
                self._retry_at = time.monotonic() + backoff
                self._failed_version = version
                log.exception("forecaster rebuild failed", retry_in_seconds=round(backoff, 3))
                return None
            elapsed = time.perf_counter() - started
            self._current, self._built_version = forecaster, version
            done = time.monotonic()
            if full:
                self._built_at = done
            self._next_rebook = done + elapsed * (1.0 / self.max_busy_share - 1.0)
            self.last_error = None
            self.failures, self._retry_at = 0, 0.0
            FORECAST_REBUILDS.labels("ok").inc()
            FORECAST_REBUILD_SECONDS.observe(elapsed)
            FORECAST_SAMPLE_ROWS.set(forecaster.sample.size)
            FORECAST_AGE.set(forecaster.now)
            self._ready.set()
            return forecaster

    def _rebooked(self, current: Forecaster | None) -> Forecaster:
        """The current forecaster for the new book; a full build if that fails."""
        assert current is not None and self._rebook is not None
        try:
            return self._rebook(current)
        except Exception:
            log.exception("forecaster rebook failed; building in full")
            return self._build()

    def _stale(self) -> bool:
        if self._current is None:
            return True
        if time.monotonic() - self._built_at >= self.max_age_seconds:
            return True
        try:
            changed = self._version() != self._built_version
        except Exception:  # the database is away: keep the last forecaster
            log.warning("forecast version check failed")
            return False
        return changed and time.monotonic() >= self._next_rebook

    def _due(self) -> bool:
        if self._poked.is_set():
            return True
        if time.monotonic() < self._retry_at:  # backing off a failed build
            try:
                return self._version() != self._failed_version
            except Exception:
                return False
        return self._stale()

    def run(self, stop: threading.Event) -> None:
        """The background loop: build now, then whenever stale (backing off failures)."""
        while not stop.is_set():
            if self._due():
                self._poked.clear()
                self.rebuild()
            self._poked.wait(self.poll_seconds)

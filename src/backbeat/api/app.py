"""The FastAPI application: management API, ad serving, tracking and reports in one service."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from backbeat import __version__
from backbeat.api.deps import Services
from backbeat.api.hot_paths import HotPaths, document_hot_paths
from backbeat.api.middleware import Guard, MetricsMiddleware
from backbeat.api.openapi import document_problems
from backbeat.api.problems import install_problem_handlers
from backbeat.api.routes import (
    budget_allocations,
    bulk_booking,
    catalog,
    health,
    keys,
    reports,
    serving,
    tracking,
)
from backbeat.api.routes import forecasts as forecast_routes
from backbeat.api.routes import promotion as promotion_routes
from backbeat.config import Settings, get_settings
from backbeat.db import ensure_migrated, make_engine, make_session_factory, migrate
from backbeat.eventlog import EventLogWriter
from backbeat.measurement.tracking import Tracker
from backbeat.observability import DECISION_LOG_DROPPED, TALLY, configure_logging, log
from backbeat.reporting.service import delivered_so_far
from backbeat.serving.ledger import MemoryLedger
from backbeat.serving.pacing import PacingController
from backbeat.serving.plan import PlanFile
from backbeat.serving.reconcile import Reconciler
from backbeat.serving.redis_ledger import RedisLedger
from backbeat.serving.redis_reconcile import RedisReconciler
from backbeat.serving.server import AdServer
from backbeat.signing import UrlSigner
from backbeat.ui import mount_ui


def load_signing_key(settings: Settings) -> bytes:
    """The configured key, or one made once under ``var/`` and shared by every local worker."""
    if settings.signing_key:
        return settings.signing_key.encode()
    path = settings.var_dir / "signing.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def build_services(settings: Settings, clock: Callable[[], float]) -> Services:
    engine = make_engine(
        settings.resolved_database_url,
        connect_timeout_s=settings.db_connect_timeout_seconds,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        pool_timeout_s=settings.db_pool_timeout_seconds,
    )
    if settings.is_embedded_database:
        migrate(settings.resolved_database_url)
    ensure_migrated(engine)
    sessions = make_session_factory(engine)
    signer = UrlSigner(load_signing_key(settings), settings.public_base_url)
    # Replicas share caps and budgets through Redis; one process alone keeps them in memory.
    ledger = RedisLedger(settings.redis_url) if settings.redis_url else MemoryLedger()
    reconciler: Reconciler | RedisReconciler
    if isinstance(ledger, MemoryLedger):
        # Spend is counted impressions plus live reservations, both recovered from the event
        # log before the first decision: a restart never spends a budget twice.
        reconciler = Reconciler(ledger, Path(settings.resolved_event_log_dir))
    else:
        with sessions() as session:
            line_items, campaigns = delivered_so_far(session)
        ledger.seed(line_items=line_items, campaigns=campaigns)
        # The same rule, kept in Redis: one replica per event log reads it in.
        reconciler = RedisReconciler(ledger, Path(settings.resolved_event_log_dir))
    reconciler.run(clock())
    # No linger: batches form by themselves while the previous fsync runs.
    event_log = EventLogWriter(Path(settings.resolved_event_log_dir), max_delay_s=0.0)
    on_impressions = None
    if isinstance(reconciler, Reconciler):
        # Each worker reads only the other workers' records: it knows its own fills, and
        # its tracker hands it its own impressions once they are durable.
        reconciler.skip_own_segments(event_log.writer_id)
        on_impressions = reconciler.count_acknowledged
    if settings.kafka_bootstrap:
        # Tracking and decision-log records are also published, after the local fsync.
        from backbeat.measurement.kafka import KafkaPublisher, PublishingEventLog

        publisher = KafkaPublisher(settings.kafka_bootstrap, settings.kafka_topic)
        event_log = PublishingEventLog(event_log, publisher)  # type: ignore[assignment]
    ad_server = AdServer(
        session_factory=sessions,
        ledger=ledger,
        signer=signer,
        clock=clock,
        tracking_ttl_seconds=settings.tracking_ttl_seconds,
        decision_log=counting_drops(event_log),
        decision_log_sample=settings.decision_log_sample,
        fill_log=event_log.append_nowait,
        reconcile=reconciler.run,
        seed=settings.decision_seed,
        pacing=PacingController(plan_source=PlanFile(settings.resolved_allocation_plan_path)),
    )
    ad_server.refresh(force=True)
    tracker = Tracker(signer=signer, log=event_log, clock=clock, on_impressions=on_impressions)
    services = Services(settings, engine, sessions, event_log, ad_server, tracker)
    with sessions() as session:
        services.inserters.refresh(session)
    return services


def counting_drops(event_log: EventLogWriter) -> Callable[[bytes], None]:
    """The decision-log appender: nobody waits for these records, so no future per request.

    A record the writer refuses outright (closed, oversized) is counted here; one lost to a
    failed write is counted by the writer with the other unawaited records.
    """

    def append(payload: bytes) -> None:
        try:
            event_log.append_nowait(payload)
        except Exception:
            DECISION_LOG_DROPPED.inc()
            raise

    return append


def watch_inserter_keys(services: Services, stop: threading.Event, interval: float) -> None:
    """Reload the ad inserter keys now and then (keys minted by another worker show up)."""
    while not stop.wait(max(interval, 1.0)):
        try:
            with services.sessions() as session:
                services.inserters.refresh(session)
        except Exception as error:  # keep the keys known so far
            log.warning("inserter keys refresh failed", error_type=type(error).__name__)


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], float] = time.time
) -> FastAPI:
    """Build the app; services start in the lifespan so importing never touches the database."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, clock)
        app.state.services = services
        stop = threading.Event()
        watcher = threading.Thread(
            target=services.ad_server.watch, args=(stop, settings.catalog_poll_seconds), daemon=True
        )
        watcher.start()
        keys_watcher = threading.Thread(
            target=watch_inserter_keys,
            args=(services, stop, settings.catalog_poll_seconds),
            daemon=True,
        )
        keys_watcher.start()
        forecast_routes.start_forecasting(app, services, clock, stop)
        log.info(
            "backbeat started", database=services.engine.url.render_as_string(hide_password=True)
        )
        try:
            yield
        finally:
            stop.set()
            services.ad_server.poke()
            watcher.join(timeout=5)
            if isinstance(services.ad_server.ledger, RedisLedger):
                services.ad_server.ledger.close()  # flush delivery, give unused leases back
            services.ad_server.close()
            services.event_log.close()
            TALLY.flush()  # the last quarter second of hot-path counts
            services.engine.dispose()

    configure_logging(settings.log_level, json=settings.log_json)
    app = FastAPI(
        title="Backbeat",
        version=__version__,
        summary="Open-source advertising platform for audio: book, serve VAST 4.2, track, report.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    for router in (
        bulk_booking.router,
        *catalog.ROUTERS,
        keys.router,
        serving.router,
        tracking.router,
        reports.router,
        forecast_routes.router,
        budget_allocations.router,
        health.router,
        *promotion_routes.ROUTERS,
    ):
        app.include_router(router)
    mount_ui(app, secret=lambda: load_signing_key(settings))
    app.add_middleware(MetricsMiddleware)
    document_hot_paths(app)
    document_problems(app)  # after the hot paths, so they are completed too
    return Guard(HotPaths(app), settings)

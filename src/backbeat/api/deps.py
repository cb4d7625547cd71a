"""FastAPI dependencies: the per-process services, a DB session, and the calling principal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from backbeat.catalog.auth import Principal, TrustedInserters, authenticate, bearer_of
from backbeat.config import Settings
from backbeat.eventlog import EventLogWriter
from backbeat.measurement.tracking import Tracker
from backbeat.serving.server import AdServer


@dataclass
class Services:
    """Everything one server process holds for its lifetime."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    event_log: EventLogWriter
    ad_server: AdServer
    tracker: Tracker
    inserters: TrustedInserters = field(default_factory=TrustedInserters)


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    session = services.sessions()
    try:
        yield session
    finally:
        # On a dead database these fail too; the request's own error is the one to answer.
        with contextlib.suppress(Exception):
            session.rollback()
        with contextlib.suppress(Exception):
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_key(request: Request) -> str | None:
    return bearer_of(request.headers.get("authorization"))


def get_principal(request: Request, services: ServicesDep, session: SessionDep) -> Principal:
    """The management caller: the admin or an advertiser (ad inserter keys are refused)."""
    principal = authenticate(
        session=session, key=bearer_key(request), admin_key=services.settings.admin_key
    )
    principal.require_management()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

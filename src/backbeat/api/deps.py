"""FastAPI dependencies: the per-process services, a DB session, and the calling principal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from backbeat.catalog.auth import Principal, authenticate
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


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    session = services.sessions()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def get_principal(request: Request, services: ServicesDep, session: SessionDep) -> Principal:
    return authenticate(
        session=session, key=bearer_key(request), admin_key=services.settings.admin_key
    )


PrincipalDep = Annotated[Principal, Depends(get_principal)]

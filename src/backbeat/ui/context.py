"""Who is looking at a dashboard page: the signed-in session, resolved on every request.

A session is honoured only while what it was made from still holds: the advertiser key it
was made with is not revoked, or the admin key is still the one it was made with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backbeat.api.deps import Services
from backbeat.catalog.auth import ADMIN, ROLE_ADVERTISER, Principal
from backbeat.catalog.models import ApiKey, UiSessionRevocation
from backbeat.ui.session import COOKIE, SessionCodec, UiSession
from backbeat.ui.views import advertiser_names, utc_now


class LoginRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in page."""


@dataclass
class Viewer:
    """The request's services, database session and the signed-in principal."""

    request: Request
    services: Services
    db: Session
    ui: UiSession
    real: Principal  # who signed in
    principal: Principal  # whose data is shown (the admin may narrow to one advertiser)
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.real.is_admin

    @property
    def now(self) -> datetime:
        return utc_now(self.services.ad_server.clock())


def codec(request: Request) -> SessionCodec:
    state = request.app.state
    found: SessionCodec | None = getattr(state, "ui_codec", None)
    if found is None:
        secret: Callable[[], bytes] = state.ui_secret
        found = state.ui_codec = SessionCodec(secret())
    return found


def current_session(request: Request, services: Services, db: Session) -> UiSession:
    ui = codec(request).decode(request.cookies.get(COOKIE), time.time())
    if ui is None:
        raise LoginRequired
    if db.get(UiSessionRevocation, ui.sid) is not None:  # signed out: a copied cookie too
        raise LoginRequired
    admin_key = services.settings.admin_key
    if ui.is_admin:
        if not admin_key or ui.admin_tag != codec(request).admin_tag(admin_key):
            raise LoginRequired
        return ui
    live = db.execute(
        select(ApiKey.id).where(
            ApiKey.id == ui.key_id,
            ApiKey.advertiser_id == ui.advertiser_id,
            ApiKey.role == ROLE_ADVERTISER,
            ApiKey.revoked_at.is_(None),
        )
    ).first()
    if live is None:
        raise LoginRequired
    return ui


def viewer(request: Request, services: Services, db: Session) -> Viewer:
    ui = current_session(request, services, db)
    real = ADMIN if ui.is_admin else Principal(advertiser_id=ui.advertiser_id, role=ROLE_ADVERTISER)
    principal = (
        Principal(advertiser_id=ui.viewing, role=ROLE_ADVERTISER)
        if ui.is_admin and ui.viewing
        else real
    )
    return Viewer(request, services, db, ui, real, principal, codec(request).csrf_token(ui))


def services_of(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def context(view: Viewer, **values: Any) -> dict[str, Any]:
    """Template values every signed-in page needs (the admin's advertiser switcher too)."""
    names = advertiser_names(view.db, view.real)
    header = names if view.is_admin else {}
    own = None if view.is_admin else names.get(view.real.advertiser_id or 0)
    return {
        "viewer": view,
        "csrf": view.csrf,
        "header_advertisers": header,
        "header_name": own,
        **values,
    }


def revoke_session(db: Session, ui: UiSession, now: float) -> None:
    """End ``ui`` on every worker and replica (sign-out), and forget expired revocations."""
    db.execute(delete(UiSessionRevocation).where(UiSessionRevocation.expires_at < int(now)))
    db.merge(UiSessionRevocation(sid=ui.sid, expires_at=ui.expires_at))
    db.commit()

"""The insights dashboard under ``/ui/``: server-rendered pages over the API's services."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def mount_ui(app: FastAPI, secret: Callable[[], bytes]) -> None:
    """Add the dashboard's routes, static files and security headers to the app.

    ``secret`` returns the server's signing key (read once, on the first page), from which
    the session key is derived, so every worker accepts every worker's sessions.
    """
    from backbeat.ui.routes import router
    from backbeat.ui.security import SecurityHeadersMiddleware

    app.state.ui_secret = secret
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_middleware(SecurityHeadersMiddleware)

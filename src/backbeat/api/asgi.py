"""ASGI entry point for uvicorn workers: ``backbeat.api.asgi:app``."""

from __future__ import annotations

from backbeat.api.app import create_app

app = create_app()

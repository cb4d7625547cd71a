"""Helpers of the dashboard tests: settings, and signing in through the form like a browser."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from backbeat.config import Settings
from backbeat.db import migrate
from factories import ADMIN_KEY

SIGNING_KEY = "test-signing-key-0123456789abcdef"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class FakeClock:
    def __init__(self, now: float = 1_790_000_000.0) -> None:  # 2026-09-21 14:13 UTC
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_settings(database_url: str, var_dir: Path, **overrides: object) -> Settings:
    migrate(database_url)
    values: dict[str, object] = {
        "var_dir": var_dir,
        "database_url": database_url,
        "admin_key": ADMIN_KEY,
        "signing_key": SIGNING_KEY,
        "public_base_url": "http://testserver",
        "log_json": False,
        "log_level": "WARNING",
        "catalog_poll_seconds": 0.2,
        "decision_log_sample": 0.0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, key: str) -> None:
    """Sign in through the form, as a browser does; the client keeps the session cookie."""
    page = client.get("/ui/login")
    assert page.status_code == 200
    response = client.post(
        "/ui/login", data={"api_key": key, "csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/"


def page_csrf(client: TestClient, path: str = "/ui/") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return csrf_of(response.text)

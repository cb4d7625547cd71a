"""Helpers of the dashboard tests: settings, and signing in through the form like a browser."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from support.app import SIGNING_KEY, FakeClock, make_settings  # noqa: F401 - re-exported

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


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

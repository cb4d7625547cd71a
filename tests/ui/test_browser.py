"""The dashboard in a real browser: Debian's chromium driven by Playwright against the real app.

The app runs under uvicorn on a loopback port with a fresh SQLite database; the book and its
delivery are made through the API and real tracking pixels, so the chart must show the
numbers ``GET /v1/reports/delivery`` gives. Screenshots are written to the folder printed at
the end of the run (``BACKBEAT_TEST_ARTIFACTS``, default ``var/test-artifacts/ui``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from ui_support import make_settings

from backbeat.api.app import create_app
from factories import ADMIN, ADMIN_KEY

CHROMIUM = Path("/usr/bin/chromium")
# Read at import: the suite's autouse fixture clears BACKBEAT_* variables before each test.
REQUIRED = os.environ.get("BACKBEAT_REQUIRE_BROWSER", "").strip().lower() in {"1", "true", "yes"}
ARTIFACTS = (
    Path(
        os.environ.get("BACKBEAT_TEST_ARTIFACTS", Path(__file__).parents[2] / "var/test-artifacts")
    )
    / "ui"
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadServer:
    """The real app under uvicorn in a thread of this process."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("app did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A served app with two advertisers; A's campaign has counted delivery this hour."""
    if not CHROMIUM.exists():
        if REQUIRED:
            pytest.fail("chromium not found and BACKBEAT_REQUIRE_BROWSER=1", pytrace=False)
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("ui-browser")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(f"sqlite:///{tmp / 'backbeat.db'}", tmp / "var", public_base_url=base)
    with (
        ThreadServer(create_app(settings), port),
        httpx.Client(base_url=base, headers=ADMIN, timeout=60) as api,
    ):
        yield {"base": base, "api": api, **_book_and_deliver(api)}


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _book_and_deliver(api: httpx.Client) -> dict[str, Any]:
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    flight = {"start_at": start.isoformat(), "end_at": (start + timedelta(days=2)).isoformat()}
    a = _created(api.post("/v1/advertisers", json={"name": "Acme Audio"}))
    b = _created(api.post("/v1/advertisers", json={"name": "Bluebird Coffee"}))
    campaign_a = _created(api.post("/v1/campaigns", json={
        "advertiser_id": a["id"], "name": "Acme launch", "total_budget": "500", **flight}))  # fmt: skip
    campaign_b = _created(api.post("/v1/campaigns", json={
        "advertiser_id": b["id"], "name": "Bluebird mornings", "total_budget": "300", **flight}))  # fmt: skip
    item = _created(api.post("/v1/line-items", json={
        "campaign_id": campaign_a["id"], "name": "Acme drive time", "tier": "guaranteed",
        "cpm": "8.00", "goal_impressions": 400, "pacing": "asap"}))  # fmt: skip
    _created(api.post("/v1/creatives", json={
        "line_item_id": item["id"], "name": "Acme spot", "duration_ms": 30000,
        "media_url": "https://cdn.example.com/acme.mp3", "mime_type": "audio/mpeg"}))  # fmt: skip
    slot = _created(api.post("/v1/slots", json={
        "name": "Music break", "surface": "music_free", "position": "interstitial",
        "reserve_cpm": "1.00", "currency": "USD"}))  # fmt: skip
    deadline = time.monotonic() + 15
    while api.get("/healthz").json().get("servable_line_items", 0) < 1:
        assert time.monotonic() < deadline, "the catalog did not load"
        time.sleep(0.1)
    for n in range(9):
        decision = api.post("/v1/decisions", json={"slot_id": slot["id"], "listener": f"l{n}"})
        tracking = decision.json()["tracking"]
        events = ("impression", "start", "firstQuartile") + (("complete",) if n % 3 else ())
        for event in events:
            assert httpx.get(tracking[event], timeout=60).status_code == 204
    assert api.post("/v1/reports/delivery/run").status_code == 200
    key_b = _created(api.post(f"/v1/advertisers/{b['id']}/keys"))["key"]
    return {"campaign_a": campaign_a, "campaign_b": campaign_b, "item": item, "key_b": key_b,
            "start": start}  # fmt: skip


@pytest.fixture(scope="module")
def browser(live: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, live: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 800}, base_url=live["base"])
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.on(
        "response",
        lambda r: r.status == 404 and page.console_errors.append(f"404 {r.url}"),
    )
    yield page
    context.close()


SHOTS: list[Path] = []  # listed at the end of the run by conftest's terminal summary


def shot(page: Any, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SHOTS.append(path)


def sign_in(page: Any, key: str) -> None:
    page.goto("/ui/")
    assert page.url.endswith("/ui/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")


def test_sign_in_and_see_the_delivery_chart_with_the_reports_numbers(page, live):
    sign_in(page, ADMIN_KEY)
    assert page.locator(f"[data-campaign-id='{live['campaign_a']['id']}']").is_visible()
    shot(page, "overview")
    page.goto(f"/ui/campaigns/{live['campaign_a']['id']}?granularity=hour")
    page.wait_for_selector("#delivery-chart[data-rendered]")
    drawn = page.evaluate(
        """() => {
            const chart = Chart.getChart(document.getElementById('delivery-chart'));
            const out = {labels: chart.data.labels};
            for (const set of chart.data.datasets) { out[set.label] = set.data; }
            return out;
        }"""
    )
    start: datetime = live["start"]
    report = (
        live["api"]
        .get(
            "/v1/reports/delivery",
            params={
                "campaign_id": live["campaign_a"]["id"],
                "from": start.isoformat(),
                "to": (start + timedelta(days=1)).isoformat(),
                "granularity": "hour",
            },  # fmt: skip
        )
        .json()["rows"]
    )
    assert sum(row["impressions"] for row in report) == 9
    by_label = {
        datetime.fromisoformat(row["period_start"]).strftime("%m-%d %H:00"): row["impressions"]
        for row in report
    }
    expected = [by_label.get(label, 0) for label in drawn["labels"]]
    assert drawn["Delivered per period"] == expected
    assert drawn["Delivered (cumulative)"][-1] == 9
    assert len(drawn["Planned (cumulative)"]) == len(drawn["labels"])
    # the numbers are one click away
    table = page.locator("#delivery-chart-table")
    assert table.is_hidden()
    page.click("[data-toggle-table='delivery-chart-table']")
    assert table.is_visible()
    cells = table.locator("td[data-col='impressions']").all_inner_texts()
    assert [int(c) for c in cells] == expected
    page.wait_for_selector("#funnel-chart[data-rendered]")
    shot(page, "campaign")
    assert page.console_errors == []  # type: ignore[attr-defined]  # no CSP violation, no JS error


def test_create_a_line_item_with_a_validation_error_next_to_the_field(page, live):
    sign_in(page, ADMIN_KEY)
    campaign_id = live["campaign_a"]["id"]
    page.goto(f"/ui/campaigns/{campaign_id}/line-items/new")
    page.fill("#f-name", "Acme podcasts")
    page.select_option("#f-tier", "non_guaranteed")
    page.fill("#f-cpm", "-3")
    page.fill("#f-targeting", '{"surfaces": ["podcast"], "countries": ["US", "GB"]}')
    # the forecast box answers as the targeting changes (figures, or why there are none)
    page.wait_for_function(
        "() => document.getElementById('f-targeting').dataset.forecasted"
        " || !document.getElementById('forecast-error').hidden"
    )
    page.click("#line-item-form button[type=submit]")
    error = page.locator("#error-cpm")
    error.wait_for()
    assert "must not be negative" in error.inner_text()
    assert error.get_attribute("data-reason") == "negative-amount"
    field = page.locator(".field", has=page.locator("#f-cpm"))
    assert field.locator("#error-cpm").count() == 1  # in the cpm field, not elsewhere
    assert page.input_value("#f-name") == "Acme podcasts"  # what was typed is kept
    shot(page, "line-item-error")

    page.fill("#f-cpm", "6.25")
    page.click("#line-item-form button[type=submit]")
    page.wait_for_url("**/ui/line-items/*")
    item_id = int(page.url.rsplit("/", 1)[1])
    made = live["api"].get(f"/v1/line-items/{item_id}").json()
    assert (made["name"], made["cpm"], made["campaign_id"]) == (
        "Acme podcasts",
        "6.25",
        campaign_id,
    )
    assert made["targeting"] == {"surfaces": ["podcast"], "countries": ["GB", "US"]}
    shot(page, "line-item")
    # the refused form answers 422 (and its live forecast too): anything else is a fault
    faults = [e for e in page.console_errors if "status of 422" not in e]  # type: ignore[attr-defined]
    assert faults == []


def test_an_advertiser_is_blocked_from_another_advertisers_campaign(page, live):
    sign_in(page, live["key_b"])
    assert "Bluebird mornings" in page.content() and "Acme launch" not in page.content()
    response = page.goto(f"/ui/campaigns/{live['campaign_a']['id']}")
    assert response.status == 404
    assert "Not found" in page.content() and "Acme" not in page.content()
    shot(page, "other-advertiser-404")
    page.goto("/ui/")
    page.click("#sign-out")
    page.wait_for_url("**/ui/login")
    assert page.goto("/ui/").url.endswith("/ui/login")

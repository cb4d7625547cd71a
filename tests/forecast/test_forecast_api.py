"""POST /v1/forecasts and /v1/forecasts/bulk: answers, validation like line items, bulk
error reports, advertiser isolation, and the forecaster kept built in the background."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from forecast_fixtures import NOW
from test_service import write_log

from backbeat.api.app import create_app
from factories import (
    ADMIN,
    advertiser_key,
    create_advertiser,
    create_campaign,
    create_creative,
    create_line_item,
)
from support.app import make_settings

START, END = "2026-09-22T00:00:00Z", "2026-09-29T00:00:00Z"
DRAFT = {
    "start_at": START,
    "end_at": END,
    "tier": "guaranteed",
    "cpm": "12.50",
    "targeting": {"countries": ["US"]},
}


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(database_url, tmp_path / "var")
    # Two days of history: the quick hour-of-day model (MSTL is tested in test_supply).
    write_log(settings.resolved_event_log_dir, 2000, days=2)
    with TestClient(create_app(settings, clock=lambda: NOW)) as test_client:
        assert test_client.app.state.forecasts.wait_ready(60), "forecaster never built"
        yield test_client


def problem(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["reason"] == reason, body
    return body


def test_a_forecast_answers_every_figure_with_an_interval(client):
    response = client.post(
        "/v1/forecasts", json={**DRAFT, "group_by": ["countries", "day"]}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    body = response.json()
    for figure in (
        "matched",
        "possible",
        "available",
        "reach",
        "average_frequency",
        "clicks",
        "conversions",
    ):
        value = body[figure]
        assert value["low"] <= value["value"] <= value["high"]
    assert body["matched"]["value"] > 0
    assert [row["key"] for row in body["breakdown"]["countries"]] == ["US"]
    assert len(body["breakdown"]["day"]) == 7
    assert body["contending"] == []
    metrics = client.get("/metrics").text
    assert "backbeat_forecast_seconds_count" in metrics
    assert "backbeat_forecast_sample_rows" in metrics


BAD_DRAFTS = [
    ({"targeting": {"countries": ["XX"]}}, "invalid-targeting-value"),
    ({"targeting": {"planets": ["mars"]}}, "unknown-targeting-key"),
    ({"end_at": "2026-09-21T00:00:00Z"}, "end-before-start"),
    ({"cpm": "-1"}, "negative-amount"),
    ({"colour": "red"}, "extra-forbidden"),
    ({"group_by": ["planets"]}, "literal-error"),
    ({"frequency_caps": [{"count": 0, "period": "day"}]}, "greater-than-equal"),
    ({"start_at": "2026-09-01T00:00:00Z", "end_at": "2026-09-10T00:00:00Z"}, "flight-in-past"),
    ({"end_at": "2028-01-01T00:00:00Z"}, "beyond-forecast-horizon"),
]


def test_bad_drafts_fail_like_line_items_with_a_reason(client):
    for change, reason in BAD_DRAFTS:
        problem(client.post("/v1/forecasts", json={**DRAFT, **change}, headers=ADMIN), 422, reason)
    # The same targeting errors as a line item's.
    campaign = create_campaign(client, create_advertiser(client)["id"])
    line_item = client.post(
        "/v1/line-items",
        json={
            "campaign_id": campaign["id"],
            "name": "x",
            "tier": "guaranteed",
            "cpm": "1",
            "targeting": {"countries": ["XX"]},
        },
        headers=ADMIN,
    ).json()
    forecast = client.post(
        "/v1/forecasts", json={**DRAFT, "targeting": {"countries": ["XX"]}}, headers=ADMIN
    ).json()
    assert (forecast["reason"], forecast["detail"]) == (line_item["reason"], line_item["detail"])


def test_forecasts_need_a_key_and_any_key_may_forecast(client):
    problem(client.post("/v1/forecasts", json=DRAFT), 401, "missing-api-key")
    key = advertiser_key(client, create_advertiser(client)["id"])
    assert client.post("/v1/forecasts", json=DRAFT, headers=key).status_code == 200


def test_bulk_reports_every_bad_draft_or_skips_them(client):
    drafts = [
        {**DRAFT, "cpm": "-1"},
        DRAFT,
        {**DRAFT, "targeting": {"countries": ["XX"]}},
        {**DRAFT, "end_at": "2030-01-01T00:00:00Z"},
    ]
    body = problem(
        client.post("/v1/forecasts/bulk", json={"drafts": drafts}, headers=ADMIN),
        422,
        "invalid-drafts",
    )
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (0, "negative-amount"),
        (2, "invalid-targeting-value"),
    ]
    body = problem(
        client.post("/v1/forecasts/bulk", json={"drafts": drafts[1:2] + drafts[3:]}, headers=ADMIN),
        422,
        "invalid-drafts",
    )
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [(1, "beyond-forecast-horizon")]
    response = client.post(
        "/v1/forecasts/bulk", json={"drafts": drafts, "skip_invalid": True}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [item is None for item in answer["forecasts"]] == [True, False, True, True]
    assert [e["index"] for e in answer["errors"]] == [0, 2, 3]
    problem(
        client.post("/v1/forecasts/bulk", json={"drafts": [DRAFT] * 1001}, headers=ADMIN),
        422,
        "too-long",
    )
    problem(client.post("/v1/forecasts/bulk", json={"drafts": []}, headers=ADMIN), 422, "too-short")


def test_a_booked_item_contends_and_advertisers_see_only_totals(client):
    mine = create_advertiser(client)
    other = create_advertiser(client)
    campaign = create_campaign(
        client, other["id"], start_at="2026-09-01T00:00:00Z", end_at="2026-10-05T00:00:00Z"
    )
    item = create_line_item(
        client,
        campaign["id"],
        tier="guaranteed",
        goal_impressions=3000,
        targeting={"countries": ["US"]},
        pacing="even",
    )
    create_creative(client, item["id"])
    client.app.state.services.ad_server.refresh()
    client.app.state.forecasts.rebuild()
    admin = client.post("/v1/forecasts", json=DRAFT, headers=ADMIN).json()
    assert [entry["line_item_id"] for entry in admin["contending"]] == [item["id"]]
    assert admin["available"]["value"] < admin["matched"]["value"]
    key = advertiser_key(client, mine["id"])
    response = client.post("/v1/forecasts", json=DRAFT, headers=key)
    text = response.text
    assert response.json()["contending"] == [
        {"line_item_id": None, "impressions": admin["contending"][0]["impressions"]}
    ]
    assert all(entry["line_item_id"] is None for entry in response.json()["contending"])
    assert other["name"] not in text and item["name"] not in text


def test_the_forecaster_rebuilds_by_itself_when_the_book_changes(client):
    holder = client.app.state.forecasts
    first = holder.current
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    item = create_line_item(client, campaign["id"], tier="sponsorship", goal_impressions=1000)
    create_creative(client, item["id"])
    deadline = time.monotonic() + 30
    while holder.current is first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert holder.current is not first

"""POST /v1/budget-allocations: the split against the drafts' own forecasts, and validation."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from forecast_fixtures import NOW
from test_service import write_log

from backbeat.api.app import create_app
from factories import ADMIN
from support.app import make_settings

START, END = "2026-09-22T00:00:00Z", "2026-09-29T00:00:00Z"


def draft(countries: list[str], cpm: str, **extra) -> dict:
    return {"start_at": START, "end_at": END, "tier": "guaranteed", "cpm": cpm,
            "targeting": {"countries": countries}, **extra}  # fmt: skip


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    settings = make_settings(url, tmp_path / "var")
    write_log(settings.resolved_event_log_dir, 2000, days=2)
    with TestClient(create_app(settings, clock=lambda: NOW)) as test_client:
        assert test_client.app.state.forecasts.wait_ready(60), "forecaster never built"
        yield test_client


def available(client: TestClient, drafts: list[dict]) -> list[float]:
    budgetless = [
        {k: v for k, v in d.items() if k not in ("min_budget", "max_budget", "name")}
        for d in drafts
    ]
    response = client.post("/v1/forecasts/bulk", json={"drafts": budgetless}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return [answer["available"]["value"] for answer in response.json()["forecasts"]]


def test_impressions_go_to_the_cheapest_drafts_up_to_what_they_can_deliver(client):
    drafts = [draft(["US"], "20.00"), draft(["GB"], "5.00"), draft(["DE"], "10.00", max_budget="1")]
    caps = [a * cpm / 1000 for a, cpm in zip(available(client, drafts), (20, 5, 10), strict=True)]
    assert all(cap > 1 for cap in caps), caps
    total = Decimal(str(round(caps[1] + 1 + caps[0] / 2, 2)))
    response = client.post(
        "/v1/budget-allocations",
        json={"total_budget": str(total), "goal": "impressions", "drafts": drafts},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    budgets = [Decimal(a["budget"]) for a in body["allocations"]]
    # By hand: GB (cheapest) takes all it can deliver, DE its maximum of 1, US the rest.
    assert float(budgets[1]) == pytest.approx(caps[1], abs=1e-5)
    assert budgets[2] == Decimal(1)
    assert budgets[0] == total - budgets[1] - budgets[2]
    assert Decimal(body["allocated_budget"]) == total and Decimal(body["unallocated_budget"]) == 0
    expected = sum(float(b) * 1000 / cpm for b, cpm in zip(budgets, (20, 5, 10), strict=True))
    assert body["goal_value"] == pytest.approx(expected, rel=1e-6)


def test_reach_prefers_fresh_listeners_and_never_exceeds_the_budget(client):
    drafts = [draft(["US"], "10.00"), draft(["US", "GB"], "10.00"), draft(["SE"], "8.00")]
    response = client.post(
        "/v1/budget-allocations",
        json={"total_budget": "50", "goal": "reach", "drafts": drafts},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    total = sum(Decimal(a["budget"]) for a in body["allocations"])
    assert total + Decimal(body["unallocated_budget"]) == Decimal(50)
    for allocation in body["allocations"]:
        assert Decimal(allocation["budget"]) <= Decimal(allocation["max_deliverable_budget"])
        assert allocation["reach"] <= allocation["impressions"] + 1e-6


def test_every_bad_draft_is_reported_with_its_index(client):
    drafts = [
        draft(["US"], "10.00"),
        draft(["XX"], "10.00"),
        draft(["US"], "0"),
        draft(["US"], "10.00", min_budget="5", max_budget="2"),
        {**draft(["US"], "10.00"), "colour": "red"},
    ]
    response = client.post(
        "/v1/budget-allocations", json={"total_budget": "100", "drafts": drafts}, headers=ADMIN
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    reasons = {error["index"]: error["reason"] for error in response.json()["errors"]}
    assert reasons == {
        1: "invalid-targeting-value",
        2: "zero-cpm",
        3: "min-above-max",
        4: "extra-forbidden",
    }
    over = [draft(["US"], "10.00", min_budget="0.01"), draft(["GB"], "10.00", min_budget="0.02")]
    response = client.post(
        "/v1/budget-allocations", json={"total_budget": "0.02", "drafts": over}, headers=ADMIN
    )
    assert response.status_code == 422 and response.json()["reason"] == "budget-below-minimums"
    huge = [draft(["US"], "10.00", min_budget="999999999")]
    response = client.post(
        "/v1/budget-allocations", json={"total_budget": "1000000000", "drafts": huge}, headers=ADMIN
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["reason"] == "min-above-deliverable"
    bad_goal = {"total_budget": "1", "goal": "likes", "drafts": [draft(["US"], "1")]}
    assert client.post("/v1/budget-allocations", json=bad_goal, headers=ADMIN).status_code == 422

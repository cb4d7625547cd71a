"""Counting into hourly rows (idempotent, exact money) and reading them by hour or day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from test_tracking import fire, run_report
from test_validation import assert_problem
from test_vast import decide

from backbeat.api.app import create_app
from backbeat.reporting.service import COUNT_COLUMNS as COUNTS
from factories import ADMIN, advertiser_key, book_servable


def report(
    client, campaign_id: int, start: datetime | str, end: datetime | str, granularity: str = "hour"
) -> dict:
    params = {
        "campaign_id": campaign_id,
        "from": start.isoformat() if isinstance(start, datetime) else start,
        "to": end.isoformat() if isinstance(end, datetime) else end,
        "granularity": granularity,
    }
    response = client.get("/v1/reports/delivery", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def summary(rows: list[dict]) -> list[tuple]:
    return [(row["period_start"], *(row[c] for c in COUNTS), row["spend"]) for row in rows]


def test_counting_is_hourly_exact_and_idempotent(client, clock):
    # a guaranteed line item pays its own CPM (non-guaranteed ones pay the auction's price)
    booked = book_servable(client, line_item={"tier": "guaranteed", "cpm": "2.50"})
    slot_id, campaign_id = booked["slot"]["id"], booked["campaign"]["id"]
    clock.advance(3600 - clock.now % 3600)
    hour = datetime.fromtimestamp(clock.now, UTC)
    assert hour.hour < 22  # both hours below fall on one UTC day
    a, b, c = (decide(client, slot_id, listener)["tracking"] for listener in "abc")

    fired = 0
    for tracking in (a, b):
        for event in (
            "impression",
            "impression",
            "impression",
            "start",
            "firstQuartile",
            "midpoint",
            "thirdQuartile",
        ):
            assert fire(client, tracking[event]).status_code == 204
            fired += 1
    for event in ("complete", "click", "click"):
        assert fire(client, a[event]).status_code == 204
        fired += 1
    clock.advance(3600)
    for url in (
        c["impression"],
        c["start"],
        a["impression"],
        a["complete"],
    ):  # a's are late repeats
        assert fire(client, url).status_code == 204
        fired += 1

    first = run_report(client)
    assert first == {
        "events_read": fired,
        "rows_written": 2,
        "duplicates": 7,
        "rejected": 0,
        "torn_tails": 0,
        "promotion": {"events_read": 0, "campaigns": 0, "daily_rows": 0, "duplicates": 0,
                      "unattributed_conversions": 0},
    }  # fmt: skip
    hourly = report(client, campaign_id, hour, hour + timedelta(days=1))
    expected_hourly = [
        (hour.isoformat().replace("+00:00", "Z"), 2, 2, 2, 2, 2, 1, 1, "0.005"),
        (
            (hour + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
            1,
            1,
            0,
            0,
            0,
            0,
            0,
            "0.0025",
        ),
    ]
    assert summary(hourly["rows"]) == expected_hourly
    assert hourly["rows"][0]["line_item_id"] == booked["line_item"]["id"]
    assert hourly["rows"][0]["line_item_name"] == booked["line_item"]["name"]
    assert (hourly["rows"][0]["completion_rate"], hourly["rows"][0]["click_through_rate"]) == (
        0.5,
        0.5,
    )
    assert hourly["rows"][1]["completion_rate"] == 0.0
    assert {row["currency"] for row in hourly["rows"]} == {"USD"}

    # recounting the same log gives the very same rows, however often it runs
    assert run_report(client) == first
    assert run_report(client) == first
    assert report(client, campaign_id, hour, hour + timedelta(days=1)) == hourly

    # a day sums its hours; CPM 2.50 x 3 impressions / 1000 = 0.0075 exactly
    daily = report(client, campaign_id, "2026-01-01", "2027-01-01", "day")
    midnight = hour.replace(hour=0).isoformat().replace("+00:00", "Z")
    assert summary(daily["rows"]) == [(midnight, 3, 3, 2, 2, 2, 1, 1, "0.0075")]
    assert daily["granularity"] == "day"
    # `from` is inclusive and `to` exclusive, to the hour
    later = report(client, campaign_id, hour + timedelta(hours=1), hour + timedelta(hours=2))
    assert summary(later["rows"]) == expected_hourly[1:]
    earlier = report(client, campaign_id, hour - timedelta(hours=5), hour + timedelta(hours=1))
    assert summary(earlier["rows"]) == expected_hourly[:1]
    assert report(client, campaign_id, "2025-01-01", "2026-01-01")["rows"] == []

    # more events arrive: a recount includes them, and still nothing doubles
    assert fire(client, b["complete"]).status_code == 204
    assert run_report(client)["events_read"] == fired + 1
    assert summary(report(client, campaign_id, "2026-01-01", "2027-01-01", "day")["rows"]) == [
        (midnight, 3, 3, 2, 2, 2, 2, 1, "0.0075")
    ]


def test_a_restarted_server_does_not_spend_a_budget_twice(settings, clock):
    with TestClient(create_app(settings, clock=clock)) as client:
        booked = book_servable(
            client, line_item={"tier": "guaranteed", "cpm": "10.00", "budget": "0.025"}
        )
        slot_id = booked["slot"]["id"]
        for listener in ("a", "b"):
            assert (
                fire(
                    client, decide(client, slot_id, listener)["tracking"]["impression"]
                ).status_code
                == 204
            )
        assert decide(client, slot_id, "c")["filled"] is False
        run_report(client)
    with TestClient(create_app(settings, clock=clock)) as restarted:
        decision = decide(restarted, slot_id, "d")
        assert decision["filled"] is False and decision["no_fill_reason"] == "budget-exhausted"
        restarted.patch(
            f"/v1/line-items/{booked['line_item']['id']}", json={"budget": "0.03"}, headers=ADMIN
        )
        restarted.app.state.services.ad_server.refresh()
        assert [decide(restarted, slot_id, f"e{n}")["filled"] for n in range(2)] == [True, False]


def test_report_parameters_and_access(client):
    booked = book_servable(client)
    campaign_id = booked["campaign"]["id"]
    url = "/v1/reports/delivery"
    base = {"campaign_id": campaign_id, "from": "2026-09-01", "to": "2026-10-01"}
    for changes, status, reason in [
        ({"to": "2026-09-01"}, 422, "end-before-start"),
        ({"to": "2026-08-31"}, 422, "end-before-start"),
        (
            {"from": "2026-09-01T10:00:00+02:00", "to": "2026-09-01T08:00:00Z"},
            422,
            "end-before-start",
        ),
        ({"from": "2026-13-01"}, 422, "invalid-datetime"),
        ({"to": "yesterday"}, 422, "invalid-datetime"),
        ({"from": "2026-09-31"}, 422, "invalid-datetime"),
        ({"from": None}, 422, "missing"),
        ({"campaign_id": None}, 422, "missing"),
        ({"campaign_id": 0}, 422, "greater-than-equal"),
        ({"granularity": "week"}, 422, "enum"),
        ({"campaign_id": 999999}, 404, "campaign-not-found"),
    ]:
        params = {key: value for key, value in {**base, **changes}.items() if value is not None}
        assert_problem(client.get(url, params=params, headers=ADMIN), status, reason, changes)
    assert_problem(client.get(url, params=base), 401, "missing-api-key")
    ok = client.get(url, params={**base, "from": "2026-09-01T02:00:00+02:00"}, headers=ADMIN)
    assert ok.status_code == 200 and ok.json()["start"].startswith("2026-09-01T00:00:00")
    key = advertiser_key(client, booked["advertiser"]["id"])
    assert client.get(url, params=base, headers=key).json()["rows"] == []
    assert_problem(client.post(f"{url}/run", headers=key), 403, "admin-only")


def test_spend_is_exact_for_every_cpm_the_api_accepts(client):
    booked = book_servable(client, line_item={"tier": "guaranteed", "cpm": "2.500001"})
    for listener in "abc":
        assert (
            fire(
                client, decide(client, booked["slot"]["id"], listener)["tracking"]["impression"]
            ).status_code
            == 204
        )
    run_report(client)
    [row] = report(client, booked["campaign"]["id"], "2026-01-01", "2027-01-01", "day")["rows"]
    assert row["spend"] == "0.007500003"


def test_the_run_counts_records_appended_a_moment_before(client):
    """A refused pixel is logged without a fsync of its own; the run makes it durable first."""
    booked = book_servable(client)
    impression = decide(client, booked["slot"]["id"], "l1")["tracking"]["impression"]
    # Without a flush the refused pixel would wait a minute for company before its fsync.
    client.app.state.services.event_log.lazy_delay_s = 60.0
    assert fire(client, impression, sig="A" * 43).status_code == 403
    response = client.post("/v1/reports/delivery/run", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 1

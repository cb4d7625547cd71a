"""Tracking pixels: genuine hits are logged, forged or expired ones are refused and tallied."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import select
from test_validation import assert_problem, quiet_errors  # noqa: F401
from test_vast import decide, query

from backbeat.reporting.models import RejectedHourly
from factories import ADMIN, book_servable


def fire(client, url: str, event: str | None = None, **changes: str | None):
    """Hit a tracking URL, optionally on another event path or with parameters changed/removed."""
    parts = urlsplit(url)
    params = query(url)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    path = f"/t/{event}" if event else parts.path
    return client.get(f"{path}?{urlencode(params)}")


def run_report(client) -> dict[str, int]:
    # Refused pixels are logged without a fsync of their own; the run flushes them first.
    response = client.post("/v1/reports/delivery/run", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def delivery_rows(client, campaign_id: int) -> list[dict]:
    params = {"campaign_id": campaign_id, "from": "2026-01-01", "to": "2027-01-01"}
    response = client.get("/v1/reports/delivery", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def test_forged_and_expired_urls_are_refused_and_counted_as_rejected(client, clock):
    booked = book_servable(client)
    slot_id = booked["slot"]["id"]
    tracking = decide(client, slot_id, "victim")["tracking"]
    other = decide(client, slot_id, "someone-else")
    impression = tracking["impression"]
    signature = query(impression)["sig"]
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]

    forgeries = [
        {"li": str(booked["line_item"]["id"] + 1)},
        {"c": str(booked["campaign"]["id"] + 1)},
        {"cr": "999"},
        {"s": "999"},
        {"p": "1"},  # a cheaper price
        {"p": "99000000"},  # a dearer one
        {"cur": "EUR"},
        {"d": other["decision_id"]},  # another decision's id with this decision's signature
        {"l": "someone-else"},
        {"x": str(int(query(impression)["x"]) + 86_400)},  # a longer life
        {"sig": forged_signature},
        {"sig": ""},
        {"sig": None},  # unsigned
        {"d": None},
        {"x": None},
        {"li": "1 "},
    ]
    rejected = 0
    for changes in forgeries:
        assert_problem(fire(client, impression, **changes), 403, "invalid-signature", changes)
        rejected += 1
    # a genuine signature replayed on another event's path
    for event in ("click", "complete", "start"):
        assert_problem(fire(client, impression, event=event), 403, "invalid-signature", event)
        rejected += 1
    # an event the tracker does not know is a plain 404, not a rejected pixel
    for event in ("download", "impressions", "rejected", "opportunity"):
        assert_problem(fire(client, impression, event=event), 404, "unknown-event", event)

    # a genuine start is accepted now ...
    accepted = fire(client, tracking["start"])
    assert accepted.status_code == 204 and accepted.content == b""
    # ... and the genuine impression expires with the tracking TTL
    ttl = client.app.state.services.settings.tracking_ttl_seconds
    clock.advance(ttl)
    assert fire(client, tracking["midpoint"]).status_code == 204  # the last valid second
    clock.advance(1)
    for event in ("impression", "complete", "click"):
        assert_problem(fire(client, tracking[event]), 410, "expired", event)
        rejected += 1

    run = run_report(client)
    assert run["rejected"] == rejected
    rows = delivery_rows(client, booked["campaign"]["id"])
    totals = {
        column: sum(row[column] for row in rows)
        for column in ("impressions", "starts", "midpoints", "completes", "clicks")
    }
    assert totals == {"impressions": 0, "starts": 1, "midpoints": 1, "completes": 0, "clicks": 0}
    assert {row["spend"] for row in rows} == {"0.00"}
    with client.app.state.services.sessions() as session:
        tallies: dict[str, int] = {}
        for row in session.execute(select(RejectedHourly)).scalars():
            tallies[row.reason] = tallies.get(row.reason, 0) + row.count
    assert tallies == {"invalid-signature": rejected - 3, "expired": 3}
    assert run_report(client)["rejected"] == rejected  # recounting does not double them

    metrics = client.get("/metrics").text
    assert 'backbeat_tracking_rejected_total{reason="invalid-signature"}' in metrics
    assert 'backbeat_tracking_rejected_total{reason="expired"}' in metrics


def test_every_event_is_accepted_and_the_log_is_durable_before_the_answer(client):
    booked = book_servable(client)
    tracking = decide(client, booked["slot"]["id"], "l")["tracking"]
    events = [
        "impression",
        "start",
        "firstQuartile",
        "midpoint",
        "thirdQuartile",
        "complete",
        "click",
        "error",
    ]
    for event in events:
        response = fire(client, tracking[event], code="402" if event == "error" else None)
        assert response.status_code == 204, (event, response.text)
    # each 204 means the event is on disk: a report run right now sees every one of them
    run = run_report(client)
    assert run["events_read"] == len(events) and run["rejected"] == 0
    [row] = delivery_rows(client, booked["campaign"]["id"])
    counts = [
        row[c]
        for c in (
            "impressions",
            "starts",
            "first_quartiles",
            "midpoints",
            "third_quartiles",
            "completes",
            "clicks",
        )
    ]
    assert counts == [1] * 7
    # alone in a second-price auction, the CPM 10.00 bid pays the slot's 1.00 reserve
    assert (row["completion_rate"], row["click_through_rate"], row["spend"]) == (1.0, 1.0, "0.001")


@pytest.mark.usefixtures("quiet_errors")
def test_a_non_ascii_signature_is_refused_and_tallied(client):
    booked = book_servable(client)
    impression = decide(client, booked["slot"]["id"], "l")["tracking"]["impression"]
    assert_problem(fire(client, impression, sig="\u00e9t\u00e9"), 403, "invalid-signature")
    assert run_report(client)["rejected"] == 1


def test_head_requests_have_no_side_effects(client):
    booked = book_servable(client, line_item={"frequency_cap": {"count": 1, "period": "day"}})
    slot_id = booked["slot"]["id"]
    assert client.head(f"/vast?slot={slot_id}&listener=probe").status_code == 200
    decision = decide(client, slot_id, "probe")
    assert decision["filled"], "the HEAD probe spent the listener's frequency cap"
    impression = urlsplit(decision["tracking"]["impression"])
    assert client.head(f"{impression.path}?{impression.query}").status_code in (204, 405)
    assert run_report(client)["events_read"] == 0, "a HEAD on a pixel was logged as an event"

"""``POST /v1/tracking/batch``: an ad inserter's hits, each judged as its pixel would be."""

from __future__ import annotations

import time
from urllib.parse import urlencode, urlsplit

import orjson
from test_tracking import delivery_rows, fire, run_report
from test_validation import assert_problem, quiet_errors  # noqa: F401
from test_vast import decide, query

from backbeat.eventlog import EventLogReader
from factories import ADMIN, advertiser_key, book_servable, create_advertiser

BATCH = "/v1/tracking/batch"


def inserter_key(client) -> dict[str, str]:
    minted = client.post("/v1/api-keys", json={"role": "ssai"}, headers=ADMIN)
    assert minted.status_code == 201, minted.text
    return {"Authorization": f"Bearer {minted.json()['key']}"}


def changed(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{urlencode({**query(url), **changes})}"


def log_records(client) -> list[dict]:
    services = client.app.state.services
    services.event_log.flush()
    directory = services.settings.resolved_event_log_dir
    return [orjson.loads(record.payload) for record in EventLogReader(directory).records()]


def test_genuine_hits_are_durable_and_refused_ones_are_named_by_index(client):
    booked = book_servable(client)
    key = inserter_key(client)
    tracking = decide(client, booked["slot"]["id"], "ann")["tracking"]
    other = decide(client, booked["slot"]["id"], "bob")["tracking"]
    hits = [
        {"url": tracking["impression"], "ip": "203.0.113.7", "user_agent": "Overcast/3.0"},
        {"url": urlsplit(tracking["start"]).path + "?" + urlsplit(tracking["start"]).query},
        {"url": changed(tracking["complete"], p="1")},  # a forged (cheaper) price
        {"url": "https://elsewhere.example/nothing-here"},
        {"url": tracking["impression"].replace("/t/impression", "/t/download")},
        {"url": other["impression"], "ip": "198.51.100.2"},
        {"url": tracking["error"].replace("[ERRORCODE]", "402")},
        {"url": "/t/impression?d=ünïcode"},
    ]
    before = len(log_records(client))
    response = client.post(BATCH, json={"hits": hits}, headers={**key, "User-Agent": "ssai/1"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 4
    assert [(hit["index"], hit["status"], hit["reason"]) for hit in answer["refused"]] == [
        (2, 403, "invalid-signature"),
        (3, 422, "malformed-tracking-url"),
        (4, 404, "unknown-event"),
        (7, 422, "malformed-tracking-url"),
    ]
    # The answer came after the fsync: the genuine hits are in the log, as their pixels
    # would have put them, with each listener's device (the inserter's when left out).
    new = log_records(client)[before:]
    accepted = [record for record in new if record["type"] != "rejected"]
    assert [(r["type"], r["listener"], r["ip"], r["user_agent"]) for r in accepted] == [
        ("impression", "ann", "203.0.113.7", "Overcast/3.0"),
        ("start", "ann", "testclient", "ssai/1"),
        ("impression", "bob", "198.51.100.2", "ssai/1"),
        ("error", "ann", "testclient", "ssai/1"),
    ]
    assert accepted[-1]["reason"] == "402"  # the player's VAST error code
    assert [record["reason"] for record in new if record["type"] == "rejected"] == [
        "invalid-signature"
    ]
    run = run_report(client)
    assert run["rejected"] == 1
    [row] = delivery_rows(client, booked["campaign"]["id"])
    assert (row["impressions"], row["starts"], row["completes"]) == (2, 1, 0)


def test_a_batch_counts_as_the_same_pixels_fired_one_by_one(client):
    """Same URLs, once through the batch and once as pixels on a second decision set: the
    delivery report counts both the same."""
    booked = book_servable(client)
    key = inserter_key(client)
    events = ["impression", "start", "firstQuartile", "midpoint", "complete", "click"]
    batched = [decide(client, booked["slot"]["id"], f"b{n}")["tracking"] for n in range(3)]
    response = client.post(
        BATCH,
        json={"hits": [{"url": t[event]} for t in batched for event in events]},
        headers=key,
    )
    assert response.status_code == 200 and response.json() == {"accepted": 18, "refused": []}
    one_by_one = [decide(client, booked["slot"]["id"], f"p{n}")["tracking"] for n in range(3)]
    for tracking in one_by_one:
        for event in events:
            assert fire(client, tracking[event]).status_code == 204
    run_report(client)
    [row] = delivery_rows(client, booked["campaign"]["id"])
    columns = ("impressions", "starts", "first_quartiles", "midpoints", "completes", "clicks")
    assert [row[column] for column in columns] == [6] * len(columns)


def test_only_inserter_and_admin_keys_may_report_and_bad_batches_change_nothing(client):
    booked = book_servable(client)
    tracking = decide(client, booked["slot"]["id"], "ann")["tracking"]
    body = {"hits": [{"url": tracking["impression"]}]}
    advertiser = advertiser_key(client, create_advertiser(client)["id"])
    before = len(log_records(client))
    assert_problem(client.post(BATCH, json=body), 401, "missing-api-key")
    unknown = {"Authorization": "Bearer bb_not-a-key"}
    assert_problem(client.post(BATCH, json=body, headers=unknown), 401, "invalid-api-key")
    assert_problem(client.post(BATCH, json=body, headers=advertiser), 403, "ssai-key-required")
    key = inserter_key(client)
    too_many = {"hits": [{"url": tracking["impression"]}] * 1001}
    for bad in (
        {"hits": []},
        too_many,
        {"hits": [{"url": tracking["impression"], "ip": "x" * 65}]},
        {"hits": [{"url": tracking["impression"], "extra": 1}]},
        {"events": body["hits"]},
        [body],
    ):
        assert client.post(BATCH, json=bad, headers=key).status_code == 422
    assert len(log_records(client)) == before  # nothing was recorded, not even as rejected
    assert client.post(BATCH, json=body, headers=ADMIN).json() == {"accepted": 1, "refused": []}


def test_a_workers_own_impressions_count_in_its_ledger_once_without_reading_them_back(client):
    """The server skips its own log segments when reconciling: the tracker hands each durable
    impression (pixel or batch) to the ledger, which counts a decision once however often
    its pixel fires; reconciling afterwards neither adds nor loses any of them."""
    booked = book_servable(client)
    key = inserter_key(client)
    services = client.app.state.services
    ledger = services.ad_server.decider.ledger
    served = [decide(client, booked["slot"]["id"], f"listener-{n}")["tracking"] for n in range(3)]
    assert (ledger.rendered, ledger.reserved()) == (0, 3)
    assert fire(client, served[0]["impression"]).status_code == 204
    assert fire(client, served[0]["impression"]).status_code == 204  # a replayed pixel
    hits = [{"url": served[1]["impression"]}, {"url": served[1]["impression"]},
            {"url": served[2]["start"]}]  # fmt: skip
    response = client.post(BATCH, json={"hits": hits}, headers=key)
    assert response.json() == {"accepted": 3, "refused": []}
    # Counted at acknowledgement, before any reconciliation: two decisions rendered.
    assert (ledger.rendered, ledger.reserved()) == (2, 1)
    services.event_log.flush()
    services.ad_server.housekeeping()
    assert (ledger.rendered, ledger.reserved()) == (2, 1)
    [item] = [
        i for i in services.ad_server.snapshot.line_items if i.id == booked["line_item"]["id"]
    ]
    impressions = [r for r in log_records(client) if r["type"] == "impression"]
    assert len(impressions) == 4
    # Spend: what the three decisions reserved (one still live, within its render window).
    prices = {r["decision_id"]: r["price_micros"] for r in impressions}
    assert len(prices) == 2
    assert ledger.delivery(item, time.time()).spend_units == 3 * next(iter(prices.values()))

"""Promotion delivery from the event log: hand-worked counts, the report API, and feedback."""

from __future__ import annotations

import time

import numpy as np

from backbeat.eventlog import EventLogWriter
from backbeat.events import EventType
from backbeat.promotion import features
from backbeat.promotion.delivery import count_promotion
from backbeat.promotion.events import promotion_event
from backbeat.promotion.feedback import export_feedback, feedback_rows
from backbeat.promotion.pipeline import part_features
from factories import ADMIN, advertiser_key, create_advertiser

DAY = 86_400
T = 1_790_000_000  # 2026-09-21 14:13:20 UTC


def exposure(event_id, listener, campaign=1, ts=T, item="r00001", price=20_000_000, model="cpm"):
    return promotion_event(kind=EventType.PROMOTION_EXPOSURE, event_id=event_id, ts=ts, listener_id=listener,
                           campaign_id=campaign, item_id=item, artist_id="a0001", surface="home_feed",
                           price_micros=price, currency="USD", price_model=model)  # fmt: skip


def click(event_id, listener, campaign=1, ts=T + 60):
    return promotion_event(kind=EventType.PROMOTION_CLICK, event_id=event_id, ts=ts, listener_id=listener,
                           campaign_id=campaign, item_id="r00001")  # fmt: skip


def conversion(event_id, listener, ts, kind="new", item="r00001"):
    return promotion_event(kind=EventType.CONVERSION, event_id=event_id, ts=ts, listener_id=listener,
                           campaign_id=None, item_id=item, conversion_type=kind)  # fmt: skip


def test_hand_worked_counts():
    events = [
        exposure("x1", "l1"),
        exposure("x1", "l1", ts=T + 5),  # duplicate pixel
        exposure("x2", "l2"),
        exposure("x3", "l1", ts=T + DAY),  # l1 again the next day (reach counts l1 once)
        click("x1", "l1"),
        click("x1", "l1", ts=T + 90),  # duplicate
        click("x9", "l9"),  # no such exposure: not counted
        conversion("c1", "l1", T + 3600, "amplified"),  # → x1
        conversion("c2", "l2", T + 15 * DAY, "new"),  # outside 14 days: unattributed
        conversion("c3", "l1", T + DAY + 10, "reactivated"),  # → x3 (latest exposure before it)
        exposure("y1", "l5", campaign=2, price=400_000, model="cpc"),
        click("y1", "l5", campaign=2),
    ]
    counts = count_promotion(events, {1: 14, 2: 14})
    total = counts.totals[1]
    assert (total.exposures, total.reach, total.clicks) == (3, 2, 1)
    assert (total.conversions_new, total.conversions_reactivated, total.conversions_amplified) == (
        0,
        1,
        1,
    )
    # CPM 20.00: three exposures cost 3 × 0.02 = 0.06 = 60,000,000 nanos.
    assert total.spend_nanos == 60_000_000
    assert counts.duplicates == 2 and counts.unattributed_conversions == 1
    # CPC 0.40: the click costs 0.40, the exposure nothing.
    assert counts.totals[2].spend_nanos == 400_000_000 and counts.totals[2].clicks == 1
    first_day = [
        row for (campaign, day), row in counts.daily.items() if campaign == 1 and day.day == 21
    ][0]
    assert (
        first_day.exposures,
        first_day.reach,
        first_day.clicks,
        first_day.conversions_amplified,
    ) == (2, 2, 1, 1)


def book(client, advertiser_id, **fields):
    body = {"advertiser_id": advertiser_id, "name": "Single", "item_id": "r00001", "artist_id": "a0001",
            "start_at": "2026-09-01T00:00:00Z", "end_at": "2026-10-01T00:00:00Z", "budget": "100",
            "price": "20", **fields}  # fmt: skip
    response = client.post("/v1/promotion-campaigns", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_campaigns(client, seconds: float = 10) -> None:
    """Until the scorer's snapshot holds the booked campaigns (events name only those)."""
    scorer = client.app.state.promotion
    deadline = time.monotonic() + seconds
    while not scorer.snapshot.by_item and time.monotonic() < deadline:
        time.sleep(0.05)


def test_reported_events_reach_the_delivery_report(client):
    advertiser = create_advertiser(client)
    campaign = book(client, advertiser["id"])
    wait_for_campaigns(client)
    events = [
        {"type": "exposure", "event_id": f"e{i}", "listener_id": f"l{i % 3}", "item_id": "r00001",
         "campaign_id": campaign["id"], "surface": "home_feed", "ts": "2026-09-21T10:00:00Z"}
        for i in range(4)
    ] + [
        {"type": "click", "event_id": "e0", "listener_id": "l0", "item_id": "r00001", "campaign_id": campaign["id"],
         "ts": "2026-09-21T10:01:00Z"},
        {"type": "conversion", "event_id": "k0", "listener_id": "l0", "item_id": "r00001",
         "conversion_type": "new", "ts": "2026-09-21T11:00:00Z"},
    ]  # fmt: skip
    far = [{**events[0], "ts": "9999-12-31T23:59:59-14:00"}]
    refused = client.post("/v1/promotion-events", json={"events": far}, headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["reason"] == "ts-out-of-range"
    bad = [{**events[0], "campaign_id": campaign["id"] + 100}]
    refused = client.post("/v1/promotion-events", json={"events": bad + events}, headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["reason"] == "unknown-campaign"
    accepted = client.post("/v1/promotion-events", json={"events": events}, headers=ADMIN)
    assert accepted.status_code == 202 and accepted.json() == {"accepted": 6}
    run = client.post("/v1/reports/promotion/run", headers=ADMIN).json()
    assert run["events_read"] == 6 and run["campaigns"] == 1
    report = client.get(
        "/v1/reports/promotion", params={"campaign_id": campaign["id"]}, headers=ADMIN
    ).json()
    totals = report["totals"]
    assert (totals["exposures"], totals["reach"], totals["clicks"], totals["conversions"]) == (
        4,
        3,
        1,
        1,
    )
    assert totals["conversions_new"] == 1
    assert totals["spend"] == "0.08" and totals["cost_per_conversion"] == "0.08"
    assert [day["day"] for day in report["days"]] == ["2026-09-21"]
    # Re-running replaces rather than adds.
    client.post("/v1/reports/promotion/run", headers=ADMIN)
    again = client.get(
        "/v1/reports/promotion", params={"campaign_id": campaign["id"]}, headers=ADMIN
    ).json()
    assert again["totals"] == totals
    # Another advertiser cannot read it.
    other = advertiser_key(client, create_advertiser(client)["id"])
    hidden = client.get(
        "/v1/reports/promotion", params={"campaign_id": campaign["id"]}, headers=other
    )
    assert hidden.status_code == 404
    own = advertiser_key(client, advertiser["id"])
    assert (
        client.get(
            "/v1/reports/promotion", params={"campaign_id": campaign["id"]}, headers=own
        ).status_code
        == 200
    )


def test_feedback_becomes_training_rows_that_the_pipeline_labels(tmp_path):
    genre_of = np.array([0, 1, 2])
    events = [
        exposure("x1", "l000004", item="r00007"),
        conversion("c1", "l000004", T + 7200, "new", item="r00007"),
        exposure("x2", "l000005", item="r00007", ts=T + 10),
        exposure("x3", "someone-else", item="r00007"),  # not in the listening data: left out
    ]
    columns, skipped = feedback_rows(events, genre_of)
    assert skipped == 1
    assert columns["exposure_id"].tolist() == ["fx1", "fx2"]
    assert columns["converted"].tolist() == [True, False]
    assert columns["conversion_ts"].tolist() == [T + 7200, -1]
    listens = {"listener": np.array([4, 4], dtype=np.int32), "artist": np.array([1, 1], dtype=np.int32),
               "ts": np.array([T - DAY, T + 7300], dtype=np.int64)}  # fmt: skip
    popularity = features.Popularity.from_counts(T - 10 * DAY, np.zeros((3, 10), dtype=np.int64))
    table = part_features(listens, columns, genre_of, popularity, 14 * DAY)
    rows = table.to_pydict()
    assert rows["label"] == [1, 0]
    assert rows["artist_plays_ever"] == [1.0, 0.0]  # the stream after the conversion is unseen

    # Through the event log, the file lands next to the listening data.
    log_dir, data = tmp_path / "events", tmp_path / "data"
    data.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"artist": np.arange(3, dtype=np.int32), "genre": genre_of.astype(np.int16)}),
                   data / "artists.parquet")  # fmt: skip
    with EventLogWriter(log_dir) as writer:
        writer.append_many([e.to_bytes() for e in events]).result()
    exported = export_feedback(log_dir, data)
    assert (exported.exposures, exported.conversions, exported.skipped) == (2, 1, 1)
    assert pq.read_table(data / "exposures-feedback.parquet").num_rows == 2


def test_exposures_reported_to_another_replica_count_once_for_caps_and_spend(tmp_path):
    from backbeat.db import make_engine, make_session_factory, migrate
    from backbeat.promotion.scoring import PromotionScorer

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    log_dir = tmp_path / "events"
    scorer = PromotionScorer(sessions=make_session_factory(make_engine(url)), var_dir=tmp_path / "var",
                             clock=lambda: T, event_log_dir=log_dir)  # fmt: skip
    mine = exposure("x1", "l000004", item="r00007")
    scorer.record([mine])  # reported to this replica
    other = exposure("x2", "l000004", item="r00007", ts=T + 5)  # reported to another one
    with EventLogWriter(log_dir) as writer:
        writer.append_many([mine.to_bytes(), other.to_bytes()]).result()
    scorer.refresh()
    assert scorer.exposures_of("l000004", "r00007") == 2  # not 3
    assert scorer.spent(1) == 2 * 20 / 1000
    scorer.refresh()  # nothing new: nothing counted twice
    assert scorer.exposures_of("l000004", "r00007") == 2


def test_events_the_log_cannot_store_are_a_503_to_retry(client):
    advertiser = create_advertiser(client)
    campaign = book(client, advertiser["id"])
    wait_for_campaigns(client)
    client.app.state.services.event_log.close()
    event = {"type": "exposure", "event_id": "e1", "listener_id": "l1", "item_id": "r00001",
             "campaign_id": campaign["id"]}  # fmt: skip
    response = client.post("/v1/promotion-events", json={"events": [event]}, headers=ADMIN)
    assert response.status_code == 503 and response.json()["reason"] == "event-log-unavailable"


def test_the_delivery_run_recounts_promotion_too(client):
    """One recount: ``POST /v1/reports/delivery/run`` fills the promotion tables as well."""
    campaign = book(client, create_advertiser(client)["id"])
    wait_for_campaigns(client)
    events = [
        {"type": "exposure", "event_id": f"e{i}", "listener_id": f"l{i}", "item_id": "r00001",
         "campaign_id": campaign["id"], "surface": "home_feed", "ts": "2026-09-21T10:00:00Z"}
        for i in range(2)
    ] + [
        {"type": "click", "event_id": "e1", "listener_id": "l1", "item_id": "r00001",
         "campaign_id": campaign["id"], "ts": "2026-09-21T10:01:00Z"},
    ]  # fmt: skip
    accepted = client.post("/v1/promotion-events", json={"events": events}, headers=ADMIN)
    assert accepted.status_code == 202, accepted.text
    run = client.post("/v1/reports/delivery/run", headers=ADMIN)
    assert run.status_code == 200, run.text
    assert run.json()["promotion"] == {"events_read": 3, "campaigns": 1, "daily_rows": 1,
                                       "duplicates": 0, "unattributed_conversions": 0}  # fmt: skip
    totals = client.get(
        "/v1/reports/promotion", params={"campaign_id": campaign["id"]}, headers=ADMIN
    ).json()["totals"]
    # CPM 20.00: two exposures cost 2 × 0.02.
    assert (totals["exposures"], totals["reach"], totals["clicks"], totals["spend"]) == (
        2, 2, 1, "0.04",
    )  # fmt: skip

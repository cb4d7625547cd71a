"""Money rules (issue 10): the second price comes from a rival that could really have served,
and budgets are spent in counted impressions, surviving a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_auction import book_bidder, serving_app
from test_decider_properties import T0, UNIT, ad_slot, creative, line_item

from backbeat.catalog.vocabulary import AuctionType
from backbeat.eventlog import EventLogReader, EventLogWriter
from backbeat.events import Event, EventType
from backbeat.serving.decisions import Decider, new_decision_id
from backbeat.serving.ledger import MemoryLedger
from backbeat.serving.reconcile import Reconciler
from backbeat.serving.request import AdRequest, PodRequest
from backbeat.serving.snapshot import CapRule, ServableLineItem, Snapshot
from factories import ADMIN, create_slot
from vast_schema import assert_valid_vast

LISTENER = "ann"
DAY_CAP = 86_400

# --- second price against a brute-force auction ------------------------------------------


def test_a_capped_runner_up_does_not_set_the_price():
    """The measured failure: 10.00 charged from a rival capped for this listener, not 4.00."""
    winner = line_item(1, cpm_micros=12 * UNIT)
    capped = line_item(2, cpm_micros=10 * UNIT, caps=(CapRule("li:2", 1, DAY_CAP),))
    next_best = line_item(3, cpm_micros=4 * UNIT)
    slot = ad_slot(reserve_micros=UNIT)
    snapshot = Snapshot.of(1, [winner, capped, next_best], [slot])
    ledger = MemoryLedger()
    assert ledger.acquire_caps(LISTENER, [capped], T0) == (0, "")  # heard it once today
    decision = Decider(ledger, seed=1).decide(snapshot, slot, AdRequest(1, LISTENER), T0)
    assert (decision.line_item, decision.price_micros) == (winner, 4 * UNIT)
    # Another listener has not heard the capped one: it prices the auction.
    other = Decider(ledger, seed=1).decide(snapshot, slot, AdRequest(1, "bob"), T0)
    assert (other.line_item, other.price_micros) == (winner, 10 * UNIT)


bidder = st.fixed_dictionaries(
    {
        "cpm": st.sampled_from([2, 3, 5, 5, 8, 12]),
        "campaign": st.sampled_from([1, 2, 3]),
        "duration_s": st.sampled_from([15, 30, 60]),
        "country": st.sampled_from([None, "US", "GB"]),
        "currency": st.sampled_from(["USD", "USD", "USD", "EUR"]),
        "cap": st.sampled_from([None, 1, 2]),
        "heard": st.integers(0, 2),  # ads of this line item the listener heard today
        "budget_impressions": st.sampled_from([None, None, 0, 1]),  # 0: spent
        "live": st.booleans() | st.just(True),
    }
)


def build(spec: dict, n: int) -> ServableLineItem:
    return line_item(
        n,
        cpm_micros=spec["cpm"] * UNIT,
        campaign_id=spec["campaign"],
        advertiser_id=100 + n,
        currency=spec["currency"],
        caps=() if spec["cap"] is None else (CapRule(f"li:{n}", spec["cap"], DAY_CAP),),
        targeting={} if spec["country"] is None else {"countries": [spec["country"]]},
        creatives=(creative(n, duration_ms=spec["duration_s"] * 1000),),
        budget_micros=None
        if spec["budget_impressions"] is None
        else spec["budget_impressions"] * spec["cpm"] * UNIT // 1000,
        start_ts=T0 - DAY_CAP if spec["live"] else T0 + DAY_CAP,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(bidder, min_size=1, max_size=7),
    reserve=st.sampled_from([0, 1, 3, 5]),
    country=st.sampled_from(["US", "GB"]),
    max_ad_s=st.sampled_from([None, 30]),
    campaign_cap=st.sampled_from([None, 1, 2]),
    campaign_heard=st.integers(0, 2),
    seed=st.integers(0, 1000),
)
def test_second_price_is_the_best_rival_that_could_have_served(
    specs, reserve, country, max_ad_s, campaign_cap, campaign_heard, seed
):
    book = [build(spec, n) for n, spec in enumerate(specs, start=1)]
    if campaign_cap is not None:  # campaign 1 caps its line items together
        rule = CapRule("c:1", campaign_cap, DAY_CAP)
        book = [
            line_item(item.id, **{**_fields(item), "caps": (*item.caps, rule)})
            if item.campaign_id == 1
            else item
            for item in book
        ]
    slot = ad_slot(reserve_micros=reserve * UNIT, auction=AuctionType.SECOND_PRICE)
    snapshot = Snapshot.of(1, book, [slot])
    ledger = MemoryLedger()
    # What the listener heard before (counted as it was served: one cap step per ad).
    heard: dict[tuple[str, int], int] = {}
    for item, spec in zip(book, specs, strict=True):
        for _ in range(spec["heard"]):
            ledger.acquire_caps(LISTENER, [_only_own(item)], T0)
        heard[(f"li:{item.id}", DAY_CAP)] = spec["heard"]
    for _ in range(campaign_heard):
        ledger.acquire_caps(LISTENER, [line_item(999, caps=(CapRule("c:1", 99, DAY_CAP),))], T0)
    heard[("c:1", DAY_CAP)] = campaign_heard

    # The brute force: every line item that could serve this request, judged one by one.
    def could_serve(item: ServableLineItem, spec: dict) -> bool:
        if spec["country"] not in (None, country) or item.currency != "USD":
            return False
        if not spec["live"] or item.cpm_micros < reserve * UNIT:
            return False
        if spec["budget_impressions"] == 0:
            return False
        if max_ad_s is not None and spec["duration_s"] > max_ad_s:
            return False
        return all(heard.get((rule.scope, DAY_CAP), 0) < rule.count for rule in item.caps)

    able = [item for item, spec in zip(book, specs, strict=True) if could_serve(item, spec)]
    pod = PodRequest(max_ad_ms=None if max_ad_s is None else max_ad_s * 1000)
    decision = Decider(ledger, seed=seed).decide_pod(
        snapshot, slot, AdRequest(1, LISTENER, country=country), T0, pod
    )[0]
    if not able:
        assert decision.line_item is None
        return
    assert decision.line_item in able
    assert decision.line_item.cpm_micros == max(item.cpm_micros for item in able)
    rivals = [item.cpm_micros for item in able if item is not decision.line_item]
    expected = min(decision.line_item.cpm_micros, max([reserve * UNIT, *rivals]))
    assert decision.price_micros == expected


def _fields(item: ServableLineItem) -> dict:
    names = [field.name for field in dataclasses.fields(ServableLineItem) if field.init]
    return {name: getattr(item, name) for name in names if name != "id"}


def _only_own(item: ServableLineItem) -> ServableLineItem:
    return line_item(item.id, caps=tuple(rule for rule in item.caps if rule.scope.startswith("li")))


# --- one budget currency: counted impressions, recovered on restart ----------------------


def test_reservations_become_counted_or_expire_and_a_replica_recovers_them(tmp_path: Path):
    """Ledger spend = counted + reserved; a fresh ledger rebuilds both from the event log."""
    item = line_item(1, cpm_micros=10 * UNIT, budget_micros=30 * UNIT // 1000)  # 3 impressions
    slot = ad_slot(auction=AuctionType.FIRST_PRICE)
    snapshot = Snapshot.of(1, [item], [slot])
    ledger = MemoryLedger(render_window_s=60)
    with EventLogWriter(tmp_path) as log:
        served = []
        for n in range(3):
            decision = Decider(ledger).decide(snapshot, slot, AdRequest(1, f"l{n}"), T0)
            assert decision.line_item is item
            served.append(decision)
            fill = Event(
                type=EventType.FILL, ts=T0, decision_id=decision.id, line_item_id=1,
                campaign_id=item.campaign_id, price_micros=decision.price_micros, currency="USD",
            )  # fmt: skip
            log.append(fill.to_bytes())
        assert Decider(ledger).decide(snapshot, slot, AdRequest(1, "l9"), T0).line_item is None
        # One of the three plays (its pixel reaches the log), twice (a replayed pixel).
        for _ in range(2):
            impression = Event(
                type=EventType.IMPRESSION, ts=T0 + 5, decision_id=served[0].id, line_item_id=1,
                campaign_id=item.campaign_id, price_micros=10 * UNIT, currency="USD",
            )  # fmt: skip
            log.append(impression.to_bytes())
        log.flush()
        # A restarted server (a fresh ledger) recovers all three before serving: no re-spend.
        restarted = MemoryLedger(render_window_s=60)
        reconciler = Reconciler(restarted, tmp_path)
        first = reconciler.run(T0 + 10)
        assert (first.impressions, first.reservations, first.released) == (1, 3, 0)
        assert restarted.delivery(item, T0 + 10).spend_units == 30 * UNIT
        again = Decider(restarted).decide(snapshot, slot, AdRequest(1, "x"), T0 + 10)
        assert again.line_item is None and again.no_fill_reason == "budget-exhausted"
        # The two that never played are released after the render window: 2 more may serve.
        later = reconciler.run(T0 + 61)
        assert (later.records, later.released) == (0, 2)
        assert restarted.delivery(item, T0 + 61).spend_units == 10 * UNIT
        refill = [
            Decider(restarted).decide(snapshot, slot, AdRequest(1, f"r{n}"), T0 + 61).line_item
            for n in range(3)
        ]
        assert refill == [item, item, None]


def test_a_restarted_server_does_not_spend_a_budget_again(tmp_path: Path):
    """The measured failure: a budget of 2 impressions filled 2, and 2 more after a restart."""
    database_url = f"sqlite:///{tmp_path / 'backbeat.db'}"
    now = [T0]
    with serving_app(tmp_path, database_url, clock=lambda: now[0]) as client:
        booked = book_bidder(client, "10.00")
        item_id = booked["line_item"]["id"]
        patched = client.patch(
            f"/v1/line-items/{item_id}", json={"budget": "0.02"}, headers=ADMIN
        )  # two impressions at CPM 10
        assert patched.status_code == 200, patched.text
        slot = create_slot(client, reserve_cpm="1.00", auction="first_price")
        client.app.state.services.ad_server.refresh()
        urls = [_impression_url(client, slot["id"], f"l{n}") for n in range(3)]
        assert urls[0] and urls[1] and urls[2] is None
        assert client.get(urls[0]).status_code == 204  # one of the two plays
    now[0] += 30
    with serving_app(tmp_path, database_url, clock=lambda: now[0]) as client:
        assert _impression_url(client, slot["id"], "l3") is None  # both still spent
    now[0] += 600  # past the render window: the ad that never played is released
    with serving_app(tmp_path, database_url, clock=lambda: now[0]) as client:
        assert _impression_url(client, slot["id"], "l4") is not None
        assert _impression_url(client, slot["id"], "l5") is None


def _impression_url(client, slot_id: int, listener: str) -> str | None:
    response = client.get("/vast", params={"slot": slot_id, "listener": listener})
    assert response.status_code == 200, response.text
    root = assert_valid_vast(response.content)
    found = root.findtext(".//{http://www.iab.com/VAST}Impression")
    return found.strip() if found else None


def test_the_error_url_carries_the_macro_and_the_code_is_recorded(tmp_path: Path):
    database_url = f"sqlite:///{tmp_path / 'backbeat.db'}"
    with serving_app(tmp_path, database_url) as client:
        book_bidder(client, "10.00")
        slot = create_slot(client, reserve_cpm="1.00")
        client.app.state.services.ad_server.refresh()
        response = client.get("/vast", params={"slot": slot["id"], "listener": "err"})
        assert b"[ERRORCODE]" in response.content
        root = assert_valid_vast(response.content)  # valid once the player substitutes it
        error_url = etree_text(response.content)
        assert error_url.endswith("&code=[ERRORCODE]")
        assert client.get(error_url.replace("[ERRORCODE]", "402")).status_code == 204
        assert client.get(error_url).status_code == 204  # a player that cannot substitute
        assert root is not None
        client.app.state.services.event_log.flush()
        errors = [
            Event.from_bytes(record.payload)
            for record in EventLogReader(tmp_path / "var" / "events").records()
            if Event.from_bytes(record.payload).type == EventType.ERROR
        ]
        assert [event.reason for event in errors] == ["402", None]
        query = parse_qs(urlsplit(error_url).query)
        assert query["d"][0] == errors[0].decision_id
        # and the sealed price does not show in any URL of the answer
        assert b"10000000" not in response.content


def etree_text(document: bytes) -> str:
    from lxml import etree

    root = etree.fromstring(document)
    return root.findtext(".//{http://www.iab.com/VAST}Error").strip()


def test_decision_ids_carry_their_time():
    from backbeat.serving.ledger import decision_ts

    assert decision_ts(new_decision_id(T0 + 0.25)) == T0 + 0.25

"""The non-guaranteed auction: first and second price per slot, reserves by slot and country.

The clearing price is what the decision charges, what the signed tracking URL carries
(``p``) and, once the impression is counted, what the delivery report spends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from test_decider_properties import SLOTS, T0, UNIT, ad_slot, line_item

from backbeat.api import problems
from backbeat.api.app import create_app
from backbeat.catalog.vocabulary import AuctionType, Tier
from backbeat.config import Settings
from backbeat.db import migrate
from backbeat.serving.auction import clearing_price
from backbeat.serving.decisions import SHORTLIST, Decider, Decision
from backbeat.serving.ledger import MemoryLedger
from backbeat.serving.request import AdRequest
from backbeat.serving.snapshot import CapRule, ServableLineItem, ServableSlot, Snapshot
from factories import (
    ADMIN,
    ADMIN_KEY,
    create_advertiser,
    create_campaign,
    create_creative,
    create_line_item,
    create_slot,
)
from vast_schema import assert_valid_vast

FIRST, SECOND = AuctionType.FIRST_PRICE, AuctionType.SECOND_PRICE
bids = st.integers(0, 10**9)


@given(bid=bids, reserve=bids, runner_up=st.none() | bids)
def test_clearing_price_is_the_bid_or_the_better_of_reserve_and_runner_up(bid, reserve, runner_up):
    # The decider only prices bids that cleared the reserve and rank above the runner-up.
    bid = max(bid, reserve, runner_up or 0)
    first = clearing_price(auction=FIRST, winning_bid=bid, runner_up_bid=runner_up, reserve=reserve)
    second = clearing_price(
        auction=SECOND, winning_bid=bid, runner_up_bid=runner_up, reserve=reserve
    )
    assert first == bid
    assert second == min(bid, max(reserve, runner_up or 0))
    assert reserve <= second <= bid


def decide(
    book: list[ServableLineItem],
    slot: ServableSlot,
    country: str | None = None,
    listener: str = "ann",
    decider: Decider | None = None,
) -> Decision:
    snapshot = Snapshot.of(1, book, [slot])
    decider = decider or Decider(MemoryLedger(), seed=1)
    return decider.decide(
        snapshot, slot, AdRequest(slot_id=slot.id, listener=listener, country=country), T0
    )


def outcome(decision: Decision) -> tuple[int | None, int]:
    return (decision.line_item.id if decision.line_item else None), decision.price_micros


def bidders(*cpms: float, tier: str = Tier.NON_GUARANTEED) -> list[ServableLineItem]:
    return [
        line_item(n, tier=tier, cpm_micros=round(cpm * UNIT)) for n, cpm in enumerate(cpms, start=1)
    ]


@pytest.mark.parametrize(
    ("cpms", "reserve", "auction", "expected"),
    [
        ((10, 6), 2, SECOND, (1, 6)),  # the runner-up's bid
        ((10, 6), 7, SECOND, (1, 7)),  # the reserve when the runner-up cannot clear it
        ((10,), 2, SECOND, (1, 2)),  # alone: the reserve
        ((10,), 0, SECOND, (1, 0)),  # alone with no reserve: free
        ((10, 10), 2, SECOND, (None, 10)),  # a tie: the bid (either bidder)
        ((10, 6, 9), 2, SECOND, (1, 9)),  # the best runner-up, whatever the book order
        ((5, 4), 5, SECOND, (1, 5)),  # a bid equal to the reserve clears it and pays it
        ((10, 6), 2, FIRST, (1, 10)),  # first price: the bid
        ((10,), 2, FIRST, (1, 10)),
    ],
)
def test_clearing_price_per_slot(cpms, reserve, auction, expected):
    slot = ad_slot(reserve_micros=reserve * UNIT, auction=auction)
    found = outcome(decide(bidders(*cpms), slot))
    winner, price = expected
    assert found[1] == price * UNIT
    if winner is not None:
        assert found[0] == winner


def test_one_book_clears_differently_in_first_and_second_price_slots():
    book = bidders(12.5, 7.25)
    first = ad_slot(1, reserve_micros=UNIT, auction=FIRST)
    second = ad_slot(2, reserve_micros=UNIT, auction=SECOND)
    assert outcome(decide(book, first)) == (1, 12_500_000)
    assert outcome(decide(book, second)) == (1, 7_250_000)


@pytest.mark.parametrize(
    ("country", "expected"),
    [
        (None, (1, 6)),  # the slot's reserve (2) is below the runner-up
        ("US", (1, 6)),  # no reserve for US: the slot's
        ("GB", (1, 8)),  # GB's reserve is higher: the runner-up cannot clear it
        ("FR", (1, 6)),
        ("DE", (1, 6)),  # DE's reserve is lower; the runner-up still sets the price
        ("NO", (1, 9.5)),  # NO's reserve is between the bids
        ("CH", (None, 0)),  # CH's reserve is above every bid: no fill
    ],
)
def test_reserve_by_country_overrides_the_slot_reserve(country, expected):
    slot = ad_slot(
        reserve_micros=2 * UNIT,
        reserve_by_country={"GB": 8 * UNIT, "DE": UNIT // 2, "NO": 9_500_000, "CH": 11 * UNIT},
        auction=SECOND,
    )
    winner, price = expected
    assert outcome(decide(bidders(10, 6), slot, country)) == (winner, round(price * UNIT))


def test_a_lower_country_reserve_lets_a_bid_below_the_slot_reserve_serve():
    slot = ad_slot(reserve_micros=5 * UNIT, reserve_by_country={"DE": UNIT}, auction=SECOND)
    assert outcome(decide(bidders(3, 2), slot, "DE")) == (1, 2 * UNIT)
    assert decide(bidders(3, 2), slot, "GB").no_fill_reason == "below-reserve"


@pytest.mark.parametrize("tier", [Tier.SPONSORSHIP, Tier.GUARANTEED])
def test_sponsorship_and_guaranteed_pay_their_own_cpm(tier):
    book = [
        line_item(1, tier=tier, cpm_micros=9 * UNIT),
        line_item(2, tier=tier, cpm_micros=4 * UNIT),
        line_item(3, cpm_micros=30 * UNIT),
    ]
    for auction in (FIRST, SECOND):
        slot = ad_slot(reserve_micros=2 * UNIT, auction=auction)
        assert outcome(decide(book, slot)) == (1, 9 * UNIT)


def test_house_ads_pay_their_cpm_below_reserve_and_do_not_set_the_auction_price():
    slot = ad_slot(reserve_micros=3 * UNIT, auction=SECOND)
    house = line_item(9, tier=Tier.HOUSE, cpm_micros=UNIT)
    assert outcome(decide([house], slot)) == (9, UNIT)
    # A house ad ranks below every paid tier, so it is never the runner-up.
    assert outcome(decide([line_item(1, cpm_micros=10 * UNIT), house], slot)) == (1, 3 * UNIT)


def test_the_second_bidder_sets_the_price_when_the_first_is_capped():
    capped = line_item(1, cpm_micros=20 * UNIT, caps=(CapRule("li:1", 1, None),))
    book = [capped, line_item(2, cpm_micros=10 * UNIT), line_item(3, cpm_micros=4 * UNIT)]
    slot = ad_slot(reserve_micros=UNIT, auction=SECOND)
    decider = Decider(MemoryLedger(), seed=1)
    assert outcome(decide(book, slot, decider=decider)) == (1, 10 * UNIT)
    assert outcome(decide(book, slot, decider=decider)) == (2, 4 * UNIT)


def test_a_winner_at_the_end_of_a_full_shortlist_still_pays_the_runner_up():
    capped = [
        line_item(n, cpm_micros=(100 - n) * UNIT, caps=(CapRule(f"li:{n}", 1, None),))
        for n in range(1, SHORTLIST + 1)
    ]
    runner_up = line_item(SHORTLIST + 1, cpm_micros=50 * UNIT)
    slot = ad_slot(reserve_micros=UNIT, auction=SECOND)
    decider = Decider(MemoryLedger(), seed=1)
    for n in range(1, SHORTLIST):
        assert outcome(decide([*capped, runner_up], slot, decider=decider)) == (n, (99 - n) * UNIT)
    winner = capped[-1]
    assert outcome(decide([*capped, runner_up], slot, decider=decider)) == (winner.id, 50 * UNIT)


def test_every_priced_decision_in_the_property_slots_charges_at_most_its_bid():
    book = bidders(40, 12.345678, 5, 0.5) + [line_item(9, tier=Tier.HOUSE, cpm_micros=0)]
    for slot in SLOTS:
        for country in (None, "US", "GB", "DE"):
            decision = decide(book, slot, country)
            if decision.line_item is not None:
                assert decision.price_micros <= decision.line_item.cpm_micros


# --- through the API: the price in the URL and in the report --------------------------


@contextmanager
def serving_app(
    tmp_path: Path, database_url: str, clock: Any = None, **settings: Any
) -> Iterator[TestClient]:
    """The whole app on a fresh database, as ``tests/api`` builds it, with settings to vary."""
    migrate(database_url)
    configured = Settings(
        var_dir=tmp_path / "var",
        database_url=database_url,
        admin_key=ADMIN_KEY,
        signing_key="test-signing-key-0123456789abcdef",
        public_base_url="http://testserver",
        log_json=False,
        log_level="WARNING",
        catalog_poll_seconds=0.2,
        **settings,
    )
    with TestClient(create_app(configured, clock=clock or (lambda: T0))) as client:
        yield client


def book_bidder(client: TestClient, cpm: str) -> dict[str, Any]:
    advertiser = create_advertiser(client)
    campaign = create_campaign(client, advertiser["id"])
    item = create_line_item(client, campaign["id"], cpm=cpm, tier="non_guaranteed", pacing="asap")
    create_creative(client, item["id"])
    return {"campaign": campaign, "line_item": item}


def served(client: TestClient, slot_id: int, **params: str) -> dict[str, str]:
    """Serve one ad through ``GET /vast``; the query of its signed impression URL."""
    response = client.get("/vast", params={"slot": str(slot_id), **params})
    assert response.status_code == 200, response.text
    root = assert_valid_vast(response.content)
    [impression] = root.findall(".//{http://www.iab.com/VAST}Impression")
    url = impression.text.strip()
    fired = client.get(url)
    assert fired.status_code == 204, fired.text
    query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    # The price travels sealed: only the server's key opens it.
    signer = client.app.state.services.ad_server.signer  # type: ignore[attr-defined]
    query["price"] = str(signer.open_price(query["d"], query["p"]))
    assert query["price"] not in url
    return query


def report_spend(client: TestClient, campaign_id: int) -> tuple[int, Decimal]:
    params = {
        "campaign_id": campaign_id,
        "from": "2026-01-01",
        "to": "2027-01-01",
        "granularity": "day",
    }
    report = client.get("/v1/reports/delivery", params=params, headers=ADMIN)
    assert report.status_code == 200, report.text
    rows = report.json()["rows"]
    return sum(row["impressions"] for row in rows), sum(
        (Decimal(row["spend"]) for row in rows), Decimal(0)
    )


def test_the_clearing_price_is_signed_into_tracking_and_spent_in_the_report(tmp_path, database_url):
    with serving_app(tmp_path, database_url) as client:
        high, low = book_bidder(client, "10.00"), book_bidder(client, "6.25")
        second = create_slot(client, reserve_cpm="2.00", auction="second_price")
        first = create_slot(client, reserve_cpm="2.00", auction="first_price")
        dear = create_slot(client, reserve_cpm="8.125", auction="second_price")
        client.app.state.services.ad_server.refresh()

        prices = [
            served(client, second["id"], listener="a"),  # the runner-up's 6.25
            served(client, first["id"], listener="b"),  # first price: the bid
            served(client, dear["id"], listener="c"),  # the runner-up is below the reserve
        ]
        assert {query["li"] for query in prices} == {str(high["line_item"]["id"])}
        assert [int(query["price"]) for query in prices] == [6_250_000, 10_000_000, 8_125_000]
        assert {query["cur"] for query in prices} == {"USD"}

        run = client.post("/v1/reports/delivery/run", headers=ADMIN)
        assert run.status_code == 200, run.text
        # Each impression costs its clearing CPM / 1000, exactly.
        assert report_spend(client, high["campaign"]["id"]) == (3, Decimal("0.024375"))
        assert report_spend(client, low["campaign"]["id"]) == (0, Decimal(0))


class SilentLog:
    def exception(self, *_args: Any, **_kwargs: Any) -> None:
        pass


def test_a_country_reserve_booked_through_the_api_prices_the_auction(tmp_path, monkeypatch):
    monkeypatch.setattr(problems, "log", SilentLog())  # rendering the traceback takes seconds
    with serving_app(tmp_path, f"sqlite:///{tmp_path / 'backbeat.db'}") as client:
        high, _low = book_bidder(client, "10.00"), book_bidder(client, "6.25")
        slot = create_slot(client, reserve_cpm="2.00", reserve_by_country={"GB": "8.5"})
        client.app.state.services.ad_server.refresh()
        assert slot["reserve_by_country"] == {"GB": "8.50"}
        assert served(client, slot["id"], listener="a", country="gb")["price"] == "8500000"
        assert served(client, slot["id"], listener="b", country="us")["price"] == "6250000"
        assert served(client, slot["id"], listener="c")["li"] == str(high["line_item"]["id"])

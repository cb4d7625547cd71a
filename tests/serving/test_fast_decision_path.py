"""The decision path's fast parts, each against a plain reference written here.

The decider filters flight, currency and reserve as per-snapshot bitsets, walks bitsets
through their bytes, names a no-fill's reason from positions, mints ids from a counter,
signs URLs with one base64 call and writes fill records without a generic encoder. Each
must agree with the straightforward computation: a brute-force decider over the same
book (winner's tier and price, second price from the best rival that could really have
served), brute-force bit positions and flight/reserve filters, per-tag base64, and
``orjson`` of the record's dict.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_decider_properties import (
    DAY,
    SLOTS,
    T0,
    UNIT,
    Model,
    ad_requests,
    ad_slot,
    books,
    line_item,
    matches,
)
from test_decider_properties import attributes as request_attributes_of

from backbeat.catalog.vocabulary import AuctionType, Tier
from backbeat.serving.decisions import Decider, Decision, new_decision_id
from backbeat.serving.ledger import MemoryLedger, decision_ts
from backbeat.serving.request import AdRequest
from backbeat.serving.server import fill_record
from backbeat.serving.snapshot import ServableLineItem, ServableSlot, Snapshot
from backbeat.serving.static_checks import StaticChecks
from backbeat.serving.targeting_index import iter_bits
from backbeat.signing import TrackingClaims, UrlSigner

# --- bit positions and static filters -------------------------------------------------


@given(
    st.lists(st.integers(0, 20_000), max_size=60).map(lambda found: sum(1 << n for n in set(found)))
)
def test_iter_bits_yields_every_set_position_lowest_first(bits):
    expected = [n for n in range(bits.bit_length()) if bits >> n & 1]
    assert list(iter_bits(bits)) == expected


def test_iter_bits_resumes_where_it_stopped():
    walk = iter_bits((1 << 3) | (1 << 900) | (1 << 9000))
    assert next(walk) == 3
    assert [*walk] == [900, 9000]


flights = st.tuples(st.integers(-5, 5), st.integers(1, 6)).map(
    lambda found: (T0 + found[0] * 3600.0, T0 + (found[0] + found[1]) * 3600.0)
)


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            flights,
            st.sampled_from(["USD", "EUR"]),
            st.sampled_from([0, UNIT, 5 * UNIT, 10 * UNIT]),
            st.sampled_from(list(Tier)),
        ),
        min_size=1,
        max_size=12,
    ),
    steps=st.lists(st.integers(-4 * 3600, 4 * 3600).map(float), min_size=1, max_size=20),
    reserve=st.sampled_from([0, UNIT, 5 * UNIT, 11 * UNIT]),
    currency=st.sampled_from(["USD", "EUR"]),
)
def test_static_checks_match_testing_each_item(specs, steps, reserve, currency):
    items = [
        line_item(n, start_ts=start, end_ts=end, currency=cur, cpm_micros=cpm, tier=tier)
        for n, ((start, end), cur, cpm, tier) in enumerate(specs, start=1)
    ]
    checks = StaticChecks(items)
    now = T0
    for step in steps:  # back and forth across flight boundaries, the cache kept between
        now += step
        for at in (now, items[0].start_ts, items[0].end_ts):
            live = {n for n, item in enumerate(items) if item.start_ts <= at < item.end_ts}
            assert set(iter_bits(checks.live(at))) == live
        priced = {
            n
            for n, item in enumerate(items)
            if item.currency == currency and (item.cpm_micros >= reserve or item.tier == Tier.HOUSE)
        }
        assert set(iter_bits(checks.priced(currency, reserve))) == priced
        live_now = {n for n, item in enumerate(items) if item.start_ts <= now < item.end_ts}
        assert set(iter_bits(checks.passing(now, currency, reserve))) == live_now & priced
        for n, item in enumerate(items):
            reason = checks.reason(n, now, currency, reserve)
            assert (reason is None) == (item.start_ts <= now < item.end_ts and n in priced)


# --- a brute-force decider --------------------------------------------------------------


def reference(
    book: list[ServableLineItem], model: Model, slot: ServableSlot, request: AdRequest, now: float
) -> tuple[set[int], dict[int, int]]:
    """The items that may win (the best tier and CPM among those that could serve) and the
    price each would pay: its CPM, or in a second-price auction the best bid of any other
    auction item that could have served (targeting, flight, currency, reserve, budgets and
    this listener's caps before the decision), at least the reserve."""
    available = [
        item
        for item in book
        if model.eligible(item, slot, request, now) and model.uncapped(item, request.listener, now)
    ]
    if not available:
        return set(), {}
    best = min((item.tier_rank, -item.cpm_micros) for item in available)
    winners = [item for item in available if (item.tier_rank, -item.cpm_micros) == best]
    reserve = slot.reserve_for(request.country)
    prices = {}
    for winner in winners:
        if winner.tier != Tier.NON_GUARANTEED or slot.auction == AuctionType.FIRST_PRICE:
            prices[winner.id] = winner.cpm_micros
            continue
        rivals = [
            item.cpm_micros
            for item in available
            if item is not winner and item.tier == Tier.NON_GUARANTEED
        ]
        prices[winner.id] = min(winner.cpm_micros, max([reserve, *rivals]))
    return {item.id for item in winners}, prices


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    book=books(max_items=12),
    requests=st.lists(ad_requests, min_size=5, max_size=40),
    seed=st.integers(0, 2**32),
)
def test_the_decider_picks_the_winner_and_price_of_a_brute_force_decider(book, requests, seed):
    snapshot = Snapshot.of(1, book, SLOTS)
    decider = Decider(MemoryLedger(), seed=seed)
    model = Model()
    now = T0 - DAY
    for request, step in requests:
        now += step
        slot = snapshot.slots[request.slot_id]
        winners, prices = reference(book, model, slot, request, now)
        decision = decider.decide(snapshot, slot, request, now)
        if decision.line_item is None:
            assert not winners, decision.no_fill_reason
            continue
        assert decision.line_item.id in winners
        assert decision.price_micros == prices[decision.line_item.id]
        model.record(decision.line_item, request.listener, decision.price_micros, now)


def reference_reason(
    book: list[ServableLineItem], model: Model, slot: ServableSlot, request: AdRequest, now: float
) -> str:
    """Without caps or pacing: the most common reason among the targeted items, the one
    met first in best-first order on a tie, each item's reason its first failing check."""
    found = request_attributes_of(slot, request, now)
    reserve = slot.reserve_for(request.country)
    reasons: Counter[str] = Counter()
    targeted = False
    for item in sorted(book, key=lambda item: (item.tier_rank, -item.cpm_micros, item.id)):
        if not matches(item, found):
            continue
        targeted = True
        day = int(now // DAY)
        price = item.cpm_micros
        checks = [
            (not item.start_ts <= now < item.end_ts, "outside-flight"),
            (item.currency != slot.currency, "currency-mismatch"),
            (item.cpm_micros < reserve and item.tier != Tier.HOUSE, "below-reserve"),
            (
                item.goal_impressions is not None
                and model.impressions[item.id] >= item.goal_impressions,
                "goal-reached",
            ),
            (
                item.budget_micros is not None
                and model.spend[item.id] + price > item.budget_micros * 1000,
                "budget-exhausted",
            ),
            (
                item.daily_budget_micros is not None
                and model.daily[(item.id, day)] + price > item.daily_budget_micros * 1000,
                "daily-budget-exhausted",
            ),
            (
                model.campaign_spend[item.campaign_id] + price > item.campaign_budget_micros * 1000,
                "campaign-budget-exhausted",
            ),
        ]
        reason = next((name for failed, name in checks if failed), None)
        assert reason is not None  # called on a no-fill only
        reasons[reason] += 1
    if not targeted:
        return "no-targeting-match"
    return reasons.most_common(1)[0][0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    book=books(max_items=10).map(lambda items: [_uncapped(item) for item in items]),
    requests=st.lists(ad_requests, min_size=5, max_size=30),
    seed=st.integers(0, 2**32),
)
def test_a_no_fill_names_the_most_common_reason_first_met_on_a_tie(book, requests, seed):
    snapshot = Snapshot.of(1, book, SLOTS)
    decider = Decider(MemoryLedger(), seed=seed)
    model = Model()
    now = T0 - DAY
    for request, step in requests:
        now += step
        slot = snapshot.slots[request.slot_id]
        decision = decider.decide(snapshot, slot, request, now)
        if decision.line_item is None:
            assert decision.no_fill_reason == reference_reason(book, model, slot, request, now)
        else:
            model.record(decision.line_item, request.listener, decision.price_micros, now)


def _uncapped(item: ServableLineItem) -> ServableLineItem:
    fields = {name: getattr(item, name) for name in ServableLineItem.__dataclass_fields__}
    for derived in ("categories", "top_categories", "in_auction", "even_paced", "rank"):
        fields.pop(derived)
    return ServableLineItem(**{**fields, "caps": ()})


# --- ids, records and signatures ------------------------------------------------------


def test_decision_ids_carry_their_millisecond_and_never_repeat():
    ids = [new_decision_id(T0 + n / 7) for n in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(len(found) == 28 and int(found, 16) >= 0 for found in ids)
    assert [decision_ts(found) for found in ids] == [int((T0 + n / 7) * 1000) / 1000 for n in range(5000)]  # fmt: skip
    assert ids == sorted(ids)  # time-ordered while the clock moves (and the counter runs)


@given(
    ts=st.floats(1e9, 4e9),
    price=st.integers(0, 2**62),
    currency=st.sampled_from(["USD", "EUR", "SEK"]),
    ids=st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.integers(1, 2**31)),
)
def test_a_fill_record_is_the_json_of_its_fields(ts, price, currency, ids):
    item_id, campaign_id, slot_id = ids
    item = line_item(item_id, campaign_id=campaign_id, currency=currency)
    slot = ad_slot(slot_id)
    decision = Decision(
        new_decision_id(ts), ts, AdRequest(slot_id, "ann"), slot, item, item.creatives[0], price
    )
    expected = {
        "type": "fill",
        "ts": ts,
        "decision_id": decision.id,
        "line_item_id": item_id,
        "campaign_id": campaign_id,
        "slot_id": slot_id,
        "price_micros": price,
        "currency": currency,
        "v": 1,
    }
    record = fill_record(decision)
    assert record.startswith(b'{"type":"fill"')
    assert orjson.loads(record) == expected


KEY = b"k" * 32
EVENTS = ("impression", "start", "complete", "click", "error", "custom-event")


@given(
    decision=st.text("0123456789abcdef", min_size=1, max_size=32),
    ids=st.lists(st.integers(0, 2**31 - 1), min_size=4, max_size=4),
    price=st.integers(0, 2**63 - 1),
    listener=st.text("abcXYZ019._~:@-", min_size=1, max_size=128),
    expires=st.integers(0, 2**40),
)
def test_urls_carry_the_tag_of_each_event_as_a_plain_keyed_blake2b(
    decision, ids, price, listener, expires
):
    signer = UrlSigner(KEY, "https://ads.example.com/")
    claims = TrackingClaims(decision, *ids, price, "USD", listener, expires)
    urls = signer.urls(EVENTS, claims)
    root = hashlib.blake2b(KEY, digest_size=64, person=b"backbeat-track").digest()
    for event in EVENTS:
        params = {key: value[0] for key, value in parse_qs(urlsplit(urls[event]).query).items()}
        assert urls[event].startswith(f"https://ads.example.com/t/{event}?")
        values = [params[name] for name in ("d", "li", "c", "cr", "s", "p", "cur", "l", "x")]
        message = "".join(f"{len(value)}:{value}" for value in [*values, event]).encode()
        tag = hashlib.blake2b(message, key=root[:32], digest_size=16).digest()
        assert params["sig"] == base64.urlsafe_b64encode(tag).rstrip(b"=").decode()
        pad = hashlib.blake2b(decision.encode(), key=root[32:], digest_size=8).digest()
        sealed = base64.urlsafe_b64decode(params["p"] + "=")
        assert int.from_bytes(sealed, "big") ^ int.from_bytes(pad, "big") == price
        assert signer.verify(event, params, 0) == claims

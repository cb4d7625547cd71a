"""Ad pods on the pure decision path: sequence, count, durations and separation.

A pod holds at most ``max_ads`` ads, ``sequence`` 1..n, within the break's total duration
and each ad's min/max length, never two ads of one advertiser nor two sharing a top-level
IAB category (creative categories or the advertiser's own).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_decider_properties import (
    CPMS,
    SLOTS,
    T0,
    UNIT,
    Model,
    ad_requests,
    assert_eligible,
    cap_rules,
    creative,
    line_item,
    rank,
)

from backbeat.catalog.vocabulary import Tier
from backbeat.serving.decisions import Decider, Decision, top_category
from backbeat.serving.ledger import MemoryLedger
from backbeat.serving.request import AdRequest, PodRequest
from backbeat.serving.snapshot import CapRule, ServableCreative, ServableLineItem, Snapshot

SECOND = 1000


def pod_of(
    book: list[ServableLineItem], pod: PodRequest, listener: str = "ann", seed: int = 1
) -> list[Decision]:
    snapshot = Snapshot.of(1, book, SLOTS)
    decider = Decider(MemoryLedger(), seed=seed)
    return decider.decide_pod(
        snapshot, snapshot.slots[1], AdRequest(slot_id=1, listener=listener), T0, pod
    )


def served(decisions: list[Decision]) -> list[tuple[int, int, int | None]]:
    return [
        (decision.line_item.id, decision.creative.duration_ms // SECOND, decision.sequence)
        for decision in decisions
        if decision.line_item is not None and decision.creative is not None
    ]


def spot(id: int, seconds: int, *categories: str) -> ServableCreative:
    return creative(id, seconds * SECOND, categories)


def test_a_pod_fills_in_priority_order_with_sequences():
    book = [line_item(n, cpm_micros=(20 - n) * UNIT, creatives=(spot(n, 15),)) for n in range(1, 6)]
    assert served(pod_of(book, PodRequest(max_ads=3))) == [(1, 15, 1), (2, 15, 2), (3, 15, 3)]
    # A single ad (the default request) carries no sequence.
    assert served(pod_of(book, PodRequest())) == [(1, 15, None)]


def test_the_break_duration_bounds_the_pod_and_shorter_ads_fill_the_rest():
    book = [
        line_item(1, cpm_micros=20 * UNIT, creatives=(spot(1, 30),)),
        line_item(2, cpm_micros=19 * UNIT, creatives=(spot(2, 30),)),
        line_item(3, cpm_micros=18 * UNIT, creatives=(spot(3, 20),)),
        line_item(4, cpm_micros=17 * UNIT, creatives=(spot(4, 10),)),
    ]
    pod = PodRequest(max_ads=4, max_duration_ms=70 * SECOND)
    # 30 + 30 = 60; item 3's 20 s would pass 70 s; item 4's 10 s ends exactly at 70 s.
    assert served(pod_of(book, pod)) == [(1, 30, 1), (2, 30, 2), (4, 10, 3)]


def test_each_ad_must_be_within_the_min_and_max_ad_length():
    book = [
        line_item(1, cpm_micros=20 * UNIT, creatives=(spot(1, 5),)),  # too short
        line_item(2, cpm_micros=19 * UNIT, creatives=(spot(2, 61),)),  # too long
        line_item(3, cpm_micros=18 * UNIT, creatives=(spot(3, 61), spot(30, 45))),  # one fits
        line_item(4, cpm_micros=17 * UNIT, creatives=(spot(4, 10),)),  # the minimum itself
        line_item(5, cpm_micros=16 * UNIT, creatives=(spot(5, 60),)),  # the maximum itself
    ]
    pod = PodRequest(max_ads=5, min_ad_ms=10 * SECOND, max_ad_ms=60 * SECOND)
    assert served(pod_of(book, pod)) == [(3, 45, 1), (4, 10, 2), (5, 60, 3)]


def test_nothing_fits_is_one_no_fill_with_a_reason():
    book = [line_item(1, creatives=(spot(1, 30),))]
    [decision] = pod_of(book, PodRequest(max_ads=3, min_ad_ms=31 * SECOND))
    assert decision.line_item is None
    assert decision.no_fill_reason == "creative-does-not-fit"


def test_one_ad_per_advertiser():
    book = [
        line_item(1, advertiser_id=7, cpm_micros=20 * UNIT, creatives=(spot(1, 15),)),
        line_item(2, advertiser_id=7, cpm_micros=19 * UNIT, creatives=(spot(2, 15),)),
        line_item(3, advertiser_id=8, cpm_micros=18 * UNIT, creatives=(spot(3, 15),)),
    ]
    assert served(pod_of(book, PodRequest(max_ads=3))) == [(1, 15, 1), (3, 15, 2)]


@pytest.mark.parametrize(
    ("first", "second", "separated"),
    [
        ({"creatives": ("IAB2-1",)}, {"creatives": ("IAB2-3",)}, True),  # same top level
        ({"creatives": ("IAB2",)}, {"creatives": ("IAB2-10",)}, True),
        ({"creatives": ("IAB2-1",)}, {"advertiser": "IAB2-7"}, True),  # advertiser's category
        ({"advertiser": "IAB8"}, {"creatives": ("IAB3-1", "IAB8-5")}, True),  # any creative
        ({"creatives": ("IAB2-1",)}, {"creatives": ("IAB20-1",)}, False),  # IAB20 is not IAB2
        ({"creatives": ("IAB1-1",)}, {"creatives": ("IAB11",)}, False),
        ({}, {"creatives": ("IAB2-1",)}, False),  # no categories: nothing to compete with
    ],
)
def test_competing_categories_never_share_a_pod(first, second, separated):
    def booked(id: int, cpm: int, categories: dict[str, Any]) -> ServableLineItem:
        return line_item(
            id,
            cpm_micros=cpm * UNIT,
            advertiser_category=categories.get("advertiser"),
            creatives=(spot(id, 15, *categories.get("creatives", ())),),
        )

    book = [booked(1, 20, first), booked(2, 19, second), line_item(3, creatives=(spot(3, 15),))]
    expected = [1, 3] if separated else [1, 2, 3]
    assert [id for id, _, _ in served(pod_of(book, PodRequest(max_ads=3)))] == expected


def test_a_capped_item_gives_its_place_to_the_next():
    capped = line_item(
        1, cpm_micros=20 * UNIT, caps=(CapRule("li:1", 1, None),), creatives=(spot(1, 15),)
    )
    book = [
        capped,
        *(line_item(n, cpm_micros=(20 - n) * UNIT, creatives=(spot(n, 15),)) for n in (2, 3)),
    ]
    snapshot = Snapshot.of(1, book, SLOTS)
    decider = Decider(MemoryLedger(), seed=1)
    request = AdRequest(slot_id=1, listener="ann")
    pod = PodRequest(max_ads=2)
    first = decider.decide_pod(snapshot, snapshot.slots[1], request, T0, pod)
    again = decider.decide_pod(snapshot, snapshot.slots[1], request, T0, pod)
    assert served(first) == [(1, 15, 1), (2, 15, 2)]
    assert served(again) == [(2, 15, 1), (3, 15, 2)]


# --- the property ----------------------------------------------------------------------

CATEGORIES = ["IAB2-1", "IAB2-3", "IAB2", "IAB20-1", "IAB3-5", "IAB9"]
DURATIONS = [5, 10, 15, 20, 30, 45, 60, 90]


@st.composite
def creative_sets(draw: st.DrawFn) -> tuple[ServableCreative, ...]:
    count = draw(st.integers(1, 3))
    return tuple(
        spot(
            draw(st.integers(1, 10**6)),
            draw(st.sampled_from(DURATIONS)),
            *draw(st.lists(st.sampled_from(CATEGORIES), max_size=1)),
        )
        for _ in range(count)
    )


@st.composite
def pods(draw: st.DrawFn) -> PodRequest:
    low = draw(st.none() | st.sampled_from([5, 10, 15, 30]))
    high = draw(st.none() | st.sampled_from([15, 30, 45, 60, 90]))
    if low is not None and high is not None and low > high:
        low, high = high, low
    total = draw(st.none() | st.sampled_from([15, 30, 45, 60, 75, 120, 240]))
    return PodRequest(
        max_ads=draw(st.sampled_from([4, 3, 2, 6, 1])),
        max_duration_ms=None if total is None else total * SECOND,
        min_ad_ms=None if low is None else low * SECOND,
        max_ad_ms=None if high is None else high * SECOND,
    )


usd_requests = ad_requests.filter(lambda found: found[0].slot_id != 3)
# Broad targeting, so that most breaks have several candidates to separate.
broad_targeting = st.sampled_from(
    [{}, {}, {"countries": ["US"]}, {"segments": ["auto"]}, {"not": {"devices": ["mobile"]}}]
)


@st.composite
def pod_books(draw: st.DrawFn) -> list[ServableLineItem]:
    """Live USD line items of a few advertisers (one campaign each), with categories."""
    advertisers = range(1, draw(st.integers(3, 6)) + 1)
    categories = {id: draw(st.sampled_from([None, None, "IAB2-7", "IAB9-1"])) for id in advertisers}
    campaign_caps = {id: draw(cap_rules(f"c:{id}")) for id in advertisers}
    items = []
    for id in range(1, draw(st.integers(2, 12)) + 1):
        advertiser = draw(st.sampled_from(advertisers))
        items.append(
            line_item(
                id,
                tier=draw(st.sampled_from(list(Tier))),
                campaign_id=advertiser,
                advertiser_id=advertiser,
                advertiser_category=categories[advertiser],
                cpm_micros=draw(st.sampled_from(CPMS)),
                budget_micros=draw(st.none() | st.sampled_from([50_000, 150_000])),
                campaign_budget_micros=UNIT,
                goal_impressions=draw(st.none() | st.integers(1, 4)),
                caps=draw(cap_rules(f"li:{id}")) + campaign_caps[advertiser],
                targeting=draw(broad_targeting),
                creatives=draw(creative_sets()),
            )
        )
    return items


def top_categories(item: ServableLineItem) -> set[str]:
    return {top_category(category) for category in item.categories}


def fits(item: ServableLineItem, pod: PodRequest, used_ms: int) -> bool:
    return any(
        (pod.min_ad_ms is None or c.duration_ms >= pod.min_ad_ms)
        and (pod.max_ad_ms is None or c.duration_ms <= pod.max_ad_ms)
        and (pod.max_duration_ms is None or used_ms + c.duration_ms <= pod.max_duration_ms)
        for c in item.creatives
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    book=pod_books(),
    requests=st.lists(st.tuples(usd_requests, pods()), min_size=1, max_size=12),
    seed=st.integers(0, 2**32),
)
def test_pods_respect_every_constraint(book, requests, seed):
    snapshot = Snapshot.of(1, book, SLOTS)
    decider = Decider(MemoryLedger(), seed=seed)
    model = Model()
    now = T0
    for (request, step), pod in requests:
        now += step
        slot = snapshot.slots[request.slot_id]
        decisions = decider.decide_pod(snapshot, slot, request, now, pod)
        filled = [decision for decision in decisions if decision.line_item is not None]
        if filled:
            assert len(filled) == len(decisions) <= pod.max_ads
        else:
            assert len(decisions) == 1 and decisions[0].no_fill_reason
        if pod.max_ads > 1:
            assert [decision.sequence for decision in filled] == list(range(1, len(filled) + 1))
        used_ms = 0
        advertisers: set[int] = set()
        categories: set[str] = set()
        for position, decision in enumerate(filled):
            item, chosen = decision.line_item, decision.creative
            assert item is not None and chosen is not None
            assert_eligible(decision, model, slot, request, now)
            if position == 0:
                # The first ad is the best one free to serve that has a fitting creative.
                best = [
                    other
                    for other in book
                    if model.eligible(other, slot, request, now)
                    and model.uncapped(other, request.listener, now)
                    and fits(other, pod, 0)
                ]
                assert rank(item) == min(rank(other) for other in best)
            assert pod.min_ad_ms is None or chosen.duration_ms >= pod.min_ad_ms
            assert pod.max_ad_ms is None or chosen.duration_ms <= pod.max_ad_ms
            assert item.advertiser_id not in advertisers
            assert categories.isdisjoint(top_categories(item))
            used_ms += chosen.duration_ms
            advertisers.add(item.advertiser_id)
            categories |= top_categories(item)
            model.record(item, request.listener, decision.price_micros, now)
        assert pod.max_duration_ms is None or used_ms <= pod.max_duration_ms
        assert len({decision.id for decision in decisions}) == len(decisions)
        model.assert_within_limits(book)
        if len(filled) < pod.max_ads:
            # Greedy and complete: nothing left could have joined the pod.
            joinable = [
                other
                for other in book
                if model.eligible(other, slot, request, now)
                and model.uncapped(other, request.listener, now)
                and other.advertiser_id not in advertisers
                and categories.isdisjoint(top_categories(other))
                and fits(other, pod, used_ms)
            ]
            assert not joinable, (joinable, decisions)

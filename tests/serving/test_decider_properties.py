"""Properties of the pure decision path: ``Decider`` over a ``Snapshot`` with a ``MemoryLedger``.

Random books (tiers, CPMs, flights, currencies, targeting, caps per line item and
campaign, lifetime, daily and campaign budgets, goals) meet random request sequences on a
moving clock. An independent model of delivery says what was eligible before each
decision; the decider must never choose outside it, never pass a cap, budget or goal,
respect tier order, and decide the same way given the same seed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbeat.catalog.vocabulary import TIER_RANK, AuctionType, Tier
from backbeat.serving.decisions import Decider, Decision
from backbeat.serving.ledger import MemoryLedger
from backbeat.serving.request import AdRequest, PodRequest, request_attributes
from backbeat.serving.snapshot import (
    CapRule,
    ServableCreative,
    ServableLineItem,
    ServableSlot,
    Snapshot,
)
from backbeat.serving.snapshot import cap_rules as cap_rules_of
from backbeat.serving.targeting_index import compile_predicate

T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC
HOUR = 3600.0
DAY = 86_400.0
UNIT = 1_000_000  # one currency unit in micros
EVERY_KEY = frozenset({"*"})


def creative(
    id: int, duration_ms: int = 30_000, categories: tuple[str, ...] = ()
) -> ServableCreative:
    return ServableCreative(
        id=id,
        name=f"spot {id}",
        media_url=f"https://cdn.example.com/{id}.mp3",
        mime_type="audio/mpeg",
        duration_ms=duration_ms,
        bitrate_kbps=128,
        click_url=None,
        categories=categories,
    )


def line_item(id: int, **fields: Any) -> ServableLineItem:
    """A servable line item with sensible defaults; any field may be overridden."""
    tier = str(fields.pop("tier", Tier.NON_GUARANTEED))
    values: dict[str, Any] = {
        "id": id,
        "campaign_id": 1000 + id,
        "advertiser_id": 5000 + id,
        "advertiser_name": f"Advertiser {id}",
        "name": f"li {id}",
        "tier": tier,
        "tier_rank": TIER_RANK[tier],
        "cpm_micros": 10 * UNIT,
        "currency": "USD",
        "budget_micros": None,
        "daily_budget_micros": None,
        "campaign_budget_micros": 10**9 * UNIT,
        "goal_impressions": None,
        "pacing": "asap",
        "caps": (),
        "start_ts": T0 - 30 * DAY,
        "end_ts": T0 + 30 * DAY,
        "targeting": {},
        "creatives": (creative(id),),
        "advertiser_category": None,
    }
    values.update(fields)
    return ServableLineItem(**values)


def ad_slot(id: int = 1, **fields: Any) -> ServableSlot:
    values: dict[str, Any] = {
        "id": id,
        "name": f"slot {id}",
        "surface": "podcast",
        "position": "pre_roll",
        "reserve_micros": 0,
        "currency": "USD",
        "reserve_by_country": {},
        "auction": AuctionType.SECOND_PRICE,
    }
    values.update(fields)
    return ServableSlot(**values)


# --- an independent model of delivery ------------------------------------------------


def cap_key(rule: CapRule, listener: str, now: float) -> tuple[str, int | None, str, int]:
    """One counter per scope, window length, listener and window (fixed, UTC-aligned)."""
    if rule.window_seconds is None:
        return rule.scope, None, listener, -1
    start = int(now // rule.window_seconds) * rule.window_seconds
    return rule.scope, rule.window_seconds, listener, start


def attributes(slot: ServableSlot, request: AdRequest, now: float) -> dict[str, Any]:
    return _attributes(slot.surface, slot.position, request, now)


@lru_cache(maxsize=4096)
def _attributes(surface: str, position: str, request: AdRequest, now: float) -> dict[str, Any]:
    return request_attributes(request, surface, position, now, EVERY_KEY)


_predicates: dict[int, tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = {}


def matches(item: ServableLineItem, found: dict[str, Any]) -> bool:
    """The item's targeting read as a plain boolean function (compiled once per expression)."""
    cached = _predicates.get(id(item.targeting))
    if cached is None or cached[0] is not item.targeting:
        cached = _predicates[id(item.targeting)] = (
            item.targeting,
            compile_predicate(item.targeting),
        )
    return cached[1](found)


@dataclass
class Model:
    """What has been delivered, counted apart from the ledger."""

    caps: dict[tuple[str, int | None, str, int], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    spend: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    daily: dict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))
    campaign_spend: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    impressions: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def eligible(
        self, item: ServableLineItem, slot: ServableSlot, request: AdRequest, now: float
    ) -> bool:
        """Everything but caps: targeting, flight, currency, reserve, budgets and goal."""
        if not matches(item, attributes(slot, request, now)):
            return False
        if not item.start_ts <= now < item.end_ts or item.currency != slot.currency:
            return False
        if not item.is_house and item.cpm_micros < slot.reserve_for(request.country):
            return False
        return self.affordable(item, now)

    def affordable(self, item: ServableLineItem, now: float) -> bool:
        # An impression may cost up to its bid, so budgets must leave room for the bid.
        price, day = item.cpm_micros, int(now // DAY)
        if item.goal_impressions is not None and self.impressions[item.id] >= item.goal_impressions:
            return False
        if (
            item.budget_micros is not None
            and self.spend[item.id] + price > item.budget_micros * 1000
        ):
            return False
        if (
            item.daily_budget_micros is not None
            and self.daily[(item.id, day)] + price > item.daily_budget_micros * 1000
        ):
            return False
        return self.campaign_spend[item.campaign_id] + price <= item.campaign_budget_micros * 1000

    def uncapped(self, item: ServableLineItem, listener: str, now: float) -> bool:
        return all(self.caps[cap_key(rule, listener, now)] < rule.count for rule in item.caps)

    def record(self, item: ServableLineItem, listener: str, price: int, now: float) -> None:
        for rule in item.caps:
            self.caps[cap_key(rule, listener, now)] += 1
        self.spend[item.id] += price
        self.daily[(item.id, int(now // DAY))] += price
        self.campaign_spend[item.campaign_id] += price
        self.impressions[item.id] += 1

    def assert_within_limits(self, book: list[ServableLineItem]) -> None:
        rules = {
            (rule.scope, rule.window_seconds): rule.count for item in book for rule in item.caps
        }
        for (scope, window, _listener, _start), served in self.caps.items():
            assert served <= rules[(scope, window)], (scope, window)
        campaign_budgets = {item.campaign_id: item.campaign_budget_micros for item in book}
        for campaign_id, spent in self.campaign_spend.items():
            assert spent <= campaign_budgets[campaign_id] * 1000
        for item in book:
            if item.budget_micros is not None:
                assert self.spend[item.id] <= item.budget_micros * 1000
            if item.goal_impressions is not None:
                assert self.impressions[item.id] <= item.goal_impressions
            if item.daily_budget_micros is not None:
                for (item_id, _day), spent in self.daily.items():
                    assert item_id != item.id or spent <= item.daily_budget_micros * 1000


def rank(item: ServableLineItem) -> tuple[int, int]:
    return item.tier_rank, -item.cpm_micros


# --- random books and requests -------------------------------------------------------

LISTENERS = ["ann", "bob", "cy"]
COUNTRIES = ["US", "GB", "DE"]
SEGMENTS = ["auto", "runner", "parent"]
ZONES = ["America/New_York", "Asia/Tokyo", "Europe/London"]
CPMS = [0, UNIT // 2, 2 * UNIT, 5 * UNIT, 5 * UNIT, 10 * UNIT, 12_345_678, 40 * UNIT]
SLOTS = [
    ad_slot(1, reserve_micros=0, surface="music_free", position="interstitial"),
    ad_slot(2, reserve_micros=5 * UNIT, reserve_by_country={"GB": 2 * UNIT, "DE": 11 * UNIT}),
    ad_slot(
        3,
        reserve_micros=UNIT,
        currency="EUR",
        position="mid_roll",
        auction=AuctionType.FIRST_PRICE,
    ),
]


def _subset(values: list[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=len(values), unique=True)


_leaf = st.one_of(
    _subset(COUNTRIES).map(lambda found: {"countries": found}),
    _subset(SEGMENTS).map(lambda found: {"segments": found}),
    _subset(["mobile", "desktop"]).map(lambda found: {"devices": found}),
    _subset([7, 14, 15, 23]).map(lambda found: {"dayparts": found}),
)
_tests = {
    "countries": _subset(COUNTRIES),
    "devices": _subset(["mobile", "desktop", "smart_speaker"]),
    "segments": _subset(SEGMENTS),
    "slots": _subset([1, 2, 3]),
    "positions": _subset(["pre_roll", "mid_roll", "interstitial"]),
    "dayparts": _subset([0, 8, 14, 15, 23]),
    "weekdays": _subset(["sun", "mon", "tue"]),
    "not": _leaf,
    "any": st.lists(_leaf, min_size=1, max_size=3),
}
# Mostly broad targeting, so that several items compete for most requests.
targetings = st.one_of(
    st.just({}),
    st.sampled_from(sorted(_tests)).flatmap(
        lambda key: _tests[key].map(lambda found: {key: found})
    ),
    st.fixed_dictionaries({}, optional=_tests),
)


def cap_rules(scope: str) -> st.SearchStrategy[tuple[CapRule, ...]]:
    rule = st.builds(
        CapRule,
        scope=st.just(scope),
        count=st.integers(1, 3),
        window_seconds=st.sampled_from([None, 60, 3600, 86400]),
    )
    # One rule per window length, as snapshot.cap_rules builds them; windows of different
    # lengths that start at the same second must still count apart.
    return st.lists(rule, max_size=3, unique_by=lambda found: found.window_seconds).map(tuple)


@dataclass(frozen=True)
class Campaign:
    id: int
    advertiser_id: int
    budget_micros: int
    caps: tuple[CapRule, ...]
    currency: str
    start_ts: float
    end_ts: float


@st.composite
def campaigns(draw: st.DrawFn, id: int) -> Campaign:
    start = T0 + draw(st.integers(-2 * int(DAY), 3 * int(HOUR)))
    end = start + draw(st.integers(int(HOUR), 3 * int(DAY)))
    if draw(st.booleans()):
        start, end = T0 - 2 * DAY, T0 + 3 * DAY  # live for the whole run
    return Campaign(
        id=id,
        advertiser_id=draw(st.integers(1, 4)),
        budget_micros=draw(st.sampled_from([0, 20_000, 100_000, 400_000, UNIT, UNIT, 10 * UNIT])),
        caps=draw(cap_rules(f"c:{id}")),
        currency=draw(st.sampled_from(["USD", "USD", "EUR"])),
        start_ts=start,
        end_ts=end,
    )


@st.composite
def books(
    draw: st.DrawFn,
    *,
    pacings: tuple[str, ...] = ("asap",),
    max_items: int = 10,
    creatives: st.SearchStrategy[tuple[ServableCreative, ...]] | None = None,
    categories: st.SearchStrategy[str | None] = st.none(),
) -> list[ServableLineItem]:
    pool = [draw(campaigns(id)) for id in range(1, draw(st.integers(1, 4)) + 1)]
    advertiser_categories = {campaign.advertiser_id: draw(categories) for campaign in pool}
    items = []
    for id in range(1, draw(st.integers(1, max_items)) + 1):
        campaign = draw(st.sampled_from(pool))
        tier = draw(st.sampled_from(list(Tier)))
        items.append(
            line_item(
                id,
                tier=tier,
                campaign_id=campaign.id,
                advertiser_id=campaign.advertiser_id,
                advertiser_category=advertiser_categories[campaign.advertiser_id],
                cpm_micros=draw(st.sampled_from(CPMS)),
                currency=campaign.currency,
                budget_micros=draw(st.none() | st.sampled_from([0, 10_000, 50_000, 150_000])),
                daily_budget_micros=draw(st.none() | st.sampled_from([0, 10_000, 30_000])),
                campaign_budget_micros=campaign.budget_micros,
                goal_impressions=draw(st.none() | st.integers(1, 4)),
                pacing=draw(st.sampled_from(pacings)),
                caps=draw(cap_rules(f"li:{id}")) + campaign.caps,
                start_ts=campaign.start_ts,
                end_ts=campaign.end_ts,
                targeting=draw(targetings),
                creatives=draw(creatives) if creatives is not None else (creative(id),),
            )
        )
    return items


ad_requests = st.tuples(
    st.builds(
        AdRequest,
        slot_id=st.sampled_from([slot.id for slot in SLOTS]),
        listener=st.sampled_from(LISTENERS),
        country=st.none() | st.sampled_from(COUNTRIES),
        device=st.none() | st.sampled_from(["mobile", "desktop"]),
        segments=st.lists(st.sampled_from(SEGMENTS), max_size=3, unique=True).map(tuple),
        timezone=st.none() | st.sampled_from(ZONES),
    ),
    st.sampled_from(
        [0.0, 0.0, 1.0, 30.0, 61.0, 600.0, HOUR, 6 * HOUR, DAY]
    ),  # clock step before it
)


def assert_eligible(
    decision: Decision, model: Model, slot: ServableSlot, request: AdRequest, now: float
) -> None:
    """A chosen item was eligible and under its caps before the decision; its price is sound."""
    item = decision.line_item
    assert item is not None and decision.creative in item.creatives
    assert model.eligible(item, slot, request, now), item
    assert model.uncapped(item, request.listener, now), item
    reserve = slot.reserve_for(request.country)
    if item.tier != Tier.NON_GUARANTEED or slot.auction == AuctionType.FIRST_PRICE:
        assert decision.price_micros == item.cpm_micros
    else:
        assert reserve <= decision.price_micros <= item.cpm_micros


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    book=books(),
    requests=st.lists(ad_requests, min_size=5, max_size=40),
    seed=st.integers(0, 2**32),
)
def test_decisions_never_break_a_rule_and_respect_tier_order(book, requests, seed):
    snapshot = Snapshot.of(1, book, SLOTS)
    ledger = MemoryLedger()
    decider = Decider(ledger, seed=seed)
    model = Model()
    now = T0 - DAY
    for request, step in requests:
        now += step
        slot = snapshot.slots[request.slot_id]
        available = [
            item
            for item in book
            if model.eligible(item, slot, request, now)
            and model.uncapped(item, request.listener, now)
        ]
        decision = decider.decide(snapshot, slot, request, now)
        assert decision.filled == (decision.no_fill_reason is None)
        if decision.line_item is None:
            assert not available, (available, decision.no_fill_reason)
            continue
        assert_eligible(decision, model, slot, request, now)
        # Tier order, then CPM: nothing better was free to serve (ties may go either way).
        assert rank(decision.line_item) == min(rank(item) for item in available)
        model.record(decision.line_item, request.listener, decision.price_micros, now)
        model.assert_within_limits(book)
        delivered = ledger.delivery(decision.line_item, now)
        assert (delivered.spend_units, delivered.impressions, delivered.today_units) == (
            model.spend[decision.line_item.id],
            model.impressions[decision.line_item.id],
            model.daily[(decision.line_item.id, int(now // DAY))],
        )


def run(
    book: list[ServableLineItem], requests: list[tuple[AdRequest, float]], seed: int
) -> list[tuple[Any, ...]]:
    snapshot = Snapshot.of(1, book, SLOTS)
    decider = Decider(MemoryLedger(), seed=seed)
    now = T0 - DAY
    outcome = []
    for request, step in requests:
        now += step
        slot = snapshot.slots[request.slot_id]
        for decision in decider.decide_pod(snapshot, slot, request, now, PodRequest(max_ads=2)):
            outcome.append(
                (
                    decision.line_item and decision.line_item.id,
                    decision.creative and decision.creative.id,
                    decision.price_micros,
                    decision.no_fill_reason,
                    decision.sequence,
                )
            )
    return outcome


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    book=books(
        pacings=("asap", "even"),
        creatives=st.lists(
            st.sampled_from([creative(1), creative(2, 15_000), creative(3, 20_000)]),
            min_size=1,
            max_size=3,
            unique=True,
        ).map(tuple),
    ),
    requests=st.lists(ad_requests, min_size=1, max_size=30),
    seed=st.integers(0, 2**32),
)
def test_the_same_seed_and_requests_decide_the_same(book, requests, seed):
    # Equal CPMs (ties), even pacing (coins) and creative rotation all draw on the seed.
    assert run(book, requests, seed) == run(book, requests, seed)


def tied_winners(count: int, seed: int, requests: int = 60) -> list[int]:
    book = [line_item(id, cpm_micros=5 * UNIT) for id in range(1, count + 1)]
    snapshot = Snapshot.of(1, book, SLOTS)
    decider = Decider(MemoryLedger(), seed=seed)
    found = []
    for n in range(requests):
        request = AdRequest(slot_id=1, listener=f"l{n}")
        decision = decider.decide(snapshot, snapshot.slots[1], request, T0)
        assert decision.line_item is not None
        found.append(decision.line_item.id)
    return found


def test_ties_break_by_the_seed_and_repeat_with_it():
    first = tied_winners(2, seed=7)
    assert first == tied_winners(2, seed=7)
    assert set(first) == {1, 2}
    assert any(tied_winners(2, seed) != first for seed in range(8, 12))


def test_every_tied_item_gets_a_share():
    assert set(tied_winners(3, seed=7)) == {1, 2, 3}


CAP_KEY_BUG = (
    "BUG: ledger.MemoryLedger.acquire_caps keys cap counters by (scope, listener, window "
    "start) without the window length, so two caps of one scope whose windows start at the "
    "same second share one counter that every impression bumps twice: 3/hour with 5/60 "
    "minutes always, 1/minute with 3/hour in the first minute of every hour"
)


def served_at(caps: list[dict[str, Any]], times: list[float]) -> list[bool]:
    snapshot = Snapshot.of(1, [line_item(1, caps=cap_rules_of("li:1", caps))], SLOTS)
    decider = Decider(MemoryLedger(), seed=1)
    request = AdRequest(slot_id=1, listener="ann")
    return [decider.decide(snapshot, snapshot.slots[1], request, now).filled for now in times]


def test_two_caps_with_the_same_window_count_each_impression_once():
    caps = [{"count": 3, "period": "hour"}, {"count": 5, "period": "minute", "length": 60}]
    hour = T0 - T0 % HOUR
    assert served_at(caps, [hour + n for n in range(5)]) == [True, True, True, False, False]


def test_caps_of_one_scope_count_each_window_apart():
    caps = [{"count": 1, "period": "minute"}, {"count": 3, "period": "hour"}]
    hour = T0 - T0 % HOUR
    times = [hour + 5 + 60 * n for n in range(4)]  # the first in the hour's first minute
    assert served_at(caps, times) == [True, True, True, False]


def test_caps_of_one_scope_with_windows_starting_apart_both_hold():
    caps = [{"count": 1, "period": "minute"}, {"count": 3, "period": "hour"}]
    hour = T0 - T0 % HOUR
    times = [hour + 65 + 60 * n for n in range(4)]  # never in an hour's first minute
    assert served_at(caps, times) == [True, True, True, False]
    assert served_at(caps, [hour + 65, hour + 70]) == [True, False]  # one per minute

"""Pacing progress (hand-worked cases and properties) and the session cookie codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbeat.ui.pacing import pacing_progress
from backbeat.ui.session import LIFETIME_SECONDS, SessionCodec


@pytest.mark.parametrize(
    ("goal", "delivered", "elapsed", "status", "progress"),
    [
        (1000, 250, 0.25, "on-track", 1.0),  # a quarter delivered a quarter of the way in
        (1000, 200, 0.25, "behind", 0.8),  # 20% ÷ 25%
        (1000, 230, 0.25, "on-track", 0.92),  # within 10% of plan
        (1000, 300, 0.25, "ahead", 1.2),  # 30% ÷ 25%
        (1000, 100, 0.0, "not-started", None),
        (1000, 1000, 0.5, "met", 2.0),
        (1000, 800, 1.0, "ended", 0.8),
        (None, 500, 0.5, "unpaced", None),
    ],
)
def test_hand_worked_progress(goal, delivered, elapsed, status, progress):
    found = pacing_progress(goal=goal, delivered=delivered, elapsed_share=elapsed)
    assert found.status == status
    assert (
        found.progress == pytest.approx(progress)
        if progress is not None
        else found.progress is None
    )


@given(
    goal=st.integers(1, 10**9),
    delivered=st.integers(0, 10**9),
    more=st.integers(0, 10**6),
    elapsed=st.floats(0.01, 0.99),
)
def test_delivering_more_never_looks_worse(goal, delivered, more, elapsed):
    order = ["behind", "on-track", "ahead", "met"]
    before = pacing_progress(goal=goal, delivered=delivered, elapsed_share=elapsed)
    after = pacing_progress(goal=goal, delivered=delivered + more, elapsed_share=elapsed)
    assert order.index(after.status) >= order.index(before.status)
    if before.status != "met":
        assert before.progress == pytest.approx(delivered / goal / elapsed)


CODEC = SessionCodec(b"k" * 32)


@given(advertiser=st.one_of(st.none(), st.integers(1, 2**31 - 1)), now=st.floats(0, 4e9))
def test_a_session_round_trips_until_it_expires(advertiser, now):
    session = CODEC.new(
        admin=advertiser is None, advertiser_id=advertiser, key_id=advertiser, admin_key="admin",
        now=now,
    )  # fmt: skip
    token = CODEC.encode(session)
    assert CODEC.decode(token, now) == session
    assert CODEC.decode(token, int(now) + LIFETIME_SECONDS) is None
    assert SessionCodec(b"j" * 32).decode(token, now) is None  # another server's key


def test_csrf_tokens_differ_per_session_and_check_in_constant_time():
    a = CODEC.new(admin=True, advertiser_id=None, key_id=None, admin_key="admin", now=0)
    b = CODEC.new(admin=False, advertiser_id=7, key_id=3, admin_key="admin", now=0)
    assert CODEC.csrf_token(a) != CODEC.csrf_token(b)
    assert CODEC.csrf_ok(a, CODEC.csrf_token(a))
    assert not CODEC.csrf_ok(a, CODEC.csrf_token(b))
    assert not CODEC.csrf_ok(a, None) and not CODEC.csrf_ok(a, "é")


def test_an_advertiser_session_without_an_advertiser_is_refused():
    with pytest.raises(ValueError):
        CODEC.new(admin=False, advertiser_id=None, key_id=3, admin_key="admin", now=0)


def _diagnose(**changes):
    from datetime import UTC, datetime
    from decimal import Decimal
    from types import SimpleNamespace

    from backbeat.ui.diagnosis import diagnose

    item = SimpleNamespace(status="active", budget=Decimal(100), goal_impressions=1000)
    campaign = SimpleNamespace(
        status="active",
        start_at=datetime(2026, 1, 1, tzinfo=UTC),
        end_at=datetime(2026, 2, 1, tzinfo=UTC),
        total_budget=Decimal(500),
    )
    values = {
        "item": item, "campaign": campaign, "active_creatives": 1, "spend": Decimal(10),
        "campaign_spend": Decimal(10), "impressions": 100,
        "progress": pacing_progress(goal=1000, delivered=500, elapsed_share=0.5),
        "probability": 0.5, "now": datetime(2026, 1, 16, tzinfo=UTC),
    }  # fmt: skip
    for key, value in changes.items():
        if "." in key:
            obj, attr = key.split(".")
            setattr(values[obj], attr, value)
        else:
            values[key] = value
    return diagnose(**values)


def test_diagnosis_names_what_stops_delivery():
    from datetime import UTC, datetime
    from decimal import Decimal

    assert _diagnose() == []
    assert _diagnose(**{"item.status": "paused"}) == ["the line item is paused"]
    assert _diagnose(active_creatives=0) == ["no active creative: it cannot serve until it has one"]
    assert _diagnose(spend=Decimal(100)) == ["its budget is spent"]
    assert _diagnose(now=datetime(2026, 3, 1, tzinfo=UTC)) == ["the flight has ended"]
    behind = pacing_progress(goal=1000, delivered=100, elapsed_share=0.5)
    assert "too little matching supply" in _diagnose(progress=behind, probability=1.0)[0]
    assert _diagnose(progress=behind, probability=0.4) == ["behind plan: pacing is speeding it up"]

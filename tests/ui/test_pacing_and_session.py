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

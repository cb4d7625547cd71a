"""``SeenIds`` against a plain set of (id, hour): same answers through adds, lookups, sealing,
late arrivals and forgetting."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.serving.seen_ids import HOUR, SeenIds

T0 = 1_790_000_000.0
ids = st.sampled_from([f"{n:028x}" for n in range(40)] + ["", "a", "0" * 32])
offsets = st.floats(0, 30 * HOUR, allow_nan=False)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), ids, offsets),
        st.tuples(st.just("seen"), ids, offsets),
        st.tuples(st.just("forget"), st.floats(0, 8 * HOUR), st.floats(0, 2 * HOUR)),
    ),
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(steps=steps, seal_step=st.sampled_from([1, 2, 3, 50_000]))
def test_answers_equal_a_plain_set_of_ids_and_hours(steps, seal_step):
    """A small ``seal_step`` leaves hours half sealed and sets half freed between calls."""
    seen = SeenIds(seal_step=seal_step)
    reference: set[tuple[str, int]] = set()
    now = T0
    for kind, *args in steps:
        if kind == "add":
            decision_id, offset = args
            ts = T0 + offset
            if (decision_id, int(ts // HOUR)) not in reference:  # as the ledger calls it
                seen.add(decision_id, ts)
                reference.add((decision_id, int(ts // HOUR)))
        elif kind == "seen":
            decision_id, offset = args
            ts = T0 + offset
            assert seen.seen(decision_id, ts) == ((decision_id, int(ts // HOUR)) in reference)
        else:
            advance, keep = args
            now += advance
            oldest = now - keep
            seen.forget_before(oldest, now)
            reference = {(i, hour) for i, hour in reference if (hour + 1) * HOUR > oldest}
        assert len(seen) == len(reference)


def test_hours_past_are_sealed_compactly_a_step_a_call_and_late_ids_still_count():
    seen = SeenIds(seal_step=1000)
    for n in range(5000):
        seen.add(f"{n:028x}", T0 + n * 0.01)
    calls = 0
    while calls < 10:  # that hour is two hours past: sealed, 1,000 ids a call
        seen.forget_before(T0 - HOUR, T0 + 3 * HOUR)
        calls += 1
        assert seen.seen(f"{4999:028x}", T0 + 49.99) and len(seen) == 5000
        if not seen._sealing:
            break
    assert calls == 5 and not seen._open
    assert sum(len(keys) for keys in seen._sealed.values()) == 5000
    assert not seen.settled  # the set it was copied from is released a step a call too
    while not seen.settled:
        seen.forget_before(T0 - HOUR, T0 + 3 * HOUR)
    assert all(keys.nbytes == 8 * len(keys) for keys in seen._sealed.values())
    assert seen.seen("0" * 24 + "0fa0", T0 + 40.0)  # id 4000, at its own hour
    late = [f"late-{n}" for n in range(3000)]  # pixels hours after their decisions
    for decision_id in late:
        seen.add(decision_id, T0 + 1.0)
    seen.forget_before(T0 - HOUR, T0 + 3 * HOUR)  # enough of them: merged into the array
    assert not seen._late and all(seen.seen(decision_id, T0 + 1.0) for decision_id in late)
    assert len(seen) == 8000 and not seen.seen("never", T0 + 1.0)


def test_a_restart_seals_a_week_of_hours_within_one_budget_per_call():
    """After reading a week of log at start, every past hour is sealing at once: each call
    still copies at most its budget of ids, oldest hours first, and answers stay exact."""
    seen = SeenIds(seal_step=50)
    added = [(f"{hour:08x}{n:020x}", T0 + hour * HOUR + n) for hour in range(20) for n in range(30)]
    for decision_id, ts in added:
        seen.add(decision_id, ts)
    now = T0 + 21 * HOUR
    copied_before = 0
    while not seen.settled or seen._open:
        seen.forget_before(T0 - HOUR, now)
        copied = sum(len(sealing.done) for sealing in seen._sealing.values())
        copied += sum(len(keys) for keys in seen._sealed.values())
        assert copied - copied_before <= 50
        copied_before = copied
        assert all(seen.seen(decision_id, ts) for decision_id, ts in added[::7])
    assert len(seen._sealed) == 20 and len(seen) == 600

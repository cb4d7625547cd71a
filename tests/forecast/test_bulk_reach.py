"""The bulk path's reach step: ``reach_bases`` and the sketches' cached audiences answer
what ``reach_basis`` and an uncached ``audience`` answer, and both match brute force."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, defaultdict
from functools import cache

import numpy as np
import pytest
from forecast_fixtures import DAY, NOW, forecaster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbeat.forecast.reach import reach_bases, reach_basis
from backbeat.forecast.rowset import RowSet
from backbeat.forecast.service import Forecaster
from backbeat.forecast.sketches import AudienceSketches

TARGETINGS = [
    {},
    {"countries": ["US"]},
    {"countries": ["GB", "DE"], "devices": ["mobile"]},
    {"genres": ["news", "comedy"], "segments": ["fitness"]},
    {"devices": ["car", "desktop"], "not": {"countries": ["US"]}},
    {"countries": ["SE"], "not": {"genres": ["pop"]}},
    {"countries": ["XX"]},  # matches nothing
]


@cache
def built() -> Forecaster:
    return forecaster()


@cache
def _rowsets() -> list[RowSet]:
    rows = built().bulk_rows
    assert rows is not None
    # Every row once (a log sampled by listener), as logged, and thinned within listeners
    # at mixed rates: weighted counts.
    rng = np.random.default_rng(3)
    thinned = dataclasses.replace(rows, rate=rng.choice([1.0, 0.5, 0.25], size=rows.size))
    return [dataclasses.replace(rows, rate=np.ones(rows.size)), rows, thinned]


def _brute_force(rowset: RowSet, matched: np.ndarray, since: float) -> dict[int, float]:
    """Requests per listener (1/rate each) among the matched rows at or after ``since``."""
    out: dict[int, float] = defaultdict(float)
    for row in matched.tolist():
        if rowset.ts[row] >= since:
            out[int(rowset.listener[row])] += 1.0 / float(rowset.rate[row])
    return dict(out)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(range(len(TARGETINGS))),
            st.sampled_from([0.0, 1800.0, 0.5 * DAY, DAY, 3.5 * DAY, 7 * DAY, 12 * DAY, 40 * DAY]),
        ),
        min_size=1,
        max_size=10,
    ),
    st.booleans(),
    st.sampled_from([0, 1, 2]),
)
def test_reach_bases_answer_what_reach_basis_answers(drafts, whole_days, which):
    rowset = _rowsets()[which]
    matched = [np.flatnonzero(rowset.matcher.match(TARGETINGS[t])) for t, _ in drafts]
    windows = [window for _, window in drafts]
    batch = reach_bases(rowset, matched, now=NOW, windows=windows, whole_days=whole_days)
    for rows, window, got in zip(matched, windows, batch, strict=True):
        want = reach_basis(rowset, rows, now=NOW, window_seconds=window, whole_days=whole_days)
        if want is None:
            assert got is None and rows.size == 0
            continue
        assert got is not None
        for name in ("rows", "listeners", "keep"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        np.testing.assert_allclose(got.per_listener, want.per_listener, rtol=1e-13)
        for name in ("length", "growth", "frequency_growth", "drift", "window_seconds"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-12, abs=1e-12)
        # Independently: the slice's listeners and their weighted request counts.
        counts = _brute_force(rowset, rows, NOW - got.length)
        if not counts:  # nothing recent: the whole history stands in
            counts = _brute_force(rowset, rows, -np.inf)
        assert got.listeners.tolist() == sorted(counts)
        assert got.per_listener.tolist() == pytest.approx([counts[k] for k in sorted(counts)])
        # ``inverse`` points every slice row at its listener.
        assert (got.listeners[got.inverse(rowset)] == rowset.listener[got.rows]).all()


def test_cached_audiences_are_the_uncached_ones():
    sketches = built().sketches
    assert isinstance(sketches, AudienceSketches)
    fresh = dataclasses.replace(sketches, _cache=OrderedDict(), _audiences=OrderedDict())
    for days in (1, 3, 7, sketches.days):
        for targeting in TARGETINGS:
            first = sketches.audience(targeting, days=days)
            entries = len(sketches._cache), len(sketches._audiences)
            again = sketches.audience(targeting, days=days, slots=None)
            assert again == first  # served from the cache: nothing new stored
            assert (len(sketches._cache), len(sketches._audiences)) == entries
            fresh._cache.clear()
            fresh._audiences.clear()
            assert fresh.audience(targeting, days=days) == first
    # Slots narrow the audience: not the cached whole-targeting answer.
    whole = sketches.audience({"countries": ["US"]}, days=7)
    narrowed = sketches.audience({"countries": ["US"]}, days=7, slots=[1])
    assert whole is not None and narrowed is not None and narrowed.estimate <= whole.estimate

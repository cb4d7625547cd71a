"""The supply sample: masks equal the ad server's predicate, weights scale back to totals,
listeners are kept whole, small strata stay represented."""

from __future__ import annotations

import numpy as np
from forecast_fixtures import NOW, small_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbeat.forecast.matching import Matcher
from backbeat.forecast.sample import draw_sample
from backbeat.forecast.synthetic import COUNTRIES, DEVICES, GENRES, SEGMENTS, synthetic_table
from backbeat.serving.targeting_index import compile_predicate

LEAVES = st.one_of(
    st.builds(
        lambda v: {"countries": v},
        st.lists(st.sampled_from([c for c, _ in COUNTRIES] + ["CA"]), min_size=1, max_size=3),
    ),
    st.builds(
        lambda v: {"devices": v},
        st.lists(st.sampled_from([d for d, _ in DEVICES] + ["tablet"]), min_size=1, max_size=2),
    ),
    st.builds(lambda v: {"genres": v}, st.lists(st.sampled_from(GENRES), min_size=1, max_size=3)),
    st.builds(
        lambda v: {"segments": v}, st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=2)
    ),
    st.builds(lambda v: {"dayparts": v}, st.lists(st.integers(0, 23), min_size=1, max_size=6)),
    st.builds(lambda v: {"slots": v}, st.lists(st.integers(1, 5), min_size=1, max_size=2)),
    st.builds(
        lambda v: {"weekdays": v},
        st.lists(st.sampled_from(["mon", "sat", "sun"]), min_size=1, max_size=2),
    ),
)
EXPRESSIONS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.builds(lambda e: {"not": e}, inner),
        st.builds(lambda es: {"all": es}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda es: {"any": es}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda a, b: {**a, **b}, inner, inner),
    ),
    max_leaves=6,
)

TABLE = synthetic_table(3000, days=7, end=NOW, seed=11)
ROWS = [TABLE.attributes(i) for i in range(TABLE.size)]
MATCHER = Matcher(TABLE)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS)
def test_masks_equal_the_ad_servers_compiled_predicate_row_by_row(expression):
    predicate = compile_predicate(expression)
    expected = np.array([predicate(row) for row in ROWS])
    assert np.array_equal(MATCHER.match(expression), expected), expression


def test_empty_targeting_admits_everything_and_unknown_values_nothing():
    assert MATCHER.match({}).all()
    assert not MATCHER.match({"countries": ["JP"]}).any()
    assert MATCHER.match({"not": {"countries": ["JP"]}}).all()


def test_weights_scale_back_to_the_logged_requests_and_listeners_are_kept_whole():
    table = small_table()
    sample = draw_sample(table, max_rows=10_000, min_rows=200, seed=1)
    assert 4_000 < sample.size < 20_000  # heavy listeners make the size vary
    logged = table.size / 0.1  # every logged row stands for 1/rate requests
    assert abs(sample.weight.sum() / logged - 1) < 0.1
    # Whole listeners: a kept listener keeps every one of their rows.
    kept = set(sample.table.listener.tolist())
    rows_per_listener = np.bincount(table.listener, minlength=len(table.listeners))
    kept_rows = np.bincount(sample.table.listener, minlength=len(table.listeners))
    assert all(kept_rows[code] == rows_per_listener[code] for code in kept)


def test_small_strata_keep_at_least_min_rows_worth_of_listeners():
    table = small_table()
    nz = table.vocab["countries"].codes["NZ"]  # the smallest market (4%)
    sample = draw_sample(table, max_rows=4_000, min_rows=1_000, seed=2)
    kept_nz = int((sample.table.single["countries"] == nz).sum())
    proportional = 4_000 * (table.single["countries"] == nz).mean()
    assert kept_nz > 3 * proportional  # oversampled, not 160 rows
    # ... and weighted back to its real size.
    real = (table.single["countries"] == nz).sum() / 0.1
    estimate = sample.weight[sample.table.single["countries"] == nz].sum()
    assert abs(estimate / real - 1) < 0.25

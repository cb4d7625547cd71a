"""Batched bulk forecasts (``forecast_many``) answer what one draft at a time answers.

The reference is ``Forecaster.forecast(query, bulk=True)``, the per-draft path (its own
sums, sampling error and contention code): every figure, interval, contention entry and
breakdown of the batch must equal it up to the order of float additions.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from forecast_fixtures import DAY, NOW, forecaster, guaranteed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbeat.errors import InvalidInput
from backbeat.forecast.matching import Matcher, bitmap_rows
from backbeat.forecast.service import Forecaster, ForecastQuery, ForecastResult
from backbeat.forecast.synthetic import COUNTRIES, DEVICES, GENRES, SEGMENTS, synthetic_table
from backbeat.serving.targeting_index import compile_predicate

FIGURES = ("matched", "possible", "available", "reach", "average_frequency", "clicks")
FIGURES += ("conversions",)


@cache
def booked_forecaster() -> Forecaster:
    """Overlapping sponsorship and guaranteed items, a real bulk subsample (not the sample)."""
    rng = np.random.default_rng(11)
    items = []
    for item_id in range(1, 41):
        targeting = {"countries": [COUNTRIES[int(rng.integers(0, 4))][0]]}
        if rng.random() < 0.4:
            targeting["devices"] = [DEVICES[int(rng.integers(0, 3))][0]]
        items.append(
            guaranteed(
                item_id,
                int(rng.integers(500, 20_000)),
                targeting,
                days=float(rng.uniform(2, 20)),
                start=NOW + float(rng.uniform(-2, 10)) * DAY,
                tier="sponsorship" if item_id % 5 == 0 else "guaranteed",
                advertiser_id=int(item_id % 3) + 1,
            )
        )
    built = forecaster(items, bulk_rows=4000, allocation_rows=1500)
    assert built.bulk_rows is not built.rows and built.booked.items
    return built


def _targeting(draw: st.DrawFn) -> dict:
    targeting: dict = {}
    if draw(st.booleans()):
        targeting["countries"] = draw(
            st.lists(st.sampled_from([c for c, _ in COUNTRIES]), min_size=1, max_size=3)
        )
    if draw(st.booleans()):
        targeting["devices"] = draw(
            st.lists(st.sampled_from([d for d, _ in DEVICES]), min_size=1, max_size=2)
        )
    if draw(st.booleans()):
        targeting["genres"] = draw(st.lists(st.sampled_from(GENRES), min_size=1, max_size=3))
    if draw(st.booleans()):
        targeting["segments"] = draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=2))
    if draw(st.integers(0, 4)) == 0:
        start = draw(st.integers(0, 20))
        targeting["dayparts"] = list(range(start, start + 4))
    if draw(st.integers(0, 4)) == 0:
        targeting["not"] = {"genres": ["news"]}
    if draw(st.integers(0, 5)) == 0:  # a residual: evaluated by the ad server's predicate
        targeting["any"] = [{"devices": ["mobile"]}, {"segments": ["gamers"]}]
    return targeting


@st.composite
def drafts(draw: st.DrawFn) -> ForecastQuery:
    start = NOW + draw(st.floats(-1.0, 16.0)) * DAY  # some start before now (clipped)
    length = draw(st.sampled_from([0.3, 1.0, 3.5, 7.0, 9.25, 20.0]))
    caps = []
    if draw(st.integers(0, 3)) == 0:
        caps = [
            {"count": draw(st.integers(1, 4)), "period": draw(st.sampled_from(["day", "week"]))}
        ]
    return ForecastQuery(
        start_at=start,
        end_at=max(start, NOW) + length * DAY + draw(st.integers(0, 3599)),
        tier=draw(st.sampled_from(["sponsorship", "guaranteed", "non_guaranteed", "house"])),
        targeting=_targeting(draw),
        frequency_caps=caps,
        goal_impressions=draw(st.one_of(st.none(), st.integers(1, 200_000))),
        slots=draw(st.one_of(st.none(), st.lists(st.integers(1, 4), min_size=1, max_size=2))),
        group_by=draw(st.sampled_from([(), (), (), ("day",), ("countries", "segments")])),
    )


def assert_same(batch: ForecastResult, single: ForecastResult) -> None:
    for name in FIGURES:
        got, want = getattr(batch, name), getattr(single, name)
        for part in ("value", "low", "high"):
            assert math.isclose(
                getattr(got, part), getattr(want, part), rel_tol=1e-9, abs_tol=1e-9
            ), (
                name,
                part,
            )
    assert [item for item, _ in batch.contending] == [item for item, _ in single.contending]
    for (_, got), (_, want) in zip(batch.contending, single.contending, strict=True):
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6)
    assert batch.breakdown.keys() == single.breakdown.keys()
    for key, rows in batch.breakdown.items():
        assert [row["key"] for row in rows] == [row["key"] for row in single.breakdown[key]]
        for got, want in zip(rows, single.breakdown[key], strict=True):
            assert got["matched"] == pytest.approx(want["matched"], rel=1e-9, abs=1e-3)
            assert got["available"] == pytest.approx(want["available"], rel=1e-9, abs=1e-3)
    assert batch.delivered == pytest.approx(single.delivered, rel=1e-9, abs=1e-9)
    assert batch.note == single.note


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(drafts(), min_size=2, max_size=12), st.sampled_from([None, 2]))
def test_a_batch_answers_what_each_draft_answers_alone(queries, advertiser_id):
    f = booked_forecaster()
    batch = f.forecast_many(queries, advertiser_id=advertiser_id)
    assert len(batch) == len(queries)
    for query, got in zip(queries, batch, strict=True):
        assert_same(got, f.forecast(query, advertiser_id=advertiser_id, bulk=True))


def test_many_drafts_in_shared_batches_match_and_contend():
    """Enough drafts that batches hold many of them (same window cycles and tier)."""
    f = booked_forecaster()
    rng = np.random.default_rng(5)
    queries = [
        ForecastQuery(
            start_at=NOW + float(rng.uniform(0, 3)) * DAY,
            end_at=NOW + float(rng.uniform(4, 6)) * DAY,
            tier="guaranteed" if i % 2 else "non_guaranteed",
            targeting={"countries": [COUNTRIES[i % 4][0]]},
        )
        for i in range(60)
    ]
    batch = f.forecast_many(queries)
    for query, got in zip(queries, batch, strict=True):
        assert_same(got, f.forecast(query, bulk=True))
    assert any(result.contending for result in batch)  # the booked book competes


def test_a_bad_draft_anywhere_refuses_the_batch():
    f = booked_forecaster()
    good = ForecastQuery(start_at=NOW, end_at=NOW + DAY)
    with pytest.raises(InvalidInput) as refused:
        f.forecast_many([good, ForecastQuery(start_at=NOW, end_at=NOW - DAY), good])
    assert refused.value.reason == "end-before-start"
    with pytest.raises(InvalidInput) as refused:
        f.forecast_many([good, ForecastQuery(start_at=NOW, end_at=NOW + DAY, group_by=("x",))])
    assert refused.value.reason == "invalid-group-by"


def test_bulk_false_and_empty_inputs_take_the_single_path():
    f = booked_forecaster()
    queries = [ForecastQuery(start_at=NOW, end_at=NOW + 2 * DAY, targeting={"countries": ["US"]})]
    assert f.forecast_many([]) == []
    (one,) = f.forecast_many(queries)
    assert_same(one, f.forecast(queries[0], bulk=True))
    full = f.forecast_many(queries * 2, bulk=False)
    assert_same(full[1], f.forecast(queries[0]))


LEAVES = st.one_of(
    st.builds(
        lambda v: {"countries": v},
        st.lists(st.sampled_from([c for c, _ in COUNTRIES] + ["CA"]), min_size=1, max_size=3),
    ),
    st.builds(lambda v: {"devices": v}, st.lists(st.sampled_from([d for d, _ in DEVICES]))),
    st.builds(lambda v: {"genres": v}, st.lists(st.sampled_from(GENRES), min_size=1, max_size=3)),
    st.builds(lambda v: {"segments": v}, st.lists(st.sampled_from(SEGMENTS), max_size=2)),
    st.builds(lambda v: {"dayparts": v}, st.lists(st.integers(0, 23), min_size=1, max_size=6)),
)
EXPRESSIONS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.builds(lambda e: {"not": e}, inner),
        st.builds(lambda es: {"all": es}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda es: {"any": es}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda a, b: {**a, **b}, inner, inner),
    ),
    max_leaves=5,
)


@cache
def small_matcher() -> tuple[Matcher, list[dict]]:
    table = synthetic_table(2000, days=7, end=NOW, seed=13)
    return Matcher(table), [table.attributes(i) for i in range(table.size)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS, st.one_of(st.none(), st.frozensets(st.integers(1, 5), min_size=1)))
def test_bitmap_rows_are_the_rows_the_ad_servers_predicate_admits(expression, slots):
    matcher, rows = small_matcher()
    predicate = compile_predicate(expression)
    expected = [
        i
        for i, row in enumerate(rows)
        if predicate(row) and (slots is None or row["slots"] in slots)
    ]
    assert bitmap_rows(matcher.bitmap(expression, slots)).tolist() == expected, expression

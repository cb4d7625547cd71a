"""Targeting documents: validation on write and matching by the ad server's index."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.catalog.targeting import (
    COUNTRY_CODES,
    MAX_VALUES_PER_KEY,
    MULTI_VALUED_KEYS,
    TARGETING_KEYS,
    validate_targeting,
)
from backbeat.catalog.vocabulary import DEVICE_TYPES, GENRES, PLATFORMS, Position, Surface
from backbeat.errors import InvalidInput, InvalidTargeting
from backbeat.serving.targeting_index import TargetingIndex

# The keys issue 3 asks for, with sample values; later keys are covered where they are used.
VALUES: dict[str, list[Any]] = {
    "countries": sorted(COUNTRY_CODES),
    "devices": sorted(DEVICE_TYPES),
    "platforms": sorted(PLATFORMS),
    "surfaces": sorted(Surface),
    "positions": sorted(Position),
    "slots": [1, 2, 3, 2**31 - 1],
    "genres": sorted(GENRES),
    "segments": ["s1", "a.b:c-d_e", "X" * 64],
}


def test_the_required_targeting_keys_are_accepted():
    assert set(VALUES) <= set(TARGETING_KEYS)


documents = st.fixed_dictionaries(
    {},
    optional={
        key: st.lists(st.sampled_from(values), min_size=1, max_size=6)
        for key, values in VALUES.items()
    },
)


@settings(max_examples=200, deadline=None)
@given(document=documents)
def test_valid_documents_are_canonicalised(document):
    canonical = validate_targeting(document)
    assert set(canonical) == set(document)
    for key, values in document.items():
        assert canonical[key] == sorted(set(values))
    assert validate_targeting(canonical) == canonical  # idempotent


def test_null_and_empty_target_everyone():
    assert validate_targeting(None) == {}
    assert validate_targeting({}) == {}


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (["countries"], "targeting-not-object"),
        ("US", "targeting-not-object"),
        ({"country": ["US"]}, "unknown-targeting-key"),
        ({"Countries": ["US"]}, "unknown-targeting-key"),
        ({"countries": "US"}, "targeting-not-list"),
        ({"countries": []}, "targeting-not-list"),
        ({"countries": None}, "targeting-not-list"),
        ({"countries": {"US": True}}, "targeting-not-list"),
        ({"countries": ["XX"]}, "invalid-targeting-value"),
        ({"countries": ["us"]}, "invalid-targeting-value"),
        ({"countries": ["US", "GBR"]}, "invalid-targeting-value"),
        ({"devices": ["phone"]}, "invalid-targeting-value"),
        ({"platforms": ["IOS"]}, "invalid-targeting-value"),
        ({"surfaces": ["tv"]}, "invalid-targeting-value"),
        ({"positions": ["pre-roll"]}, "invalid-targeting-value"),
        ({"slots": [0]}, "invalid-targeting-value"),
        ({"slots": ["1"]}, "invalid-targeting-value"),
        ({"slots": [True]}, "invalid-targeting-value"),
        ({"slots": [1.5]}, "invalid-targeting-value"),
        ({"genres": ["Pop"]}, "invalid-targeting-value"),
        ({"segments": [""]}, "invalid-targeting-value"),
        ({"segments": ["has space"]}, "invalid-targeting-value"),
        ({"segments": ["x" * 65]}, "invalid-targeting-value"),
        ({"countries": ["US"] * (MAX_VALUES_PER_KEY + 1)}, "targeting-too-large"),
    ],
)
def test_invalid_documents_name_the_reason(document, reason):
    with pytest.raises(InvalidTargeting) as raised:
        validate_targeting(document)
    assert raised.value.reason == reason
    assert isinstance(raised.value, InvalidInput) and raised.value.status == 422


# --- matching: the bitset index agrees with a plain reading of the expressions --------

SMALL = {
    "countries": ["US", "GB", "DE"],
    "devices": ["mobile", "desktop"],
    "surfaces": ["music_free", "podcast"],
    "slots": [1, 2],
    "genres": ["news", "pop"],
    "segments": ["s1", "s2", "s3"],
}
SINGLE = [key for key in SMALL if key not in MULTI_VALUED_KEYS]


def _attribute_tests(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Often one attribute (what the index indexes), sometimes several or none."""
    one = st.sampled_from(keys).flatmap(
        lambda key: st.lists(st.sampled_from(SMALL[key]), min_size=1, unique=True).map(
            lambda values: {key: values}
        )
    )
    many = st.fixed_dictionaries(
        {},
        optional={
            key: st.lists(st.sampled_from(SMALL[key]), min_size=1, unique=True) for key in keys
        },
    )
    return one | many


def _expressions(keys: list[str], all_keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Expressions with ``all``/``any``/``not``; ``all`` members test only ``all_keys``.

    (Segments under ``all`` are left out: repeated segment tests are a known index bug,
    pinned in tests/serving/test_targeting_index.py.)
    """
    return st.recursive(
        _attribute_tests(keys),
        lambda inner: st.one_of(
            st.builds(lambda e, n: {**e, "not": n}, _attribute_tests(keys), inner),
            st.builds(
                lambda e, a: {**e, "any": a},
                _attribute_tests(keys),
                st.lists(inner, min_size=1, max_size=3),
            ),
            st.builds(
                lambda e, a: {**e, "all": a},
                _attribute_tests(all_keys),
                st.lists(
                    _attribute_tests(all_keys) | st.builds(lambda n: {"not": n}, inner),
                    min_size=1,
                    max_size=3,
                ),
            ),
        ),
        max_leaves=6,
    )


requests = st.fixed_dictionaries(
    {
        **{key: st.none() | st.sampled_from(SMALL[key]) for key in SINGLE},
        "segments": st.lists(st.sampled_from(SMALL["segments"]), max_size=3, unique=True),
    }
)


def admits(expression: dict[str, Any], request: dict[str, Any]) -> bool:
    """AND across keys, OR within a key's values; ``all``/``any``/``not`` as their names say."""
    for key, value in expression.items():
        if key == "not":
            ok = not admits(value, request)
        elif key == "all":
            ok = all(admits(member, request) for member in value)
        elif key == "any":
            ok = any(admits(member, request) for member in value)
        elif key in MULTI_VALUED_KEYS:
            ok = bool(set(value) & set(request[key] or ()))
        else:
            ok = request[key] in value
        if not ok:
            return False
    return True


@settings(max_examples=120, deadline=None)
@given(
    expressions=st.lists(_expressions(list(SMALL), SINGLE), max_size=8),
    request=requests,
)
def test_the_index_admits_exactly_what_the_expressions_say(expressions, request):
    expressions = [validate_targeting(expression) for expression in expressions]
    index = TargetingIndex.build(expressions)
    expected = sum(1 << n for n, e in enumerate(expressions) if admits(e, request))
    assert index.candidates(request) == expected


NOBODY = dict.fromkeys(SINGLE) | {"segments": []}


@pytest.mark.parametrize(
    ("expression", "request_", "admitted"),
    [
        ({"countries": ["US", "GB"]}, {"countries": "GB"}, True),
        ({"countries": ["US", "GB"]}, {"countries": "DE"}, False),
        ({"countries": ["US"]}, {}, False),  # an unknown country matches no list
        ({"not": {"countries": ["US"]}}, {"countries": "US"}, False),
        ({"not": {"countries": ["US"]}}, {"countries": "GB"}, True),
        ({"not": {"countries": ["US"]}}, {}, True),
        ({"segments": ["s1", "s2"]}, {"segments": ["s3", "s2"]}, True),
        ({"segments": ["s1"]}, {"segments": ["s3"]}, False),
        ({"not": {"segments": ["s1"]}}, {"segments": ["s2", "s1"]}, False),
        ({"not": {"segments": ["s1"]}}, {"segments": ["s2"]}, True),
        (
            {"all": [{"countries": ["US", "GB"]}, {"countries": ["GB", "DE"]}]},
            {"countries": "GB"},
            True,
        ),
        (
            {"all": [{"countries": ["US", "GB"]}, {"countries": ["GB", "DE"]}]},
            {"countries": "US"},
            False,
        ),
        ({"any": [{"countries": ["US"]}, {"devices": ["mobile"]}]}, {"devices": "mobile"}, True),
        ({"any": [{"countries": ["US"]}, {"devices": ["mobile"]}]}, {"countries": "GB"}, False),
        ({"not": {"countries": ["US"], "devices": ["mobile"]}}, {"countries": "US"}, True),
        (
            {"not": {"countries": ["US"], "devices": ["mobile"]}},
            {"countries": "US", "devices": "mobile"},
            False,
        ),
        (
            {"countries": ["US"], "not": {"genres": ["news"]}},
            {"countries": "US", "genres": "news"},
            False,
        ),
        (
            {"countries": ["US"], "not": {"genres": ["news"]}},
            {"countries": "US", "genres": "pop"},
            True,
        ),
    ],
)
def test_index_examples(expression, request_, admitted):
    expression = validate_targeting(expression)
    request = NOBODY | request_
    assert admits(expression, request) is admitted  # the reference reading agrees
    other = validate_targeting({"devices": ["desktop"]})  # a neighbour must not disturb it
    index = TargetingIndex.build([other, expression])
    assert bool(index.candidates(request) & 0b10) is admitted

"""Targeting expressions: validated on write, compiled into an index by the ad server.

An expression is a JSON object. Attribute keys hold a non-empty list of values and match
when the request's value is one of them (for ``segments``, when the listener is in any
of them). The keys ``all`` (a list of expressions), ``any`` (a list of expressions) and
``not`` (one expression) combine expressions. All keys of one object must hold (AND),
so the flat form ``{"countries": ["US"], "devices": ["mobile"]}`` reads naturally, and
``{}`` targets everyone. Example::

    {"countries": ["US", "CA"],
     "not": {"genres": ["true_crime"]},
     "any": [{"segments": ["auto-intender"]}, {"apps": ["Spotify"]}],
     "dayparts": [6, 7, 8, 9], "weekdays": ["mon", "tue", "wed", "thu", "fri"]}

Attribute keys and their values:

===============  =====================================================================
``countries``    ISO 3166-1 alpha-2 codes, upper case (``"US"``)
``regions``      ISO 3166-2 subdivision codes (``"US-CA"``, ``"GB-ENG"``)
``devices``      device types, see ``vocabulary.DEVICE_TYPES``
``platforms``    platform / OS, see ``vocabulary.PLATFORMS``
``apps``         listening app, as named by the OPAWG user-agent lists (``"Spotify"``)
``surfaces``     ``music_free``, ``podcast``, ``audiobook``, ``radio``
``positions``    ``pre_roll``, ``mid_roll``, ``post_roll``, ``interstitial``
``slots``        ad slot ids (integers)
``genres``       content genres, see ``vocabulary.GENRES``
``shows``        podcast show ids (strings)
``episodes``     podcast episode ids (strings)
``segments``     audience segment ids (strings)
``dayparts``     hours 0-23 in the listener's local time
``weekdays``     ``mon`` … ``sun`` in the listener's local time
``connections``  ``wifi``, ``cellular``, ``ethernet``, ``offline``, ``unknown``
===============  =====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import pycountry

from backbeat.catalog.vocabulary import (
    CONNECTIONS,
    DEVICE_TYPES,
    GENRES,
    PLATFORMS,
    WEEKDAYS,
    Position,
    Surface,
)
from backbeat.errors import InvalidTargeting

COUNTRY_CODES = frozenset(country.alpha_2 for country in pycountry.countries)
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
MAX_VALUES_PER_KEY = 10_000
MAX_DEPTH = 6
MAX_NODES = 500
COMBINATORS = ("all", "any", "not")


@cache
def region_codes() -> frozenset[str]:
    return frozenset(subdivision.code for subdivision in pycountry.subdivisions)


@cache
def app_names() -> frozenset[str]:
    from backbeat.measurement.useragents.patterns import load_entries

    return frozenset(
        entry.name
        for kind in ("apps", "browsers", "libraries", "referrers")
        for entry in load_entries(kind)
    )


def _one_of(allowed: frozenset[str] | Callable[[], frozenset[str]]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        values = allowed() if callable(allowed) else allowed
        return isinstance(value, str) and value in values

    return check


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31


def _hour(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 23


def _identifier(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


TARGETING_KEYS: dict[str, Callable[[Any], bool]] = {
    "countries": _one_of(COUNTRY_CODES),
    "regions": _one_of(region_codes),
    "devices": _one_of(DEVICE_TYPES),
    "platforms": _one_of(PLATFORMS),
    "apps": _one_of(app_names),
    "surfaces": _one_of(frozenset(Surface)),
    "positions": _one_of(frozenset(Position)),
    "slots": _positive_int,
    "genres": _one_of(GENRES),
    "shows": _identifier,
    "episodes": _identifier,
    "segments": _identifier,
    "dayparts": _hour,
    "weekdays": _one_of(frozenset(WEEKDAYS)),
    "connections": _one_of(CONNECTIONS),
}
MULTI_VALUED_KEYS = frozenset({"segments"})


def validate_targeting(document: Any) -> dict[str, Any]:
    """Return the canonical form (sorted, de-duplicated lists) or raise ``InvalidTargeting``."""
    if document is None:
        return {}
    budget = [MAX_NODES]
    return _expression(document, depth=0, budget=budget, path="targeting")


def _expression(node: Any, *, depth: int, budget: list[int], path: str) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise InvalidTargeting(
            f"{path} must be a JSON object", reason="targeting-not-object", path=path
        )
    if depth > MAX_DEPTH:
        raise InvalidTargeting(
            f"{path} nests deeper than {MAX_DEPTH}", reason="targeting-too-deep", path=path
        )
    budget[0] -= 1 + len(node)
    if budget[0] < 0:
        raise InvalidTargeting(
            f"targeting has more than {MAX_NODES} parts", reason="targeting-too-large"
        )
    canonical: dict[str, Any] = {}
    for key, value in node.items():
        where = f"{path}.{key}"
        if key == "not":
            canonical[key] = _expression(value, depth=depth + 1, budget=budget, path=where)
        elif key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise InvalidTargeting(
                    f"{where} needs a non-empty list of expressions",
                    reason="targeting-not-list",
                    path=where,
                )
            canonical[key] = [
                _expression(item, depth=depth + 1, budget=budget, path=f"{where}[{index}]")
                for index, item in enumerate(value)
            ]
        else:
            canonical[key] = _values(key, value, where)
    return canonical


def _values(key: str, values: Any, where: str) -> list[Any]:
    check = TARGETING_KEYS.get(key)
    if check is None:
        allowed = ", ".join([*sorted(TARGETING_KEYS), *COMBINATORS])
        raise InvalidTargeting(
            f"unknown targeting key {key!r} at {where}; allowed: {allowed}",
            reason="unknown-targeting-key",
            key=key,
        )
    if not isinstance(values, list) or not values:
        raise InvalidTargeting(
            f"{where} needs a non-empty list of values", reason="targeting-not-list", key=key
        )
    if len(values) > MAX_VALUES_PER_KEY:
        raise InvalidTargeting(
            f"{where} has more than {MAX_VALUES_PER_KEY} values",
            reason="targeting-too-large",
            key=key,
        )
    bad = [value for value in values if not check(value)]
    if bad:
        raise InvalidTargeting(
            f"invalid value(s) at {where}: {bad[:5]!r}", reason="invalid-targeting-value", key=key
        )
    return sorted(set(values))

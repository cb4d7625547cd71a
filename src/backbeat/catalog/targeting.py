"""Targeting documents: validated on write, matched by the ad server.

A document is a JSON object; each key narrows who may hear the ad, and a request must
match every key present (AND across keys, OR within a key's list). An empty document
targets everyone. Keys and their values:

==============  ==============================================================
``countries``   ISO 3166-1 alpha-2 codes, upper case (``"US"``, ``"GB"``)
``devices``     device types: see ``vocabulary.DEVICE_TYPES``
``platforms``   platform / OS: see ``vocabulary.PLATFORMS``
``surfaces``    slot surfaces: ``music_free``, ``podcast``, ``audiobook``, ``radio``
``positions``   slot positions: ``pre_roll``, ``mid_roll``, ``post_roll``, ``interstitial``
``slots``       ad slot ids (integers)
``genres``      content genres: see ``vocabulary.GENRES``
``segments``    audience segment ids (strings of 1-64 ``[A-Za-z0-9_.:-]``)
==============  ==============================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pycountry

from backbeat.catalog.vocabulary import DEVICE_TYPES, GENRES, PLATFORMS, Position, Surface
from backbeat.errors import InvalidTargeting

COUNTRY_CODES = frozenset(country.alpha_2 for country in pycountry.countries)
_SEGMENT = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
MAX_VALUES_PER_KEY = 10_000


def _one_of(allowed: frozenset[str]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value in allowed


def _slot_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _segment(value: Any) -> bool:
    return isinstance(value, str) and _SEGMENT.fullmatch(value) is not None


TARGETING_KEYS: dict[str, Callable[[Any], bool]] = {
    "countries": _one_of(COUNTRY_CODES),
    "devices": _one_of(DEVICE_TYPES),
    "platforms": _one_of(PLATFORMS),
    "surfaces": _one_of(frozenset(Surface)),
    "positions": _one_of(frozenset(Position)),
    "slots": _slot_id,
    "genres": _one_of(GENRES),
    "segments": _segment,
}


def validate_targeting(document: Any) -> dict[str, list[Any]]:
    """Return the canonical form (sorted, de-duplicated lists) or raise ``InvalidTargeting``."""
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise InvalidTargeting("targeting must be a JSON object", reason="targeting-not-object")
    canonical: dict[str, list[Any]] = {}
    for key, values in document.items():
        check = TARGETING_KEYS.get(key)
        if check is None:
            raise InvalidTargeting(
                f"unknown targeting key {key!r}; allowed: {', '.join(sorted(TARGETING_KEYS))}",
                reason="unknown-targeting-key",
                key=key,
            )
        if not isinstance(values, list) or not values:
            raise InvalidTargeting(
                f"targeting key {key!r} needs a non-empty list",
                reason="targeting-not-list",
                key=key,
            )
        if len(values) > MAX_VALUES_PER_KEY:
            raise InvalidTargeting(
                f"targeting key {key!r} has more than {MAX_VALUES_PER_KEY} values",
                reason="targeting-too-large",
                key=key,
            )
        bad = [value for value in values if not check(value)]
        if bad:
            raise InvalidTargeting(
                f"invalid value(s) for targeting key {key!r}: {bad[:5]!r}",
                reason="invalid-targeting-value",
                key=key,
            )
        canonical[key] = sorted(set(values))
    return canonical

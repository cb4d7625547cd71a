"""Targeting expressions compiled into an index over line items.

Each live line item has a position in best-first order and a bit at that position. The
top-level conjuncts of its expression that test one attribute (``countries: [...]``, or
``not: {genres: [...]}``) go into inverted lists: per attribute value, a bitset (a Python
int) of the line items that admit it, or exclude it. A request ANDs one bitset per
attribute in use, so its cost grows with the number of attributes, not of line items;
only the rare conjuncts that mix attributes (``any``, nested ``not``) are evaluated per
candidate afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from backbeat.catalog.targeting import MULTI_VALUED_KEYS, TARGETING_KEYS

Attributes = Mapping[str, Any]
Predicate = Callable[[Attributes], bool]


def _leaf(key: str, values: frozenset[Any]) -> Predicate:
    if key in MULTI_VALUED_KEYS:
        return lambda attributes: not values.isdisjoint(attributes.get(key) or ())
    return lambda attributes: attributes.get(key) in values


def compile_predicate(expression: Mapping[str, Any]) -> Predicate:
    """The whole expression as one function of the request attributes."""
    parts: list[Predicate] = []
    for key, value in expression.items():
        if key == "not":
            inner = compile_predicate(value)
            parts.append(lambda attributes, inner=inner: not inner(attributes))
        elif key == "all":
            members = [compile_predicate(item) for item in value]
            parts.append(
                lambda attributes, members=members: all(member(attributes) for member in members)
            )
        elif key == "any":
            members = [compile_predicate(item) for item in value]
            parts.append(
                lambda attributes, members=members: any(member(attributes) for member in members)
            )
        else:
            parts.append(_leaf(key, frozenset(value)))
    if len(parts) == 1:
        return parts[0]
    return lambda attributes: all(part(attributes) for part in parts)


@dataclass(slots=True)
class SplitExpression:
    """An expression as indexable conjuncts plus a residual."""

    includes: dict[str, frozenset[Any]] = field(default_factory=dict)
    excludes: dict[str, frozenset[Any]] = field(default_factory=dict)
    residual: list[Mapping[str, Any]] = field(default_factory=list)


def split_expression(
    expression: Mapping[str, Any], into: SplitExpression | None = None
) -> SplitExpression:
    """Top-level single-attribute tests become index entries; the rest is residual."""
    split = into or SplitExpression()
    for key, value in expression.items():
        if key == "all":
            for member in value:
                split_expression(member, split)
        elif key == "not" and len(value) == 1 and next(iter(value)) in TARGETING_KEYS:
            ((inner_key, inner_values),) = value.items()
            split.excludes[inner_key] = split.excludes.get(inner_key, frozenset()) | frozenset(
                inner_values
            )
        elif key in MULTI_VALUED_KEYS and key in split.includes:
            # "in segment a AND in segment b" is no single value set: evaluate it per candidate.
            split.residual.append({key: value})
        elif key in TARGETING_KEYS:
            values = frozenset(value)
            # Two include tests of one attribute (via ``all``) must both hold: intersect.
            split.includes[key] = split.includes[key] & values if key in split.includes else values
        else:
            split.residual.append({key: value})
    return split


_WINDOW_BITS = 256
_WINDOW = (1 << _WINDOW_BITS) - 1


def iter_bits(bits: int) -> Iterator[int]:
    """Positions of set bits of a non-negative bitset, lowest (best) first.

    Works on the low 256 bits at a time: ``bits & -bits`` on the whole set would allocate
    two integers the size of the book (1.25 kB for 10,000 items) for every position, and
    the decision walk takes only the first few positions of a large set. A run of empty
    windows is skipped in one step.
    """
    offset = 0
    while bits:
        window = bits & _WINDOW  # positive operands: costs the size of the window only
        if not window:
            skip = (bits & -bits).bit_length() - 1
            bits >>= skip
            offset += skip
            continue
        while window:
            low = window & -window
            yield offset + low.bit_length() - 1
            window ^= low
        bits >>= _WINDOW_BITS
        offset += _WINDOW_BITS


@dataclass(slots=True)
class TargetingIndex:
    """Inverted bitsets per attribute value, for includes and excludes, plus residuals."""

    all_bits: int = 0
    include: dict[str, dict[Any, int]] = field(default_factory=dict)
    unrestricted: dict[str, int] = field(default_factory=dict)
    exclude: dict[str, dict[Any, int]] = field(default_factory=dict)
    residual_bits: int = 0
    residuals: dict[int, Predicate] = field(default_factory=dict)
    _keys: frozenset[str] | None = field(default=None, repr=False, compare=False)
    # Per attribute, the bitset each value admits, unrestricted items included (and for
    # excludes, the bitset it keeps): one AND per attribute on the request path.
    _admit: tuple[tuple[str, bool, dict[Any, int], int], ...] | None = field(
        default=None, repr=False, compare=False
    )
    _keep: tuple[tuple[str, bool, dict[Any, int]], ...] | None = field(
        default=None, repr=False, compare=False
    )

    @classmethod
    def build(cls, expressions: Iterable[Mapping[str, Any]]) -> TargetingIndex:
        index = cls()
        count = 0
        restricted: dict[str, int] = {}
        for position, expression in enumerate(expressions):
            count += 1
            bit = 1 << position
            split = split_expression(expression)
            for key, values in split.includes.items():
                # An include test whose values intersect to nothing admits no request.
                restricted[key] = restricted.get(key, 0) | bit
                table = index.include.setdefault(key, {})
                for value in values:
                    table[value] = table.get(value, 0) | bit
            for key, values in split.excludes.items():
                table = index.exclude.setdefault(key, {})
                for value in values:
                    table[value] = table.get(value, 0) | bit
            if split.residual:
                index.residual_bits |= bit
                index.residuals[position] = compile_predicate({"all": split.residual})
        index.all_bits = (1 << count) - 1
        for key, bits in restricted.items():
            index.include.setdefault(key, {})
            index.unrestricted[key] = index.all_bits & ~bits
        index._prepare()
        return index

    @property
    def keys_in_use(self) -> frozenset[str]:
        """Attributes some expression tests (``*``: all of them); asked on every request, so
        computed once (an index is not changed after ``build``)."""
        if self._keys is None:
            self._keys = (
                frozenset(self.include)
                | frozenset(self.exclude)
                | ({"*"} if self.residuals else set())
            )
        return self._keys

    def _prepare(self) -> None:
        self._admit = tuple(
            (
                key,
                key in MULTI_VALUED_KEYS,
                table
                if key in MULTI_VALUED_KEYS
                else {value: self.unrestricted[key] | bits for value, bits in table.items()},
                self.unrestricted[key],
            )
            for key, table in self.include.items()
        )
        self._keep = tuple(
            (
                key,
                key in MULTI_VALUED_KEYS,
                {value: self.all_bits & ~bits for value, bits in table.items()},
            )
            for key, table in self.exclude.items()
        )

    def candidates(self, attributes: Attributes) -> int:
        """Bitset of line items whose targeting admits the request."""
        if self._admit is None or self._keep is None:
            self._prepare()
            assert self._admit is not None and self._keep is not None
        bits = self.all_bits
        for key, multi, admits, unrestricted in self._admit:
            value = attributes.get(key)
            if multi:
                admitted = unrestricted
                for member in value or ():
                    admitted |= admits.get(member, 0)
                bits &= admitted
            else:
                bits &= admits.get(value, unrestricted)
            if not bits:
                return 0
        for key, multi, keeps in self._keep:
            value = attributes.get(key)
            if multi:
                for member in value or ():
                    kept = keeps.get(member)
                    if kept is not None:
                        bits &= kept
            elif value is not None:
                kept = keeps.get(value)
                if kept is not None:
                    bits &= kept
        pending = bits & self.residual_bits
        for position in iter_bits(pending):
            if not self.residuals[position](attributes):
                bits &= ~(1 << position)
        return bits

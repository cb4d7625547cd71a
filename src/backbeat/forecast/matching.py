"""Targeting expressions evaluated over a whole table at once, as boolean masks.

The semantics are the ad server's (``serving.targeting_index.compile_predicate``): an
attribute key admits a row whose value is one of the listed values (an absent value never
matches), ``segments`` admits a row sharing any segment, ``all``/``any``/``not`` combine,
all keys of one object must hold and ``{}`` admits everything. Only the evaluation is
vectorised: one mask per (key, value set), built from per-value row lists and cached, so a
targeting is a handful of numpy AND/OR operations over the sample whatever its size. The
tests compare it row by row with ``compile_predicate`` on random expressions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from backbeat.catalog.targeting import MULTI_VALUED_KEYS
from backbeat.forecast.history import OpportunityTable


class Matcher:
    """Masks of a table for targeting expressions; leaf masks are cached (LRU)."""

    def __init__(self, table: OpportunityTable, *, cache_bytes: int = 256 << 20) -> None:
        self.table = table
        self.size = table.size
        self._cache: OrderedDict[tuple[str, frozenset[Any]], np.ndarray] = OrderedDict()
        # A mask is a byte per row: bound the cache by memory, not by count.
        self._cache_size = max(16, cache_bytes // max(self.size, 1))
        self._segment_rows: list[np.ndarray] | None = None
        self._all = np.ones(self.size, dtype=bool)
        self._all.flags.writeable = False

    # -- leaves ---------------------------------------------------------------------------

    def _segments(self) -> list[np.ndarray]:
        if self._segment_rows is None:
            table = self.table
            rows = np.repeat(
                np.arange(self.size, dtype=np.int64), np.diff(table.segment_ptr).astype(np.int64)
            )
            order = np.argsort(table.segment_codes, kind="stable")
            counts = np.bincount(table.segment_codes, minlength=len(table.segment_vocab))
            bounds = np.concatenate(([0], np.cumsum(counts)))
            sorted_rows = rows[order]
            self._segment_rows = [
                sorted_rows[bounds[code] : bounds[code + 1]] for code in range(len(counts))
            ]
        return self._segment_rows

    def leaf(self, key: str, values: frozenset[Any]) -> np.ndarray:
        """Rows whose ``key`` is one of ``values`` (read-only, cached)."""
        cache_key = (key, values)
        found = self._cache.get(cache_key)
        if found is not None:
            self._cache.move_to_end(cache_key)
            return found
        if key in MULTI_VALUED_KEYS:
            mask = np.zeros(self.size, dtype=bool)
            if key == "segments":
                vocab = self.table.segment_vocab
                rows = self._segments()
                for value in values:
                    code = vocab.codes.get(value)
                    if code is not None:
                        mask[rows[code]] = True
        else:
            column = self.table.single.get(key)
            vocab = self.table.vocab.get(key)
            if column is None or vocab is None:
                mask = np.zeros(self.size, dtype=bool)
            else:
                wanted = np.zeros(len(vocab) + 1, dtype=bool)  # last slot: absent (-1)
                for value in values:
                    code = vocab.codes.get(value)
                    if code is not None:
                        wanted[code] = True
                mask = wanted[column]
        mask.flags.writeable = False
        self._cache[cache_key] = mask
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return mask

    # -- expressions ------------------------------------------------------------------------

    def match(self, expression: Mapping[str, Any]) -> np.ndarray:
        """Rows the expression admits; the result may be shared: do not modify it."""
        mask: np.ndarray | None = None
        for key, value in expression.items():
            if key == "not":
                part = ~self.match(value)
            elif key == "all":
                part = self._all
                for member in value:
                    part = part & self.match(member)
            elif key == "any":
                part = np.zeros(self.size, dtype=bool)
                for member in value:
                    part = part | self.match(member)
            else:
                part = self.leaf(key, frozenset(value))
            mask = part if mask is None else mask & part
        return self._all if mask is None else mask

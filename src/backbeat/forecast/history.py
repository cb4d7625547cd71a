"""The decision log read back as columns: every sampled ad request with its attributes.

One pass over the event log gathers the ``opportunity`` records (the supply) and the
tracking events that later happened to them (impressions, clicks, conversions, keyed by
decision id) into numpy arrays: a code per value for each single-valued targeting key,
a compressed list for the multi-valued ``segments``. Everything downstream (sample,
supply models, rates) works on these arrays, never on records.

Attributes a record lacks are derived the way the ad server derives them: local hour and
weekday from its ``tz`` (UTC when absent), the listening app from its user agent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from backbeat.catalog.targeting import MULTI_VALUED_KEYS, TARGETING_KEYS
from backbeat.catalog.vocabulary import WEEKDAYS
from backbeat.errors import InvalidInput
from backbeat.eventlog import EventLogReader
from backbeat.events import EventType
from backbeat.serving.request import listening_app, zone

SINGLE_KEYS: tuple[str, ...] = tuple(key for key in TARGETING_KEYS if key not in MULTI_VALUED_KEYS)
_OPPORTUNITY = f'"{EventType.OPPORTUNITY.value}"'.encode()
_OUTCOMES = {
    EventType.IMPRESSION.value: "impression",
    EventType.CLICK.value: "click",
    EventType.CONVERSION.value: "conversion",
}


class Vocabulary:
    """Values of one attribute and their integer codes (-1 stands for "absent")."""

    __slots__ = ("codes", "values")

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.codes: dict[Any, int] = {}

    def code(self, value: Any) -> int:
        if value is None:
            return -1
        found = self.codes.get(value)
        if found is None:
            found = self.codes[value] = len(self.values)
            self.values.append(value)
        return found

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class OpportunityTable:
    """Columns of the decision log's opportunities, in log order."""

    ts: np.ndarray  # float64 seconds
    rate: np.ndarray  # float64: the decision-log sampling rate of each record
    listener: np.ndarray  # int32 codes into ``listeners``
    listeners: list[str]
    single: dict[str, np.ndarray]  # int32 codes per key (-1: absent)
    vocab: dict[str, Vocabulary]
    segment_ptr: np.ndarray  # int64 CSR offsets, len n + 1
    segment_codes: np.ndarray  # int32
    segment_vocab: Vocabulary
    decision_ids: list[str] = field(repr=False, default_factory=list)
    outcomes: dict[str, np.ndarray] = field(default_factory=dict)  # per row: 0/1 per kind
    # Per row: the log kept it by a hash of its listener (all or none of a listener's
    # requests, ``sample_by: listener``) rather than by chance per request. None: all False.
    by_listener: np.ndarray | None = None

    def listener_sampled(self) -> np.ndarray:
        if self.by_listener is None:
            return np.zeros(self.size, dtype=bool)
        return self.by_listener

    @property
    def size(self) -> int:
        return int(self.ts.shape[0])

    def take(self, rows: np.ndarray) -> OpportunityTable:
        """The given rows (sorted indices), columns copied."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.segment_ptr[rows], self.segment_ptr[rows + 1]
        lengths = ends - starts
        ptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        if lengths.sum():
            gather = np.repeat(starts - ptr[:-1], lengths) + np.arange(int(ptr[-1]))
            codes = self.segment_codes[gather]
        else:
            codes = np.zeros(0, dtype=np.int32)
        return OpportunityTable(
            ts=self.ts[rows],
            rate=self.rate[rows],
            listener=self.listener[rows],
            listeners=self.listeners,
            single={key: column[rows] for key, column in self.single.items()},
            vocab=self.vocab,
            segment_ptr=ptr,
            segment_codes=codes,
            segment_vocab=self.segment_vocab,
            outcomes={key: column[rows] for key, column in self.outcomes.items()},
            by_listener=None if self.by_listener is None else self.by_listener[rows],
        )

    def attributes(self, row: int) -> dict[str, Any]:
        """One row as the ad server's attribute mapping (for brute-force checks)."""
        found: dict[str, Any] = {}
        for key, column in self.single.items():
            code = int(column[row])
            found[key] = None if code < 0 else self.vocab[key].values[code]
        codes = self.segment_codes[self.segment_ptr[row] : self.segment_ptr[row + 1]]
        found["segments"] = tuple(self.segment_vocab.values[int(code)] for code in codes)
        return found


class TableBuilder:
    """Appends decoded records; ``finish`` makes the arrays."""

    def __init__(self) -> None:
        self.ts: list[float] = []
        self.rate: list[float] = []
        self.by_listener: list[bool] = []
        self.listener: list[int] = []
        self.listener_vocab = Vocabulary()
        self.vocab = {key: Vocabulary() for key in SINGLE_KEYS}
        self.single: dict[str, list[int]] = {key: [] for key in SINGLE_KEYS}
        self.segment_vocab = Vocabulary()
        self.segment_ptr: list[int] = [0]
        self.segment_codes: list[int] = []
        self.decision_ids: list[str] = []

    def add(
        self,
        *,
        ts: float,
        listener: str,
        slot_id: int | None,
        attrs: Mapping[str, Any],
        decision_id: str = "",
    ) -> None:
        rate = float(attrs.get("sample") or 1.0)
        if not 0.0 < rate <= 1.0:
            rate = 1.0
        self.ts.append(float(ts))
        self.rate.append(rate)
        self.by_listener.append(attrs.get("sample_by") == "listener" and bool(listener))
        self.listener.append(self.listener_vocab.code(listener or ""))
        self.decision_ids.append(decision_id)
        values = dict(attrs)
        if slot_id is not None:
            values.setdefault("slots", slot_id)
        if "dayparts" not in values or "weekdays" not in values:
            try:
                local = datetime.fromtimestamp(ts, zone(values.get("tz") or "UTC"))
            except InvalidInput:
                local = datetime.fromtimestamp(ts, zone("UTC"))
            values.setdefault("dayparts", local.hour)
            values.setdefault("weekdays", WEEKDAYS[local.weekday()])
        if "apps" not in values and values.get("user_agent"):
            values["apps"] = listening_app(values["user_agent"])
        for key in SINGLE_KEYS:
            value = values.get(key)
            if isinstance(value, list):  # never logged so; tolerate rather than crash
                value = value[0] if value else None
            self.single[key].append(self.vocab[key].code(value))
        for segment in values.get("segments") or ():
            self.segment_codes.append(self.segment_vocab.code(segment))
        self.segment_ptr.append(len(self.segment_codes))

    def finish(self) -> OpportunityTable:
        return OpportunityTable(
            ts=np.asarray(self.ts, dtype=np.float64),
            rate=np.asarray(self.rate, dtype=np.float64),
            listener=np.asarray(self.listener, dtype=np.int32),
            listeners=self.listener_vocab.values,
            single={key: np.asarray(codes, dtype=np.int32) for key, codes in self.single.items()},
            vocab=self.vocab,
            segment_ptr=np.asarray(self.segment_ptr, dtype=np.int64),
            segment_codes=np.asarray(self.segment_codes, dtype=np.int32),
            segment_vocab=self.segment_vocab,
            decision_ids=self.decision_ids,
            by_listener=np.asarray(self.by_listener, dtype=bool),
        )


def table_from_records(records: Iterable[Mapping[str, Any]]) -> OpportunityTable:
    """Columns from already decoded opportunity records (``Event`` fields as a mapping)."""
    builder = TableBuilder()
    for record in records:
        builder.add(
            ts=record["ts"],
            listener=record.get("listener") or "",
            slot_id=record.get("slot_id"),
            attrs=record.get("attrs") or {},
            decision_id=record.get("decision_id") or "",
        )
    return builder.finish()


def read_history(directory: Path, *, until: float, since: float | None = None) -> OpportunityTable:
    """Opportunities with ``since <= ts < until`` and, per row, whether it led to an
    impression, a click and a conversion (tracking events up to ``until``)."""
    builder = TableBuilder()
    outcome_ids: dict[str, set[str]] = {kind: set() for kind in _OUTCOMES.values()}
    for record in EventLogReader(Path(directory)).records():
        payload = record.payload
        is_opportunity = _OPPORTUNITY in payload
        if not is_opportunity and not any(f'"{kind}"'.encode() in payload for kind in _OUTCOMES):
            continue
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        kind = event.get("type")
        ts = event.get("ts")
        if not isinstance(ts, int | float) or ts >= until:
            continue
        if kind == EventType.OPPORTUNITY.value:
            if since is not None and ts < since:
                continue
            builder.add(
                ts=ts,
                listener=event.get("listener") or "",
                slot_id=event.get("slot_id"),
                attrs=event.get("attrs") or {},
                decision_id=event.get("decision_id") or "",
            )
        elif kind in _OUTCOMES and event.get("decision_id"):
            outcome_ids[_OUTCOMES[kind]].add(event["decision_id"])
    table = builder.finish()
    table.outcomes = {
        kind: np.fromiter(
            (decision in ids for decision in table.decision_ids), dtype=bool, count=table.size
        )
        for kind, ids in outcome_ids.items()
    }
    return table

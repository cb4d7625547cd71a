"""The record every tracking endpoint and the ad server append to the event log.

One flat, versioned JSON object per record (orjson), so that Python readers, Beam
pipelines and DuckDB can all read it without Backbeat's code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import orjson

SCHEMA_VERSION = 1


class EventType(StrEnum):
    """Kinds of record; the first seven are client-confirmed plays and clicks (VAST names)."""

    IMPRESSION = "impression"
    START = "start"
    FIRST_QUARTILE = "firstQuartile"
    MIDPOINT = "midpoint"
    THIRD_QUARTILE = "thirdQuartile"
    COMPLETE = "complete"
    CLICK = "click"
    CONVERSION = "conversion"
    ERROR = "error"
    REJECTED = "rejected"
    OPPORTUNITY = "opportunity"
    # Native promotion (issue 13): the personalization system showed a promoted item / it was
    # clicked; streams after it are CONVERSION records with attrs {"promotion": true, ...}.
    PROMOTION_EXPOSURE = "promotion_exposure"
    PROMOTION_CLICK = "promotion_click"
    # A filled decision (line item, price): the ad server's budget reservation until its
    # impression is counted or its render window passes; restarts recover spend from it.
    FILL = "fill"


DELIVERY_EVENTS: tuple[EventType, ...] = (
    EventType.IMPRESSION,
    EventType.START,
    EventType.FIRST_QUARTILE,
    EventType.MIDPOINT,
    EventType.THIRD_QUARTILE,
    EventType.COMPLETE,
    EventType.CLICK,
)


@dataclass(frozen=True, slots=True)
class Event:
    """One tracked event.

    ``ts`` is seconds since the epoch (UTC). ``price_micros`` is the charged CPM in
    millionths of ``currency`` (set on impressions). ``reason`` explains rejected,
    error and no-fill records. ``attrs`` carries free-form request attributes
    (decision-log opportunities).
    """

    type: str
    ts: float
    decision_id: str = ""
    line_item_id: int | None = None
    campaign_id: int | None = None
    creative_id: int | None = None
    slot_id: int | None = None
    listener: str = ""
    price_micros: int = 0
    currency: str = ""
    ip: str = ""
    user_agent: str = ""
    reason: str | None = None
    attrs: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        # Not dataclasses.asdict: it deep-copies ``attrs``, which is slow on the decision path.
        record = {name: getattr(self, name) for name in FIELDS}
        record["v"] = SCHEMA_VERSION
        return orjson.dumps(record)

    @classmethod
    def from_bytes(cls, payload: bytes) -> Event:
        record = orjson.loads(payload)
        record.pop("v", None)
        return cls(**record)


FIELDS = tuple(field.name for field in fields(Event))


def record_prefix(kind: EventType) -> bytes:
    """How a record of ``kind`` starts (``to_bytes`` writes ``type`` first): readers of busy
    logs pick the records they want by this prefix without parsing the others."""
    return b'{"type":"' + kind.value.encode() + b'"'

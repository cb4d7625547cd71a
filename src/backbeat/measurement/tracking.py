"""Tracking hits: verify the signed URL, then append the event durably before answering.

A genuine hit waits for its fsync'd batch. A refused one (forged, expired, malformed) is
logged as ``rejected`` without waiting: forged pixels must not buy an attacker durable
writes, and nothing is acknowledged on their account. Durable impressions are handed to
``on_impressions`` (the server's budget ledger counts them there rather than reading
its own records back from the log).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import orjson

from backbeat.errors import BackbeatError, NotFound
from backbeat.eventlog import EventLogWriter
from backbeat.events import DELIVERY_EVENTS, SCHEMA_VERSION, Event, EventType
from backbeat.observability import (
    EVENTLOG_APPEND_FAILURES,
    TALLY,
    TRACKING_EVENTS,
    TRACKING_REJECTED,
    log,
)
from backbeat.signing import TrackingClaims, UrlSigner

TRACKABLE = frozenset({*(event.value for event in DELIVERY_EVENTS), EventType.ERROR.value})
ERROR_CODE_MAX = 16
# VAST error codes are 3-digit numbers (100–999); players that cannot substitute the
# ``[ERRORCODE]`` macro send it back verbatim, which records no code.
_ERROR_CODE = re.compile(r"[0-9]{1,4}")
_DECISION_ID = re.compile(r"[0-9a-f]{1,32}")
_ACCEPTED = {event: TRACKING_EVENTS.labels(event) for event in TRACKABLE}
_IMPRESSION = EventType.IMPRESSION.value
ImpressionSink = Callable[[list[TrackingClaims], float], object]


def record_bytes(
    event: str, now: float, claims: TrackingClaims, ip: str, user_agent: str, reason: str | None
) -> bytes:
    """``Event(...).to_bytes()`` of a genuine hit, byte for byte, without the dataclass.

    A pixel is the hottest path there is; a frozen dataclass of 14 fields and a dict built
    from it cost more than the signature check. Same keys in ``Event`` order (the counting
    jobs and the ledger's reconciler read ``{"type":...`` first), same values.
    """
    return orjson.dumps(
        {
            "type": event,
            "ts": now,
            "decision_id": claims.decision_id,
            "line_item_id": claims.line_item_id or None,
            "campaign_id": claims.campaign_id or None,
            "creative_id": claims.creative_id or None,
            "slot_id": claims.slot_id,
            "listener": claims.listener,
            "price_micros": claims.price_micros,
            "currency": claims.currency,
            "ip": ip,
            "user_agent": user_agent[:512],
            "reason": reason,
            "attrs": None,
            "v": SCHEMA_VERSION,
        }
    )


class Hit(NamedTuple):
    """One tracking hit reported by an ad inserter: the event and query of a signed URL, and
    the listener's device (``ip`` at most 64 characters)."""

    event: str
    params: Mapping[str, str]
    ip: str
    user_agent: str


def error_code(params: Mapping[str, str]) -> str | None:
    """The player's VAST error code, when it substituted one."""
    code = str(params.get("code", ""))[:ERROR_CODE_MAX]
    return code if _ERROR_CODE.fullmatch(code) else None


class Tracker:
    """Turns tracking hits into events; a rejected hit is logged as ``rejected``, never as delivery."""

    def __init__(
        self,
        *,
        signer: UrlSigner,
        log: EventLogWriter,
        clock: Callable[[], float],
        on_impressions: ImpressionSink | None = None,
    ) -> None:
        self._signer = signer
        self._log = log
        self._clock = clock
        self._on_impressions = on_impressions

    async def track(
        self, event: str, params: Mapping[str, str], *, ip: str, user_agent: str
    ) -> None:
        """Record one genuine hit durably (answered once fsync'd); raise for any other."""
        now = self._clock()
        record, claims = self._accepted(event, params, now, ip, user_agent)
        try:
            await self._log.append_async(record)
        except Exception:
            EVENTLOG_APPEND_FAILURES.inc()
            raise
        TALLY.count(_ACCEPTED[event])
        if event == _IMPRESSION and self._on_impressions is not None:
            self._hand_over([claims], now)

    async def track_many(self, hits: Sequence[Hit]) -> list[tuple[int, BackbeatError]]:
        """Record the genuine hits of a batch in one fsync'd append; the refused ones (by
        index, with why) are logged as ``rejected`` like refused pixels and returned."""
        now = self._clock()
        records: list[bytes] = []
        events: list[str] = []
        impressions: list[TrackingClaims] = []
        refused: list[tuple[int, BackbeatError]] = []
        for index, hit in enumerate(hits):
            try:
                record, claims = self._accepted(hit.event, hit.params, now, hit.ip, hit.user_agent)
            except BackbeatError as error:
                refused.append((index, error))
                continue
            records.append(record)
            events.append(hit.event)
            if hit.event == _IMPRESSION:
                impressions.append(claims)
        try:
            await self._log.append_many_async(records)
        except Exception:
            EVENTLOG_APPEND_FAILURES.inc(len(records))
            raise
        for event, count in Counter(events).items():
            TALLY.count(_ACCEPTED[event], count)
        if impressions and self._on_impressions is not None:
            self._hand_over(impressions, now)
        return refused

    def _hand_over(self, impressions: list[TrackingClaims], now: float) -> None:
        """Durable already: a failing receiver is logged, the hit is still acknowledged."""
        assert self._on_impressions is not None
        try:
            self._on_impressions(impressions, now)
        except Exception:
            log.exception("durable impressions not handed over", count=len(impressions))

    def _accepted(
        self, event: str, params: Mapping[str, str], now: float, ip: str, user_agent: str
    ) -> tuple[bytes, TrackingClaims]:
        """The record and claims of a genuine hit; a refused one is logged as ``rejected``
        and raised."""
        if event not in TRACKABLE:
            raise NotFound(f"unknown tracking event {event!r}", reason="unknown-event")
        try:
            claims = self._signer.verify(
                event, params if type(params) is dict else dict(params), now
            )
        except BackbeatError as error:
            TRACKING_REJECTED.labels(error.reason).inc()
            claimed = str(params.get("d", ""))
            rejected = Event(
                type=EventType.REJECTED,
                ts=now,
                decision_id=claimed if _DECISION_ID.fullmatch(claimed) else "",
                ip=ip,
                user_agent=user_agent[:512],
                reason=error.reason,
                attrs={"event": event},
            )
            try:
                self._log.append_nowait(rejected.to_bytes())
            except Exception:
                EVENTLOG_APPEND_FAILURES.inc()
            raise
        reason = error_code(params) if event == EventType.ERROR else None
        return record_bytes(event, now, claims, ip, user_agent, reason), claims

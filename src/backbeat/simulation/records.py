"""Simulated traffic as event-log records, byte for byte what the ad server and trackers write.

Opportunities are the decision log's ``opportunity`` records (``serving.server.AdServer.
_log_opportunity``): request attributes, segments, time zone, user agent, and how the
decision went. A ``fill_rate`` share of them is filled and gets an ``impression``; the
hidden ``ResponseModel`` decides which impressions are clicked and which clicks convert
(``click`` and ``conversion`` records carry the decision id, so rates by segment, device
or position are learnable by joining on it). History has no line items: records carry
``line_item_id`` None and empty ``winners``, so delivery counting ignores them.

Written with ``EventLogWriter.append_many`` in large batches: one fsync per batch, not
per record, so weeks of history take seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from backbeat.catalog.vocabulary import WEEKDAYS
from backbeat.errors import InvalidInput
from backbeat.eventlog import EventLogWriter
from backbeat.events import Event, EventType
from backbeat.simulation.audience import ZONES
from backbeat.simulation.outcomes import ResponseModel
from backbeat.simulation.profiles import DEVICES, SLOTS
from backbeat.simulation.traffic import CONNECTIONS, GENRES, SHOWS, Traffic

AppOf = Callable[[str], str | None]
NO_FILL_REASON = "no-eligible-line-item"


@dataclass(frozen=True)
class Outcomes:
    """Which logged breaks were filled, clicked and converted (row masks over the logged rows)."""

    rows: np.ndarray  # rows of the traffic that were logged (decision-log sample)
    decision_ids: list[str]
    filled: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    conversion_delay: np.ndarray  # seconds from click to conversion


@dataclass(frozen=True)
class HistoryStats:
    opportunities: int
    impressions: int
    clicks: int
    conversions: int
    since: float
    until: float


def draw_outcomes(
    traffic: Traffic,
    *,
    sample: float = 1.0,
    fill_rate: float = 0.7,
    model: ResponseModel | None = None,
    seed: int | None = None,
    sample_by: str = "request",
) -> Outcomes:
    """Pick the decision-log sample and draw fills, clicks and conversions for it (seeded).

    ``sample_by="request"`` keeps each request with probability ``sample``, as the ad
    server does today; ``"listener"`` keeps all or none of a listener's requests (a hash
    of the listener), under which distinct listeners scale exactly by ``1 / sample``.
    """
    if sample_by not in ("request", "listener"):
        raise InvalidInput("sample_by is request or listener", reason="invalid-simulation")
    model = model or ResponseModel()
    rng = np.random.default_rng([traffic.config.seed if seed is None else seed, 0x0C7C0E])
    draw = rng.random(len(traffic))
    if sample_by == "listener":
        chance = np.random.default_rng([traffic.config.seed, 0x11573]).random(len(traffic.audience))
        draw = chance[traffic.listener]
    keep = draw < sample if sample < 1.0 else np.ones(len(traffic), bool)
    rows = np.flatnonzero(keep)
    size = rows.size
    filled = rng.random(size) < fill_rate
    click_p = model.click_probability(
        traffic.device_class[rows], traffic.segments[rows], traffic.slot[rows].astype(np.int64)
    )
    clicked = filled & (rng.random(size) < click_p)
    converted = clicked & (rng.random(size) < model.conversion_probability(traffic.segments[rows]))
    delay = rng.lognormal(np.log(2 * 3600), 1.0, size=size)
    bits = rng.integers(0, 2**63, size=size, dtype=np.int64)
    millis = (traffic.ts[rows] * 1000).astype(np.int64)
    decision_ids = [
        f"{ms:012x}{b:016x}" for ms, b in zip(millis.tolist(), bits.tolist(), strict=True)
    ]
    return Outcomes(rows, decision_ids, filled, clicked, converted, delay)


def _template(event: Event, markers: tuple[str, ...]) -> list[bytes]:
    """``event.to_bytes()`` split where its marker fields are, so records are spliced, not built.

    The field order and constant fields come from ``Event`` itself: a new field there
    appears here too.
    """
    payload = event.to_bytes()
    parts = []
    for marker in markers:
        before, payload = payload.split(orjson.dumps(marker), 1)
        parts.append(before)
    parts.append(payload)
    return parts


def _json(value: object) -> bytes:
    return orjson.dumps(value)


def history_records(
    traffic: Traffic,
    outcomes: Outcomes,
    *,
    sample: float = 1.0,
    app_of: AppOf | None = None,
    catalog_version: int = 0,
    sample_by: str = "request",
) -> Iterator[bytes]:
    """Every record of the history in time order of the opportunities (outcomes follow theirs).

    Each opportunity parses to exactly what ``Event(type=OPPORTUNITY, ...).to_bytes()``
    gives for the same fields (the tests check it); the JSON is spliced from fragments
    made once per listener, slot, genre and show, which is several times faster than
    building an ``Event`` per record.
    """
    audience = traffic.audience
    markers = ("\x00ts", "\x00id", "\x00slot", "\x00who", "\x00reason", "\x00attrs")
    opportunity = _template(
        Event(EventType.OPPORTUNITY, *markers[:2], slot_id=markers[2], listener=markers[3],  # type: ignore[arg-type]
              reason=markers[4], attrs=markers[5]),  # type: ignore[arg-type]
        markers,
    )  # fmt: skip
    tracking_markers = ("\x00ts", "\x00id", "\x00slot", "\x00who", "\x00agent")
    tracking = {
        kind: _template(
            Event(
                kind,
                *tracking_markers[:2],
                slot_id=tracking_markers[2],  # type: ignore[arg-type]
                listener=tracking_markers[3],
                user_agent=tracking_markers[4],
            ),
            tracking_markers,
        )  # fmt: skip
        for kind in (EventType.IMPRESSION, EventType.CLICK, EventType.CONVERSION)
    }
    apps = {agent: app_of(agent) for agent in set(audience.user_agent)} if app_of else {}
    listener_json, listener_head, listener_tail, agent_json = [], [], [], []
    for who in range(len(audience)):
        tz, region, country = ZONES[int(audience.zone[who])]
        device, platform, _, _ = DEVICES[int(audience.device[who])]
        agent = audience.user_agent[who]
        listener_json.append(_json(audience.ids[who]))
        agent_json.append(_json(agent))
        listener_head.append(
            _json({"countries": country, "regions": region, "devices": device,
                   "platforms": platform})[1:-1]
        )  # fmt: skip
        tail = {"segments": audience.segment_lists[who], "tz": tz, "user_agent": agent}
        if apps.get(agent):
            tail = {"apps": apps[agent], **tail}
        listener_tail.append(_json(tail)[1:-1])
    slot_ids = traffic.config.slot_ids
    slot_json = [_json(slot_id) for slot_id in slot_ids]
    slot_attrs = [
        _json({"surfaces": surface, "positions": position, "slots": slot_ids[n]})[1:-1]
        for n, (surface, position) in enumerate(SLOTS)
    ]
    genre_attrs = [_json({"genres": genre})[1:-1] for genre in GENRES]
    connection_attrs = [_json({"connections": name})[1:-1] for name in CONNECTIONS]
    time_attrs = {
        (hour, day): _json({"dayparts": hour, "weekdays": WEEKDAYS[day]})[1:-1]
        for hour in range(24)
        for day in range(7)
    }
    episode_attrs: dict[tuple[int, int], bytes] = {}
    decision_tail = _json(
        {
            "targeted": 0,
            "catalog_version": catalog_version,
            "winners": [],
            "sample": sample,
            # Like the ad server: a listener-hash sample says so (reach scales by 1 / sample).
            **({"sample_by": "listener"} if sample_by == "listener" else {}),
        }
    )[1:]
    reasons = {True: b"null", False: _json(NO_FILL_REASON)}
    week = (traffic.ts // (7 * 86400)).astype(np.int64).tolist()
    ts_all = traffic.ts.tolist()
    listener_all = traffic.listener.tolist()
    slot_all = traffic.slot.tolist()
    genre_all = traffic.genre.tolist()
    show_all = traffic.show.tolist()
    connection_all = traffic.connection.tolist()
    hour_all = traffic.local_hour.tolist()
    weekday_all = traffic.weekday.tolist()
    filled = outcomes.filled.tolist()
    clicked = outcomes.clicked.tolist()
    converted = outcomes.converted.tolist()
    delays = outcomes.conversion_delay.tolist()
    o0, o1, o2, o3, o4, o5, o6 = opportunity
    join = b"".join
    for n, row in enumerate(outcomes.rows.tolist()):
        who = listener_all[row]
        slot = slot_all[row]
        show = show_all[row]
        fragments = [
            listener_head[who], slot_attrs[slot], genre_attrs[genre_all[row]]
        ]  # fmt: skip
        if show >= 0:
            key = (show, week[row])
            found = episode_attrs.get(key)
            if found is None:
                name = SHOWS[show]
                found = episode_attrs[key] = _json(
                    {"shows": name, "episodes": f"{name}-e{week[row]}"}
                )[1:-1]
            fragments.append(found)
        fragments.append(connection_attrs[connection_all[row]])
        fragments.append(time_attrs[hour_all[row], weekday_all[row]])
        fragments.append(listener_tail[who])
        ts = ts_all[row]
        ts_json = _json(ts)
        decision = _json(outcomes.decision_ids[n])
        is_filled = filled[n]
        yield join(
            (o0, ts_json, o1, decision, o2, slot_json[slot], o3, listener_json[who], o4,
             reasons[is_filled], o5, b"{", b",".join(fragments), b",", decision_tail, o6)
        )  # fmt: skip
        if not is_filled:
            continue
        common = (decision, slot_json[slot], listener_json[who], agent_json[who])
        yield _tracked(tracking[EventType.IMPRESSION], _json(ts + 1.0), common)
        if clicked[n]:
            yield _tracked(tracking[EventType.CLICK], _json(ts + 20.0), common)
            if converted[n]:
                yield _tracked(tracking[EventType.CONVERSION], _json(ts + 20.0 + delays[n]), common)


def _tracked(template: list[bytes], ts: bytes, common: tuple[bytes, bytes, bytes, bytes]) -> bytes:
    t0, t1, t2, t3, t4, t5 = template
    decision, slot, listener, agent = common
    return b"".join((t0, ts, t1, decision, t2, slot, t3, listener, t4, agent, t5))


def write_history(
    directory: Path,
    traffic: Traffic,
    *,
    sample: float = 1.0,
    fill_rate: float = 0.7,
    model: ResponseModel | None = None,
    app_of: AppOf | None = None,
    batch: int = 50_000,
    sample_by: str = "request",
) -> HistoryStats:
    """Append the traffic's decision-log sample and its outcomes to the event log in ``directory``."""
    outcomes = draw_outcomes(
        traffic, sample=sample, fill_rate=fill_rate, model=model, sample_by=sample_by
    )
    with EventLogWriter(Path(directory), max_delay_s=0) as writer:
        pending: list[bytes] = []
        futures = []
        for payload in history_records(
            traffic, outcomes, sample=sample, app_of=app_of, sample_by=sample_by
        ):
            pending.append(payload)
            if len(pending) >= batch:
                futures.append(writer.append_many(pending))
                pending = []
                if len(futures) > 2:  # bound what waits in memory for the disk
                    futures.pop(0).result()
        if pending:
            futures.append(writer.append_many(pending))
        for future in futures:
            future.result()
    return HistoryStats(
        opportunities=int(outcomes.rows.size),
        impressions=int(outcomes.filled.sum()),
        clicks=int(outcomes.clicked.sum()),
        conversions=int(outcomes.converted.sum()),
        since=traffic.config.start,
        until=traffic.config.end,
    )

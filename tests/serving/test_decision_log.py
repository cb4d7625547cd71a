"""The decision log: each sampled ad request becomes an ``opportunity`` event in the event
log, with the request's attributes, how many line items its targeting admitted, the
winners and, for a no-fill, the reason.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_auction import serving_app
from test_decider_properties import SLOTS, T0, UNIT, line_item

from backbeat.eventlog import EventLogReader, EventLogWriter
from backbeat.events import Event, EventType
from backbeat.serving.ledger import MemoryLedger
from backbeat.serving.request import AdRequest, PodRequest
from backbeat.serving.server import AdServer, listener_kept, opportunity_record
from backbeat.serving.snapshot import CapRule, ServableLineItem, Snapshot
from backbeat.signing import UrlSigner
from factories import book_servable

BOOK = [
    line_item(
        1, cpm_micros=9 * UNIT, targeting={"countries": ["US"]}, caps=(CapRule("li:1", 1, None),)
    ),
    line_item(
        2, cpm_micros=8 * UNIT, targeting={"countries": ["US", "GB"], "not": {"genres": ["news"]}}
    ),
    line_item(3, cpm_micros=7 * UNIT, targeting={"segments": ["auto"]}),
    line_item(4, cpm_micros=UNIT // 2, targeting={"countries": ["FR"]}, currency="EUR"),
]


def opportunities(directory: Path) -> list[Event]:
    events = [Event.from_bytes(record.payload) for record in EventLogReader(directory).records()]
    # Fills are the ledger's budget reservations (one per filled decision), not the sample.
    assert {event.type for event in events} <= {EventType.OPPORTUNITY, EventType.FILL}
    return [event for event in events if event.type == EventType.OPPORTUNITY]


def ad_server(
    tmp_path: Path, book: list[ServableLineItem], sample: float, seed: int = 1
) -> tuple[AdServer, EventLogWriter]:
    writer = EventLogWriter(tmp_path / "events", max_delay_s=0.0)
    server = AdServer(
        session_factory=None,  # type: ignore[arg-type]  # the snapshot is set directly
        ledger=MemoryLedger(),
        signer=UrlSigner(b"decision-log-test-key", "http://testserver"),
        clock=lambda: T0,
        tracking_ttl_seconds=3600,
        decision_log=writer.append,
        decision_log_sample=sample,
        seed=seed,
    )
    server.snapshot = Snapshot.of(42, book, SLOTS)
    return server, writer


def test_every_request_is_an_opportunity_with_attributes_targeting_winners_and_reason(tmp_path):
    server, writer = ad_server(tmp_path, BOOK, sample=1.0)
    requests = [
        AdRequest(
            slot_id=2, listener="ann", country="US", device="mobile", segments=("auto", "runner")
        ),
        AdRequest(slot_id=2, listener="ann", country="US", genre="news"),  # 1 is capped now
        AdRequest(slot_id=2, listener="bob", country="DE"),  # targeting admits nobody
        AdRequest(slot_id=3, listener="cy", country="FR"),  # EUR slot: 4 is below its reserve
    ]
    decisions = [server.decide(request) for request in requests]
    decisions.append(
        server.decide(AdRequest(slot_id=1, listener="dee", country="GB"), PodRequest(max_ads=3))
    )
    writer.flush()
    events = opportunities(tmp_path / "events")
    assert len(events) == len(decisions) == 5
    assert [event.decision_id for event in events] == [found[0].id for found in decisions]
    assert [event.listener for event in events] == ["ann", "ann", "bob", "cy", "dee"]
    assert [event.slot_id for event in events] == [2, 2, 2, 3, 1]
    assert [event.ts for event in events] == [T0] * 5
    assert [event.attrs["winners"] for event in events] == [[1], [], [], [], [2]]
    assert [event.attrs["targeted"] for event in events] == [3, 1, 0, 1, 1]
    assert [event.reason for event in events] == [
        None,
        "frequency-capped",
        "no-targeting-match",
        "below-reserve",
        None,
    ]
    first = events[0].attrs
    assert first["countries"] == "US" and first["devices"] == "mobile"
    assert first["segments"] == ["auto", "runner"]
    assert (first["slots"], first["surfaces"], first["positions"]) == (2, "podcast", "pre_roll")
    assert "genres" not in first  # absent attributes are left out
    assert events[1].attrs["genres"] == "news"
    assert {event.attrs["catalog_version"] for event in events} == {42}
    assert {event.attrs["sample"] for event in events} == {1.0}
    writer.close()


def test_with_sampling_off_nothing_is_logged(tmp_path):
    server, writer = ad_server(tmp_path, BOOK, sample=0.0)
    for n in range(50):
        server.decide(AdRequest(slot_id=1, listener=f"l{n}", country="US"))
    writer.flush()
    assert opportunities(tmp_path / "events") == []
    writer.close()


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.75])
def test_the_share_logged_follows_the_sampling_rate(tmp_path, rate):
    requests = 3000
    server, writer = ad_server(tmp_path, [line_item(1)], sample=rate, seed=int(rate * 100))
    for n in range(requests):
        server.decide(AdRequest(slot_id=1, listener=f"l{n}"))
    writer.flush()
    logged = opportunities(tmp_path / "events")
    # Binomial: within five standard deviations.
    assert abs(len(logged) - rate * requests) <= 5 * math.sqrt(requests * rate * (1 - rate))
    assert {event.attrs["sample"] for event in logged} == {rate}
    writer.close()


def vast_opportunities(tmp_path: Path, sample: float, requests: int) -> list[Event]:
    tmp_path.mkdir()
    database = f"sqlite:///{tmp_path / 'backbeat.db'}"
    with serving_app(tmp_path, database, decision_log_sample=sample, decision_seed=5) as client:
        slot = book_servable(client, line_item={"targeting": {"countries": ["US"]}})["slot"]["id"]
        for n in range(requests):
            country = "us" if n % 2 == 0 else "gb"
            response = client.get(
                "/vast", params={"slot": slot, "listener": f"l{n}", "country": country}
            )
            assert response.status_code == 200
        client.app.state.services.event_log.flush()
        return opportunities(tmp_path / "var" / "events")


def test_vast_requests_are_logged_through_the_app(tmp_path):
    events = vast_opportunities(tmp_path / "all", 1.0, 6)
    assert len(events) == 6
    assert [event.attrs["countries"] for event in events] == ["US", "GB"] * 3
    assert [bool(event.attrs["winners"]) for event in events] == [True, False] * 3
    assert [event.reason for event in events] == [None, "no-targeting-match"] * 3
    assert [event.listener for event in events] == [f"l{n}" for n in range(6)]
    assert vast_opportunities(tmp_path / "none", 0.0, 6) == []


def test_the_log_keeps_listeners_whole_by_a_salted_hash(tmp_path):
    """Every request of a kept listener is logged, none of a dropped one; the choice is the
    same on every server (any seed) and a share ``sample`` of listeners is kept."""
    rate, listeners = 0.2, 1500
    kept = {f"l{n}" for n in range(listeners) if listener_kept(f"l{n}", rate)}
    assert abs(len(kept) - rate * listeners) <= 5 * math.sqrt(listeners * rate * (1 - rate))
    for seed in (1, 2):
        server, writer = ad_server(tmp_path / str(seed), [line_item(1)], sample=rate, seed=seed)
        for _repeat in range(3):
            for n in range(listeners):
                server.decide(AdRequest(slot_id=1, listener=f"l{n}"))
        writer.flush()
        logged = opportunities(tmp_path / str(seed) / "events")
        by_listener: dict[str, int] = {}
        for event in logged:
            by_listener[event.listener] = by_listener.get(event.listener, 0) + 1
        assert set(by_listener) == kept
        assert set(by_listener.values()) == {3}
        assert {(e.attrs["sample"], e.attrs["sample_by"]) for e in logged} == {(rate, "listener")}
        writer.close()


def test_anonymous_requests_are_sampled_by_chance(tmp_path):
    server, writer = ad_server(tmp_path, [line_item(1)], sample=0.3, seed=9)
    for _ in range(2000):
        server.decide(AdRequest(slot_id=1, listener=""))
    writer.flush()
    logged = opportunities(tmp_path / "events")
    assert abs(len(logged) - 600) <= 5 * math.sqrt(2000 * 0.3 * 0.7)
    assert all("sample_by" not in event.attrs for event in logged)
    writer.close()


def reference_record(snapshot, request, decisions, now, sample) -> bytes:
    """The opportunity record as the ``Event`` dataclass writes it (the schema's own path)."""
    first = decisions[0]
    attributes = first.attributes or {}
    return Event(
        type=EventType.OPPORTUNITY,
        ts=now,
        decision_id=first.id,
        slot_id=first.slot.id,
        listener=request.listener,
        reason=first.no_fill_reason,
        attrs={
            **{key: value for key, value in attributes.items() if value not in (None, (), "")},
            "segments": list(request.segments),
            "tz": request.timezone,
            "user_agent": request.user_agent,
            "targeted": first.targeted.bit_count(),
            "catalog_version": snapshot.version,
            "winners": [decision.line_item.id for decision in decisions if decision.line_item],
            "sample": sample,
            **({"sample_by": "listener"} if request.listener else {}),
        },
    ).to_bytes()


_token = st.sampled_from(["", "US", "GB", "FR", "news", "auto", "runner", "ü-ñ", 'q"\\'])


@settings(max_examples=150, deadline=None)
@given(
    slot=st.sampled_from([1, 2, 3]),
    listener=st.sampled_from(["", "ann", "l-9", "x" * 128]),
    country=_token,
    genre=_token,
    segments=st.lists(_token, max_size=4).map(tuple),
    timezone=st.sampled_from([None, "Europe/Paris"]),
    agent=st.text(max_size=40),
    pod=st.integers(1, 3),
    sample=st.sampled_from([0.1, 0.5, 1.0]),
)
def test_the_record_written_is_the_event_schemas_byte_for_byte(
    slot, listener, country, genre, segments, timezone, agent, pod, sample
):
    """``opportunity_record`` skips the dataclass; readers must not see a difference."""
    server = AdServer(
        session_factory=None,  # type: ignore[arg-type]
        ledger=MemoryLedger(),
        signer=UrlSigner(b"decision-log-test-key", "http://testserver"),
        clock=lambda: T0 + 0.123,
        tracking_ttl_seconds=3600,
    )
    server.snapshot = Snapshot.of(42, BOOK, SLOTS)
    request = AdRequest(
        slot_id=slot, listener=listener, country=country or None, genre=genre or None,
        segments=segments, timezone=timezone, user_agent=agent,
    )  # fmt: skip
    decisions = server.decide(request, PodRequest(max_ads=pod))
    now = T0 + 0.123
    written = opportunity_record(server.snapshot, request, decisions, now, sample)
    assert written == reference_record(server.snapshot, request, decisions, now, sample)

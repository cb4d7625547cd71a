"""The hot paths on the wire: lengths, request ids, tallied metrics, pixel records."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from test_vast import decide

from backbeat.api.app import create_app
from backbeat.events import Event
from backbeat.measurement.tracking import record_bytes
from backbeat.observability import Tally, new_request_id
from backbeat.signing import LISTENER_ALPHABET, TrackingClaims
from factories import book_servable
from support.app import make_settings

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


def test_answers_carry_their_length_and_a_request_id(client):
    booked = book_servable(client)
    vast = client.get("/vast", params={"slot": booked["slot"]["id"], "listener": "wire"})
    assert vast.status_code == 200
    assert "transfer-encoding" not in vast.headers  # no chunked framing
    assert int(vast.headers["content-length"]) == len(vast.content)
    problem = client.get("/vast", params={"slot": "999999"})
    assert problem.status_code == 404
    assert int(problem.headers["content-length"]) == len(problem.content)
    url = urlsplit(decide(client, booked["slot"]["id"], "wire")["tracking"]["impression"])
    pixel = client.get(f"{url.path}?{url.query}")
    assert pixel.status_code == 204 and pixel.content == b""
    ids = {response.headers["x-request-id"] for response in (vast, problem, pixel)}
    assert len(ids) == 3 and all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in ids)


def test_request_ids_are_distinct_16_hex_digits():
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in ids)


def _families(registry: CollectorRegistry) -> str:
    # Creation timestamps differ between the two registries; everything else must not.
    return "\n".join(
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    )


@settings(max_examples=50, deadline=None)
@given(
    observations=st.lists(
        st.tuples(
            st.sampled_from(["/vast", "/t/{event}"]),
            st.sampled_from([0.0, *BUCKETS, 2.0]) | st.floats(0, 3, allow_nan=False),
        ),
        max_size=60,
    )
)
def test_tallied_metrics_expose_what_direct_updates_would(observations):
    """Against the reference: the same observations made one by one on plain metrics."""
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    metrics = {}
    for name, registry in (("direct", direct), ("tallied", tallied)):
        metrics[name] = (
            Histogram("t_seconds", "t", ["route"], buckets=BUCKETS, registry=registry),
            Counter("t_requests", "t", ["route"], registry=registry),
        )
    tally = Tally()
    for route, seconds in observations:
        histogram, counter = metrics["direct"]
        histogram.labels(route).observe(seconds)
        counter.labels(route).inc()
        histogram, counter = metrics["tallied"]
        tally.observe(histogram.labels(route), seconds)
        tally.count(counter.labels(route))
    tally.flush()
    assert _families(tallied) == _families(direct)


def test_a_tally_on_a_loop_flushes_by_itself():
    registry = CollectorRegistry()
    counter = Counter("t_pixels", "t", registry=registry)
    tally = Tally(flush_seconds=0.01)

    async def count() -> None:
        before = registry.get_sample_value("t_pixels_total")
        for _ in range(5):
            tally.count(counter)
        assert registry.get_sample_value("t_pixels_total") == before  # not yet written
        await asyncio.sleep(0.05)

    asyncio.run(count())
    assert registry.get_sample_value("t_pixels_total") == 5.0

    async def count_and_leave() -> None:
        tally.count(counter)  # its flush is due on a loop about to close

    asyncio.run(count_and_leave())
    asyncio.run(count())  # a new loop schedules its own flush
    assert registry.get_sample_value("t_pixels_total") == 11.0


listeners = st.from_regex(f"[{LISTENER_ALPHABET}]{{1,128}}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    event=st.sampled_from(["impression", "start", "complete", "click", "error"]),
    now=st.floats(0, 4e9, allow_nan=False),
    ids=st.tuples(*(st.integers(0, 2**31 - 1) for _ in range(4))),
    decision=st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
    price=st.integers(0, 2**63 - 1),
    currency=st.sampled_from(["USD", "EUR", "SEK"]),
    listener=listeners,
    ip=st.text(max_size=64),
    agent=st.text(max_size=700),
    reason=st.none() | st.text(alphabet="0123456789", min_size=1, max_size=4),
)
def test_a_pixel_record_is_the_events_own_encoding(
    event, now, ids, decision, price, currency, listener, ip, agent, reason
):
    line_item, campaign, creative, slot = ids
    claims = TrackingClaims(
        decision, line_item, campaign, creative, slot, price, currency, listener, 2**40
    )
    reference = Event(
        type=event,
        ts=now,
        decision_id=decision,
        line_item_id=line_item or None,
        campaign_id=campaign or None,
        creative_id=creative or None,
        slot_id=slot,
        listener=listener,
        price_micros=price,
        currency=currency,
        ip=ip,
        user_agent=agent[:512],
        reason=reason,
    ).to_bytes()
    assert record_bytes(event, now, claims, ip, agent, reason) == reference


def test_refused_pixels_carry_a_request_id_too(database_url, tmp_path):
    settings = make_settings(
        database_url,
        tmp_path / "var",
        rate_limit_tracking_per_ip=1.0,
        rate_limit_burst_tracking_per_ip=1,
    )
    with TestClient(create_app(settings)) as client:
        answers = [client.get("/t/impression?d=1") for _ in range(3)]
        head = client.head("/t/impression", headers={"x-request-id": "probe-1"})
        wrong_method = client.post("/t/impression")
    assert [answer.status_code for answer in answers][-1] == 429
    assert answers[-1].json()["request_id"] == answers[-1].headers["x-request-id"]
    assert len({answer.headers["x-request-id"] for answer in answers}) == 3
    assert head.headers["x-request-id"] == "probe-1"
    assert wrong_method.status_code == 405 and "x-request-id" in wrong_method.headers

"""Event-log damage: a torn tail is told from damage in the middle, which is skipped and reported."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from backbeat.eventlog import HEADER_BYTES, EventLogReader, EventLogWriter


def _write(directory: Path, payloads: list[bytes]) -> Path:
    with EventLogWriter(directory) as writer:
        for future in [writer.append(p) for p in payloads]:
            future.result(timeout=10)
    (segment,) = EventLogReader(directory).segments()
    return directory / segment


def _frames(payloads: list[bytes]) -> list[tuple[int, int]]:
    """(offset, end) of each record, computed from the framing definition."""
    spans, offset = [], 0
    for payload in payloads:
        end = offset + HEADER_BYTES + len(payload)
        spans.append((offset, end))
        offset = end
    return spans


def _skipped_metric(kind: str) -> float:
    return REGISTRY.get_sample_value("backbeat_eventlog_skipped_bytes_total", {"kind": kind}) or 0.0


def test_a_flipped_byte_mid_segment_skips_one_record_and_reports_it(tmp_path: Path) -> None:
    payloads = [orjson.dumps({"type": "impression", "n": i}) for i in range(50)]
    segment = _write(tmp_path, payloads)
    spans = _frames(payloads)
    data = bytearray(segment.read_bytes())
    data[spans[20][0] + HEADER_BYTES + 3] ^= 0x20  # inside the payload of record 20
    segment.write_bytes(bytes(data))
    before = _skipped_metric("damage")

    reader = EventLogReader(tmp_path)
    read = [r.payload for r in reader.records()]

    assert read == payloads[:20] + payloads[21:]
    assert reader.stats.torn_tails == 0
    assert reader.stats.damaged_bytes == reader.stats.bytes_skipped == spans[20][1] - spans[20][0]
    (damage,) = reader.damage
    assert (damage.segment, damage.offset, damage.length) == (
        segment.name,
        spans[20][0],
        spans[20][1] - spans[20][0],
    )
    assert _skipped_metric("damage") - before == damage.length
    # The checkpoint is past the damage: a resumed reader does not report it again.
    again = EventLogReader(tmp_path, start=reader.checkpoint)
    assert list(again.records()) == [] and again.damage == []


def test_zeroed_block_in_the_middle_is_damage_not_a_torn_tail(tmp_path: Path) -> None:
    payloads = [orjson.dumps({"i": i, "pad": "x" * 100}) for i in range(200)]
    segment = _write(tmp_path, payloads)
    spans = _frames(payloads)
    data = bytearray(segment.read_bytes())
    start, stop = spans[10][0] + 5, spans[60][0] + 7  # a run of zeros across 51 records
    data[start:stop] = bytes(stop - start)
    segment.write_bytes(bytes(data))

    reader = EventLogReader(tmp_path)
    read = [r.payload for r in reader.records()]

    assert read == payloads[:10] + payloads[61:]
    assert [(d.offset, d.length) for d in reader.damage] == [
        (spans[10][0], spans[61][0] - spans[10][0])
    ]
    assert reader.stats.torn_tails == 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=40),
    where=st.floats(0, 1, exclude_max=True),
    noise=st.binary(min_size=1, max_size=700),
)
def test_any_overwrite_loses_only_the_records_it_touches(
    tmp_path_factory: object, sizes: list[int], where: float, noise: bytes
) -> None:
    directory = tmp_path_factory.mktemp("log")  # type: ignore[attr-defined]
    payloads = [orjson.dumps({"i": i, "pad": "y" * n}) for i, n in enumerate(sizes)]
    segment = _write(directory, payloads)
    original = segment.read_bytes()
    at = int(where * len(original))
    damaged = bytearray(original)
    damaged[at : at + len(noise)] = noise[: len(original) - at]
    segment.write_bytes(bytes(damaged))

    # Independent expectation: a record survives iff its bytes are unchanged.
    spans = _frames(payloads)
    intact = [original[a:b] == bytes(damaged[a:b]) for a, b in spans]
    expected = [p for p, ok in zip(payloads, intact, strict=True) if ok]
    reader = EventLogReader(directory)
    assert [r.payload for r in reader.records()] == expected
    kept = sum(b - a for (a, b), ok in zip(spans, intact, strict=True) if ok)
    assert reader.stats.bytes_skipped == len(original) - kept
    last_intact = max((k for k, ok in enumerate(intact) if ok), default=-1)
    lost_before_last = not all(intact[: last_intact + 1])
    assert bool(reader.damage) == lost_before_last
    assert reader.stats.torn_tails == (0 if all(intact[last_intact + 1 :]) else 1)

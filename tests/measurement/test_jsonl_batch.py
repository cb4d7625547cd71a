"""The vectorised JSON Lines parser agrees with the scalar one on every line, good or bad."""

from __future__ import annotations

from collections import Counter

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.measurement.accesslogs import JSONL
from backbeat.measurement.downloads.batch import PARSED_SCHEMA, _parse_scalar, parse_batch

GOOD = {
    "ts": "2026-11-21T10:00:00Z",
    "ip": "24.1.2.3",
    "method": "GET",
    "path": "/shows/s1/episodes/1.mp3",
    "status": 206,
    "bytes": 1048576,
    "range": "bytes=0-1048575",
    "user_agent": "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
    "referer": "",
    "edge": "fra-12",
}
VALUES = {
    "ts": st.sampled_from(
        [
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00.250+01:00",
            "2026-11-21t10:00:00z",
            "2026-11-21 10:00:00",
            "2026-13-01T00:00:00Z",
            "",
            5,
            None,
        ]
    ),
    "ip": st.sampled_from(["24.1.2.3", "2001:db8::1", "", None, 7]),
    "method": st.sampled_from(["GET", "get", "HEAD", "G3T", "", "ÄÖ", None]),
    "path": st.sampled_from(["/shows/s1/episodes/1.mp3", "/feed.xml?x=1", "", None]),
    "status": st.sampled_from([200, 206, 304, 99, 1000, "200", True, 200.0, None]),
    "bytes": st.sampled_from([0, 2, 10**15 - 1, 10**15, -1, "5", None]),
    "range": st.sampled_from(["bytes=0-1", "", None, 3, "bytes=-500"]),
    "user_agent": st.sampled_from(["AntennaPod/3.3.2", "", None, "-", ["x"]]),
    "referer": st.sampled_from(["", "https://x/", None]),
}
MISSING = object()


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["good", "good", "good", "fields", "broken", "empty", "array"]))
    if kind == "good":
        return orjson.dumps(GOOD).decode()
    if kind == "broken":
        return orjson.dumps(GOOD).decode()[: draw(st.integers(1, 60))]
    if kind == "empty":
        return draw(st.sampled_from(["", "   "]))
    if kind == "array":
        return "[1, 2]"
    record = dict(GOOD)
    for key in draw(st.sets(st.sampled_from(sorted(VALUES)), min_size=1)):
        value = draw(st.one_of(VALUES[key], st.just(MISSING)))
        if value is MISSING:
            record.pop(key, None)
        else:
            record[key] = value
    return orjson.dumps(record).decode()


@settings(max_examples=40, deadline=None)
@given(batch=st.lists(lines(), min_size=1, max_size=600))
def test_vectorised_jsonl_parsing_equals_the_scalar_parser(batch: list[str]) -> None:
    parsed, rejects = parse_batch(pa.array(batch, pa.string()), JSONL)
    requests, expected_rejects = _parse_scalar(batch, JSONL)
    fields = PARSED_SCHEMA.names
    got = Counter(tuple(row[f] for f in fields) for row in parsed.to_pylist())
    want = Counter(tuple(getattr(r, f) for f in fields) for r in requests)
    assert got == want
    assert Counter(rejects["reason"].to_pylist()) == Counter(r for r, _ in expected_rejects)

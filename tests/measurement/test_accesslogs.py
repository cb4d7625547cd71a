"""Access-log parsing: both formats, escapes, timestamps and every malformed-line reason."""

from __future__ import annotations

import orjson
import pytest

from backbeat.measurement.accesslogs import (
    MalformedLine,
    RejectReason,
    Request,
    parse_clf_time,
    parse_line,
    parse_rfc3339,
)

ISSUE_EXAMPLE = (
    '203.0.113.9 - - [21/Nov/2026:13:55:36 +0000] "GET /ep/42.mp3?x=1 HTTP/1.1" 206 1048576 '
    '"-" "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)" "bytes=0-1048575"'
)
TS = 1_795_269_336_000_000  # 2026-11-21T13:55:36Z


def test_combined_issue_example():
    assert parse_line(ISSUE_EXAMPLE) == Request(
        ts_us=TS,
        ip="203.0.113.9",
        method="GET",
        target="/ep/42.mp3?x=1",
        status=206,
        nbytes=1048576,
        range="bytes=0-1048575",
        user_agent="Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
        referer=None,
    )


def test_combined_with_ipv6_referer_escaped_quotes_and_dash_bytes():
    line = (
        '2001:db8::1 - frank [21/Nov/2026:14:55:36 +0100] "GET /a.mp3 HTTP/2.0" 304 - '
        '"https://example.com/\\"x\\"" "Agent \\x22quoted\\x22" "-"\r\n'
    )
    request = parse_line(line)
    assert request.ip == "2001:db8::1"
    assert request.ts_us == TS
    assert request.nbytes == 0 and request.status == 304
    assert request.referer == 'https://example.com/"x"'
    assert request.user_agent == 'Agent "quoted"'
    assert request.range is None


def test_combined_missing_user_agent_is_empty():
    line = ISSUE_EXAMPLE.replace('"Overcast/3.0 (+http://overcast.fm/; iOS podcast app)"', '"-"')
    assert parse_line(line).user_agent == ""


def test_clf_time_offsets():
    assert parse_clf_time("21/Nov/2026:08:55:36 -0500") == TS
    assert parse_clf_time("22/Nov/2026:00:25:36 +1030") == TS


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", RejectReason.EMPTY_LINE),
        ("   ", RejectReason.EMPTY_LINE),
        ("garbage", RejectReason.MALFORMED_LINE),
        (ISSUE_EXAMPLE.rsplit(" ", 1)[0], RejectReason.MALFORMED_LINE),  # no Range field
        (ISSUE_EXAMPLE.replace("206 1048576", "2O6 1048576"), RejectReason.MALFORMED_LINE),
        (ISSUE_EXAMPLE.replace("21/Nov/2026", "31/Nov/2026"), RejectReason.BAD_TIMESTAMP),
        (ISSUE_EXAMPLE.replace("21/Nov/2026", "21/Foo/2026"), RejectReason.BAD_TIMESTAMP),
        (ISSUE_EXAMPLE.replace(" +0000]", "]"), RejectReason.BAD_TIMESTAMP),
        (
            ISSUE_EXAMPLE.replace('"GET /ep/42.mp3?x=1 HTTP/1.1"', '"-"'),
            RejectReason.BAD_REQUEST_LINE,
        ),
        (
            ISSUE_EXAMPLE.replace('"GET /ep/42.mp3?x=1 HTTP/1.1"', '"\\x16\\x03\\x01"'),
            RejectReason.BAD_REQUEST_LINE,
        ),
    ],
)
def test_combined_malformed(line: str, reason: RejectReason):
    with pytest.raises(MalformedLine) as caught:
        parse_line(line)
    assert caught.value.reason == reason


def _jsonl(**overrides: object) -> str:
    record: dict[str, object] = {
        "ts": "2026-11-21T13:55:36Z",
        "ip": "203.0.113.9",
        "method": "GET",
        "path": "/ep/42.mp3",
        "status": 200,
        "bytes": 100,
        "range": None,
        "user_agent": "Overcast/3.0",
        "referer": None,
    }
    record.update(overrides)
    return orjson.dumps({k: v for k, v in record.items() if v is not ...}).decode()


def test_jsonl_record():
    request = parse_line(_jsonl(range="bytes=-100", referer="https://x/"), "jsonl")
    assert request == Request(
        TS, "203.0.113.9", "GET", "/ep/42.mp3", 200, 100, "bytes=-100", "Overcast/3.0", "https://x/"
    )


def test_jsonl_optional_keys_may_be_absent():
    request = parse_line(_jsonl(range=..., user_agent=..., referer=...), "jsonl")
    assert (request.range, request.user_agent, request.referer) == (None, "", None)


def test_rfc3339_fractions_and_offsets():
    assert parse_rfc3339("2026-11-21T14:55:36.25+01:00") == TS + 250_000
    assert parse_rfc3339("2026-11-21t13:55:36z") == TS


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", RejectReason.BAD_JSON),
        ("[1, 2]", RejectReason.BAD_JSON),
        (_jsonl(status=...), RejectReason.MISSING_FIELD),
        (_jsonl(ip=None), RejectReason.MISSING_FIELD),
        (_jsonl(status="200"), RejectReason.BAD_FIELD),
        (_jsonl(status=True), RejectReason.BAD_FIELD),
        (_jsonl(bytes=-1), RejectReason.BAD_FIELD),
        (_jsonl(bytes=1.5), RejectReason.BAD_FIELD),
        (_jsonl(method="GE T"), RejectReason.BAD_FIELD),
        (_jsonl(user_agent=5), RejectReason.BAD_FIELD),
        (_jsonl(ts="2026-11-21T13:55:36"), RejectReason.BAD_TIMESTAMP),  # no offset
        (_jsonl(ts="2026-11-21"), RejectReason.BAD_TIMESTAMP),
        (_jsonl(ts="yesterday"), RejectReason.BAD_TIMESTAMP),
    ],
)
def test_jsonl_malformed(line: str, reason: RejectReason):
    with pytest.raises(MalformedLine) as caught:
        parse_line(line, "jsonl")
    assert caught.value.reason == reason

"""Parse podcast host / CDN access logs into requests, or say why a line is malformed.

Two formats: nginx/Apache *combined* with one extra quoted field holding the raw
``Range`` header, and JSON Lines (``ts``, ``ip``, ``method``, ``path``, ``status``,
``bytes``, ``range``, ``user_agent``, ``referer``). Malformed lines raise
:class:`MalformedLine` carrying a machine-readable reason so that pipelines can count
them and write them to a rejects output instead of crashing.

The line and timestamp formats live here once: the scalar parsers below serve the plain
reference implementation, and the Arrow batch parser reuses :data:`COMBINED_PATTERN`
(written in the common subset of Python ``re`` and RE2) and :func:`parse_clf_time`.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import orjson

COMBINED = "combined"
JSONL = "jsonl"
FORMATS = (COMBINED, JSONL)

COMBINED_PATTERN = (
    r"^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "
    r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d{1,15}|-) '
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<user_agent>(?:[^"\\]|\\.)*)" '
    r'"(?P<range>(?:[^"\\]|\\.)*)"$'
)
_COMBINED_RE = re.compile(COMBINED_PATTERN)
_CLF_TIME_RE = re.compile(
    r"(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)
_MONTH_NAMES = "|".join(calendar.month_abbr[1:])
# Timestamps a lenient parser (Arrow's strptime) reads exactly as parse_clf_time does:
# days that exist in every month, in-range clock fields and offsets.
STRICT_CLF_TIME = (
    rf"^(0[1-9]|1[0-9]|2[0-8])/({_MONTH_NAMES})/[1-9][0-9]{{3}}:"
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9] [+-]([01][0-9]|2[0-3])[0-5][0-9]$"
)
CLF_TIME_FORMAT = "%d/%b/%Y:%H:%M:%S %z"
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)")
_JSON_KEYS = ("ts", "ip", "method", "path", "status", "bytes")
MAX_BYTES = 10**15


class RejectReason(StrEnum):
    """Why a line could not be read as a request."""

    EMPTY_LINE = "empty-line"
    BAD_ENCODING = "bad-encoding"
    MALFORMED_LINE = "malformed-line"
    BAD_JSON = "bad-json"
    MISSING_FIELD = "missing-field"
    BAD_FIELD = "bad-field"
    BAD_TIMESTAMP = "bad-timestamp"
    BAD_REQUEST_LINE = "bad-request-line"


class MalformedLine(ValueError):
    """A log line that is not a request in the declared format."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request from an access log; ``ts_us`` is UTC microseconds since the epoch."""

    ts_us: int
    ip: str
    method: str
    target: str
    status: int
    nbytes: int
    range: str | None
    user_agent: str
    referer: str | None


def parse_clf_time(text: str) -> int:
    """``21/Nov/2026:13:55:36 +0000`` to UTC microseconds; :class:`MalformedLine` if invalid."""
    match = _CLF_TIME_RE.fullmatch(text)
    month = _MONTHS.get(match.group(2)) if match else None
    if match is None or month is None:
        raise MalformedLine(RejectReason.BAD_TIMESTAMP, text)
    day, _, year, hour, minute, second, sign, off_h, off_m = match.groups()
    try:
        datetime(int(year), month, int(day), int(hour), int(minute), int(second))
    except ValueError as exc:
        raise MalformedLine(RejectReason.BAD_TIMESTAMP, text) from exc
    local = calendar.timegm((int(year), month, int(day), int(hour), int(minute), int(second)))
    offset = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == "+" else -1)
    return (local - offset) * 1_000_000


def parse_rfc3339(text: str) -> int:
    """An RFC 3339 timestamp with an offset to UTC microseconds."""
    upper = text.upper()  # RFC 3339 allows "t" and "z"; fromisoformat does not
    try:
        moment = datetime.fromisoformat(upper)
    except ValueError as exc:
        raise MalformedLine(RejectReason.BAD_TIMESTAMP, text) from exc
    if moment.tzinfo is None or "T" not in upper:
        raise MalformedLine(RejectReason.BAD_TIMESTAMP, text)
    return _to_us(moment)


def _to_us(moment: datetime) -> int:
    seconds = calendar.timegm(moment.utctimetuple())
    return seconds * 1_000_000 + moment.microsecond


def unescape(field: str) -> str:
    """Undo the log writer's escaping: ``\\"`` (Apache) and ``\\x22`` (nginx)."""
    if "\\" not in field:
        return field
    return _ESCAPE_RE.sub(
        lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 3 else m.group(1), field
    )


def optional_field(field: str) -> str | None:
    """A combined-log field where ``-`` means absent."""
    return None if field in ("-", "") else unescape(field)


def parse_request_line(request: str) -> tuple[str, str]:
    """``GET /ep/1.mp3 HTTP/1.1`` to (method, target); HTTP/0.9's ``GET /path`` is accepted."""
    parts = unescape(request).split(" ")
    if len(parts) not in (2, 3) or not parts[0].isalpha() or not parts[1]:
        raise MalformedLine(RejectReason.BAD_REQUEST_LINE, request)
    return parts[0].upper(), parts[1]


def parse_combined(line: str) -> Request:
    """Parse one combined-format line with the trailing quoted ``Range`` field."""
    if not line.strip():
        raise MalformedLine(RejectReason.EMPTY_LINE)
    match = _COMBINED_RE.match(line)
    if match is None:
        raise MalformedLine(RejectReason.MALFORMED_LINE, line[:200])
    method, target = parse_request_line(match["request"])
    nbytes = match["bytes"]
    return Request(
        ts_us=parse_clf_time(match["time"]),
        ip=match["ip"],
        method=method,
        target=target,
        status=int(match["status"]),
        nbytes=0 if nbytes == "-" else int(nbytes),
        range=optional_field(match["range"]),
        user_agent=optional_field(match["user_agent"]) or "",
        referer=optional_field(match["referer"]),
    )


def _optional_str(record: dict[str, object], key: str) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedLine(RejectReason.BAD_FIELD, key)
    return value


def _int_field(record: dict[str, object], key: str, low: int, high: int) -> int:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedLine(RejectReason.BAD_FIELD, key)
    return value


def parse_jsonl(line: str) -> Request:
    """Parse one JSON Lines record."""
    if not line.strip():
        raise MalformedLine(RejectReason.EMPTY_LINE)
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedLine(RejectReason.BAD_JSON, line[:200]) from exc
    if not isinstance(record, dict):
        raise MalformedLine(RejectReason.BAD_JSON, line[:200])
    missing = [key for key in _JSON_KEYS if record.get(key) is None]
    if missing:
        raise MalformedLine(RejectReason.MISSING_FIELD, ",".join(missing))
    for key in ("ts", "ip", "method", "path"):
        if not isinstance(record[key], str) or not record[key]:
            raise MalformedLine(RejectReason.BAD_FIELD, key)
    method = record["method"]
    if not method.isalpha():
        raise MalformedLine(RejectReason.BAD_FIELD, "method")
    return Request(
        ts_us=parse_rfc3339(record["ts"]),
        ip=record["ip"],
        method=method.upper(),
        target=record["path"],
        status=_int_field(record, "status", 100, 999),
        nbytes=_int_field(record, "bytes", 0, MAX_BYTES - 1),
        range=_optional_str(record, "range"),
        user_agent=_optional_str(record, "user_agent") or "",
        referer=_optional_str(record, "referer"),
    )


PARSERS = {COMBINED: parse_combined, JSONL: parse_jsonl}


def parse_line(line: str, fmt: str = COMBINED) -> Request:
    """Parse one line of either format."""
    return PARSERS[fmt](line.rstrip("\r\n"))

"""On-disk framing of the event log, shared by its writer and its reader.

Each record is a 10-byte header followed by the payload::

    magic  2 bytes   b"\\xbb\\x01" (Backbeat, format 1)
    length u32 LE    payload bytes
    crc32  u32 LE    zlib.crc32 of the payload
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from backbeat.errors import BackbeatError

if TYPE_CHECKING:
    pass


DEFAULT_DIRECTORY = Path("var/events")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
MAGIC = b"\xbb\x01"
HEADER = struct.Struct("<2sII")
HEADER_BYTES = HEADER.size
# Bounds the length a reader trusts, so a corrupt length field cannot make it allocate
# gigabytes; tracking events are a few hundred bytes.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
SEGMENT_SUFFIX = ".seg"
SEGMENT_NAME = re.compile(r"^\d{8}T\d{12}Z-\d{7}-[0-9a-f]{6}-\d{8}\.seg$")
READ_CHUNK = 1024 * 1024


class EventLogUnavailable(BackbeatError):
    """Events could not be made durable; the cause is chained as ``__cause__``."""

    status = 503
    title = "Event log unavailable"
    reason = "event-log-unavailable"
    exit_code = 7


class EventLogClosed(EventLogUnavailable):
    """The writer was closed before or while the record was appended."""

    title = "Event log is closed"
    reason = "event-log-closed"


def encode_record(payload: bytes) -> bytes:
    """Frame one payload as it is stored on disk (header then payload)."""
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload

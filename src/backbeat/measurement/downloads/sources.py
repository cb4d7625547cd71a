"""Read access-log files as Arrow batches of raw lines, split by byte ranges for parallelism."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024
DEFAULT_BATCH_LINES = 100_000
NAMESPACE = "backbeat.downloads"

Chunk = tuple[str, int, int]


def _compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


class SplitLogFileFn(beam.DoFn):
    """Cut a matched file into byte ranges; compressed files cannot be split."""

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes

    def process(self, metadata: beam.io.filesystem.FileMetadata) -> Iterator[Chunk]:
        size = metadata.size_in_bytes
        if _compressed(metadata.path) or size <= self.chunk_bytes:
            yield metadata.path, 0, -1
            return
        for start in range(0, size, self.chunk_bytes):
            yield metadata.path, start, min(start + self.chunk_bytes, size)


def read_chunk(path: str, start: int, end: int) -> bytes:
    """The complete lines that *start* in ``[start, end)`` (``end`` -1: to the end of file)."""
    if end < 0:
        with FileSystems.open(path) as handle:
            return handle.read()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        if start > 0:
            handle.seek(start - 1)
            if handle.read(1) != b"\n":
                handle.readline()
        position = handle.tell()
        if position >= end:
            return b""
        data = handle.read(end - position)
        if data and not data.endswith(b"\n"):
            data += handle.readline()
        return data


def split_lines(data: bytes) -> list[bytes]:
    """Lines of a chunk; a final line needs no newline, and a final newline adds no line."""
    if not data:
        return []
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return lines


class ReadLogChunkFn(beam.DoFn):
    """Read one byte range as Arrow arrays of at most ``batch_lines`` raw lines."""

    def __init__(self, batch_lines: int = DEFAULT_BATCH_LINES) -> None:
        self.batch_lines = batch_lines
        self.lines_read = Metrics.counter(NAMESPACE, "lines-read")

    def process(self, chunk: Chunk) -> Iterator[pa.Array]:
        data = read_chunk(*chunk)
        ends = line_ends(data)
        self.lines_read.inc(len(ends))
        start = 0
        for first in range(0, len(ends), self.batch_lines):
            stop = int(ends[min(first + self.batch_lines, len(ends)) - 1])
            yield lines_array(data[start:stop], ends[first : first + self.batch_lines] - start)
            start = stop


def line_ends(data: bytes) -> np.ndarray:
    """Offsets just past each line (its newline included), as :func:`split_lines` splits."""
    newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1
    if data and not data.endswith(b"\n"):
        newlines = np.append(newlines, len(data))
    return newlines.astype(np.int64)


def lines_array(data: bytes, ends: np.ndarray) -> pa.Array:
    """The lines of ``data`` as one compact binary array, built without Python objects.

    Lines keep their trailing newline; the parsers strip it. Each batch owns its bytes, so
    pickling it for a shuffle does not drag the whole chunk along.
    """
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )

"""The download rules on Arrow record batches, for the Beam pipeline's hot path.

Per-request rules are evaluated once per *distinct* value in a batch (user agents, paths,
ranges, IPs, timestamps, combinations of reasons) with the scalar functions in
:mod:`rules` and :mod:`accesslogs`, then applied to every row by index, so there is one
statement of each rule. Lines the vectorised regex cannot read fall back to the scalar
parser, which also names the reason. Counting inside a hash bucket is vectorised with
numpy; :mod:`reference` is the plain statement of the same algorithm.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from backbeat.measurement.accesslogs import (
    CLF_TIME_FORMAT,
    COMBINED,
    COMBINED_PATTERN,
    MAX_BYTES,
    STRICT_CLF_TIME,
    MalformedLine,
    RejectReason,
    Request,
    optional_field,
    parse_clf_time,
    parse_line,
    parse_request_line,
    parse_rfc3339,
)
from backbeat.measurement.downloads.report import day_to_iso
from backbeat.measurement.downloads.rules import (
    CANONICAL_IPV4,
    DAY_US,
    Exclusion,
    IpRanges,
    RangeKind,
    bot_exclusion,
    delivered_interval,
    exclusion_reason,
    listener_ip,
    parse_range,
    range_exclusion,
    request_exclusion,
)
from backbeat.measurement.downloads.spec import DownloadRules, Window
from backbeat.measurement.useragents import classify

PARSED_SCHEMA = pa.schema(
    [
        ("ts_us", pa.int64()),
        ("ip", pa.string()),
        ("method", pa.string()),
        ("target", pa.string()),
        ("status", pa.int32()),
        ("nbytes", pa.int64()),
        ("range", pa.string()),
        ("user_agent", pa.string()),
        ("referer", pa.string()),
    ]
)
# User agents and apps repeat: dictionary columns keep the shuffled batches small.
_DICT = pa.dictionary(pa.int32(), pa.string())
HIT_SCHEMA = pa.schema(
    [
        ("listener_ip", pa.string()),
        ("user_agent", _DICT),
        ("episode", pa.int32()),
        ("ts_us", pa.int64()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("app", _DICT),
    ]
)
REJECT_SCHEMA = pa.schema([("reason", pa.string()), ("line", pa.string())])
EXCLUSIONS: tuple[Exclusion | None, ...] = (None, *Exclusion)
_CODE = {reason: code for code, reason in enumerate(EXCLUSIONS)}
_GROUP_SHIFT = 40  # byte offsets stay below 2**40 (1 TiB) so (group, offset) packs in int64
_MAX_OFFSET = (1 << _GROUP_SHIFT) - 1

Stats = Counter[tuple[str, str]]


def per_distinct(values: pa.Array, fn: Callable[[Any], Any]) -> tuple[list[Any], np.ndarray]:
    """``fn`` once per distinct value (``None`` for nulls) and each row's index into the results."""
    encoded = pc.dictionary_encode(values)
    results = [fn(value) for value in encoded.dictionary.to_pylist()]
    indices = encoded.indices
    if indices.null_count:
        results.append(fn(None))
        indices = pc.fill_null(indices, len(results) - 1)
    return results, indices.to_numpy(zero_copy_only=False).astype(np.int64)


def per_distinct_key(keys: np.ndarray, fn: Callable[[int], Any]) -> tuple[list[Any], np.ndarray]:
    """``fn`` once per distinct integer key and each row's index into the results."""
    unique, inverse = np.unique(keys, return_inverse=True)
    return [fn(int(key)) for key in unique], inverse


def _column(results: list[Any], indices: np.ndarray, dtype: Any) -> np.ndarray:
    return np.asarray(results, dtype=dtype)[indices] if len(indices) else np.empty(0, dtype)


# --- parsing -----------------------------------------------------------------------------


def decode_lines(lines: pa.Array) -> tuple[pa.Array, list[tuple[str, str]]]:
    """Binary lines to UTF-8 strings; undecodable lines are rejected."""
    if pa.types.is_string(lines.type):
        return lines, []
    try:
        return lines.cast(pa.string()), []
    except pa.ArrowInvalid:
        pass
    good: list[str] = []
    rejects: list[tuple[str, str]] = []
    for raw in lines.to_pylist():
        try:
            good.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            rejects.append((RejectReason.BAD_ENCODING.value, raw.decode("utf-8", "replace")))
    return pa.array(good, pa.string()), rejects


def _requests_batch(requests: Sequence[Request]) -> pa.RecordBatch:
    columns = {name: [getattr(r, name) for r in requests] for name in PARSED_SCHEMA.names}
    return pa.RecordBatch.from_pydict(columns, schema=PARSED_SCHEMA)


def _parse_scalar(lines: list[str], fmt: str) -> tuple[list[Request], list[tuple[str, str]]]:
    requests: list[Request] = []
    rejects: list[tuple[str, str]] = []
    for line in lines:
        try:
            requests.append(parse_line(line, fmt))
        except MalformedLine as exc:
            rejects.append((exc.reason.value, line))
    return requests, rejects


def _or_none(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        try:
            return fn(value)
        except MalformedLine:
            return None

    return wrapped


def _clf_times(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """UTC microseconds and validity per row: vectorised where unambiguous, else by
    :func:`parse_clf_time` once per distinct value."""
    strict = pc.match_substring_regex(texts, STRICT_CLF_TIME)
    fast = pc.strptime(
        pc.if_else(strict, texts, None), format=CLF_TIME_FORMAT, unit="s", error_is_null=True
    )
    done = np.asarray(pc.is_valid(fast))
    ts_us = pc.fill_null(pc.cast(fast, pa.int64()), 0).to_numpy() * 1_000_000
    slow_rows = np.flatnonzero(~done)
    slow, slow_idx = per_distinct(
        texts.take(pa.array(slow_rows, pa.int64())), _or_none(parse_clf_time)
    )
    ok = done.copy()
    ok[slow_rows] = _column([value is not None for value in slow], slow_idx, bool)
    ts_us[slow_rows] = _column([value or 0 for value in slow], slow_idx, np.int64)
    return ts_us, ok


def _parse_combined_fast(lines: pa.Array) -> tuple[pa.RecordBatch, pa.Array]:
    """Parse the lines the vectorised regex and scalar field parsers accept; return the rest."""
    matches = pc.extract_regex(lines, COMBINED_PATTERN)
    matched = pc.is_valid(matches)
    good = pc.filter(matches, matched)
    ts_us, time_ok = _clf_times(pc.struct_field(good, "time"))
    targets, target_idx = per_distinct(
        pc.struct_field(good, "request"), _or_none(parse_request_line)
    )
    ok = time_ok & _column([t is not None for t in targets], target_idx, bool)
    slow = pa.concat_arrays(
        [pc.filter(lines, pc.invert(matched)), pc.filter(lines, matched).filter(pa.array(~ok))]
    )
    good = good.filter(pa.array(ok))
    ts_us, target_idx = ts_us[ok], target_idx[ok]

    def optional(name: str, empty: str | None = None) -> pa.Array:
        results, idx = per_distinct(pc.struct_field(good, name), optional_field)
        column = pa.array([r if r is not None else empty for r in results], pa.string())
        return column.take(pa.array(idx)) if len(idx) else pa.array([], pa.string())

    nbytes = pc.struct_field(good, "bytes")
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(ts_us, pa.int64()),
            pc.struct_field(good, "ip"),
            pa.array([t[0] if t else "" for t in targets], pa.string()).take(
                pa.array(target_idx, pa.int64())
            ),
            pa.array([t[1] if t else "" for t in targets], pa.string()).take(
                pa.array(target_idx, pa.int64())
            ),
            pc.cast(pc.struct_field(good, "status"), pa.int32()),
            pc.cast(pc.if_else(pc.equal(nbytes, "-"), "0", nbytes), pa.int64()),
            optional("range"),
            optional("user_agent", ""),
            optional("referer"),
        ],
        schema=PARSED_SCHEMA,
    )
    return batch, slow


_JSON_SCHEMA = pa.schema(
    [
        ("ts", pa.string()),
        ("ip", pa.string()),
        ("method", pa.string()),
        ("path", pa.string()),
        ("status", pa.int64()),
        ("bytes", pa.int64()),
        ("range", pa.string()),
        ("user_agent", pa.string()),
        ("referer", pa.string()),
    ]
)
_JSON_PARSE = pa_json.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore")
# A whole-second UTC stamp, the shape CDNs write; anything else goes to parse_rfc3339.
_STRICT_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
_SMALLEST_JSON_BLOCK = 256
_JSON_BLOCK_BYTES = 8 << 20  # measured faster than one block per batch


def _read_json_block(lines: pa.Array) -> pa.Table | None:
    """Arrow's JSON reader over the lines (one object each), or None if any line fails it."""
    joined = pc.binary_join_element_wise(lines, "", "\n")
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    _, offsets, data = joined.buffers()
    bounds = np.frombuffer(offsets, np.int32)[joined.offset :][[0, len(joined)]]
    buffer = data.slice(int(bounds[0]), int(bounds[1]) - int(bounds[0]))
    try:
        table = pa_json.read_json(
            pa.BufferReader(buffer),
            read_options=pa_json.ReadOptions(block_size=_JSON_BLOCK_BYTES, use_threads=False),
            parse_options=_JSON_PARSE,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(lines) else None


def _json_tables(lines: pa.Array) -> tuple[list[tuple[pa.Table, pa.Array]], list[pa.Array]]:
    """Parse with Arrow, halving any block that fails down to small blocks left to the
    scalar parser (which names each bad line's reason)."""
    tables: list[tuple[pa.Table, pa.Array]] = []
    slow: list[pa.Array] = []
    pending = [lines]
    while pending:
        block = pending.pop()
        table = _read_json_block(block) if len(block) else None
        if table is not None:
            tables.append((table.combine_chunks(), block))
        elif len(block) <= _SMALLEST_JSON_BLOCK:
            slow.append(block)
        else:
            half = len(block) // 2
            pending += [block.slice(half), block.slice(0, half)]
    return tables, slow


def _rfc3339_times(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """UTC microseconds and validity: vectorised for whole-second ``Z`` stamps, else by
    :func:`parse_rfc3339` once per distinct value."""
    strict = pc.fill_null(pc.match_substring_regex(texts, _STRICT_RFC3339), False)
    fast = pc.strptime(
        pc.if_else(strict, texts, None), format="%Y-%m-%dT%H:%M:%SZ", unit="s", error_is_null=True
    )
    done = np.asarray(pc.is_valid(fast))
    ts_us = pc.fill_null(pc.cast(fast, pa.int64()), 0).to_numpy() * 1_000_000
    slow_rows = np.flatnonzero(~done)
    slow, slow_idx = per_distinct(
        texts.take(pa.array(slow_rows, pa.int64())),
        _or_none(lambda text: None if text is None else parse_rfc3339(text)),
    )
    ok = done.copy()
    ok[slow_rows] = _column([value is not None for value in slow], slow_idx, bool)
    ts_us[slow_rows] = _column([value or 0 for value in slow], slow_idx, np.int64)
    return ts_us, ok


def _parse_jsonl_fast(lines: pa.Array) -> tuple[pa.RecordBatch, pa.Array]:
    """Parse JSON Lines with Arrow where every field is as the scalar parser would accept
    it; return the other lines for :func:`parse_jsonl`, which names their reasons."""
    looks_like_object = pc.and_(
        pc.starts_with(lines, "{"), pc.ends_with(pc.utf8_rtrim_whitespace(lines), "}")
    )
    candidates = pc.filter(lines, looks_like_object)
    slow = [pc.filter(lines, pc.invert(looks_like_object))]
    tables, failed = _json_tables(candidates)
    slow += failed
    batches = []
    for table, block in tables:
        batch, rest = _json_requests(table, block)
        batches.append(batch)
        slow.append(rest)
    parsed = (
        pa.Table.from_batches(batches, schema=PARSED_SCHEMA).combine_chunks().to_batches()
        if batches
        else []
    )
    return (
        parsed[0] if parsed else _requests_batch([]),
        pa.concat_arrays([a.cast(pa.string()) for a in slow])
        if slow
        else pa.array([], pa.string()),
    )


def _json_requests(table: pa.Table, lines: pa.Array) -> tuple[pa.RecordBatch, pa.Array]:
    """Rows of one parsed block valid by :func:`parse_jsonl`'s checks; the rest as lines."""
    col = {name: table.column(name).combine_chunks() for name in _JSON_SCHEMA.names}
    checks = [pc.greater(pc.utf8_length(col[name]), 0) for name in ("ts", "ip", "method", "path")]
    checks += [
        pc.string_is_ascii(col["method"]),
        pc.ascii_is_alpha(col["method"]),
        pc.and_(pc.greater_equal(col["status"], 100), pc.less_equal(col["status"], 999)),
        pc.and_(pc.greater_equal(col["bytes"], 0), pc.less(col["bytes"], MAX_BYTES)),
    ]
    ok = np.ones(len(lines), bool)
    for check in checks:
        ok &= np.asarray(pc.fill_null(check, False))
    ts_us, ts_ok = _rfc3339_times(pc.if_else(pa.array(ok), col["ts"], None))
    ok &= ts_ok
    keep = pa.array(ok)

    def optional(name: str, empty: str | None = None) -> pa.Array:
        values = pc.filter(col[name], keep)
        blank = pc.fill_null(pc.equal(values, ""), True)
        return pc.if_else(blank, pa.scalar(empty, pa.string()), values)

    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(ts_us[ok], pa.int64()),
            pc.filter(col["ip"], keep),
            pc.utf8_upper(pc.filter(col["method"], keep)),
            pc.filter(col["path"], keep),
            pc.cast(pc.filter(col["status"], keep), pa.int32()),
            pc.filter(col["bytes"], keep),
            optional("range"),
            optional("user_agent", ""),
            optional("referer"),
        ],
        schema=PARSED_SCHEMA,
    )
    return batch, pc.filter(lines, pc.invert(keep))


def parse_batch(raw_lines: pa.Array, fmt: str = COMBINED) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Parse a batch of log lines into requests and rejects (``reason``, ``line``)."""
    lines, rejects = decode_lines(raw_lines)
    lines = pc.utf8_rtrim(lines, characters="\r\n")
    if fmt == COMBINED:
        parsed, slow = _parse_combined_fast(lines)
    else:
        parsed, slow = _parse_jsonl_fast(lines)
    requests, slow_rejects = _parse_scalar(slow.to_pylist(), fmt)
    if requests:
        parsed = (
            pa.Table.from_batches([parsed, _requests_batch(requests)])
            .combine_chunks()
            .to_batches()[0]
        )
    rejects += slow_rejects
    reject_batch = pa.RecordBatch.from_pydict(
        {"reason": [r for r, _ in rejects], "line": [line for _, line in rejects]},
        schema=REJECT_SCHEMA,
    )
    return parsed, reject_batch


# --- per-request rules -------------------------------------------------------------------


def assess_batch(
    parsed: pa.RecordBatch, rules: DownloadRules
) -> tuple[pa.RecordBatch, Counter[str]]:
    """Apply every per-request rule: the hits that count towards bytes, and exclusions by reason."""
    n = parsed.num_rows
    if n == 0:
        return pa.RecordBatch.from_pylist([], schema=HIT_SCHEMA), Counter()
    status = parsed["status"].to_numpy(zero_copy_only=False).astype(np.int64)

    methods, method_idx = per_distinct(parsed["method"], lambda m: m)
    request_codes, request_idx = per_distinct_key(
        method_idx * 1000 + status,
        lambda key: _CODE[request_exclusion(methods[key // 1000], key % 1000)],
    )
    episodes, episode_idx = per_distinct(parsed["target"], rules.catalog.index_of)
    episode = _column(episodes, episode_idx, np.int64)

    specs, spec_idx = per_distinct(parsed["range"], parse_range)
    range_codes, range_idx = per_distinct_key(
        spec_idx * 1000 + status,
        lambda key: _CODE[range_exclusion(specs[key // 1000], key % 1000)],
    )
    bots, bot_idx = per_distinct(
        parsed["user_agent"], lambda ua: _CODE[bot_exclusion(ua or "", classify(ua))]
    )
    listener_all, ip_valid, in_dc = _listeners(parsed["ip"], rules.data_centres)

    # Each reason code fits in 5 bits; pack the row's findings into one integer key.
    combined = (
        (_column(request_codes, request_idx, np.int64) << 18)
        | (_column(range_codes, range_idx, np.int64) << 13)
        | (_column(bots, bot_idx, np.int64) << 8)
        | ((episode >= 0).astype(np.int64) << 2)
        | (ip_valid.astype(np.int64) << 1)
        | in_dc.astype(np.int64)
    )

    def reason_of(key: int) -> int:
        return _CODE[
            exclusion_reason(
                EXCLUSIONS[key >> 18],
                bool(key >> 2 & 1),
                EXCLUSIONS[key >> 13 & 31],
                EXCLUSIONS[key >> 8 & 31],
                bool(key >> 1 & 1),
                bool(key & 1),
            )
        ]

    reasons, reason_idx = per_distinct_key(combined, reason_of)
    code = _column(reasons, reason_idx, np.int64)
    excluded = Counter(
        {
            EXCLUSIONS[c].value: int(k)
            for c, k in enumerate(np.bincount(code, minlength=len(EXCLUSIONS)))
            if c and k
        }  # type: ignore[union-attr]
    )

    keep = code == 0
    kept = parsed.filter(pa.array(keep))
    ep = episode[keep]
    file_bytes = (
        np.array([e.file_bytes for e in rules.catalog.episodes], np.int64)[ep]
        if len(ep)
        else np.empty(0, np.int64)
    )
    kinds = _column([s.kind for s in specs], spec_idx, np.int64)[keep]
    values = _column([s.value for s in specs], spec_idx, np.int64)[keep]
    start, end = delivered_interval(
        status[keep],
        kept["nbytes"].to_numpy(zero_copy_only=False),
        kinds == RangeKind.SUFFIX,
        values,
        file_bytes,
    )
    listener = listener_all.filter(pa.array(keep))
    if rules.by_app:
        app = _apps(kept["user_agent"], kept["referer"])
    else:
        app = pa.array([""] * kept.num_rows, pa.string())
    hits = pa.RecordBatch.from_arrays(
        [
            listener,
            pc.dictionary_encode(kept["user_agent"]),
            pa.array(ep, pa.int32()),
            kept["ts_us"],
            pa.array(np.asarray(start, np.int64)),
            pa.array(np.asarray(end, np.int64)),
            pc.dictionary_encode(app),
        ],
        schema=HIT_SCHEMA,
    )
    return hits, excluded


def _listeners(ips: pa.Array, ranges: IpRanges) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Listener IP, validity and data-centre membership per row.

    Canonical dotted quads are their own listener IP and are checked against the ranges as
    integers; anything else (IPv6, odd spellings) goes through :func:`listener_ip` once
    per distinct value.
    """
    n = len(ips)
    v4 = np.asarray(pc.fill_null(pc.match_substring_regex(ips, CANONICAL_IPV4), False))
    valid = np.ones(n, bool)
    in_dc = np.zeros(n, bool)
    if ranges and v4.any():
        parts = pc.list_flatten(pc.split_pattern(ips.filter(pa.array(v4)), "."))
        quads = parts.cast(pa.int64()).to_numpy().reshape(-1, 4)
        in_dc[v4] = ranges.contains_ipv4(
            (quads[:, 0] << 24) | (quads[:, 1] << 16) | (quads[:, 2] << 8) | quads[:, 3]
        )
    other_rows = np.flatnonzero(~v4)
    results, idx = per_distinct(
        ips.filter(pa.array(~v4)), lambda ip: (listener_ip(ip), ip is not None and ip in ranges)
    )
    valid[other_rows] = _column([r[0] is not None for r in results], idx, bool)
    in_dc[other_rows] = _column([r[1] for r in results], idx, bool)
    mapped = pa.array([r[0] for r in results], pa.string()).take(pa.array(idx, pa.int64()))
    index = np.arange(n)
    index[other_rows] = n + np.arange(len(other_rows))
    return pa.concat_arrays([ips.cast(pa.string()), mapped]).take(pa.array(index)), valid, in_dc


def _apps(user_agents: pa.Array, referers: pa.Array) -> pa.Array:
    """The reported app per row: classification of the (user agent, referer) pair."""
    agents, agent_idx = per_distinct(user_agents, lambda ua: ua)
    refs, ref_idx = per_distinct(referers, lambda ref: ref)
    apps, app_idx = per_distinct_key(
        agent_idx * (len(refs) + 1) + ref_idx,
        lambda key: classify(agents[key // (len(refs) + 1)], refs[key % (len(refs) + 1)]).app,
    )
    return pa.array(apps, pa.string()).take(pa.array(app_idx))


def requests_per_day(hits: pa.RecordBatch) -> Counter[str]:
    """Counted requests per UTC day: the days a run covers."""
    days, counts = np.unique(
        hits["ts_us"].to_numpy(zero_copy_only=False) // DAY_US, return_counts=True
    )
    return Counter(
        {day_to_iso(d): int(n) for d, n in zip(days.tolist(), counts.tolist(), strict=True)}
    )


# --- shuffle -----------------------------------------------------------------------------


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def bucket_ids(hits: pa.RecordBatch, num_buckets: int) -> np.ndarray:
    """Hash bucket of each hit's (listener IP, episode): all of a listener's hits land together."""
    hashes, idx = per_distinct(hits["listener_ip"], _stable_hash)
    mixed = _column(hashes, idx, np.uint64) * np.uint64(1_000_003) + hits["episode"].to_numpy(
        zero_copy_only=False
    ).astype(np.uint64)
    return (mixed % np.uint64(num_buckets)).astype(np.int64)


def split_by_bucket(hits: pa.RecordBatch, num_buckets: int) -> list[tuple[int, pa.RecordBatch]]:
    """One compact sub-batch per non-empty bucket.

    Each sub-batch is a ``take`` with buffers of its own: a zero-copy slice would pickle
    its parent's whole buffers, multiplying what the shuffle moves by the bucket count.
    """
    if hits.num_rows == 0:
        return []
    buckets = bucket_ids(hits, num_buckets)
    order = np.argsort(buckets, kind="stable")
    sorted_buckets = buckets[order]
    edges = np.flatnonzero(np.diff(sorted_buckets)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(order)]])
    return [
        (int(sorted_buckets[s]), hits.take(pa.array(order[s:e])))
        for s, e in zip(starts, ends, strict=True)
    ]


# --- counting inside a bucket ------------------------------------------------------------


def _group_starts(*keys: np.ndarray) -> np.ndarray:
    new = np.zeros(len(keys[0]), bool)
    new[0] = True
    for key in keys:
        new[1:] |= key[1:] != key[:-1]
    return new


def _rolling_windows(base_new: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """First-touch 24 h windows within each (time-ordered) listener/episode group."""
    n = len(ts)
    window = np.zeros(n, np.int64)
    assigned = np.zeros(n, bool)
    positions = np.arange(n)
    k = 0
    while not assigned.all():
        remaining = ~assigned
        previous_assigned = np.concatenate([[True], assigned[:-1]])
        first = remaining & (base_new | previous_assigned)
        anchor = np.maximum.accumulate(np.where(first, positions, 0))
        inside = remaining & (ts < ts[anchor] + DAY_US)
        window[inside] = k
        assigned |= inside
        k += 1
    return window


def _downloads_in_groups(
    gid: np.ndarray, new: np.ndarray, start: np.ndarray, end: np.ndarray, required: np.ndarray
) -> np.ndarray:
    """Rows (time-ordered within groups) at which each group's byte union first reaches ``required``.

    Every byte segment between interval boundaries is attributed to the first request that
    covered it; the running sum of those attributions is the union delivered so far.
    """
    n = len(gid)
    base = gid << _GROUP_SHIFT
    start_key = base + start
    end_key = base + end
    points = np.unique(np.concatenate([start_key, end_key]))
    seg_len = np.diff(points)
    first_idx = np.searchsorted(points, start_key)
    spans = np.searchsorted(points, end_key) - first_idx
    total = int(spans.sum())
    rows = np.repeat(np.arange(n), spans)
    offsets = np.repeat(np.cumsum(spans) - spans, spans)
    segments = np.arange(total) - offsets + np.repeat(first_idx, spans)
    first_cover = np.full(max(len(points) - 1, 0), n, np.int64)
    np.minimum.at(first_cover, segments, rows)
    covered = first_cover < n
    new_bytes = np.zeros(n, np.int64)
    np.add.at(new_bytes, first_cover[covered], seg_len[covered])
    running = np.cumsum(new_bytes)
    group_rows = np.flatnonzero(new)
    running -= (running[group_rows] - new_bytes[group_rows])[gid]
    reach = running >= required[gid]
    before = np.zeros(n, bool)
    before[1:] = reach[:-1] & ~new[1:]
    return reach & ~before


def _merged_unions(
    gid: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group unions as packed (group << 40 | offset) start and end keys, sorted."""
    keep = end > start
    order = np.lexsort((start[keep], gid[keep]))
    base = gid[keep][order] << _GROUP_SHIFT
    s = base + start[keep][order]
    e = base + end[keep][order]
    if not len(s):
        return s, e
    reach = np.maximum.accumulate(e)
    new = np.ones(len(s), bool)
    new[1:] = s[1:] > reach[:-1]
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [len(s)]]) - 1
    return s[starts], reach[ends]


def _ordered(hits: pa.Table, rules: DownloadRules) -> dict[str, Any]:
    """Hits as numpy columns in counting order, with their window groups and crossing rows."""
    hits = hits.combine_chunks()
    ip = pc.dictionary_encode(hits["listener_ip"]).chunk(0).indices.to_numpy()
    ua = pc.dictionary_encode(hits["user_agent"].cast(pa.string())).chunk(0).indices.to_numpy()
    apps_encoded = pc.dictionary_encode(hits["app"].cast(pa.string())).chunk(0)
    app_names = apps_encoded.dictionary.to_pylist()
    rank = np.argsort(np.argsort(np.array(app_names, dtype=object)))  # Python string order
    app = rank[apps_encoded.indices.to_numpy()]
    ep = hits["episode"].to_numpy().astype(np.int64)
    ts = hits["ts_us"].to_numpy()
    start = np.minimum(hits["start"].to_numpy(), _MAX_OFFSET)
    end = np.minimum(hits["end"].to_numpy(), _MAX_OFFSET)

    order = np.lexsort((app, end, start, ts, ep, ua, ip))
    ip, ua, ep, ts, start, end, app = (a[order] for a in (ip, ua, ep, ts, start, end, app))
    base_new = _group_starts(ip, ua, ep)
    calendar = rules.window is Window.CALENDAR
    window = ts // DAY_US if calendar else _rolling_windows(base_new, ts)
    new = base_new | _group_starts(window)
    gid = np.cumsum(new) - 1
    required = rules.catalog.required_bytes[ep[new]]
    crossing = _downloads_in_groups(gid, new, start, end, required)
    return {
        "order": order,
        "ep": ep,
        "ts": ts,
        "start": start,
        "end": end,
        "app": app,
        "app_names": app_names,
        "gid": gid,
        "crossing": crossing,
    }


def compact_hits(hits: pa.Table, rules: DownloadRules) -> pa.Table:
    """Drop the hits that can no longer change any count, whatever other hits arrive later.

    Within a (listener, episode, calendar day) group, hits after the one at which the
    threshold is met can never become the crossing hit: more hits only move the crossing
    earlier. They matter only for ad slots, and then only for bytes the hits up to the
    crossing do not cover. Rolling first-touch windows depend on every timestamp, so they
    are kept whole. This is what bounds a bucket's state by what the rules need.
    """
    if rules.window is not Window.CALENDAR or hits.num_rows == 0:
        return hits
    o = _ordered(hits, rules)
    gid, crossing = o["gid"], o["crossing"]
    n = len(gid)
    rows = np.arange(n)
    crossing_row = np.full(int(gid[-1]) + 1, n, np.int64)
    crossing_row[gid[crossing]] = rows[crossing]
    keep = rows <= crossing_row[gid]
    if rules.slots_by_episode() and not keep.all():
        union_start, union_end = _merged_unions(gid[keep], o["start"][keep], o["end"][keep])
        later = np.flatnonzero(~keep)
        lo = (gid[later] << _GROUP_SHIFT) + o["start"][later]
        hi = (gid[later] << _GROUP_SHIFT) + o["end"][later]
        position = np.searchsorted(union_start, lo, side="right") - 1
        inside = position >= 0
        covered = np.zeros(len(later), bool)
        covered[inside] = union_end[position[inside]] >= hi[inside]
        keep[later[~covered & (hi > lo)]] = True
    if keep.all():
        return hits
    return hits.take(pa.array(o["order"][keep]))


def count_bucket(
    hits: pa.Table, rules: DownloadRules
) -> tuple[Counter[tuple[str, str, str | None]], Counter[tuple[str, str, str]]]:
    """Downloads by (date, episode_id, app) and delivered ads in one bucket's hits."""
    downloads: Counter[tuple[str, str, str | None]] = Counter()
    ads: Counter[tuple[str, str, str]] = Counter()
    if hits.num_rows == 0:
        return downloads, ads
    o = _ordered(hits, rules)
    ep, ts, start, end, app = o["ep"], o["ts"], o["start"], o["end"], o["app"]
    gid, crossing = o["gid"], o["crossing"]

    day = ts[crossing] // DAY_US
    episode_ids = [e.episode_id for e in rules.catalog.episodes]
    app_by_rank = sorted(o["app_names"])
    keys, counts = (
        np.unique(np.stack([day, ep[crossing], app[crossing]], axis=1), axis=0, return_counts=True)
        if crossing.any()
        else (np.empty((0, 3), np.int64), np.empty(0, np.int64))
    )
    for (d, e, a), k in zip(keys.tolist(), counts.tolist(), strict=True):
        downloads[day_to_iso(d), episode_ids[e], app_by_rank[a] if rules.by_app else None] += k

    slots = rules.slots_by_episode()
    if slots and crossing.any():
        union_start, union_end = _merged_unions(gid, start, end)
        for row in np.flatnonzero(crossing).tolist():
            g = int(gid[row])
            for slot in slots.get(int(ep[row]), ()):
                lo = (g << _GROUP_SHIFT) + slot.byte_start
                hi = (g << _GROUP_SHIFT) + slot.byte_end
                position = int(np.searchsorted(union_start, lo, side="right")) - 1
                if position >= 0 and union_start[position] <= lo and union_end[position] >= hi:
                    ads[
                        day_to_iso(int(ts[row] // DAY_US)), episode_ids[int(ep[row])], slot.ad_id
                    ] += 1
    return downloads, ads

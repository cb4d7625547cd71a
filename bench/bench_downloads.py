"""Benchmark: the Beam download pipeline vs one DuckDB SQL query applying the same rules.

Generates N synthetic combined-format log lines (default 10 million) into a temp file,
counts IAB downloads with the Beam pipeline on the local runner and with DuckDB, prints
lines/s for each and their ratio, and asserts both produce the same counts.

    .venv/bin/python bench/bench_downloads.py --lines 1000000

Both sides classify user agents with the product's OPAWG classifier once per distinct
user agent (DuckDB through a table of them, built inside its timing); everything else
DuckDB does in SQL. The synthetic log is IPv4-only so SQL needs no /64 arithmetic.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backbeat.measurement.accesslogs import COMBINED_PATTERN
from backbeat.measurement.downloads.catalog import load_catalog
from backbeat.measurement.downloads.pipeline import DownloadJob, execute
from backbeat.measurement.downloads.rules import bot_exclusion
from backbeat.measurement.useragents import classify

AGENTS = [
    "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
    "AppleCoreMedia/1.0.0.20G75 (iPhone; U; CPU OS 16_6 like Mac OS X; en_us)",
    "Podcasts/1720.1 CFNetwork/1408.0.4 Darwin/22.5.0",
    "Spotify/8.8.0 iOS/16.5 (iPhone14,5)",
    "PocketCasts/1.0 (Pocket Casts - iOS - v7.42)",
    "Castro 2023.1/1234 CFNetwork/1404.0.5 Darwin/22.3.0",
    "AntennaPod/3.2.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.4.0",
    "atc/1.0 watchOS/9.0",
    "-",
    "HomegrownCrawler/1.0",
]
AGENT_WEIGHTS = np.array([20, 20, 20, 15, 8, 4, 5, 2, 1, 1, 1, 1, 1], float)
DAY0 = 1_795_219_200  # 2026-11-21T00:00:00Z
MB = 1 << 20


def write_catalog(path: Path, episodes: int, rng: np.random.Generator) -> None:
    rows = ["episode_id,show_id,path,file_bytes,header_bytes,duration_s"]
    for i in range(episodes):
        duration = int(rng.integers(30, 3600))
        rows.append(f"e{i},s{i % 20},/ep/{i}.mp3,{duration * 16000 + 4000},4000,{duration}")
    path.write_text("\n".join(rows) + "\n")


def generate(
    path: Path, lines: int, episodes: int, seed: int = 7, chunk_lines: int = 1_000_000
) -> None:
    """Write ``lines`` synthetic lines, a million at a time."""
    sessions = max(lines // 6, 1)
    with open(path, "wb") as out:
        for index, offset in enumerate(range(0, lines, chunk_lines)):
            rng = np.random.default_rng([seed, index])
            block = generate_block(rng, min(chunk_lines, lines - offset), sessions, episodes)
            with_newlines = pc.binary_join_element_wise(block, "", "\n")
            chunks = getattr(with_newlines, "chunks", [with_newlines])
            for chunk in chunks:
                _, offsets, data = chunk.buffers()
                bounds = np.frombuffer(offsets, np.int32)[chunk.offset :][[0, len(chunk)]]
                out.write(memoryview(data)[int(bounds[0]) : int(bounds[1])])


def generate_block(rng: np.random.Generator, lines: int, sessions: int, episodes: int) -> pa.Array:
    """Synthetic combined lines: sessions of 1 MiB ranges, full downloads and noise."""
    session = rng.integers(0, sessions, lines)
    ip_int = (session * 2654435761) % (1 << 24) + (100 << 24)
    ip = pc.binary_join_element_wise(
        *(pa.array(((ip_int >> shift) & 255).astype(str)) for shift in (24, 16, 8, 0)), "."
    )
    episode = (session * 40503) % episodes
    agent_idx = (session * 7919 + session // 3) % len(AGENTS)
    agent_idx = np.where(
        rng.random(lines) < 0.97,
        agent_idx,
        rng.choice(len(AGENTS), lines, p=AGENT_WEIGHTS / AGENT_WEIGHTS.sum()),
    )
    ts = DAY0 + (session * 86400 * 2) // sessions + rng.integers(0, 1800, lines)
    chunk = rng.integers(0, 8, lines)
    kind = rng.choice(6, lines, p=[0.55, 0.2, 0.08, 0.05, 0.04, 0.08])
    # 0: 206 chunk, 1: 200 full, 2: probe 0-1, 3: HEAD, 4: 304, 5: suffix / unknown path
    status = np.select([kind == 1, kind == 3, kind == 4], [200, 200, 304], 206)
    method = np.where(kind == 3, "HEAD", "GET")
    nbytes = np.select([kind == 1, kind == 2, kind >= 3], [40 * MB, 2, 0], MB)
    range_header = np.select(
        [kind == 0, kind == 2, kind == 5],
        [
            np.char.add(np.char.add("bytes=", (chunk * MB).astype(str)), "-"),
            "bytes=0-1",
            np.char.add("bytes=-", (chunk * 1000 + 1).astype(str)),
        ],
        "-",
    )
    nbytes = np.where(kind == 5, chunk * 1000 + 1, nbytes)
    target = np.char.add(np.char.add("/ep/", episode.astype(str)), ".mp3?src=feed")
    target = np.where((kind == 5) & (chunk == 0), "/feed.xml", target)
    stamp = pc.strftime(pa.array(ts, pa.timestamp("s", "UTC")), format="%d/%b/%Y:%H:%M:%S +0000")
    agents = pa.array(np.array(AGENTS, dtype=object)[agent_idx], pa.string())
    line = pc.binary_join_element_wise(
        ip,
        " - - [",
        stamp,
        '] "',
        pa.array(method),
        " ",
        pa.array(target),
        ' HTTP/1.1" ',
        pa.array(status.astype(str)),
        " ",
        pa.array(nbytes.astype(str)),
        ' "-" "',
        agents,
        '" "',
        pa.array(range_header),
        '"',
        "",
    )
    broken = rng.random(lines) < 0.005
    return pc.if_else(pa.array(broken), pa.scalar("malformed line"), line)


def duckdb_count(log: Path, catalog_csv: Path) -> tuple[Counter[tuple[str, str]], float]:
    """The same rules as one SQL query (plus a table of classified user agents)."""
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    con.execute(
        "CREATE TABLE raw AS SELECT line FROM read_csv(?, columns={'line': 'VARCHAR'}, "
        "delim='\x1f', quote='', escape='', header=false, auto_detect=false)",
        [str(log)],
    )
    names = ["ip", "time", "request", "status", "bytes", "referer", "user_agent", "range"]
    con.execute(
        f"CREATE TABLE parsed AS SELECT regexp_extract(line, ?, {names!r}) AS m FROM raw",
        [COMBINED_PATTERN],
    )
    agents = [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT m.user_agent FROM parsed WHERE m.ip <> ''"
        ).fetchall()
    ]
    agent_rows = []
    for raw in agents:
        agent = "" if raw == "-" else raw
        reason = bot_exclusion(agent, classify(agent))
        agent_rows.append((raw, reason is not None))
    con.execute("CREATE TABLE agents(raw VARCHAR, is_bot BOOLEAN)")
    con.executemany("INSERT INTO agents VALUES (?, ?)", agent_rows)
    con.execute(
        "CREATE TABLE catalog AS SELECT *, CASE WHEN duration_s <= 60 THEN file_bytes ELSE "
        "least(file_bytes, header_bytes + ceil(60 * (file_bytes - header_bytes) / duration_s)::BIGINT) END "
        "AS required FROM read_csv(?, header=true)",
        [str(catalog_csv)],
    )
    rows = con.execute(
        """
        WITH req AS (
          SELECT m.ip AS ip, m.user_agent AS ua,
                 epoch_us(strptime(m.time, '%d/%b/%Y:%H:%M:%S %z')) AS ts,
                 split_part(m.request, ' ', 1) AS method,
                 split_part(split_part(m.request, ' ', 2), '?', 1) AS path,
                 TRY_CAST(m.status AS INT) AS status,
                 CASE WHEN m.bytes = '-' THEN 0 ELSE TRY_CAST(m.bytes AS BIGINT) END AS nbytes,
                 m.range AS rng
          FROM parsed WHERE m.ip <> ''
        ), ok AS (
          SELECT r.*, c.episode_id, c.file_bytes, c.required,
                 regexp_extract(rng, '^bytes=([0-9]*)-([0-9]*)$', 1) AS r1,
                 regexp_extract(rng, '^bytes=([0-9]*)-([0-9]*)$', 2) AS r2
          FROM req r JOIN catalog c ON c.path = r.path JOIN agents a ON a.raw = r.ua
          WHERE r.method = 'GET' AND r.status IN (200, 206) AND r.rng <> 'bytes=0-1' AND NOT a.is_bot
        ), hits AS (
          SELECT ip, ua, episode_id, required, ts, ts // 86400000000 AS day,
                 CASE WHEN status = 200 THEN 0
                      WHEN r1 = '' THEN greatest(file_bytes - nbytes, 0)
                      ELSE least(r1::BIGINT, file_bytes) END AS s,
                 CASE WHEN status = 206 AND r1 = '' THEN file_bytes
                      ELSE least((CASE WHEN status = 200 THEN 0 ELSE least(r1::BIGINT, file_bytes) END) + nbytes, file_bytes) END AS e
          FROM ok WHERE status = 200 OR r1 <> '' OR r2 <> ''
        ), g AS (
          SELECT *, dense_rank() OVER (ORDER BY ip, ua, episode_id, day) AS gid,
                 row_number() OVER (PARTITION BY ip, ua, episode_id, day ORDER BY ts, s, e) AS rn
          FROM hits
        ), pts AS (
          SELECT DISTINCT gid, p FROM (SELECT gid, s AS p FROM g UNION ALL SELECT gid, e FROM g)
        ), segs AS (
          SELECT gid, p AS a, lead(p) OVER (PARTITION BY gid ORDER BY p) AS b FROM pts
        ), cover AS (
          SELECT sg.gid, sg.b - sg.a AS len, min(g.rn) AS first_rn
          FROM segs sg JOIN g ON g.gid = sg.gid AND g.s <= sg.a AND g.e >= sg.b
          WHERE sg.b IS NOT NULL GROUP BY sg.gid, sg.a, sg.b
        ), added AS (
          SELECT gid, first_rn AS rn, sum(len) AS len FROM cover GROUP BY ALL
        ), running AS (
          SELECT g.gid, g.rn, g.day, g.episode_id, g.required,
                 sum(coalesce(added.len, 0)) OVER (PARTITION BY g.gid ORDER BY g.rn) AS delivered
          FROM g LEFT JOIN added ON added.gid = g.gid AND added.rn = g.rn
        ), crossing AS (
          SELECT gid, min(day) AS day, any_value(episode_id) AS episode_id
          FROM running WHERE delivered >= required GROUP BY gid
        )
        SELECT strftime(make_timestamp(day * 86400000000), '%Y-%m-%d') AS date, episode_id, count(*)
        FROM crossing GROUP BY ALL
        """
    ).fetchall()
    elapsed = time.perf_counter() - started
    return Counter({(d, e): n for d, e, n in rows}), elapsed


def beam_count(
    log: Path, catalog_csv: Path, beam_args: list[str], buckets: int
) -> tuple[Counter[tuple[str, str]], float, int]:
    started = time.perf_counter()
    report = execute(
        DownloadJob(
            logs=[str(log)],
            episodes=str(catalog_csv),
            max_bot_share=1.0,
            num_buckets=buckets,
            beam_args=beam_args,
        )
    )
    elapsed = time.perf_counter() - started
    counts = Counter({(d, e): n for (d, e, _), n in report.downloads.items()})
    return counts, elapsed, report.lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument(
        "--workers", type=int, default=1, help=">1: DirectRunner multi-processing mode"
    )
    parser.add_argument("--keep", help="keep the generated log in this directory")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the log already in --keep (same --lines)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-downloads-") as tmp:
        root = Path(args.keep or tmp)
        log, catalog_csv = root / "access.log", root / "episodes.csv"
        if not (args.reuse and log.exists() and catalog_csv.exists()):
            started = time.perf_counter()
            write_catalog(catalog_csv, args.episodes, np.random.default_rng(1))
            generate(log, args.lines, args.episodes)
            elapsed = time.perf_counter() - started
            size = log.stat().st_size / 1e9
            print(f"generated {args.lines:,} lines ({size:.2f} GB) in {elapsed:.1f} s")
        load_catalog(catalog_csv)
        beam_args = ["--runner=DirectRunner"]
        if args.workers > 1:
            beam_args += [
                f"--direct_num_workers={args.workers}",
                "--direct_running_mode=multi_processing",
            ]
        beam_counts, beam_s, lines = beam_count(log, catalog_csv, beam_args, args.buckets)
        duck_counts, duck_s = duckdb_count(log, catalog_csv)
        print(f"beam   ({' '.join(beam_args)}): {beam_s:7.1f} s  {lines / beam_s:12,.0f} lines/s")
        print(
            f"duckdb ({os.cpu_count()} threads): {duck_s:7.1f} s  {lines / duck_s:12,.0f} lines/s"
        )
        print(
            f"ratio beam/duckdb time: {beam_s / duck_s:.2f}x; downloads: {sum(beam_counts.values()):,}"
        )
        assert lines == args.lines, (lines, args.lines)
        assert beam_counts == duck_counts, "Beam and DuckDB disagree"


if __name__ == "__main__":
    main()

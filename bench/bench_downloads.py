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
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from backbeat.measurement.accesslogs import JSONL
from backbeat.measurement.downloads.pipeline import DownloadJob, execute
from backbeat.measurement.downloads.rules import bot_exclusion
from backbeat.measurement.useragents import classify

# Real podcast-app and player user agents as they appear in CDN logs (OPAWG-classified).
AGENTS = [
    "AppleCoreMedia/1.0.0.21E236 (iPhone; U; CPU OS 17_4_1 like Mac OS X; en_us)",
    "Podcasts/1735.2.1 CFNetwork/1494.0.7 Darwin/23.4.0",
    "Spotify/8.9.36 iOS/17.4.1 (iPhone15,2)",
    "Spotify/8.9.36 Android/34 (SM-S918B)",
    "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
    "PocketCasts/1.0 (Pocket Casts - Android - v7.59)",
    "Castro 2024.3/1422 CFNetwork/1494.0.7 Darwin/23.4.0",
    "AntennaPod/3.3.2",
    "CastBox/9.13.2-230904042 (Linux;Android 13) ExoPlayerLib/2.10.4",
    "Podcast Addict/v5 - Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UQ1A.240205.004)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.99 Mobile Safari/537.36",
    "Deezer/7.0.0.16 (Android; 14; Mobile; fr) samsung SM-A546B",
    "iHeartRadio/10.40.0 (iPhone; iOS 17.4.1; iPhone14,7)",
    "atc/1.0 watchOS/10.4 model/Watch6,2 hwp/t8301 build/21T216 (6; dt:261)",
]
AGENT_WEIGHTS = np.array([24, 18, 14, 8, 6, 5, 2, 2, 3, 3, 4, 3, 2, 2, 3], float)
BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Podbean/FeedUpdate 2.1",
    "iTMS",
    "-",
    "HomegrownCrawler/1.0",
]
DAY0 = 1_795_219_200  # 2026-11-21T00:00:00Z
DAYS = 3
MB = 1 << 20
EDGES = ["fra-12", "ams-03", "iad-07", "sfo-02", "gru-01", "lhr-09", "arn-04", "cdg-05"]
COUNTRIES = ["DE", "NL", "US", "US", "BR", "GB", "SE", "FR"]


def write_catalog(path: Path, episodes: int, rng: np.random.Generator) -> None:
    rows = ["episode_id,show_id,path,file_bytes,header_bytes,duration_s"]
    for i in range(episodes):
        duration = int(rng.integers(600, 5400))  # 10 to 90 minutes at 128 kbit/s
        rows.append(
            f"e{i},s{i % 40},/shows/s{i % 40}/episodes/{i:05d}-{_slug(i)}.mp3,"
            f"{duration * 16000 + 4000},4000,{duration}"
        )
    path.write_text("\n".join(rows) + "\n")


def _slug(i: int) -> str:
    return f"{(i * 2654435761) % (1 << 32):08x}"


def generate(
    path: Path, lines: int, episodes: int, seed: int = 7, chunk_lines: int = 500_000
) -> None:
    """Write ``lines`` JSON Lines of a CDN access log, ``chunk_lines`` at a time.

    About 120,000 distinct IPs per million lines (listeners recur across chunks),
    timestamps in arbitrary order over three days, real podcast-app user agents, 5% bot
    lines, full and ranged downloads of episodes read to different depths, 0-1 probes,
    HEADs, 304s, feed hits and 0.3% malformed lines; about 680 bytes a line.
    """
    listeners = max(int(lines * 0.12), 10)
    with open(path, "wb") as out:
        for index, offset in enumerate(range(0, lines, chunk_lines)):
            rng = np.random.default_rng([seed, index])
            block = generate_block(rng, min(chunk_lines, lines - offset), listeners, episodes)
            with_newlines = pc.binary_join_element_wise(block, "", "\n")
            for chunk in getattr(with_newlines, "chunks", [with_newlines]):
                _, offsets, data = chunk.buffers()
                bounds = np.frombuffer(offsets, np.int32)[chunk.offset :][[0, len(chunk)]]
                out.write(memoryview(data)[int(bounds[0]) : int(bounds[1])])


def _sessions(rng: np.random.Generator, lines: int, listeners: int, episodes: int) -> dict:
    """Listening sessions with how many log lines each produces."""
    n = lines // 5 + 1
    kind = rng.choice(4, n, p=[0.30, 0.58, 0.07, 0.05])  # full, ranged, head/304, feed
    chunk = np.array([MB, 2 * MB, 4 * MB])[rng.integers(0, 3, n)]
    episode = np.minimum(rng.zipf(1.3, n) - 1, episodes - 1)
    depth = rng.beta(0.7, 0.9, n)  # share of the episode a listener's player fetched
    m = np.select(
        [kind == 0, kind == 1, kind == 2],
        [rng.integers(1, 3, n), np.maximum((depth * 40).astype(int), 1) + 1, rng.integers(1, 3, n)],
        1,
    )
    return {
        "listener": rng.integers(0, listeners, n),
        "episode": episode,
        "kind": kind,
        "chunk": chunk,
        "depth": depth,
        "m": m,
        "start": DAY0 + rng.integers(0, DAYS * 86400, n),
    }


def generate_block(rng: np.random.Generator, lines: int, listeners: int, episodes: int) -> pa.Array:
    sessions = _sessions(rng, lines, listeners, episodes)
    m = sessions["m"]
    session = np.repeat(np.arange(len(m)), m)[:lines]
    if len(session) < lines:
        session = np.concatenate([session, rng.integers(0, len(m), lines - len(session))])
    step = np.arange(len(session)) - np.repeat(np.cumsum(m) - m, m)[: len(session)]
    step = np.maximum(step, 0)
    listener = sessions["listener"][session]
    episode = sessions["episode"][session]
    kind = sessions["kind"][session]
    chunk = sessions["chunk"][session]
    ts = sessions["start"][session] + step * rng.integers(2, 90, lines)
    ts = np.minimum(ts, DAY0 + DAYS * 86400 - 1)
    agent_of = np.searchsorted(
        np.cumsum(AGENT_WEIGHTS / AGENT_WEIGHTS.sum()), (listener * 0.61803) % 1
    )
    agent_idx = np.minimum(agent_of, len(AGENTS) - 1)
    bot = rng.random(lines) < 0.05
    ip_int = (listener * 2654435761) % (1 << 28) + (24 << 24)
    bot_ip = rng.integers(0, 400, lines) * 7 + (66 << 24) + (249 << 16)
    ip_int = np.where(bot, bot_ip, ip_int)
    ip = pc.binary_join_element_wise(
        *(pa.array(((ip_int >> shift) & 255).astype(str)) for shift in (24, 16, 8, 0)), "."
    )
    # file size of each episode, from write_catalog's formula
    durations = np.array([int(d) for d in _catalog_durations(episodes)])
    size = durations[episode] * 16000 + 4000
    probe = (kind == 1) & (step == 0) & (rng.random(lines) < 0.5)
    ranged_start = np.where(kind == 1, np.maximum(step - 1 + (~probe & (step == 0)), 0) * chunk, 0)
    ranged_start = np.minimum(ranged_start, size - 1)
    ranged_end = np.minimum(ranged_start + chunk, size) - 1
    head = (kind == 2) & (rng.random(lines) < 0.5)
    not_modified = (kind == 2) & ~head
    feed = kind == 3
    status = np.select([probe, kind == 1, not_modified], [206, 206, 304], 200)
    method = np.where(head, "HEAD", "GET")
    nbytes = np.select(
        [probe, kind == 1, head | not_modified | feed, kind == 0],
        [2, ranged_end - ranged_start + 1, np.where(feed, 48_000, 0), size],
        0,
    )
    range_header = np.select(
        [probe, kind == 1],
        [
            np.full(lines, "bytes=0-1"),
            np.char.add(
                np.char.add(np.char.add("bytes=", ranged_start.astype(str)), "-"),
                ranged_end.astype(str),
            ),
        ],
        "",
    )
    slug = np.array([_slug(i) for i in range(episodes)])
    target = np.char.add(
        np.char.add(np.char.add("/shows/s", (episode % 40).astype(str)), "/episodes/"),
        np.char.add(np.char.add(np.char.zfill(episode.astype(str), 5), "-"), slug[episode]),
    )
    target = np.char.add(target, ".mp3")
    target = np.where(
        feed, np.char.add("/shows/s", np.char.add((episode % 40).astype(str), "/feed.xml")), target
    )
    query = np.char.add("?aid=rss_feed&amp;feed=", (episode % 40).astype(str))
    stamp = pc.strftime(pa.array(ts, pa.timestamp("s", "UTC")), format="%Y-%m-%dT%H:%M:%SZ")
    agents = pa.array(np.array(AGENTS, dtype=object)[agent_idx], pa.string())
    agents = pc.if_else(
        pa.array(bot),
        pa.array(np.array(BOTS, dtype=object)[rng.integers(0, len(BOTS), lines)], pa.string()),
        agents,
    )
    edge = rng.integers(0, len(EDGES), lines)
    request_id = pa.array(np.char.mod("%032x", rng.integers(0, 1 << 62, lines)))
    ttfb = rng.integers(3, 900, lines).astype(str)
    line = pc.binary_join_element_wise(
        '{"ts":"',
        stamp,
        '","ip":"',
        ip,
        '","method":"',
        pa.array(method),
        '","host":"media.example-podcasts.net","path":"',
        pa.array(target),
        '","query":"',
        pa.array(query),
        '","protocol":"HTTP/2.0","status":',
        pa.array(status.astype(str)),
        ',"bytes":',
        pa.array(nbytes.astype(str)),
        ',"range":"',
        pa.array(range_header),
        '","user_agent":"',
        agents,
        '","referer":"","request_id":"',
        request_id,
        '","edge":"',
        pa.array(np.array(EDGES)[edge]),
        '","country":"',
        pa.array(np.array(COUNTRIES)[edge]),
        '","cache":"HIT","tls":"TLSv1.3","cipher":"TLS_AES_128_GCM_SHA256","content_type":"audio/mpeg",'
        '"ttfb_ms":',
        pa.array(ttfb),
        ',"origin_shield":"shield-eu-central-1a","pop_region":"europe-west","asn":3320}',
        "",
    )
    order = rng.permutation(lines)  # arrival order is not time order
    line = line.take(pa.array(order))
    broken = rng.random(lines) < 0.003
    return pc.if_else(pa.array(broken), pa.scalar('{"ts": "2026-11-21T00:00:0'), line)


def _catalog_durations(episodes: int) -> list[int]:
    rng = np.random.default_rng(1)
    return [int(rng.integers(600, 5400)) for _ in range(episodes)]


def duckdb_count(log: Path, catalog_csv: Path) -> tuple[Counter[tuple[str, str]], float]:
    """The same rules as one SQL query (plus a table of classified user agents)."""
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    con.execute(
        "CREATE TABLE parsed AS SELECT * FROM read_ndjson(?, columns={'ts': 'VARCHAR', "
        "'ip': 'VARCHAR', 'method': 'VARCHAR', 'path': 'VARCHAR', 'status': 'BIGINT', "
        "'bytes': 'BIGINT', 'range': 'VARCHAR', 'user_agent': 'VARCHAR'}, ignore_errors=true)",
        [str(log)],
    )
    agents = [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT coalesce(user_agent, '') FROM parsed WHERE ip IS NOT NULL"
        ).fetchall()
    ]
    agent_rows = [(raw, bot_exclusion(raw, classify(raw)) is not None) for raw in agents]
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
          SELECT ip, coalesce(user_agent, '') AS ua,
                 epoch_us(strptime(ts, '%Y-%m-%dT%H:%M:%SZ')) AS ts,
                 method, split_part(path, '?', 1) AS path, status,
                 coalesce(bytes, 0) AS nbytes, coalesce(range, '') AS rng
          FROM parsed WHERE ip IS NOT NULL AND ts IS NOT NULL AND method IS NOT NULL
                AND path IS NOT NULL AND status IS NOT NULL AND bytes IS NOT NULL
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
) -> tuple[Counter[tuple[str, str]], int]:
    report = execute(
        DownloadJob(
            logs=[str(log)],
            episodes=str(catalog_csv),
            fmt=JSONL,
            max_bot_share=1.0,
            num_buckets=buckets,
            beam_args=beam_args,
        )
    )
    counts = Counter({(d, e): n for (d, e, _), n in report.downloads.items()})
    return counts, report.lines


def run_side(args: argparse.Namespace, root: Path) -> None:
    """One side in this process; counts and time go to a JSON file for the parent."""
    log, catalog_csv = root / "access.jsonl", root / "episodes.csv"
    started = time.perf_counter()
    if args.side == "beam":
        beam_args = ["--runner=DirectRunner"]
        if args.workers > 1:
            beam_args += [
                f"--direct_num_workers={args.workers}",
                "--direct_running_mode=multi_processing",
            ]
        counts, lines = beam_count(log, catalog_csv, beam_args, args.buckets)
    else:
        counts = duckdb_count(log, catalog_csv)[0]
        lines = args.lines
    elapsed = time.perf_counter() - started
    result = {"seconds": elapsed, "lines": lines, "counts": [[*k, v] for k, v in counts.items()]}
    (root / f"{args.side}.json").write_text(json.dumps(result))


def measure_side(side: str, args: argparse.Namespace, root: Path) -> tuple[dict, float]:
    """Run one side in a child process; return its result and the peak RSS of its tree (GB)."""
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--keep",
        str(root),
        "--lines",
        str(args.lines),
        "--buckets",
        str(args.buckets),
        "--workers",
        str(args.workers),
    ]
    child = psutil.Popen(command)
    peak = 0
    while child.poll() is None:
        try:
            tree = [child, *child.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    if child.returncode:
        raise SystemExit(f"{side} failed with exit code {child.returncode}")
    return json.loads((root / f"{side}.json").read_text()), peak / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument(
        "--workers", type=int, default=1, help=">1: DirectRunner multi-processing mode"
    )
    parser.add_argument("--keep", help="keep the generated log in this directory")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the log already in --keep (same --lines)"
    )
    parser.add_argument("--side", choices=("beam", "duckdb"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args, Path(args.keep))
        return
    with tempfile.TemporaryDirectory(prefix="bench-downloads-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        log, catalog_csv = root / "access.jsonl", root / "episodes.csv"
        if not (args.reuse and log.exists() and catalog_csv.exists()):
            started = time.perf_counter()
            write_catalog(catalog_csv, args.episodes, np.random.default_rng(1))
            generate(log, args.lines, args.episodes)
            elapsed = time.perf_counter() - started
            size = log.stat().st_size
            print(
                f"generated {args.lines:,} JSON lines ({size / 1e9:.2f} GB, "
                f"{size / args.lines:.0f} bytes/line) in {elapsed:.1f} s"
            )
        beam, beam_gb = measure_side("beam", args, root)
        duck, duck_gb = measure_side("duckdb", args, root)
        lines = beam["lines"]
        print(
            f"beam   (DirectRunner, {args.workers} worker): {beam['seconds']:7.1f} s "
            f"{lines / beam['seconds']:10,.0f} lines/s  peak RSS {beam_gb:.2f} GB"
        )
        print(
            f"duckdb ({os.cpu_count()} threads):            {duck['seconds']:7.1f} s "
            f"{lines / duck['seconds']:10,.0f} lines/s  peak RSS {duck_gb:.2f} GB"
        )
        beam_counts = Counter({(d, e): n for d, e, n in beam["counts"]})
        duck_counts = Counter({(d, e): n for d, e, n in duck["counts"]})
        print(
            f"ratio beam/duckdb time: {beam['seconds'] / duck['seconds']:.2f}x; "
            f"memory: {beam_gb / duck_gb:.2f}x; downloads: {sum(beam_counts.values()):,}"
        )
        assert lines == args.lines, (lines, args.lines)
        assert beam_counts == duck_counts, "Beam and DuckDB disagree"


if __name__ == "__main__":
    main()

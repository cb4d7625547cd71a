"""The Beam pipeline: agreement with the reference implementation, files, outputs, streaming."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from backbeat.errors import InvalidInput
from backbeat.measurement.accesslogs import parse_line
from backbeat.measurement.downloads import (
    DownloadReport,
    DownloadRules,
    IpRanges,
    Window,
    count_downloads,
    parse_catalog,
    parse_stitch_map,
)
from backbeat.measurement.downloads.batch import (
    assess_batch,
    compact_hits,
    count_bucket,
    parse_batch,
    split_by_bucket,
)
from backbeat.measurement.downloads.pipeline import DownloadJob, execute
from backbeat.measurement.downloads.quality import check_quality
from backbeat.measurement.downloads.transforms import (
    CompactHitsCombineFn,
    DownloadCounts,
    StreamingDownloadPanes,
    fold_panes,
)

CATALOG_CSV = [
    "episode_id,show_id,path,file_bytes,header_bytes,duration_s",
    "long,s1,/ep/long.mp3,60000,1000,600",  # threshold 6900
    "short,s1,/ep/short.mp3,5000,0,45",
    "enc,s2,/ep/a b.mp3,9000,100,120",
]
STITCH_CSV = ["episode_id,ad_id,byte_start,byte_end", "long,pre,1000,3000", "long,mid,30000,32000"]
CATALOG = parse_catalog(CATALOG_CSV)
SLOTS = parse_stitch_map(STITCH_CSV)
APP = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
DAY = 1_795_219_200  # 2026-11-21T00:00:00Z


def combined(
    ts: int,
    ip: str,
    method: str,
    path: str,
    status: int,
    nbytes: int,
    agent: str,
    rng: str,
    referer: str,
) -> str:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return f'{ip} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {nbytes} "{referer}" "{agent}" "{rng}"'


def jsonl(
    ts: int,
    ip: str,
    method: str,
    path: str,
    status: int,
    nbytes: int,
    agent: str,
    rng: str,
    referer: str,
) -> str:
    from datetime import UTC, datetime

    record = {
        "ts": datetime.fromtimestamp(ts, UTC).isoformat(),
        "ip": ip,
        "method": method,
        "path": path,
        "status": status,
        "bytes": nbytes,
        "range": None if rng == "-" else rng,
        "user_agent": None if agent == "-" else agent,
        "referer": None if referer == "-" else referer,
    }
    return orjson.dumps(record).decode()


requests = st.tuples(
    st.integers(DAY - 3600, DAY + 2 * 86400),
    st.sampled_from(
        [
            "203.0.113.9",
            "203.0.113.10",
            "192.0.2.5",
            "::ffff:203.0.113.9",
            "2001:db8::1",
            "2001:db8::2:1",
            "2001:db8:0:1::1",
            "bad-ip",
        ]
    ),
    st.sampled_from(["GET", "GET", "GET", "HEAD", "POST"]),
    st.sampled_from(
        ["/ep/long.mp3", "/ep/long.mp3?x=1", "/ep/short.mp3", "/ep/a%20b.mp3", "/feed.xml"]
    ),
    st.sampled_from([200, 206, 206, 206, 304, 404]),
    st.integers(0, 70000),
    st.sampled_from(
        [
            APP,
            APP,
            "AppleCoreMedia/1.0",
            CHROME,
            "-",
            "curl/8.0",
            "atc/1.0 watchOS/9",
            "MyBot",
            "Zzz/1",
        ]
    ),
    st.one_of(
        st.just("-"),
        st.just("bytes=0-1"),
        st.integers(0, 65000).map(lambda n: f"bytes={n}-"),
        st.integers(1, 65000).map(lambda n: f"bytes=-{n}"),
        st.just("bytes=x"),
    ),
    st.sampled_from(["-", "https://podcasts.apple.com/x", "https://example.com/"]),
)
logs = st.lists(st.one_of(requests, st.sampled_from(["junk", "", '{"ts": 1}'])), max_size=40)


def render(items: list, fmt: str) -> list[str]:
    writer = combined if fmt == "combined" else jsonl
    return [item if isinstance(item, str) else writer(*item) for item in items]


def rules_for(window: Window, by_app: bool) -> DownloadRules:
    return DownloadRules(
        CATALOG,
        window=window,
        by_app=by_app,
        data_centres=IpRanges(["192.0.2.0/24"]),
        ad_slots=SLOTS,
    )


def count_in_batches(
    lines: list[str], rules: DownloadRules, fmt: str, batch: int, buckets: int
) -> DownloadReport:
    """The vectorised functions the Beam DoFns run, without Beam."""
    report = DownloadReport()
    hits = []
    for offset in range(0, len(lines), batch):
        parsed, rejects = parse_batch(pa.array(lines[offset : offset + batch]), fmt)
        report.rejected.update(rejects["reason"].to_pylist())
        part, excluded = assess_batch(parsed, rules)
        report.excluded.update(excluded)
        report.accepted += part.num_rows
        hits.append(part)
    report.lines = len(lines)
    by_bucket: dict[int, list] = {}
    for part in hits:
        for bucket, sub in split_by_bucket(part, buckets):
            by_bucket.setdefault(bucket, []).append(sub)
    # Each bucket goes through the shuffle's combiner: two partial accumulators compacted
    # after every batch (what combiner lifting does per bundle), merged in reverse order.
    combine = CompactHitsCombineFn(rules, min_rows=1)
    for parts in by_bucket.values():
        accumulators = []
        for share in (parts[: len(parts) // 2], parts[len(parts) // 2 :]):
            accumulator = combine.create_accumulator()
            for sub in share:
                accumulator = combine.add_input(accumulator, sub)
            accumulators.append(combine.compact(accumulator))
        table = combine.extract_output(combine.merge_accumulators(accumulators[::-1]))
        downloads, ads = count_bucket(table, rules)
        report.downloads.update(downloads)
        report.ads.update(ads)
    return report


@settings(max_examples=150, deadline=None)
@given(
    items=logs,
    fmt=st.sampled_from(["combined", "jsonl"]),
    window=st.sampled_from(list(Window)),
    by_app=st.booleans(),
    batch=st.integers(1, 16),
    buckets=st.integers(1, 5),
)
def test_batch_engine_agrees_with_reference(items, fmt, window, by_app, batch, buckets):
    lines = render(items, fmt)
    rules = rules_for(window, by_app)
    expected = count_downloads(lines, rules, fmt)
    actual = count_in_batches(lines, rules, fmt, batch, buckets)
    assert actual.downloads == expected.downloads
    assert actual.ads == expected.ads
    assert actual.excluded == expected.excluded
    assert actual.rejected == expected.rejected
    assert actual.accepted == expected.accepted


def stats_of(report: DownloadReport, lines: int) -> list:
    stats = [(("lines", ""), lines)] if lines else []
    stats += [(("excluded", str(r)), n) for r, n in report.excluded.items()]
    stats += [(("rejected", str(r)), n) for r, n in report.rejected.items()]
    if report.accepted:
        stats.append((("accepted", ""), report.accepted))
    return stats + [(("days", d), n) for d, n in report.days.items()]


# Shrinking re-runs whole pipelines; a failure is reported unshrunk instead.
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    items=logs,
    fmt=st.sampled_from(["combined", "jsonl"]),
    window=st.sampled_from(list(Window)),
    by_app=st.booleans(),
)
def test_beam_pipeline_agrees_with_reference(items, fmt, window, by_app):
    lines = render(items, fmt)
    rules = rules_for(window, by_app)
    expected = count_downloads(lines, rules, fmt)
    arrays = [pa.array(lines[i : i + 4], pa.string()) for i in range(0, len(lines), 4)]
    with test_pipeline.TestPipeline() as pipeline:
        counts = pipeline | beam.Create(arrays) | DownloadCounts(rules, fmt, num_buckets=3)
        assert_that(
            counts["downloads"], equal_to(list(expected.downloads.items())), label="Downloads"
        )
        assert_that(counts["ads"], equal_to(list(expected.ads.items())), label="Ads")
        assert_that(counts["stats"], equal_to(stats_of(expected, len(lines))), label="Stats")


SAMPLE_DATA = [
    combined(DAY + 100, "203.0.113.9", "GET", "/ep/long.mp3", 200, 60000, APP, "-", "-"),
    combined(DAY + 200, "203.0.113.9", "GET", "/ep/long.mp3", 200, 60000, APP, "-", "-"),
    combined(DAY + 300, "2001:db8::1", "GET", "/ep/short.mp3", 206, 2500, APP, "bytes=0-", "-"),
    combined(DAY + 400, "2001:db8::9", "GET", "/ep/short.mp3", 206, 2500, APP, "bytes=-2500", "-"),
    combined(DAY + 500, "203.0.113.9", "HEAD", "/ep/long.mp3", 200, 0, APP, "-", "-"),
    "junk",
]


def test_download_counts_transform():
    with test_pipeline.TestPipeline() as pipeline:
        counts = (
            pipeline
            | beam.Create([pa.array(SAMPLE_DATA[:3]), pa.array(SAMPLE_DATA[3:])])
            | DownloadCounts(rules_for(Window.CALENDAR, False), num_buckets=4)
        )
        assert_that(
            counts["downloads"],
            equal_to([(("2026-11-21", "long", None), 1), (("2026-11-21", "short", None), 1)]),
            label="CheckDownloads",
        )
        assert_that(
            counts["ads"],
            equal_to([(("2026-11-21", "long", "pre"), 1), (("2026-11-21", "long", "mid"), 1)]),
            label="CheckAds",
        )
        assert_that(
            counts["stats"],
            equal_to(
                [
                    (("lines", ""), 6),
                    (("accepted", ""), 4),
                    (("days", "2026-11-21"), 4),
                    (("excluded", "head-request"), 1),
                    (("rejected", "malformed-line"), 1),
                ]
            ),
            label="CheckStats",
        )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    episodes = tmp_path / "episodes.csv"
    episodes.write_text("\n".join(CATALOG_CSV) + "\n")
    log = tmp_path / "access.log"
    log.write_bytes(("\n".join(SAMPLE_DATA) + "\n").encode() + b"\xff\xfe broken\n")
    return {"episodes": episodes, "log": log, "dir": tmp_path}


def job(files: dict[str, Path], **overrides) -> DownloadJob:
    fields = {
        "logs": [str(files["log"])],
        "episodes": str(files["episodes"]),
        "output": str(files["dir"] / "out.csv"),
        "rejects": str(files["dir"] / "rejects.jsonl"),
        "parquet": str(files["dir"] / "parquet"),
        "chunk_bytes": 200,  # several byte-range chunks per file
    }
    fields.update(overrides)
    return DownloadJob(**fields)


def test_files_to_csv_rejects_and_parquet(files):
    report = execute(job(files))
    assert (files["dir"] / "out.csv").read_text().splitlines() == [
        "date,episode_id,downloads",
        "2026-11-21,long,1",
        "2026-11-21,short,1",
    ]
    rejects = [
        json.loads(line) for line in (files["dir"] / "rejects.jsonl").read_text().splitlines()
    ]
    assert sorted(r["reason"] for r in rejects) == ["bad-encoding", "malformed-line"]
    assert report.lines == 7 and report.accepted == 4
    table = pq.read_table(files["dir"] / "parquet" / "downloads" / "date=2026-11-21")
    assert sorted(table["downloads"].to_pylist()) == [1, 1]


def test_rerunning_a_day_replaces_it(files):
    execute(job(files))
    execute(job(files))
    root = files["dir"] / "parquet" / "downloads"
    assert sum(pq.read_table(root)["downloads"].to_pylist()) == 2
    files["log"].write_text(SAMPLE_DATA[0] + "\n")
    execute(job(files))
    assert pq.read_table(root).to_pylist() == [
        {"episode_id": "long", "show_id": "s1", "app": None, "downloads": 1, "date": "2026-11-21"}
    ]


def test_bot_share_bound_fails_the_run_and_publishes_nothing(files):
    files["log"].write_text(
        "\n".join(
            combined(DAY, "203.0.113.9", "GET", "/ep/long.mp3", 200, 9, "curl/8.0", "-", "-")
            for _ in range(3)
        )
        + "\n"
        + SAMPLE_DATA[0]
        + "\n"
    )
    with pytest.raises(InvalidInput, match="bot share 75.0% of 4 requests exceeds the bound 50.0%"):
        execute(job(files, max_bot_share=0.5))
    assert not (files["dir"] / "out.csv").exists()


def test_quality_checks_account_for_every_line_and_refuse_negatives():
    report = DownloadReport(lines=5, accepted=2)
    report.excluded["head-request"] = 2
    with pytest.raises(InvalidInput, match="5 lines read but 4 accounted for") as caught:
        check_quality(report)
    assert caught.value.reason == "data-quality"
    report.rejected["malformed-line"] = 1
    check_quality(report)
    report.downloads["2026-11-21", "long", None] = -1
    with pytest.raises(InvalidInput, match="negative counts"):
        check_quality(report)


def test_missing_log_file_is_invalid_input(files):
    with pytest.raises(InvalidInput, match="no log file matches"):
        execute(job(files, logs=[str(files["dir"] / "nope.log")]))


def test_streaming_counts_late_data_within_allowed_lateness():
    def at(line: str) -> TimestampedValue:
        return TimestampedValue(line, parse_line(line).ts_us / 1e6)

    first_half = combined(
        DAY + 36000, "203.0.113.9", "GET", "/ep/long.mp3", 206, 3500, APP, "bytes=0-", "-"
    )
    second_half = combined(
        DAY + 36060, "203.0.113.9", "GET", "/ep/long.mp3", 206, 3500, APP, "bytes=3500-", "-"
    )
    other = combined(DAY + 39600, "198.51.100.7", "GET", "/ep/long.mp3", 200, 60000, APP, "-", "-")
    next_day = combined(
        DAY + 86400 + 3600, "198.51.100.8", "GET", "/ep/long.mp3", 200, 60000, APP, "-", "-"
    )
    too_late = combined(DAY + 600, "198.51.100.9", "GET", "/ep/long.mp3", 200, 60000, APP, "-", "-")
    stream = (
        test_stream.TestStream()
        .add_elements([at(first_half), at(other)])
        .advance_watermark_to(DAY + 86400 + 1800)  # day 1 is complete: its on-time pane fires
        .add_elements([at(second_half)])  # late, within the allowed lateness
        .add_elements([at(next_day)])
        .advance_watermark_to(DAY + 2 * 86400 + 7200)  # past day 1's lateness horizon
        .add_elements([at(too_late)])  # dropped
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True

    def check(panes):
        downloads, _, late = fold_panes(panes)
        assert downloads == {("2026-11-21", "long", None): 2, ("2026-11-22", "long", None): 1}
        assert late == 1
        assert any(p["late"] for p in panes)

    with test_pipeline.TestPipeline(options=options) as pipeline:
        result = (
            pipeline
            | stream
            | StreamingDownloadPanes(
                rules_for(Window.CALENDAR, False), num_buckets=4, allowed_lateness_s=86400
            )
        )
        assert_that(result["panes"], check)


def test_streaming_rejects_use_the_same_parse_step():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = (
        test_stream.TestStream()
        .add_elements([TimestampedValue("junk", DAY)])
        .advance_watermark_to_infinity()
    )
    with test_pipeline.TestPipeline(options=options) as pipeline:
        result = pipeline | stream | StreamingDownloadPanes(rules_for(Window.CALENDAR, False))
        reasons = result["rejects"] | beam.FlatMap(lambda batch: batch["reason"].to_pylist())
        assert_that(reasons, equal_to(["malformed-line"]))


def test_rules_count_the_same_through_counter_keys():
    # Guard against StrEnum keys drifting from plain strings between implementations.
    report = count_downloads(["junk"], rules_for(Window.CALENDAR, False))
    assert Counter({"malformed-line": 1}) == report.rejected


TRICKY_TIMES = [
    "21/Nov/2026:13:55:36 +0130",
    "21/Nov/2026:13:55:36 -1200",
    "31/Nov/2026:13:55:36 +0000",
    "29/Feb/2028:00:00:00 +0000",
    "29/Feb/2027:00:00:00 +0000",
    "21/Nov/2026:23:59:60 +0000",
    "21/nov/2026:13:55:36 +0000",
    "1/Nov/2026:13:55:36 +0000",
    "21/Nov/2026:13:55:36 +0099",
    "21/Nov/0000:13:55:36 +0000",
]


@pytest.mark.parametrize("stamp", TRICKY_TIMES)
def test_batch_timestamps_match_the_scalar_parser(stamp: str):
    line = f'203.0.113.9 - - [{stamp}] "GET /ep/long.mp3 HTTP/1.1" 200 5 "-" "{APP}" "-"'
    parsed, rejects = parse_batch(pa.array([line]))
    try:
        expected = parse_line(line).ts_us
    except ValueError:
        assert (parsed.num_rows, rejects["reason"].to_pylist()) == (0, ["bad-timestamp"])
    else:
        assert parsed["ts_us"].to_pylist() == [expected]


def test_report_tables_replace_each_day(files):
    from sqlalchemy import select

    from backbeat.db import make_engine, make_session_factory, migrate
    from backbeat.measurement.models import DownloadDaily

    url = f"sqlite:///{files['dir'] / 'backbeat.db'}"
    migrate(url)
    execute(job(files, database_url=url))
    execute(job(files, database_url=url))
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        rows = session.execute(
            select(DownloadDaily.episode_id, DownloadDaily.show_id, DownloadDaily.downloads)
        ).all()
    engine.dispose()
    assert sorted(rows) == [("long", "s1", 1), ("short", "s1", 1)]


def test_compaction_keeps_bytes_after_the_threshold_that_cover_an_ad_slot():
    # Bytes 0-7999 meet long.mp3's 6,900-byte threshold at the first request; the later
    # request is the only one to cover the mid-roll slot (30000-32000), so compaction may
    # drop the repeat of the first range but must keep the mid-roll bytes.
    lines = [
        combined(
            DAY + 10, "203.0.113.9", "GET", "/ep/long.mp3", 206, 8000, APP, "bytes=0-7999", "-"
        ),
        combined(
            DAY + 20, "203.0.113.9", "GET", "/ep/long.mp3", 206, 8000, APP, "bytes=0-7999", "-"
        ),
        combined(
            DAY + 30, "203.0.113.9", "GET", "/ep/long.mp3", 206, 4000, APP, "bytes=29000-32999", "-"
        ),
    ]
    day = "2026-11-21"
    rules = rules_for(Window.CALENDAR, by_app=False)
    expected_ads = {(day, "long", "pre"): 1, (day, "long", "mid"): 1}
    assert count_downloads(lines, rules).ads == expected_ads
    for order in (lines, lines[::-1]):
        report = count_in_batches(order, rules, "combined", batch=1, buckets=1)
        assert report.downloads == {(day, "long", None): 1}
        assert report.ads == expected_ads
    parsed, _ = parse_batch(pa.array(lines), "combined")
    hits, _ = assess_batch(parsed, rules)
    kept = compact_hits(pa.Table.from_batches([hits]), rules)
    assert sorted(kept["start"].to_pylist()) == [0, 29000]  # the repeated range is dropped

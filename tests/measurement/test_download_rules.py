"""Each IAB download rule on the plain functions and the reference implementation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from backbeat.errors import InvalidInput
from backbeat.measurement.downloads import (
    DownloadRules,
    Exclusion,
    IpRanges,
    Window,
    count_downloads,
    parse_catalog,
    parse_stitch_map,
)
from backbeat.measurement.downloads.catalog import required_bytes
from backbeat.measurement.downloads.rules import (
    RangeKind,
    RangeSpec,
    bot_exclusion,
    delivered_interval,
    exclusion_reason,
    is_apple_watch,
    listener_ip,
    normalise_path,
    parse_range,
    range_exclusion,
    request_exclusion,
)
from backbeat.measurement.downloads.stitching import covers, merge_intervals
from backbeat.measurement.useragents import classify

APP = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)"
CATALOG_CSV = [
    "episode_id,show_id,path,file_bytes,header_bytes,duration_s",
    "long,s1,/ep/long.mp3,6001000,1000,600",  # threshold 1000 + 600000 = 601000
    "short,s1,/ep/short.mp3,50000,0,60",  # threshold: the whole file
    "space,s2,/ep/a%20b.mp3,10000,0,30",
]


def catalog():
    return parse_catalog(CATALOG_CSV)


def line(
    *,
    day: int = 21,
    time: str = "13:00:00",
    ip: str = "203.0.113.9",
    method: str = "GET",
    path: str = "/ep/long.mp3",
    status: int = 200,
    nbytes: int = 6001000,
    agent: str = APP,
    rng: str = "-",
    referer: str = "-",
) -> str:
    return (
        f'{ip} - - [{day:02d}/Nov/2026:{time} +0000] "{method} {path} HTTP/1.1" {status} {nbytes} '
        f'"{referer}" "{agent}" "{rng}"'
    )


def count(lines, **kwargs):
    return count_downloads(lines, DownloadRules(catalog(), **kwargs))


# --- per-request rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "reason"),
    [
        ("GET", 200, None),
        ("GET", 206, None),
        ("HEAD", 200, Exclusion.HEAD),
        ("HEAD", 304, Exclusion.HEAD),
        ("GET", 304, Exclusion.NOT_MODIFIED),
        ("POST", 200, Exclusion.NOT_GET),
        ("GET", 404, Exclusion.BAD_STATUS),
        ("GET", 416, Exclusion.BAD_STATUS),
        ("GET", 302, Exclusion.BAD_STATUS),
    ],
)
def test_only_get_200_or_206(method: str, status: int, reason: Exclusion | None):
    assert request_exclusion(method, status) == reason


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/ep/1.mp3?x=1&y=2", "/ep/1.mp3"),
        ("/ep/1.mp3#t=10", "/ep/1.mp3"),
        ("/ep/a%20b.mp3", "/ep/a b.mp3"),
        ("/ep/%31.mp3?x=%3F", "/ep/1.mp3"),
        ("https://cdn.example.com/ep/1.mp3?x", "/ep/1.mp3"),
        ("/ep/1.mp3", "/ep/1.mp3"),
    ],
)
def test_path_ignores_query_and_decodes_percent(target: str, path: str):
    assert normalise_path(target) == path


@pytest.mark.parametrize(
    ("header", "spec"),
    [
        (None, RangeSpec(RangeKind.NONE)),
        ("", RangeSpec(RangeKind.NONE)),
        ("bytes=0-1", RangeSpec(RangeKind.PROBE)),
        ("bytes=0-1,5-9", RangeSpec(RangeKind.START, 0)),
        ("bytes=0-", RangeSpec(RangeKind.START, 0)),
        ("bytes=100-199", RangeSpec(RangeKind.START, 100)),
        ("Bytes = 100 - 199", RangeSpec(RangeKind.START, 100)),
        ("bytes=-500", RangeSpec(RangeKind.SUFFIX, 500)),
        ("bytes=200-100", RangeSpec(RangeKind.INVALID)),
        ("bytes=-", RangeSpec(RangeKind.INVALID)),
        ("items=0-10", RangeSpec(RangeKind.INVALID)),
    ],
)
def test_range_header(header: str | None, spec: RangeSpec):
    assert parse_range(header) == spec


def test_probe_range_is_dropped_whatever_the_status():
    assert range_exclusion(RangeSpec(RangeKind.PROBE), 206) == Exclusion.PROBE_RANGE
    assert range_exclusion(RangeSpec(RangeKind.PROBE), 200) == Exclusion.PROBE_RANGE
    assert range_exclusion(RangeSpec(RangeKind.NONE), 206) == Exclusion.BAD_RANGE
    assert range_exclusion(RangeSpec(RangeKind.INVALID), 200) is None
    assert range_exclusion(RangeSpec(RangeKind.SUFFIX, 5), 206) is None


@pytest.mark.parametrize(
    ("agent", "watch"),
    [
        ("atc/1.0 watchOS/9.0", True),
        ("atc/1.0 (watchOS 10.1)", True),
        ("atc/1.0", False),
        ("Podcasts/1.0 (null)/(null) watchOS/10.0", True),
        ("(null)/(null) watchOS", True),
        ("Podcasts/1.0 watchOS/10.0", False),
        ("xatc/1.0 watchOS", False),
    ],
)
def test_apple_watch_background_fetch(agent: str, watch: bool):
    assert is_apple_watch(agent) is watch


@pytest.mark.parametrize(
    ("agent", "reason"),
    [
        ("", Exclusion.MISSING_USER_AGENT),
        ("   ", Exclusion.MISSING_USER_AGENT),
        ("atc/1.0 watchOS/9.0", Exclusion.APPLE_WATCH),
        ("Mozilla/5.0 (compatible; Googlebot/2.1)", Exclusion.OPAWG_BOT),
        ("axios/1.6.2", Exclusion.BOT_LIBRARY),
        ("MyFeedBot/1.0", Exclusion.BOT_KEYWORD),
        ("some-CRAWLER", Exclusion.BOT_KEYWORD),
        ("SpIdEr-thing", Exclusion.BOT_KEYWORD),
        ("AndroidDownloadManager/13", None),
        (APP, None),
        ("NobodyKnowsMe/1.0", None),
    ],
)
def test_bot_rules(agent: str, reason: Exclusion | None):
    assert bot_exclusion(agent, classify(agent)) == reason


def test_bot_keyword_only_applies_to_unknown_agents():
    agent = "Overcast/3.0 robot-edition"
    assert classify(agent).type == "app"
    assert bot_exclusion(agent, classify(agent)) is None


@pytest.mark.parametrize(
    ("ip", "listener"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:0db8:0001:0002:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::9]", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("::ffff:cb00:7109", "203.0.113.9"),
        ("::1", "::/64"),
        ("999.1.1.1", None),
        ("not-an-ip", None),
        ("01.2.3.4", None),
    ],
)
def test_listener_ip_groups_ipv6_by_64(ip: str, listener: str | None):
    assert listener_ip(ip) == listener


def test_data_centre_ranges():
    ranges = IpRanges(["192.0.2.0/24", "192.0.3.0/24", "2001:db8:dc::/48", "10.0.0.1/8", " "])
    assert "192.0.2.0" in ranges and "192.0.3.255" in ranges
    assert "192.0.4.0" not in ranges and "192.0.1.255" not in ranges
    assert "::ffff:192.0.2.7" in ranges
    assert "2001:db8:dc:ffff::1" in ranges and "2001:db8:dd::1" not in ranges
    assert "10.200.0.1" in ranges
    assert "garbage" not in ranges
    assert not IpRanges() and "192.0.2.1" not in IpRanges()


def test_exclusion_order():
    bot = Exclusion.OPAWG_BOT
    assert exclusion_reason(Exclusion.HEAD, False, Exclusion.PROBE_RANGE, bot, False, True) == (
        Exclusion.HEAD
    )
    assert exclusion_reason(None, False, Exclusion.PROBE_RANGE, bot, False, True) == (
        Exclusion.NOT_EPISODE
    )
    assert exclusion_reason(None, True, Exclusion.PROBE_RANGE, bot, False, True) == (
        Exclusion.PROBE_RANGE
    )
    assert exclusion_reason(None, True, None, bot, False, True) == bot
    assert exclusion_reason(None, True, None, None, False, True) == Exclusion.INVALID_IP
    assert exclusion_reason(None, True, None, None, True, True) == Exclusion.DATA_CENTRE
    assert exclusion_reason(None, True, None, None, True, False) is None


@pytest.mark.parametrize(
    ("status", "nbytes", "spec", "interval"),
    [
        (200, 500, RangeSpec(RangeKind.NONE), (0, 500)),
        (200, 5000, RangeSpec(RangeKind.NONE), (0, 1000)),  # more than the file
        (200, 500, RangeSpec(RangeKind.START, 300), (0, 500)),  # server ignored the range
        (206, 100, RangeSpec(RangeKind.START, 300), (300, 400)),
        (206, 900, RangeSpec(RangeKind.START, 300), (300, 1000)),
        (206, 100, RangeSpec(RangeKind.START, 1500), (1000, 1000)),  # beyond the file
        (206, 100, RangeSpec(RangeKind.SUFFIX, 100), (900, 1000)),
        (206, 40, RangeSpec(RangeKind.SUFFIX, 100), (960, 1000)),  # bytes sent, not asked
        (206, 4000, RangeSpec(RangeKind.SUFFIX, 4000), (0, 1000)),
    ],
)
def test_delivered_interval(status: int, nbytes: int, spec: RangeSpec, interval):
    start, end = delivered_interval(status, nbytes, spec.kind is RangeKind.SUFFIX, spec.value, 1000)
    assert (int(start), int(end)) == interval


def test_delivered_interval_on_columns():
    start, end = delivered_interval(
        np.array([200, 206, 206]),
        np.array([10, 10, 10]),
        np.array([False, False, True]),
        np.array([0, 50, 0]),
        np.array([100, 100, 100]),
    )
    assert start.tolist() == [0, 50, 90] and end.tolist() == [10, 60, 100]


@pytest.mark.parametrize(
    ("file_bytes", "header", "duration", "required"),
    [
        (50_000, 1_000, Fraction(60), 50_000),  # 60 s or less: the whole file
        (50_000, 1_000, Fraction(5), 50_000),
        (6_001_000, 1_000, Fraction(600), 601_000),
        (1_000_000, 0, Fraction(61), 983_607),  # ceil(60e6 / 61)
        (100, 10, Fraction("60.5"), 100),  # capped at the file
        (1_000, 10, Fraction("7200.5"), 19),
    ],
)
def test_threshold(file_bytes: int, header: int, duration: Fraction, required: int):
    assert required_bytes(file_bytes, header, duration) == required


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["episode_id,show_id,path"], "lacks column"),
        (["episode_id,show_id,path,file_bytes,header_bytes,duration_s", "e,s,/a,x,0,1"], "line 2"),
        (
            ["episode_id,show_id,path,file_bytes,header_bytes,duration_s", "e,s,/a,10,10,1"],
            "line 2",
        ),
        (["episode_id,show_id,path,file_bytes,header_bytes,duration_s", "e,s,/a,10,0,0"], "line 2"),
        (
            [
                "episode_id,show_id,path,file_bytes,header_bytes,duration_s",
                "e,s,/a,10,0,1",
                "f,s,/a?x,10,0,1",
            ],
            "twice",
        ),
    ],
)
def test_bad_catalog(rows: list[str], message: str):
    with pytest.raises(InvalidInput, match=message):
        parse_catalog(rows)


def test_stitch_map_validation_and_coverage():
    with pytest.raises(InvalidInput, match="byte_start < byte_end"):
        parse_stitch_map(["episode_id,ad_id,byte_start,byte_end", "e,a,10,10"])
    with pytest.raises(InvalidInput, match="not in the catalog"):
        DownloadRules(
            catalog(),
            ad_slots=parse_stitch_map(["episode_id,ad_id,byte_start,byte_end", "x,a,0,1"]),
        )
    merged = merge_intervals([(5, 10), (0, 5), (20, 30), (25, 40), (50, 50)])
    assert merged == [(0, 10), (20, 40)]
    assert covers(merged, 0, 10) and covers(merged, 21, 40)
    assert not covers(merged, 5, 11) and not covers(merged, 15, 16) and not covers(merged, 45, 46)


# --- the reference implementation, end to end ---------------------------------------------


def test_whole_file_counts_once_per_listener_episode_day():
    report = count([line(), line(time="13:05:00"), line(ip="198.51.100.1")])
    assert report.downloads == {("2026-11-21", "long", None): 2}
    assert report.accepted == 3


def test_below_threshold_does_not_count():
    report = count([line(status=206, nbytes=600_999, rng="bytes=0-")])
    assert report.downloads == {}


def test_threshold_reached_by_union_of_ranges_and_dated_by_the_request_reaching_it():
    lines = [
        line(day=21, time="23:00:00", status=206, nbytes=300_000, rng="bytes=0-299999"),
        line(day=21, time="23:10:00", status=206, nbytes=300_000, rng="bytes=0-299999"),
        line(day=21, time="23:20:00", status=206, nbytes=300_000, rng="bytes=300000-599999"),
        line(day=21, time="23:30:00", status=206, nbytes=1_000, rng="bytes=600000-"),
    ]
    assert count(lines).downloads == {("2026-11-21", "long", None): 1}
    assert count(lines[:3]).downloads == {}  # overlapping bytes are not counted twice


def test_suffix_and_out_of_order_ranges():
    lines = [
        line(time="10:00:00", status=206, nbytes=300_000, rng="bytes=-300000"),
        line(time="10:00:01", status=206, nbytes=601_000, rng="bytes=0-600999"),
    ]
    report = count(lines)
    assert report.downloads == {("2026-11-21", "long", None): 1}


def test_ranges_beyond_the_file_deliver_nothing():
    lines = [line(status=206, nbytes=601_000, rng="bytes=9000000-")]
    report = count(lines)
    assert report.downloads == {} and report.accepted == 1


def test_short_episode_needs_the_whole_file():
    almost = [line(path="/ep/short.mp3", status=206, nbytes=49_999, rng="bytes=0-49998")]
    assert count(almost).downloads == {}
    whole = [*almost, line(path="/ep/short.mp3", status=206, nbytes=1, rng="bytes=-1")]
    assert count(whole).downloads == {("2026-11-21", "short", None): 1}


def test_probe_head_304_and_unknown_paths_are_excluded_by_reason():
    lines = [
        line(status=206, nbytes=2, rng="bytes=0-1"),
        line(method="HEAD"),
        line(status=304, nbytes=0),
        line(path="/feed.xml"),
        line(path="/ep/a%20b.mp3?utm=x", nbytes=10_000),
        "not a log line",
    ]
    report = count(lines)
    assert report.excluded == {
        Exclusion.PROBE_RANGE: 1,
        Exclusion.HEAD: 1,
        Exclusion.NOT_MODIFIED: 1,
        Exclusion.NOT_EPISODE: 1,
    }
    assert report.rejected == {"malformed-line": 1}
    assert report.downloads == {("2026-11-21", "space", None): 1}
    assert report.lines == 6


def test_bots_and_data_centres_are_excluded():
    lines = [
        line(agent="-"),
        line(agent="atc/1.0 watchOS/9.0"),
        line(agent="Mozilla/5.0 (compatible; Googlebot/2.1)"),
        line(agent="python-requests/2.31"),
        line(agent="HomegrownCrawler"),
        line(ip="192.0.2.10"),
        line(ip="::ffff:192.0.2.11"),
    ]
    report = count(lines, data_centres=IpRanges(["192.0.2.0/24"]))
    assert report.downloads == {}
    assert report.bot_requests == 7
    assert report.excluded[Exclusion.DATA_CENTRE] == 2


def test_ipv6_listener_is_its_64_prefix():
    half = {"status": 206, "nbytes": 300_500}
    lines = [
        line(ip="2001:db8:1:2::1", rng="bytes=0-300499", **half),
        line(ip="2001:0db8:0001:0002:ffff::9", rng="bytes=300500-", **half),
        line(ip="2001:db8:1:3::1", rng="bytes=300500-", **half),
    ]
    assert count(lines).downloads == {("2026-11-21", "long", None): 1}


def test_listener_includes_the_user_agent():
    lines = [line(), line(agent="Podcasts/1720.1 CFNetwork/1408.0.4 Darwin/22.5.0")]
    assert count(lines).downloads == {("2026-11-21", "long", None): 2}


def test_calendar_window_splits_at_utc_midnight_rolling_does_not():
    half = {"status": 206, "nbytes": 300_500}
    lines = [
        line(day=21, time="23:59:59", rng="bytes=0-300499", **half),
        line(day=22, time="00:00:00", rng="bytes=300500-", **half),
    ]
    assert count(lines).downloads == {}
    rolling = count(lines, window=Window.ROLLING).downloads
    assert rolling == {("2026-11-22", "long", None): 1}


def test_rolling_window_is_24_hours_from_first_touch():
    lines = [
        line(day=21, time="10:00:00"),
        line(day=22, time="09:59:59"),  # same window: no second download
        line(day=22, time="10:00:00"),  # starts a new window
        line(day=22, time="11:00:00"),
    ]
    assert count(lines, window=Window.ROLLING).downloads == {
        ("2026-11-21", "long", None): 1,
        ("2026-11-22", "long", None): 1,
    }
    assert count(lines).downloads == {
        ("2026-11-21", "long", None): 1,
        ("2026-11-22", "long", None): 1,
    }


def test_by_app_uses_the_classification_and_web_player_referrer():
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36"
    )
    lines = [
        line(),
        line(agent=chrome, referer="https://podcasts.apple.com/us/podcast/x"),
        line(agent="NobodyKnowsMe/1.0"),
    ]
    assert count(lines, by_app=True).downloads == {
        ("2026-11-21", "long", "Overcast"): 1,
        ("2026-11-21", "long", "Apple Podcasts"): 1,
        ("2026-11-21", "long", "unknown"): 1,
    }


def test_dai_ad_needs_all_its_bytes_and_a_counted_download():
    slots = parse_stitch_map(
        [
            "episode_id,ad_id,byte_start,byte_end",
            "long,pre,1000,101000",
            "long,mid,3000000,3100000",
            "long,post,6000000,6001000",
        ]
    )
    first_half = line(status=206, nbytes=3_050_000, rng="bytes=0-")
    report = count([first_half], ad_slots=slots)
    assert report.ads == {("2026-11-21", "long", "pre"): 1}
    pre_roll_only = line(status=206, nbytes=101_000, rng="bytes=0-100999")
    assert count([pre_roll_only], ad_slots=slots).ads == {}  # no download, no ad
    skipped = [
        line(status=206, nbytes=50_000, rng="bytes=0-49999"),
        line(status=206, nbytes=600_000, rng="bytes=200000-799999"),
    ]
    skipped_report = count(skipped, ad_slots=slots)
    assert skipped_report.downloads == {("2026-11-21", "long", None): 1}
    assert skipped_report.ads == {}  # the pre-roll was cut short
    whole = count([line()], ad_slots=slots)
    assert sum(whole.ads.values()) == 3

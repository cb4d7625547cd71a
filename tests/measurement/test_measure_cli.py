"""``backbeat classify-ua`` and ``backbeat measure downloads|ads`` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from backbeat.cli.main import cli
from backbeat.cli.measure import COMMANDS, classify_ua, measure

APP = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)"
LOG = [
    f'203.0.113.9 - - [21/Nov/2026:13:55:36 +0000] "GET /ep/1.mp3?x=1 HTTP/1.1" 200 60000 "-" "{APP}" "-"',
    f'203.0.113.9 - - [21/Nov/2026:13:56:36 +0000] "HEAD /ep/1.mp3 HTTP/1.1" 200 0 "-" "{APP}" "-"',
    f'198.51.100.1 - - [22/Nov/2026:00:00:01 +0000] "GET /ep/1.mp3 HTTP/1.1" 206 2 "-" "{APP}" "bytes=0-1"',
    f'198.51.100.2 - - [22/Nov/2026:00:00:01 +0000] "GET /ep/1.mp3 HTTP/1.1" 206 59000 "-" "{APP}" "bytes=1000-"',
    "not a log line",
]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "episodes.csv").write_text(
        "episode_id,show_id,path,file_bytes,header_bytes,duration_s\ne1,s1,/ep/1.mp3,60000,1000,600\n"
    )
    (tmp_path / "access.log").write_text("\n".join(LOG) + "\n")
    (tmp_path / "stitch.csv").write_text("episode_id,ad_id,byte_start,byte_end\ne1,pre,1000,5000\n")
    return tmp_path


def test_commands_are_exported():
    assert [measure, classify_ua] == COMMANDS


def test_classify_ua_prints_one_json_object_per_line(runner: CliRunner):
    result = runner.invoke(cli, ["classify-ua"], input=f"{APP}\ncurl/8.4.0\n\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["type"], r["name"], r["device"], r["device_category"]) for r in rows] == [
        ("app", "Overcast", "Apple iPhone", "mobile"),
        ("bot", "curl", None, None),
        ("unknown", None, None, None),
    ]


def test_measure_downloads_writes_report_and_summary(runner: CliRunner, inputs: Path):
    out = inputs / "out.csv"
    args = [
        "measure",
        "downloads",
        "--episodes",
        str(inputs / "episodes.csv"),
        "--output",
        str(out),
    ]
    result = runner.invoke(
        cli, [*args, "--rejects", str(inputs / "rejects.jsonl"), str(inputs / "access.log")]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == [
        "date,episode_id,downloads",
        "2026-11-21,e1,1",
        "2026-11-22,e1,1",
    ]
    assert "head-request" in result.output and "probe-range-0-1" in result.output
    assert "malformed-line" in result.output
    assert json.loads((inputs / "rejects.jsonl").read_text())["line"] == "not a log line"


def test_measure_downloads_by_app_rolling_window_and_beam_options(runner: CliRunner, inputs: Path):
    out = inputs / "out.csv"
    result = runner.invoke(
        cli,
        [
            "measure",
            "downloads",
            "--episodes",
            str(inputs / "episodes.csv"),
            "--output",
            str(out),
            "--window",
            "rolling",
            "--by",
            "app",
            "--runner",
            "DirectRunner",
            str(inputs / "access.log"),
            "--direct_num_workers=1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == "date,episode_id,app,downloads"
    assert "2026-11-21,e1,Overcast,1" in out.read_text()


def test_measure_ads(runner: CliRunner, inputs: Path):
    out = inputs / "ads.csv"
    result = runner.invoke(
        cli,
        [
            "measure",
            "ads",
            "--episodes",
            str(inputs / "episodes.csv"),
            "--stitch-map",
            str(inputs / "stitch.csv"),
            "--output",
            str(out),
            str(inputs / "access.log"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == [
        "date,episode_id,ad_id,delivered",
        "2026-11-21,e1,pre,1",
        "2026-11-22,e1,pre,1",  # bytes 1000- cover the pre-roll too
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"episodes": "missing.csv"}, "cannot read episode catalog"),
        ({"log": "missing.log"}, "no log file matches"),
        ({"catalog_text": "episode_id,path\n"}, "lacks column"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(runner: CliRunner, inputs: Path, change, message):
    if "catalog_text" in change:
        (inputs / "episodes.csv").write_text(change["catalog_text"])
    episodes = inputs / change.get("episodes", "episodes.csv")
    log = inputs / change.get("log", "access.log")
    result = runner.invoke(
        cli,
        [
            "measure",
            "downloads",
            "--episodes",
            str(episodes),
            "--output",
            str(inputs / "o.csv"),
            str(log),
        ],
    )
    assert result.exit_code == 2
    assert message in result.output


def test_bot_share_bound_is_a_data_quality_failure(runner: CliRunner, inputs: Path):
    (inputs / "access.log").write_text(LOG[0].replace(APP, "curl/8.0") + "\n")
    result = runner.invoke(
        cli,
        [
            "measure",
            "downloads",
            "--episodes",
            str(inputs / "episodes.csv"),
            "--output",
            str(inputs / "o.csv"),
            "--max-bot-share",
            "0.5",
            str(inputs / "access.log"),
        ],
    )
    assert result.exit_code == 2
    assert "data-quality" in result.output and "bot share 100.0%" in result.output
    assert not (inputs / "o.csv").exists()

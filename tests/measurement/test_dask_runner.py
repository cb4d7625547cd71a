"""The same counts from Beam's local runner and from the DaskRunner on a local Dask cluster."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backbeat.measurement.downloads.pipeline import DownloadJob, execute

DASK_RUNNER = "--runner=apache_beam.runners.dask.dask_runner.DaskRunner"
AGENTS = [
    "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
    "AppleCoreMedia/1.0.0.20G75 (iPhone; U; CPU OS 16_6 like Mac OS X; en_us)",
    "Spotify/8.8.0 iOS/16.5 (iPhone14,5)",
    "curl/8.0",
    "-",
]


def synthetic_log(path: Path, lines: int, seed: int) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 11, 21, 22, tzinfo=UTC).timestamp()
    out = []
    for _ in range(lines):
        stamp = datetime.fromtimestamp(start + rng.randrange(4 * 3600), UTC)
        ip = rng.choice(
            [f"203.0.113.{rng.randrange(40)}", f"2001:db8:{rng.randrange(9)}::{rng.randrange(99)}"]
        )
        episode = rng.randrange(3)
        first = rng.choice([0, 0, rng.randrange(2_000_000)])
        sent = rng.choice([2_000_000, 700_000, 1_000_000])
        status, rng_header = rng.choice([(200, "-"), (206, f"bytes={first}-"), (206, "bytes=0-1")])
        out.append(
            f'{ip} - - [{stamp:%d/%b/%Y:%H:%M:%S} +0000] "GET /ep/{episode}.mp3?s=1 HTTP/1.1" '
            f'{status} {sent} "-" "{rng.choice(AGENTS)}" "{rng_header}"'
        )
        if rng.random() < 0.02:
            out.append("garbage")
    path.write_text("\n".join(out) + "\n")


@pytest.mark.slow
def test_dask_runner_counts_what_the_local_runner_counts(tmp_path: Path):
    episodes = tmp_path / "episodes.csv"
    episodes.write_text(
        "episode_id,show_id,path,file_bytes,header_bytes,duration_s\n"
        + "".join(f"e{i},s,/ep/{i}.mp3,2000000,1000,{60 + 600 * i}\n" for i in range(3))
    )
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    for seed, log in enumerate(logs):
        synthetic_log(log, 400, seed)

    def run(runner: str) -> object:
        return execute(
            DownloadJob(
                logs=[str(tmp_path / "*.log")],
                episodes=str(episodes),
                by_app=True,
                chunk_bytes=20_000,
                num_buckets=8,
                max_bot_share=1.0,
                beam_args=[runner],
            )
        )

    local = run("--runner=DirectRunner")
    dask = run(DASK_RUNNER)
    assert sum(local.downloads.values()) > 10
    assert dask.downloads == local.downloads
    assert (dask.excluded, dask.rejected, dask.lines) == (
        local.excluded,
        local.rejected,
        local.lines,
    )
    assert local.lines == sum(len(p.read_text().splitlines()) for p in logs)

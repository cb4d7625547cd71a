"""The demo end to end on a small day: books, serves over HTTP, counts, and can run again."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from backbeat.config import Settings
from backbeat.demo.run import run_demo


def _run(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", log_level="WARNING")
    return run_demo(
        settings,
        opportunities=150,
        listeners=50,
        seed=3,
        console=Console(file=StringIO(), width=200),
    )


def test_demo_counts_what_it_served_and_runs_again(tmp_path):
    first = _run(tmp_path)
    tally, run = first["tally"], first["run"]
    assert tally.requests == 150 and tally.errors == 0
    impressions = sum(
        row["impressions"] for report in first["reports"].values() for row in report["rows"]
    )
    # Every filled break fires an impression with 97% probability; duplicates never count twice.
    assert 0 < impressions <= tally.filled
    assert run["rejected"] == tally.rejected
    assert (tmp_path / "var" / "backbeat.db").exists()
    again = _run(tmp_path)  # starts from an empty book: same seed, same day, same counts
    assert (
        sum(row["impressions"] for report in again["reports"].values() for row in report["rows"])
        == impressions
    )

"""The Airflow DAGs import and run one day with ``dag.test()``.

Airflow 3 pins libraries the platform uses at other versions (FastAPI among them), so it
lives in its own virtualenv, ``.venv-airflow`` (``apache-airflow>=3.0``, Beam, pyarrow,
orjson, click and this package with ``--no-deps``). Without it the test is skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_VENV = ROOT / ".venv-airflow"
DAGS = ROOT / "src" / "backbeat" / "measurement" / "airflow"
APP = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)"
RUN_ONE_DAY = """
import sys
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[1])
import downloads_dags
assert {d.dag_id for d in (downloads_dags.daily, downloads_dags.hourly)} == {
    "backbeat_downloads_daily", "backbeat_downloads_hourly"}
run = downloads_dags.daily.test(logical_date=datetime(2026, 11, 21, tzinfo=timezone.utc))
print("STATE", run.state)
"""

pytestmark = pytest.mark.skipif(
    not (AIRFLOW_VENV / "bin" / "airflow").exists(),
    reason="needs .venv-airflow with apache-airflow>=3.0 (kept apart from the platform's pins)",
)


@pytest.mark.slow
def test_daily_dag_counts_one_day(tmp_path: Path):
    logs = tmp_path / "logs" / "2026-11-21"
    logs.mkdir(parents=True)
    (logs / "a.log").write_text(
        f'203.0.113.9 - - [21/Nov/2026:13:55:36 +0000] "GET /ep/1.mp3 HTTP/1.1" 200 60000 "-" "{APP}" "-"\n'
        "garbage\n"
    )
    episodes = tmp_path / "episodes.csv"
    episodes.write_text(
        "episode_id,show_id,path,file_bytes,header_bytes,duration_s\ne1,s1,/ep/1.mp3,60000,1000,600\n"
    )
    out = tmp_path / "out"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "BACKBEAT_ACCESS_LOGS": str(tmp_path / "logs" / "{date}" / "*.log"),
        "BACKBEAT_EPISODES_CSV": str(episodes),
        "BACKBEAT_MEASUREMENT_DIR": str(out),
    }
    airflow = str(AIRFLOW_VENV / "bin" / "airflow")
    subprocess.run(
        [airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600
    )
    subprocess.run(
        [airflow, "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=600
    )
    result = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", RUN_ONE_DAY, str(DAGS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "STATE success" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "downloads-2026-11-21.csv").read_text().splitlines() == [
        "date,episode_id,downloads",
        "2026-11-21,e1,1",
    ]
    assert (out / "parquet" / "downloads" / "date=2026-11-21" / "part-0.parquet").exists()
    assert "garbage" in (out / "rejects-2026-11-21.jsonl").read_text()

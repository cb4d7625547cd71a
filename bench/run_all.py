"""Run every benchmark in turn and print their figures (``make bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = [
    ("Ad serving and tracking (1,000 line items)", ["bench_serving.py"]),
    ("Ad serving at 10,000 line items", ["bench_serving.py", "--line-items", "10000"]),
    ("Decision cost as the book grows", ["bench_scaling.py"]),
    ("Pacing (simulated two-day flight)", ["bench_pacing.py"]),
    ("Shared ledger on Redis", ["bench_redis_ledger.py"]),
    ("Event log", ["bench_eventlog.py"]),
]


def main() -> int:
    failed = 0
    for title, command in BENCHMARKS:
        script = HERE / command[0]
        if not script.exists():
            continue
        print(f"\n== {title} ==", flush=True)
        failed |= subprocess.call([sys.executable, str(script), *command[1:], *sys.argv[1:]]) != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())

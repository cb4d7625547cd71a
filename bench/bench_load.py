"""Decisions and tracking together against a multi-worker ``backbeat serve``; nothing may be lost.

Usage: ``.venv/bin/python bench/bench_load.py [--seconds 60] [--workers 2] [--connections 64]
[--line-items 10000]`` (needs ``wrk``: ``apt-get install wrk``).

``wrk`` plays many players at once, closed loop (each connection sends its next request as
soon as the previous one is answered): a player asks ``/vast`` for an ad, and fires the
impression and quartile pixels of every ad it gets, each once, before asking again. At the
end it prints decisions/s and tracking events/s, p50/p99 latency over both, errors
(non-2xx and socket errors), and then counts the event log: every pixel acknowledged with
``204`` must be there (``lost`` = acknowledged but missing; goal 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from backbeat.eventlog import EventLogReader  # noqa: E402
from backbeat.events import DELIVERY_EVENTS, Event  # noqa: E402
from bench_serving import (  # noqa: E402
    SIGNING_KEY,
    free_port,
    machine,
    start_server,
    tree_cpu_seconds,
)
from synthetic import COUNTRIES, DEVICES, GENRES, synthetic_database  # noqa: E402

PLAYER_LUA = """
local countries = {%(countries)s}
local devices = {%(devices)s}
local genres = {%(genres)s}
local pixels = {}
acked, decisions, filled, failed = 0, 0, 0, 0  -- globals: done() reads them per thread
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

request = function()
  local n = #pixels
  if n > 0 then
    local path = pixels[n]
    pixels[n] = nil
    return wrk.format("GET", path)
  end
  local path = string.format("/vast?slot=%%d&listener=l%%d&country=%%s&device=%%s&genre=%%s",
    math.random(1, 4), math.random(1, 1000000), countries[math.random(#countries)],
    devices[math.random(#devices)], genres[math.random(#genres)])
  return wrk.format("GET", path)
end

response = function(status, headers, body)
  if status == 204 then
    acked = acked + 1
  elseif status == 200 then
    decisions = decisions + 1
    for path in string.gmatch(body, "<!%%[CDATA%%[https?://[^/]+(/t/[^%%]]+)%%]%%]>") do
      if not string.find(path, "^/t/error") and not string.find(path, "^/t/click") then
        pixels[#pixels + 1] = path
        if string.find(path, "^/t/impression") then filled = filled + 1 end
      end
    end
  else
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local a, d, f, e = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    a = a + thread:get("acked")
    d = d + thread:get("decisions")
    f = f + thread:get("filled")
    e = e + thread:get("failed")
  end
  io.write(string.format("RESULT acked=%%d decisions=%%d filled=%%d failed=%%d p50=%%d p99=%%d\\n",
    a, d, f, e, latency:percentile(50), latency:percentile(99)))
end
"""


def lua_list(values: list[str]) -> str:
    return ", ".join(f'"{value}"' for value in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--line-items", type=int, default=10_000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_load needs wrk (apt-get install wrk)")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="backbeat-load-") as tmp:
        workdir = Path(tmp)
        url, _slots = synthetic_database(workdir, args.line_items)
        port = free_port()
        env = {
            **os.environ,
            "BACKBEAT_VAR_DIR": str(workdir / "var"),
            "BACKBEAT_DATABASE_URL": url,
            "BACKBEAT_SIGNING_KEY": SIGNING_KEY,
            "BACKBEAT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "BACKBEAT_LOG_LEVEL": "WARNING",
            # One load generator on loopback is one address: the per-IP tracking limit is
            # for the internet, not for this measurement.
            "BACKBEAT_RATE_LIMIT_TRACKING_PER_IP": "0",
        }
        script = workdir / "player.lua"
        script.write_text(
            PLAYER_LUA
            % {
                "countries": lua_list(COUNTRIES),
                "devices": lua_list(DEVICES),
                "genres": lua_list(GENRES),
            }
        )
        server = start_server(env, port, args.workers)
        cpu_before = tree_cpu_seconds(server.pid)
        try:
            output = subprocess.run(
                ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                 "-s", str(script), f"http://127.0.0.1:{port}"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            server_cpu = tree_cpu_seconds(server.pid) - cpu_before
        finally:
            server.terminate()  # a graceful stop: queued records are committed
            server.wait(timeout=60)
        found = re.search(
            r"RESULT acked=(\d+) decisions=(\d+) filled=(\d+) failed=(\d+) p50=(\d+) p99=(\d+)",
            output,
        )
        if found is None:
            sys.exit(f"wrk printed no result:\n{output}")
        acked, decisions, filled, failed, p50_us, p99_us = (int(v) for v in found.groups())
        sockets = re.search(r"Socket errors: (.*)", output)
        by_type: collections.Counter[str] = collections.Counter()
        for record in EventLogReader(workdir / "var" / "events").records():
            by_type[Event.from_bytes(record.payload).type] += 1
        delivery = sum(by_type[kind] for kind in DELIVERY_EVENTS)
        seconds = args.seconds
        print(
            f"book: {args.line_items:,} live line items; {args.workers} workers; "
            f"{args.connections} connections for {seconds} s (wrk, closed loop)"
        )
        print(
            f"decisions   {decisions / seconds:>9,.0f} /s   ({decisions:,}, fill {filled / max(decisions, 1):.0%})"
        )
        print(
            f"tracking    {acked / seconds:>9,.0f} /s   ({acked:,} acknowledged with 204 after fsync)"
        )
        print(f"latency     p50 {p50_us / 1000:.2f} ms   p99 {p99_us / 1000:.2f} ms (both kinds)")
        print(
            f"server CPU  {server_cpu / seconds:.2f} cores busy, "
            f"{server_cpu / max(decisions + acked, 1) * 1e6:.0f} µs per request "
            f"(load average {os.getloadavg()[0]:.2f} at the end; wrk shares the cores)"
        )
        print(
            f"errors      {failed:,} non-2xx; socket errors: {sockets.group(1) if sockets else 'none'}"
        )
        print(
            f"event log   {delivery:,} delivery records, {by_type['fill']:,} fills, "
            f"{by_type['opportunity']:,} opportunities (sample 0.1)"
        )
        print(f"lost        {max(acked - delivery, 0):,} acknowledged events missing from the log")


if __name__ == "__main__":
    main()

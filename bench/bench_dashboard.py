"""Dashboard page times on the demo book: every page, against the JSON report it draws on.

Run ``backbeat demo`` first (it leaves its book under ``var/``), then::

    python bench/bench_dashboard.py [--var-dir var] [--repeat 5]

The app runs in-process (TestClient, no network): each page is fetched ``--repeat`` times
after one warm-up; printed are the median and worst time per page, the ratio of each
campaign page to ``GET /v1/reports/delivery`` for the same campaign (the baseline: the API
call the page's chart data comes from), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import time
from pathlib import Path

from fastapi.testclient import TestClient

from backbeat.api.app import create_app
from backbeat.config import Settings


def timed(client: TestClient, path: str, repeat: int, **kwargs: object) -> list[float]:
    response = client.get(path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, **kwargs)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
        assert response.status_code == 200
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--var-dir", type=Path, default=Path("var"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    admin_key = (args.var_dir / "admin.key").read_text().strip()
    settings = Settings(
        var_dir=args.var_dir, admin_key=admin_key, log_json=False, log_level="WARNING"
    )
    with TestClient(create_app(settings)) as client:
        page = client.get("/ui/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        client.post("/ui/login", data={"api_key": admin_key, "csrf": token})
        headers = {"Authorization": f"Bearer {admin_key}"}
        campaigns = client.get("/v1/campaigns", headers=headers).json()["data"]
        items = client.get("/v1/line-items", headers=headers, params={"limit": 500}).json()["data"]
        pages = ["/ui/", "/ui/podcasts", f"/ui/campaigns/{campaigns[0]['id']}/line-items/new"]
        print(f"{len(campaigns)} campaigns, {len(items)} line items; {args.repeat} runs per page")
        print(f"{'page':58} {'median ms':>10} {'worst ms':>9} {'x report':>9}")
        worst = 0.0
        for path in pages:
            times = timed(client, path, args.repeat)
            worst = max(worst, max(times))
            print(f"{path:58} {statistics.median(times) * 1000:10.1f} {max(times) * 1000:9.1f}")
        for campaign in campaigns:
            for granularity in ("hour", "day"):
                path = f"/ui/campaigns/{campaign['id']}?granularity={granularity}"
                times = timed(client, path, args.repeat)
                base = timed(
                    client,
                    "/v1/reports/delivery",
                    args.repeat,
                    headers=headers,
                    params={
                        "campaign_id": campaign["id"],
                        "from": campaign["start_at"],
                        "to": campaign["end_at"],
                        "granularity": granularity,
                    },  # fmt: skip
                )
                worst = max(worst, max(times))
                ratio = statistics.median(times) / statistics.median(base)
                print(
                    f"{path:58} {statistics.median(times) * 1000:10.1f} "
                    f"{max(times) * 1000:9.1f} {ratio:9.1f}"
                )
        for item in items:
            path = f"/ui/line-items/{item['id']}"
            times = timed(client, path, args.repeat)
            worst = max(worst, max(times))
            print(f"{path:58} {statistics.median(times) * 1000:10.1f} {max(times) * 1000:9.1f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"worst page {worst * 1000:.0f} ms; peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()

"""The demo's promotion step: generate listening data, book promotions, train, score, count.

Runs against the demo server over HTTP like the rest of the demo; the data and the model
are made in this process (the server picks both up by itself within a second).
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from rich.console import Console

from backbeat.config import Settings
from backbeat.promotion.dataset import data_dir, features_dir, models_dir, read_columns
from backbeat.promotion.ids import format_id
from backbeat.promotion.pipeline import FeatureJob, run_features
from backbeat.promotion.synthetic import SyntheticConfig, generate
from backbeat.promotion.training import TrainJob, train

LISTENERS = 1500
SCORED_LISTENERS = 150


def run_promotion_step(
    client: httpx.Client, settings: Settings, console: Console, day_start: datetime, seed: int = 7
) -> dict[str, Any]:
    """Book three promotion campaigns, train a first model and serve it a little traffic."""
    started = time.monotonic()
    end = day_start + timedelta(days=1)
    console.print("[bold]Promotion[/]: listening data, campaigns, a first model …")
    config = SyntheticConfig(listeners=LISTENERS, artists=150, days=42, promoted_releases=8,
                             exposure_share=0.3, seed=seed, end=end)  # fmt: skip
    generate(config).write(data_dir(settings.var_dir))
    releases = read_columns(data_dir(settings.var_dir) / "releases.parquet")
    promoted = [int(r) for r in releases["release"][releases["promoted"]]][-3:]
    advertiser = client.post("/v1/advertisers", json={"name": "Northern Lights Records"})
    advertiser.raise_for_status()
    campaigns = []
    for number, release in enumerate(promoted):
        body = {
            "advertiser_id": advertiser.json()["id"],
            "name": f"New release {format_id('release', release)}",
            "item_type": "release",
            "item_id": format_id("release", release),
            "artist_id": format_id("artist", int(releases["artist"][release])),
            "surfaces": ["home_feed", "takeover"],
            "markets": ["US", "GB", "SE"] if number else [],
            "start_at": day_start.isoformat(),
            "end_at": (day_start + timedelta(days=14)).isoformat(),
            "budget": "2000.00",
            "price_model": "cpc" if number == 2 else "cpm",
            "price": "0.35" if number == 2 else "18.00",
        }
        response = client.post("/v1/promotion-campaigns", json=body)
        response.raise_for_status()
        campaigns.append(response.json())
    run = run_features(FeatureJob(data_dir(settings.var_dir), features_dir(settings.var_dir)))
    result = train(TrainJob(run.path, models_dir(settings.var_dir), seed=seed))
    metrics = result.version.metrics
    console.print(
        f"  {len(campaigns)} promotion campaigns · model {result.version.version}: holdout AUC "
        f"{metrics['holdout']['auc']:.3f} vs popularity {metrics['popularity_baseline']['auc']:.3f}, "
        f"ECE {metrics['holdout']['ece']:.4f} ({run.rows:,} training exposures)"
    )
    served = _serve_a_little(client, campaigns, seed)
    report = client.post("/v1/reports/promotion/run").json()
    for campaign in campaigns:
        totals = client.get("/v1/reports/promotion", params={"campaign_id": campaign["id"]}).json()[
            "totals"
        ]
        if totals:
            console.print(
                f"  {campaign['name']} ({campaign['price_model']}): reach {totals['reach']}, "
                f"exposures {totals['exposures']}, clicks {totals['clicks']}, conversions "
                f"{totals['conversions']} (new {totals['conversions_new']}, reactivated "
                f"{totals['conversions_reactivated']}, amplified {totals['conversions_amplified']}), "
                f"spend ${totals['spend']}"
            )
    console.print(f"  promotion step done in {time.monotonic() - started:.0f} s "
                  f"({served} scored requests, {report['events_read']} promotion events counted)")  # fmt: skip
    return {"campaigns": campaigns, "model": result.version.version, "report": report}


def _serve_a_little(client: httpx.Client, campaigns: list[dict[str, Any]], seed: int) -> int:
    """Ask for scores, 'show' the best item, and report exposures, clicks and streams back."""
    deadline = time.monotonic() + 15
    candidates = [{"item_id": c["item_id"]} for c in campaigns]
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    served = 0
    for number in range(SCORED_LISTENERS):
        listener = format_id("listener", rng.randrange(LISTENERS))
        body = {
            "listener_id": listener,
            "surface": "home_feed",
            "country": "US",
            "candidates": candidates,
        }
        answer = client.post("/v1/promotion-scores", json=body).json()
        while answer.get("model_version") is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the server loads the new champion within a second
            answer = client.post("/v1/promotion-scores", json=body).json()
        served += 1
        if not answer.get("scores"):
            continue
        best = answer["scores"][0]
        exposure = {"event_id": f"demo-{number}", "listener_id": listener, "item_id": best["item_id"],
                    "campaign_id": best["campaign_id"]}  # fmt: skip
        events.append({"type": "exposure", "surface": "home_feed", **exposure})
        converted = rng.random() < min(1.0, best["p_conversion"] * 3)
        if converted or rng.random() < 0.03:
            events.append({"type": "click", **exposure})
        if converted:
            events.append({"type": "conversion", "event_id": f"demo-stream-{number}", "listener_id": listener,
                           "item_id": best["item_id"],
                           "conversion_type": rng.choice(["new", "new", "reactivated", "amplified"])})  # fmt: skip
    if events:
        client.post("/v1/promotion-events", json={"events": events}).raise_for_status()
    return served

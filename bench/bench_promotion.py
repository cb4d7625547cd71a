"""Promotion: score latency for 100 candidates, batch scoring rate, feature pipeline rate.

Run: ``.venv/bin/python bench/bench_promotion.py [--listeners 5000] [--requests 2000]``

Generates the synthetic listening data (seeded), runs the Beam feature pipeline and the
LightGBM training, books 100 promotion campaigns in a SQLite database, then measures:

* ``score``: in-process ``PromotionScorer.score`` for 100 candidates (online scoring: one
  feature computation and one model call per request) and with every pair in the batch
  store, p50/p99; and the full HTTP request through the ASGI app (TestClient, in process);
* a baseline in the same run: the same requests scored one candidate at a time;
* ``batch``: listener × item scoring rate on 1 and 2 worker processes;
* ``features``: training rows and listens per second through the Beam pipeline.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(0.99 * (len(ordered) - 1))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()

    from backbeat.catalog.models import Advertiser
    from backbeat.db import make_engine, make_session_factory, migrate
    from backbeat.promotion.batch import Item, score_all
    from backbeat.promotion.dataset import data_dir, features_dir, models_dir
    from backbeat.promotion.models import PromotionCampaign
    from backbeat.promotion.pipeline import FeatureJob, run_features
    from backbeat.promotion.registry import CHAMPION, Registry
    from backbeat.promotion.schemas import ScoreRequest
    from backbeat.promotion.scoring import PromotionScorer
    from backbeat.promotion.synthetic import SyntheticConfig, generate
    from backbeat.promotion.training import TrainJob, load_model, train

    print(
        f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    end = datetime(2026, 9, 20, tzinfo=UTC)
    now = end.timestamp() + 3600
    with tempfile.TemporaryDirectory(prefix="bench-promotion-") as temp:
        var = Path(temp) / "var"
        started = time.perf_counter()
        data = generate(SyntheticConfig(listeners=args.listeners, end=end))
        counts = data.write(data_dir(var))
        print(f"generate: {counts['listens']:,} listens, {counts['exposures']:,} exposures "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip

        run = run_features(FeatureJob(data_dir(var), features_dir(var)))
        print(f"features (Beam DirectRunner): {run.rows:,} rows from {run.listens:,} listens in "
              f"{run.seconds:.1f} s = {run.rows / run.seconds:,.0f} rows/s, "
              f"{run.listens / run.seconds:,.0f} listens/s")  # fmt: skip
        started = time.perf_counter()
        result = train(TrainJob(run.path, models_dir(var)))
        metrics = result.version.metrics
        print(f"train: {time.perf_counter() - started:.1f} s, holdout AUC {metrics['holdout']['auc']:.4f} "
              f"(popularity {metrics['popularity_baseline']['auc']:.4f}, logistic "
              f"{metrics['logistic_baseline']['auc']:.4f}), ECE {metrics['holdout']['ece']:.4f}")  # fmt: skip

        url = f"sqlite:///{Path(temp) / 'bench.db'}"
        migrate(url)
        sessions = make_session_factory(make_engine(url))
        releases = data.releases
        picks = np.linspace(0, len(releases["release"]) - 1, args.candidates).astype(int)
        items = [(f"r{int(r):05d}", f"a{int(releases['artist'][r]):04d}") for r in picks]
        with sessions() as session, session.begin():
            advertiser = Advertiser(name="Bench label")
            session.add(advertiser)
            session.flush()
            for item, artist in items:
                session.add(PromotionCampaign(
                    advertiser_id=advertiser.id, name=item, item_type="release", item_id=item,
                    artist_id=artist, surfaces=["home_feed"], markets=[], audiences=[],
                    start_at=datetime(2026, 9, 1, tzinfo=UTC), end_at=datetime(2030, 1, 1, tzinfo=UTC),
                    budget=Decimal(10_000), currency="USD", price_model="cpm", price=Decimal(15),
                    exposure_cap=1000, exclusion_days=0))  # fmt: skip
        scorer = PromotionScorer(sessions=sessions, var_dir=var, clock=lambda: now)
        scorer.refresh(force=True)
        rng = random.Random(1)
        candidates = [{"item_id": item} for item, _ in items]
        requests = [
            ScoreRequest(
                listener_id=f"l{rng.randrange(args.listeners):06d}",
                surface="home_feed",
                country="US",
                candidates=candidates,
            )  # fmt: skip
            for _ in range(args.requests)
        ]
        for request in requests[:50]:
            scorer.score(request)  # warm up
        samples, cpu = [], []
        for request in requests:
            t0, c0 = time.perf_counter(), time.thread_time()
            response = scorer.score(request)
            samples.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
        assert len(response.scores) == args.candidates, response
        p50, p99 = percentiles(samples)
        c50, c99 = percentiles(cpu)
        print(f"score, online, {args.candidates} candidates: p50 {p50:.2f} ms, p99 {p99:.2f} ms wall; "
              f"CPU time p50 {c50:.2f} ms, p99 {c99:.2f} ms")  # fmt: skip

        champion = Registry(models_dir(var)).resolve(CHAMPION)
        model = load_model(champion)
        batch_items = [Item(item, int(artist[1:])) for item, artist in items]
        one = score_all(scorer.profiles, batch_items[:20], model, int(now), workers=1)
        two = score_all(scorer.profiles, batch_items[:20], model, int(now), workers=2)
        print(f"batch: {len(one.rows):,} listener × item scores: 1 worker {one.rate:,.0f}/s, "
              f"2 workers {two.rate:,.0f}/s ({two.rate / one.rate:.2f}×)")  # fmt: skip

        scorer.stored = {(listener, item): p for listener, item, p in
                         score_all(scorer.profiles, batch_items, model, int(now), workers=2).rows}  # fmt: skip
        scorer.stored_version = champion.version
        samples, cpu = [], []
        for request in requests:
            t0, c0 = time.perf_counter(), time.thread_time()
            scorer.score(request)
            samples.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
        s50, s99 = percentiles(samples)
        c50, c99 = percentiles(cpu)
        print(f"score, from the batch store: p50 {s50:.2f} ms, p99 {s99:.2f} ms wall; "
              f"CPU time p50 {c50:.2f} ms, p99 {c99:.2f} ms")  # fmt: skip
        scorer.stored = {}

        # Baseline in the same run: one candidate per model call.
        from backbeat.promotion import features

        base = []
        for request in requests[:200]:
            t0 = time.perf_counter()
            history = scorer.profiles.history(request.listener_id)
            for _, artist in items:
                a = int(artist[1:])
                row = features.compute(history, np.array([int(now)]), np.array([a]),
                                       np.array([scorer.profiles.genre(a)]), np.zeros(1),
                                       scorer.profiles.popularity)  # fmt: skip
                model.predict(row)
            base.append(time.perf_counter() - t0)
        b50, b99 = percentiles(base)
        print(f"baseline, one candidate per model call: p50 {b50:.2f} ms, p99 {b99:.2f} ms "
              f"(vectorised online is {b50 / p50:.1f}× faster at p50)")  # fmt: skip

        # The real server: `backbeat serve` (one worker) on a loopback port, one keep-alive client.
        import os as _os
        import socket
        import subprocess
        import sys

        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**_os.environ, "BACKBEAT_VAR_DIR": str(var), "BACKBEAT_DATABASE_URL": url,
               "BACKBEAT_ADMIN_KEY": "bench-admin-key-0123456789", "BACKBEAT_LOG_LEVEL": "WARNING",
               "BACKBEAT_SIGNING_KEY": "bench-signing-key-0123456789abcdef"}  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "backbeat.cli.main", "serve", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        headers = {"Authorization": "Bearer bench-admin-key-0123456789"}
        body = {
            "listener_id": "l000001",
            "surface": "home_feed",
            "country": "US",
            "candidates": candidates,
        }
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
            ) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if (
                            client.post("/v1/promotion-scores", json=body)
                            .json()
                            .get("model_version")
                        ):
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("server did not start")
                    time.sleep(0.2)
                for _ in range(100):
                    client.post("/v1/promotion-scores", json=body)
                samples = []
                for request in requests[:1000]:
                    body["listener_id"] = request.listener_id
                    t0 = time.perf_counter()
                    response = client.post("/v1/promotion-scores", json=body)
                    samples.append(time.perf_counter() - t0)
                assert (
                    response.status_code == 200
                    and len(response.json()["scores"]) == args.candidates
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
        h50, h99 = percentiles(samples)
        print(f"HTTP POST /v1/promotion-scores, {args.candidates} candidates (backbeat serve, 1 worker, loopback): "
              f"p50 {h50:.2f} ms, p99 {h99:.2f} ms")  # fmt: skip
        print(
            f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()

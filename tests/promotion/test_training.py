"""Training is reproducible, registered with its lineage, gated, and better than popularity."""

from __future__ import annotations

import json
import shutil

import numpy as np
from sklearn.metrics import roc_auc_score

from backbeat.promotion.dataset import features_dir, models_dir, read_columns
from backbeat.promotion.features import feature_code_hash
from backbeat.promotion.registry import CHALLENGER, CHAMPION, Registry
from backbeat.promotion.training import LOGISTIC, TrainJob, load_model, train

BAD = {"num_leaves": 2, "min_data_in_leaf": 2000, "learning_rate": 0.001}


def test_two_runs_on_the_same_data_and_seed_write_byte_identical_files(small_world, tmp_path):
    features = features_dir(small_world) / "features.parquet"
    first = train(TrainJob(features, tmp_path / "one", rounds=60)).version
    second = train(TrainJob(features, tmp_path / "two", rounds=60)).version
    assert first.version == second.version
    for name in ("model.txt", "metrics.json", "manifest.json"):
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes(), name
    other_seed = train(
        TrainJob(
            features,
            tmp_path / "three",
            rounds=60,
            seed=8,
            params={"bagging_fraction": 0.7, "bagging_freq": 1},
        )
    ).version
    assert other_seed.version != first.version  # the seed matters when there is randomness


def test_the_manifest_records_the_data_and_feature_code_hashes(small_world):
    champion = Registry(models_dir(small_world)).resolve(CHAMPION)
    assert champion is not None
    manifest = champion.manifest
    assert manifest["feature_code_sha256"] == feature_code_hash()
    assert len(manifest["training_data_sha256"]) == 64
    assert manifest["params"]["deterministic"] is True and manifest["params"]["num_threads"] == 1
    import hashlib

    assert manifest["model_sha256"] == hashlib.sha256(champion.model_file.read_bytes()).hexdigest()


def test_the_model_beats_the_popularity_baseline_and_is_calibrated(small_world):
    champion = Registry(models_dir(small_world)).resolve(CHAMPION)
    assert champion is not None
    metrics = champion.metrics
    # Recompute the holdout AUCs independently of the stored figures.
    columns = read_columns(features_dir(small_world) / "features.parquet")
    order = np.lexsort((columns["exposure_id"], columns["ts"]))
    holdout = order[int(len(order) * 0.8) :]
    matrix = np.column_stack([columns[name][holdout] for name in champion.manifest["features"]])
    labels = columns["label"][holdout]
    model_auc = roc_auc_score(labels, load_model(champion).predict(matrix))
    popularity_auc = roc_auc_score(labels, columns["artist_popularity_28d"][holdout])
    assert abs(model_auc - metrics["holdout"]["auc"]) < 1e-5
    assert abs(popularity_auc - metrics["popularity_baseline"]["auc"]) < 1e-5
    assert model_auc > popularity_auc + 0.03
    assert metrics["holdout"]["ece"] < 0.03
    assert 0 < metrics["holdout"]["log_loss"] < 0.3


def test_a_worse_model_becomes_challenger_and_a_better_one_champion(small_world, tmp_path):
    features = features_dir(small_world) / "features.parquet"
    root = tmp_path / "registry"
    shutil.copytree(models_dir(small_world), root)
    registry = Registry(root)
    champion = registry.aliases()[CHAMPION]

    worse = train(TrainJob(features, root, rounds=5, params=BAD))
    assert not worse.promoted and worse.champion == champion
    assert registry.aliases() == {CHAMPION: champion, CHALLENGER: worse.version.version}
    assert worse.champion_auc_on_holdout > worse.version.metrics["holdout"]["auc"]

    # From an empty registry the weak model is champion until a better one arrives.
    fresh = tmp_path / "fresh"
    first = train(TrainJob(features, fresh, rounds=5, params=BAD))
    assert first.promoted
    better = train(TrainJob(features, fresh, rounds=120))
    assert better.promoted and Registry(fresh).aliases()[CHAMPION] == better.version.version
    history = [json.loads(line) for line in (fresh / "history.jsonl").read_text().splitlines()]
    assert [entry["version"] for entry in history] == [
        first.version.version,
        better.version.version,
    ]


def test_the_logistic_baseline_trains_and_serves_from_json(small_world, tmp_path):
    features = features_dir(small_world) / "features.parquet"
    result = train(TrainJob(features, tmp_path, model_kind=LOGISTIC))
    assert result.version.model_file.name == "model.json"
    model = load_model(result.version)
    columns = read_columns(features)
    matrix = np.column_stack([columns[name][:10] for name in result.version.manifest["features"]])
    p = model.predict(matrix)
    assert ((p > 0) & (p < 1)).all()

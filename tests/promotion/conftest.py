"""Promotion fixtures: a small synthetic data set generated once, and an app on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backbeat.api.app import create_app
from backbeat.config import Settings
from support.app import FakeClock, make_settings
from support.promotion import DATA_END, NOW


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "var")


@pytest.fixture
def client(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client


# --- a small trained world, built once per test session ---------------------------------

SMALL = {
    "listeners": 1000,
    "artists": 120,
    "days": 42,
    "promoted_releases": 12,
    "exposure_share": 0.4,
    "seed": 11,
}


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A var dir with generated data, published features and a trained champion."""
    from backbeat.promotion.dataset import data_dir, features_dir, models_dir
    from backbeat.promotion.pipeline import FeatureJob, run_features
    from backbeat.promotion.synthetic import SyntheticConfig, generate
    from backbeat.promotion.training import TrainJob, train

    var = tmp_path_factory.mktemp("promotion-world") / "var"
    config = SyntheticConfig(end=DATA_END, **SMALL)  # type: ignore[arg-type]
    generate(config).write(data_dir(var))
    run = run_features(FeatureJob(data_dir(var), features_dir(var)))
    train(TrainJob(run.path, models_dir(var), rounds=120))
    return var


@pytest.fixture
def world_settings(settings: Settings, small_world: Path) -> Settings:
    """The app's settings with a copy of the small world in its var dir."""
    import shutil

    shutil.copytree(small_world, settings.var_dir, dirs_exist_ok=True)
    return settings


@pytest.fixture
def world_client(world_settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(world_settings, clock=clock)) as test_client:
        yield test_client

"""``backbeat promotion generate|train|score`` under the configured var directory."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from backbeat.catalog.models import Advertiser
from backbeat.cli.main import cli
from backbeat.db import make_engine, make_session_factory
from backbeat.promotion.models import PromotionCampaign, PromotionScore


@pytest.mark.slow
def test_generate_train_twice_identically_then_score(runner, tmp_path, monkeypatch):
    var = tmp_path / "var"
    monkeypatch.setenv("BACKBEAT_VAR_DIR", str(var))
    generated = runner.invoke(cli, ["promotion", "generate", "--listeners", "800", "--artists", "80",
                                    "--days", "42", "--promoted", "8", "--end", "2026-09-20"])  # fmt: skip
    assert generated.exit_code == 0, generated.output
    assert (var / "promotion" / "data" / "manifest.json").exists()

    outputs, files = [], []
    for _ in range(2):
        trained = runner.invoke(cli, ["promotion", "train"])
        assert trained.exit_code == 0, trained.output
        outputs.append(trained.output)
        version = re.search(r"model (\S+) sha256 ([0-9a-f]{64})", trained.output)
        assert version is not None
        folder = var / "models" / "promotion" / version.group(1)
        files.append(
            {
                name: (folder / name).read_bytes()
                for name in ("model.txt", "metrics.json", "manifest.json")
            }
        )
    hashes = [re.search(r"sha256 ([0-9a-f]{64})", out).group(1) for out in outputs]
    assert hashes[0] == hashes[1] and files[0] == files[1]
    assert "popularity baseline" in outputs[0] and "champion:" in outputs[0]
    metrics = (var / "promotion" / "metrics.prom").read_text()
    assert (
        "backbeat_promotion_feature_rows" in metrics and "backbeat_promotion_model_auc" in metrics
    )

    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    engine = make_engine(f"sqlite:///{(var / 'backbeat.db').resolve()}")
    with make_session_factory(engine)() as session, session.begin():
        advertiser = Advertiser(name="Label")
        session.add(advertiser)
        session.flush()
        session.add(PromotionCampaign(
            advertiser_id=advertiser.id, name="Single", item_type="release", item_id="r00003",
            artist_id="a0001", surfaces=["home_feed"], markets=[], audiences=[],
            start_at=datetime(2026, 9, 1, tzinfo=UTC), end_at=datetime(2026, 10, 1, tzinfo=UTC),
            budget=Decimal(100), currency="USD", price_model="cpm", price=Decimal(5)))  # fmt: skip
    scored = runner.invoke(cli, ["promotion", "score", "--workers", "1"])
    assert scored.exit_code == 0, scored.output
    listeners = int(re.search(r"scored (\d+) listeners × 1 items", scored.output).group(1))
    with make_session_factory(engine)() as session:
        stored = session.execute(select(func.count(), func.min(PromotionScore.p_conversion),
                                        func.max(PromotionScore.p_conversion))).one()  # fmt: skip
    assert stored[0] == listeners > 700 and 0 < stored[1] < stored[2] < 1


def test_train_without_data_says_what_to_run(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKBEAT_VAR_DIR", str(tmp_path / "var"))
    result = runner.invoke(cli, ["promotion", "train"])
    assert result.exit_code == 2
    assert "backbeat promotion generate" in result.output and "[no-promotion-data]" in result.output
    result = runner.invoke(cli, ["promotion", "score"])
    assert result.exit_code == 2 and "[no-model]" in result.output

"""Settings: what an operator gets without setting anything."""

from __future__ import annotations

from pathlib import Path

from backbeat.config import Settings


def test_admin_key_falls_back_to_the_demo_key_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BACKBEAT_ADMIN_KEY", raising=False)
    assert Settings(var_dir=tmp_path).admin_key is None
    (tmp_path / "admin.key").write_text("k3y-from-demo\n")
    assert Settings(var_dir=tmp_path).admin_key == "k3y-from-demo"
    # The environment (or an explicit value) wins over the file.
    assert Settings(var_dir=tmp_path, admin_key="explicit").admin_key == "explicit"
    (tmp_path / "admin.key").write_text("\n")
    assert Settings(var_dir=tmp_path).admin_key is None

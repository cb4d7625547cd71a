"""A local model registry: one folder per version, aliases ``champion`` and ``challenger``.

``<root>/<version>/`` holds ``model.txt`` (or ``model.json``), ``metrics.json`` and
``manifest.json`` (hashes of the training data, the feature code and the model file); all
three are written deterministically, so the same data and seed give the same bytes.
``<root>/aliases.json`` maps alias → version; ``<root>/history.jsonl`` logs promotions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbeat.errors import InvalidInput, NotFound
from backbeat.types import utcnow

CHAMPION = "champion"
CHALLENGER = "challenger"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


def dumps(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: Path
    manifest: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def model_file(self) -> Path:
        return self.path / self.manifest["model_file"]


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def save(
        self,
        *,
        model_bytes: bytes,
        model_file: str,
        metrics: dict[str, Any],
        manifest: dict[str, Any],
    ) -> ModelVersion:
        """Store a version named after its model hash (same model → same folder, same bytes)."""
        model_hash = hashlib.sha256(model_bytes).hexdigest()
        version = f"{manifest['model_kind']}-{model_hash[:12]}"
        folder = self.root / version
        manifest = {
            **manifest,
            "version": version,
            "model_file": model_file,
            "model_sha256": model_hash,
        }
        _write_atomic(folder / model_file, model_bytes)
        _write_atomic(folder / "metrics.json", dumps(metrics))
        _write_atomic(folder / "manifest.json", dumps(manifest))
        return ModelVersion(version, folder, manifest, metrics)

    def aliases(self) -> dict[str, str]:
        path = self.root / "aliases.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def load(self, version: str) -> ModelVersion:
        folder = self.root / version
        if not version or "/" in version or not (folder / "manifest.json").exists():
            raise NotFound(f"no model version {version!r} in {self.root}", reason="model-not-found")
        manifest = json.loads((folder / "manifest.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        return ModelVersion(version, folder, manifest, metrics)

    def resolve(self, alias: str) -> ModelVersion | None:
        version = self.aliases().get(alias)
        return self.load(version) if version else None

    def set_alias(self, alias: str, version: str | None) -> None:
        if alias not in (CHAMPION, CHALLENGER):
            raise InvalidInput(f"unknown alias {alias!r}", reason="unknown-alias")
        aliases = self.aliases()
        if version is None:
            aliases.pop(alias, None)
        else:
            self.load(version)
            aliases[alias] = version
        _write_atomic(self.root / "aliases.json", dumps(aliases))
        with (self.root / "history.jsonl").open("a") as handle:
            handle.write(
                json.dumps({"at": utcnow().isoformat(), "alias": alias, "version": version}) + "\n"
            )

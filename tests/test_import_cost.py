"""Start-up cost: the app and the CLI import no pipeline runner or training library.

Beam, LightGBM and scikit-learn take seconds to import; the app answers requests without
them (small delivery batches count in process, LightGBM loads with a champion in the
scorer's background refresh), so each worker starts in a fraction of the time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("apache_beam", "lightgbm", "sklearn")


def _loaded_after(statement: str) -> list[str]:
    probe = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    modules = set(json.loads(out.splitlines()[-1]))
    return [name for name in HEAVY if name in modules]


@pytest.mark.slow
def test_the_app_and_the_cli_import_no_heavy_library() -> None:
    # The app imports the reports and promotion routes, hence delivery counting and scoring.
    assert _loaded_after("import backbeat.api.app, backbeat.cli.main") == []


@pytest.mark.slow
def test_the_probe_sees_heavy_imports() -> None:
    """The check can fail: the code that trains or runs a pipeline does load them."""
    statement = "import backbeat.promotion.training, backbeat.measurement.delivery_pipeline"
    assert _loaded_after(statement) == list(HEAVY)

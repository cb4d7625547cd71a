"""Schemathesis over ``/openapi.json`` against the ASGI app: no 5xx and no answer outside
the document, as the admin and as an advertiser key (issue 9, proof).

Every check schemathesis has runs (``call_and_validate`` defaults to all of them, like
``-c all``), stateless on every operation and stateful over the links schemathesis infers
from ``Location`` headers. ``BACKBEAT_SCHEMATHESIS_EXAMPLES`` raises the example count for a
longer hunt (README, "Security and limits"); the default keeps this file well under 90 s on two cores.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config._checks import NegativeDataRejectionConfig

from backbeat.api.app import create_app
from factories import ADMIN
from support.app import make_settings

# Every check but positive_data_acceptance ("schema-valid data is accepted"): rules across
# fields or the book (end after start, a CPM floor from the slots, the targeting vocabulary,
# existing parents) cannot be said in JSON Schema, so such requests are rightly a 4xx.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]
EXAMPLES = int(os.environ.get("BACKBEAT_SCHEMATHESIS_EXAMPLES", "3"))
_state: dict[str, Any] = {}


def _app(tmp: Path) -> Any:
    database = f"sqlite:///{tmp / 'fuzz.db'}"
    settings_ = make_settings(
        database,
        tmp / "var",
        log_level="CRITICAL",
        rate_limit_per_key=0.0,  # schemathesis is one very busy caller
    )
    return create_app(settings_)


def _book(loaded: Any) -> None:
    """A small book (two advertisers, a slot) so generated ids sometimes hit real objects."""
    from starlette.testclient import TestClient

    with TestClient(_state["app"]) as client:
        ids = []
        for name in ("Fuzz A", "Fuzz B"):
            advertiser = client.post("/v1/advertisers", json={"name": name}, headers=ADMIN).json()
            ids.append(advertiser["id"])
        client.post(
            "/v1/slots",
            json={"name": "Fuzz slot", "surface": "podcast", "position": "pre_roll"},
            headers=ADMIN,
        )
        key = client.post(f"/v1/advertisers/{ids[0]}/keys", headers=ADMIN).json()["key"]
        _state["advertiser"] = {"Authorization": f"Bearer {key}"}


# Built at collection: schemathesis parametrizes from the loaded document (its fixture
# loader does not work with this pytest). The app's lifespan starts on the first call.
_TMP = Path(tempfile.mkdtemp(prefix="backbeat-fuzz-"))
atexit.register(shutil.rmtree, _TMP, True)
_state["app"] = _app(_TMP)
schema = schemathesis.openapi.from_asgi("/openapi.json", _state["app"])
# The coverage phase's boundary cases run on every operation whatever max_examples says; off
# by default to keep CI short, on with BACKBEAT_SCHEMATHESIS_EXAMPLES (a longer hunt).
schema.config.phases.coverage.enabled = "BACKBEAT_SCHEMATHESIS_EXAMPLES" in os.environ
# A body over the size limit is refused before it is parsed (413): a rejection like the others.
schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
    expected_statuses=[*schema.config.checks.negative_data_rejection.expected_statuses, "413"]
)


@pytest.fixture(scope="module", autouse=True)
def booked() -> None:
    if "advertiser" not in _state:
        _book(schema)


@pytest.fixture
def api_schema() -> Any:
    return schema


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_as_admin(case: Any) -> None:
    case.call_and_validate(headers=ADMIN, excluded_checks=EXCLUDED)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_as_an_advertiser_key(case: Any) -> None:
    case.call_and_validate(headers=_state["advertiser"], excluded_checks=EXCLUDED)


@pytest.mark.slow
def test_stateful_links_as_admin(api_schema: Any) -> None:
    machine = api_schema.as_state_machine()

    class Admin(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": ADMIN}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, excluded_checks=EXCLUDED, transport_kwargs=kwargs)

    Admin.TestCase.settings = settings(
        max_examples=EXAMPLES * 3,
        stateful_step_count=6,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    Admin.TestCase().runTest()


def test_the_problem_shape_is_in_the_document(api_schema: Any) -> None:
    document = api_schema.raw_schema
    assert "Problem" in document["components"]["schemas"]
    tracking = document["paths"]["/t/{event}"]["get"]
    assert {p["name"] for p in tracking["parameters"]} >= {"event", "sig", "l", "x"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/v1/") and path != "/v1/decisions":
                assert {"401", "403", "422", "429", "503"} <= set(operation["responses"]), (
                    method,
                    path,
                )
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert "application/problem+json" in response["content"], (path, status)

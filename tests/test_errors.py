"""The error tree is complete: every error has a status, title and reason, and maps to a problem."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import backbeat
from backbeat import errors
from backbeat.api import problems
from backbeat.api.problems import PROBLEM_TYPE_BASE, install_problem_handlers
from backbeat.errors import BackbeatError

REASON = re.compile(r"^[a-z]+(-[a-z]+)*$")
PACKAGE = Path(backbeat.__file__).parent


def _base_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def _import_error_modules() -> None:
    """Import every module defining an error class, found by reading the source.

    Reading rather than importing every module keeps optional extras (Airflow) and heavy
    ones (Beam) out of this test, while a new error anywhere in the package is still seen.
    """
    classes: dict[str, tuple[str, set[str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("backbeat", *path.relative_to(PACKAGE).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes[f"{module}:{node.name}"] = (node.name, _base_names(node))
    errors_found = {"BackbeatError"}
    while True:
        more = {name for name, bases in classes.values() if bases & errors_found} - errors_found
        if not more:
            break
        errors_found |= more
    for key, (name, _bases) in classes.items():
        if name in errors_found:
            importlib.import_module(key.split(":")[0].removesuffix(".__init__"))


def _subclasses(cls: type[BackbeatError]) -> list[type[BackbeatError]]:
    found: list[type[BackbeatError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


_import_error_modules()
ERRORS = [BackbeatError, *_subclasses(BackbeatError)]


def test_the_tree_is_found():
    assert len(ERRORS) >= 11


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_each_error_has_status_title_reason_and_exit_code(cls):
    assert isinstance(cls.status, int) and 400 <= cls.status <= 599
    assert isinstance(cls.title, str) and cls.title.strip()
    assert REASON.fullmatch(cls.reason), cls.reason
    assert isinstance(cls.exit_code, int) and cls.exit_code >= 1
    if cls is not BackbeatError:
        assert cls.status != 500, "a deliberate error names a more precise status than 500"
    error = cls("something went wrong", ticket=7)
    assert (str(error), error.detail, error.context) == (
        "something went wrong",
        "something went wrong",
        {"ticket": 7},
    )
    assert cls("x", reason="custom-reason").reason == "custom-reason"
    assert cls("y").reason == cls.reason  # overriding one instance leaves the class alone


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_each_error_narrows_its_parent_status_family(cls):
    expected_family = {
        errors.InvalidInput: 422,
        errors.Unauthenticated: 401,
        errors.NotFound: 404,
        errors.Conflict: 409,
        errors.PreconditionFailed: 412,
    }
    for base, status in expected_family.items():
        if issubclass(cls, base):
            assert cls.status == status
    if issubclass(cls, errors.PermissionDenied):
        assert cls.status in (403, 410)


def test_the_module_docstring_draws_every_error_defined_there():
    defined = [cls for cls in ERRORS if cls.__module__ == "backbeat.errors"]
    drawn = errors.__doc__ or ""
    for cls in defined:
        assert re.search(rf"\b{cls.__name__}\b", drawn), cls.__name__
        if cls is not BackbeatError:
            assert f"({cls.status})" in drawn or cls.status == cls.__mro__[1].status


def test_every_error_becomes_an_rfc9457_problem():
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/raise/{index}")
    def _raise(index: int) -> None:
        raise ERRORS[index](
            f"detail {index}", some_id=index, directory="/var/lib/backbeat/events", field="name"
        )

    with TestClient(app) as client:
        for index, cls in enumerate(ERRORS):
            response = client.get(f"/raise/{index}")
            assert response.status_code == cls.status, cls
            assert response.headers["content-type"] == "application/problem+json"
            body = response.json()
            assert body["type"] == PROBLEM_TYPE_BASE + cls.reason
            assert (body["title"], body["status"], body["reason"]) == (
                cls.title,
                cls.status,
                cls.reason,
            )
            assert (body["detail"], body["instance"]) == (f"detail {index}", f"/raise/{index}")
            # only allow-listed context reaches callers: no internals such as paths
            assert body["field"] == "name"
            assert "some_id" not in body and "directory" not in body
            assert "/var/lib" not in response.text


def test_unexpected_exceptions_are_a_500_without_internals(monkeypatch):
    logged = []
    # record instead of rendering: the console renderer's rich traceback takes seconds
    monkeypatch.setattr(problems.log, "exception", lambda event, **kw: logged.append((event, kw)))
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    def _boom() -> None:
        raise RuntimeError("secret connection string")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["reason"] == "internal-error"
    assert "secret" not in response.text
    assert logged == [("unhandled error", {"path": "/boom", "error_type": "RuntimeError"})]

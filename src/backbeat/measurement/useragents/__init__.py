"""OPAWG user-agent classification, with the pattern files shipped in ``data/`` (MIT)."""

from __future__ import annotations

from backbeat.measurement.useragents.classifier import (
    APP,
    BOT,
    BROWSER,
    LIBRARY,
    UNKNOWN,
    UserAgentClassifier,
    UserAgentInfo,
    classify,
    get_classifier,
)
from backbeat.measurement.useragents.patterns import compile_js, js_to_python, load_entries

__all__ = [
    "APP",
    "BOT",
    "BROWSER",
    "LIBRARY",
    "UNKNOWN",
    "UserAgentClassifier",
    "UserAgentInfo",
    "classify",
    "compile_js",
    "get_classifier",
    "js_to_python",
    "load_entries",
]

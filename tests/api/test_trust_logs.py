"""JSON logs keep an exception's type and frames and carry the request id (issue 9, item 3)."""

from __future__ import annotations

import json

import structlog

from backbeat.observability import REQUEST_ID, configure_logging


def test_json_logs_carry_the_exception_and_the_request_id(capsys):
    configure_logging("INFO", json=True)
    structlog.reset_defaults()  # cached loggers were built before this configuration
    configure_logging("INFO", json=True)
    token = REQUEST_ID.set("req-123")
    try:
        try:
            "x".encode("ascii").decode("utf-8").index("\uffff")
        except ValueError:
            structlog.get_logger("backbeat").exception("unhandled error", path="/vast")
    finally:
        REQUEST_ID.reset(token)
        configure_logging("WARNING", json=False)
    line = next(
        json.loads(text) for text in capsys.readouterr().err.splitlines() if "unhandled" in text
    )
    assert line["request_id"] == "req-123" and line["path"] == "/vast"
    assert "exc_info" not in line  # not just `"exc_info": true`
    (exception,) = line["exception"]
    assert exception["exc_type"] == "ValueError"
    assert exception["frames"] and exception["frames"][-1]["name"].startswith("test_")

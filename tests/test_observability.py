"""Structured logs: JSON lines with the request id, and no secret in any field."""

from __future__ import annotations

import io
import json
import logging

from app.observability import JsonFormatter
from app.security.redaction import RedactingFilter, register_secret


def _json_logger(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.observability.json")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_a_secret_in_an_exception_never_reaches_a_json_log_line() -> None:
    secret = "sk-live-observability-0123456789"
    register_secret(secret)
    stream = io.StringIO()
    logger = _json_logger(stream)
    try:
        raise RuntimeError(f"broker said no to {secret}")
    except RuntimeError:
        logger.exception("call failed with Authorization: Bearer %s", secret)

    line = stream.getvalue()
    assert secret not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert "***" in entry["message"]
    assert "RuntimeError" in entry["exc_info"]
    assert "***" in entry["exc_info"]

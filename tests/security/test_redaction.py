"""Log redaction: registered secrets and secret-shaped values never reach log output."""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
from collections.abc import Iterator

import pytest

from app.security.credentials import Credentials
from app.security.redaction import RedactingFilter, redact, register_secret

SECRET = "sk-live-6f1d2c9a8b7e4d3c"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.security.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_registered_secret_and_bearer_token_are_masked(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    register_secret(SECRET)
    logger.info("calling broker with key %s and %s", SECRET, "Authorization: Bearer abc.def.ghi")
    output = stream.getvalue()
    assert SECRET not in output
    assert "abc.def.ghi" not in output
    assert "Bearer ***" in output
    assert "with key ***" in output


def test_exception_text_is_masked(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    register_secret(SECRET)
    try:
        raise RuntimeError(f"broker said no to {SECRET} (refresh_token=rt-9999-abcdefgh)")
    except RuntimeError:
        logger.exception("refresh failed")
    output = stream.getvalue()
    assert "Traceback" in output
    assert "RuntimeError" in output
    assert SECRET not in output
    assert "rt-9999-abcdefgh" not in output
    assert "refresh_token=***" in output


def test_extra_fields_are_masked(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, _stream = captured
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    keep.addFilter(RedactingFilter())
    logger.addHandler(keep)
    try:
        logger.info("upstream", extra={"body": f'{{"access_token": "{SECRET}"}}', "n": 3})
    finally:
        logger.removeHandler(keep)
    assert records[0].body == '{"access_token": "***"}'  # type: ignore[attr-defined]
    assert records[0].n == 3  # type: ignore[attr-defined]


def test_credentials_values_are_registered_on_construction(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    value = "unusual-credential-value-31337"
    Credentials(api_secret=value)
    logger.warning("oops: %r", {"x": value})
    assert value not in stream.getvalue()


def test_broken_format_string_does_not_leak_its_arguments(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("two %s %s", "unregistered-argument-value")
    assert "unregistered-argument-value" not in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ('{"access_token": "at-123"}', "at-123"),
        ('{"refresh_token":"rt-\\"quoted\\"-x"}', "quoted"),
        ("{'client_secret': 'cs-abc'}", "cs-abc"),
        ('{"password": "hunter2"}', "hunter2"),
        ('{"apiKey": "ak-1"}', "ak-1"),
        ('{"api_key": "ak-2"}', "ak-2"),
        ('{"secret": "s-3"}', "s-3"),
        ("grant_type=refresh_token&refresh_token=rt-77&client_id=app", "rt-77"),
        ("password=pw-4 user=bob", "pw-4"),
        ("api_key=ak-5", "ak-5"),
        ("APCA-API-SECRET-KEY: 0123456789abcdefghij", "0123456789abcdefghij"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("authorization: bearer eyJhbGciOi.eyJzdWIi.c2ln", "eyJhbGciOi"),
    ],
)
def test_secret_shapes_are_masked(text: str, leak: str) -> None:
    redacted = redact(text)
    assert leak not in redacted
    assert "***" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "invalid token: expired",
        "order ord_123 filled 10 AAPL @ 187.20",
        '{"key_version": 2, "idempotency_key": "abc"}',
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_short_values_are_not_registered() -> None:
    register_secret("short")
    assert redact("a short word") == "a short word"


def test_json_round_trip_of_redacted_text_stays_json() -> None:
    body = json.dumps({"access_token": "x" * 40, "token_type": "bearer", "expires_in": 3600})
    assert json.loads(redact(body))["access_token"] == "***"


@pytest.mark.parametrize(
    "text",
    [
        "token" * 40_000,
        "token:" * 40_000,
        '"token":"' * 20_000,
        '"token": "' + "\\" * 50_000,
        "a-" * 100_000 + "=",
    ],
    ids=["keyword-run", "header-run", "open-quotes", "backslashes", "long-name"],
)
def test_pathological_input_is_handled_in_linear_time(text: str) -> None:
    # Not a timing assertion: a quadratic pattern takes minutes here and times the run out.
    assert len(redact(text)) > 0


def test_credentials_copy_but_never_pickle() -> None:
    credentials = Credentials({"api_key": "key-0123456789"}, api_secret="secret-0123456789")
    assert copy.deepcopy(credentials) is credentials
    assert dict(credentials) == {"api_key": "key-0123456789", "api_secret": "secret-0123456789"}
    with pytest.raises(TypeError):
        pickle.dumps(credentials)
    with pytest.raises(AttributeError):
        credentials._data = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        Credentials(api_key=123)  # type: ignore[arg-type]
    assert Credentials.from_json_bytes(credentials.to_json_bytes()) == credentials
    with pytest.raises(ValueError, match="not valid JSON") as info:
        Credentials.from_json_bytes(b'{"api_key": "key-0123456789"')
    assert "key-0123456789" not in str(info.value)

"""Masking secrets in log output.

Two layers: every decrypted credential value is registered here (``Credentials`` does it on
construction) and masked wherever it appears verbatim; and well-known secret shapes are
masked even when never registered: ``Bearer``/``Basic`` authorization values and the values
of secret-looking fields (``access_token``, ``refresh_token``, ``client_secret``,
``password``, ``api_key``/``apiKey``, ``secret``, ``APCA-API-SECRET-KEY``...) in JSON,
Python-repr, ``key=value`` and header forms.

``RedactingFilter`` applies both to every record a handler emits: the formatted message,
string ``extra`` fields, the exception text and the stack text. It is defence in depth,
not a licence to log secrets: code must still never log a credential on purpose.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections import OrderedDict
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 8
MAX_SECRETS = 4096

# Re-entrant: compiling the pattern can trigger garbage collection, whose finalizers may log,
# and logging redacts, which takes this lock again in the same thread.
_lock = threading.RLock()
_secrets: OrderedDict[str, None] = OrderedDict()
_secrets_pattern: re.Pattern[str] | None = None

# A field name that holds a secret: contains token, secret, password/passwd or api key.
# Field names are matched as plain words and tested against this in the replacement, so
# that no pattern below can backtrack quadratically on long input.
_SECRET_KEY = re.compile(r"token|secret|passw(?:or)?d|api[_-]?key|authorization", re.IGNORECASE)
_NAME = r"[A-Za-z0-9_-]{1,80}"

_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
# "key": "value" and 'key': 'value' (JSON, Python reprs), also with '='.
_QUOTED_FIELD = re.compile(
    rf"""(?P<q>["'])(?P<key>{_NAME})(?P=q)(?P<sep>\s*[:=]\s*)"""
    rf"""(?P<vq>["'])(?P<val>(?:\\.|(?!(?P=vq))[^\\])*)(?P=vq)"""
)
# key=value (query strings, form bodies, logfmt).
_ASSIGNED_FIELD = re.compile(
    rf"""(?<![A-Za-z0-9_-])(?P<key>{_NAME})(?P<sep>=)(?P<val>[^\s&,;"'}}\]]+)"""
)
# key: value (headers). Only token-looking values of 8+ characters, so that prose such as
# "invalid token: expired" stays readable.
_HEADER_FIELD = re.compile(
    rf"""(?<![A-Za-z0-9_"'-])(?P<key>{_NAME})(?P<sep>:[ \t]*)(?P<val>[A-Za-z0-9\-._~+/=]{{8,}})"""
)


def register_secret(value: str) -> None:
    """Mask ``value`` wherever it appears in later log output.

    Values shorter than 8 characters are ignored (they would mask ordinary words). The set
    is bounded (least recently registered values drop out first), so a long-running process
    does not grow without limit; re-registering a value keeps it fresh.
    """
    global _secrets_pattern
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH or value == MASK:
        return
    with _lock:
        if value in _secrets:
            _secrets.move_to_end(value)
            return
        _secrets[value] = None
        while len(_secrets) > MAX_SECRETS:
            _secrets.popitem(last=False)
        _secrets_pattern = None


def _registered_pattern() -> re.Pattern[str] | None:
    global _secrets_pattern
    with _lock:
        if _secrets_pattern is None and _secrets:
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(_secrets, key=len, reverse=True)
            _secrets_pattern = re.compile("|".join(re.escape(s) for s in ordered))
        return _secrets_pattern


def _mask_quoted(match: re.Match[str]) -> str:
    if not _SECRET_KEY.search(match["key"]):
        return match[0]
    q, vq = match["q"], match["vq"]
    return f"{q}{match['key']}{q}{match['sep']}{vq}{MASK}{vq}"


def _mask_unquoted(match: re.Match[str]) -> str:
    if not _SECRET_KEY.search(match["key"]):
        return match[0]
    return f"{match['key']}{match['sep']}{MASK}"


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and secret-shaped values replaced by ``***``."""
    if not text:
        return text
    pattern = _registered_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
    text = _QUOTED_FIELD.sub(_mask_quoted, text)
    text = _ASSIGNED_FIELD.sub(_mask_unquoted, text)
    return _HEADER_FIELD.sub(_mask_unquoted, text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v, depth + 1) for v in value)
    return value


_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no handler sees secrets.

    The message is formatted once (``msg % args``), redacted and stored back with empty
    ``args``; ``exc_text`` is filled from ``exc_info`` and redacted; string ``extra`` fields
    (and strings inside dict/list extras) are redacted. A message whose formatting fails is
    replaced by a note rather than emitted raw. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: do not emit its raw arguments
            message = f"{record.msg!s} (log arguments withheld: formatting failed)"
        record.msg = redact(message)
        record.args = ()
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                record.__dict__[key] = _redact_value(value)
        return True

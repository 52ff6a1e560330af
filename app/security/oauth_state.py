"""The pieces of OAuth ``state`` handling that are pure security logic.

* ``state`` and the browser nonce are stored as SHA-256 hashes (they are 256-bit random
  values, so a plain hash is enough: nothing to brute-force) and compared in constant time.
* The browser nonce travels in an HttpOnly, SameSite=Lax cookie scoped to the broker's
  callback path: the callback accepts a state only from the browser that started the flow
  (RFC 9700 §2.1: CSRF tokens "securely bound to the user agent").
* ``return_to`` (where the browser lands afterwards) must be on the configured allow-list,
  so the callback can never be used as an open redirector (RFC 9700 §4.11).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MAX_RETURN_TO = 2000
COOKIE_PREFIX = "bg_oauth_"
_FORBIDDEN_IN_PATH = ("%2e", "%2f", "%5c")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def matches(value: str | None, expected_digest: str) -> bool:
    """Constant-time: does ``value`` hash to ``expected_digest``? False for None."""
    if not value:
        return False
    return hmac.compare_digest(digest(value), expected_digest)


def new_browser_nonce() -> str:
    return secrets.token_urlsafe(32)


def cookie_name(slug: str) -> str:
    """One cookie per broker: a second flow for the same broker in the same browser
    replaces the first one's nonce (the first callback then fails with ``state_mismatch``)."""
    return f"{COOKIE_PREFIX}{slug}"


class InvalidReturnTo(ValueError):
    pass


def check_return_to(value: str, allowlist: Sequence[str]) -> str:
    """``value`` if it is an absolute http(s) URL under an allow-list entry, else raise.

    An entry matches on scheme, host and port exactly, and on path prefix at a segment
    boundary (``https://app.example/settings`` allows ``/settings`` and ``/settings/x``,
    not ``/settings-evil``). Refused outright: user info (``https://app@evil``), backslashes
    and control characters (browsers read ``/\\evil.com`` as ``//evil.com``), dot segments and
    encoded dots or slashes (which a browser would resolve out of the allowed prefix).
    """
    if not value or len(value) > MAX_RETURN_TO or not value.isprintable() or " " in value:
        raise InvalidReturnTo("return_to is empty, too long or has control characters")
    if "\\" in value:
        raise InvalidReturnTo("return_to must not contain backslashes")
    target = _parse(value)
    if target is None:
        raise InvalidReturnTo("return_to must be an absolute http(s) URL without user info")
    scheme, host, port, path = target
    segments = path.split("/")
    if any(s in (".", "..") for s in segments) or any(
        f in path.lower() for f in _FORBIDDEN_IN_PATH
    ):
        raise InvalidReturnTo("return_to must not contain dot segments or encoded separators")
    for entry in allowlist:
        allowed = _parse(entry)
        if allowed is None:
            continue
        a_scheme, a_host, a_port, a_path = allowed
        if (scheme, host, port) != (a_scheme, a_host, a_port):
            continue
        prefix = a_path.rstrip("/")
        if path == prefix or path.startswith(prefix + "/") or (not prefix and not path):
            return value
    raise InvalidReturnTo("return_to is not on this deployment's allow-list")


def _parse(url: str) -> tuple[str, str, int, str] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port or default, parts.path


RESULT_PARAMS = frozenset({"connection_id", "error"})


def landing_url(return_to: str, **result: str) -> str:
    """``return_to`` with the flow's result (``connection_id`` or ``error``) in its query.

    Result parameters already in ``return_to`` are dropped, so the frontend never sees a
    stale ``error`` next to a fresh ``connection_id``; its other parameters are kept.
    """
    parts = urlsplit(return_to)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in RESULT_PARAMS
    ]
    query.extend(result.items())
    return urlunsplit(parts._replace(query=urlencode(query)))

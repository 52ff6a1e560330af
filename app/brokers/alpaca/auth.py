"""Alpaca API-key authentication: two headers on every request, the same pair on the stream.

https://docs.alpaca.markets/docs/authentication: ``APCA-API-KEY-ID`` and
``APCA-API-SECRET-KEY``. OAuth2 (``Authorization: Bearer``) is not implemented yet.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.brokers import errors
from app.brokers.http import credential_key
from app.security.credentials import Credentials, is_single_line, require_fields

KEY_ID = "api_key_id"
SECRET_KEY = "api_secret_key"  # noqa: S105 - a field name, not a secret
CREDENTIAL_FIELDS = frozenset({KEY_ID, SECRET_KEY})


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The credential mapping a connection stores; ValueError naming the problem (not values)."""
    require_fields(values, CREDENTIAL_FIELDS)
    for name in sorted(CREDENTIAL_FIELDS):
        value = values[name]
        if not is_single_line(value, 256):
            raise ValueError(f"{name} is not a valid Alpaca key")
    return Credentials({name: values[name] for name in sorted(CREDENTIAL_FIELDS)})


def headers(credentials: Credentials | None) -> dict[str, str]:
    if credentials is None or not CREDENTIAL_FIELDS <= set(credentials):
        raise errors.AuthenticationFailed("no Alpaca API key for this connection", broker="alpaca")
    return {
        "APCA-API-KEY-ID": credentials[KEY_ID],
        "APCA-API-SECRET-KEY": credentials[SECRET_KEY],
    }


def auth_message(credentials: Credentials) -> dict[str, str]:
    """The stream's auth message (https://docs.alpaca.markets/docs/websocket-streaming)."""
    return {"action": "auth", "key": credentials[KEY_ID], "secret": credentials[SECRET_KEY]}


def bucket_key(credentials: Credentials) -> str:
    """Alpaca limits per API key: the bucket is keyed by a hash of the key id."""
    return credential_key("alpaca", credentials[KEY_ID])

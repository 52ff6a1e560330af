"""Coinbase CDP API keys: a key name and a private key; every request carries a fresh JWT.

https://docs.cdp.coinbase.com/coinbase-app/authentication-authorization/api-key-authentication
and the official SDK (coinbase/coinbase-advanced-py ``coinbase/jwt_generator.py``): for each
REST request a JWT is signed with the key's private key,

* header ``{"alg": "ES256" | "EdDSA", "kid": <key name>, "nonce": <random hex>}``,
* claims ``{"iss": "cdp", "sub": <key name>, "nbf": now, "exp": now + 120,
  "uri": "<METHOD> <host><path>"}`` (the path without its query string),

and sent as ``Authorization: Bearer <jwt>``. A WebSocket subscribe message carries a JWT with
the same claims but no ``uri``. ECDSA keys are P-256 PEM (``-----BEGIN EC PRIVATE KEY-----``,
what the CDP portal calls "ECDSA"); Ed25519 keys are the base64 of 64 bytes (seed and public
key), the portal's newer default. Both are accepted, as the SDK does.

The private key never leaves this module in any form but a signature: it is parsed once per
adapter, kept as a key object (whose repr shows no key material), and is never logged. A
credential that does not parse is refused before anything is sent to Coinbase, with a message
that names the field and never the value.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from app.brokers import errors
from app.brokers.coinbase.mapping import SLUG
from app.brokers.http import credential_key
from app.security.credentials import Credentials, is_single_line, require_fields

KEY_NAME = "api_key_name"
PRIVATE_KEY = "private_key"
CREDENTIAL_FIELDS = frozenset({KEY_NAME, PRIVATE_KEY})
JWT_LIFETIME = 120  # seconds; jwt_generator.build_jwt: "exp": now + 120
ISSUER = "cdp"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")


def _normalized_pem(value: str) -> str:
    """A PEM pasted from the key's JSON file often keeps its ``\\n`` escapes; undo them."""
    text = value.strip()
    if "\\n" in text and "\n" not in text:
        text = text.replace("\\n", "\n")
    return text + "\n" if text.startswith("-----BEGIN") else text


def load_private_key(value: str) -> PrivateKey:
    """Parse a CDP private key; ValueError (naming no key material) when it is not one.

    PEM: an EC key on P-256 (ES256 needs that curve) or an Ed25519 key. Otherwise base64 of
    32 or 64 bytes: an Ed25519 seed (the first 32 bytes), as jwt_generator._load_private_key.
    """
    text = _normalized_pem(value)
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError, binascii.Error):
            raise ValueError("private_key is not a readable PEM private key") from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise ValueError("private_key must be an EC key on the P-256 curve (ES256)")
            return key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        raise ValueError("private_key must be an ECDSA (P-256) or Ed25519 key")
    if not text or not _BASE64.match(text):
        raise ValueError("private_key is neither a PEM key nor base64")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("private_key is neither a PEM key nor base64") from None
    if len(raw) not in (32, 64):
        raise ValueError("an Ed25519 private_key must decode to 32 or 64 bytes")
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])


def algorithm_of(key: PrivateKey) -> str:
    return "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The credential a connection stores: the key name and the (normalized) private key.

    ValueError names the problem, never a value: a missing or unknown field, a key name that
    is not one line of printable text, a private key that does not parse.
    """
    require_fields(values, CREDENTIAL_FIELDS)
    name = values[KEY_NAME]
    if not is_single_line(name, 512):
        raise ValueError("api_key_name is not a valid Coinbase API key name")
    private = values[PRIVATE_KEY]
    if not isinstance(private, str) or len(private) > 8192:
        raise ValueError("private_key is not a valid Coinbase private key")
    load_private_key(private)  # raises ValueError naming the field
    return Credentials({KEY_NAME: name, PRIVATE_KEY: _normalized_pem(private)})


def require(credentials: Credentials | None) -> Credentials:
    if credentials is None or not CREDENTIAL_FIELDS <= set(credentials):
        raise errors.AuthenticationFailed("no Coinbase API key for this connection", broker=SLUG)
    return credentials


def bucket_key(credentials: Credentials) -> str:
    """Coinbase limits private endpoints per user; the key name stands for the user."""
    return credential_key(SLUG, credentials[KEY_NAME])


def jwt_host(base_url: str) -> str:
    """The host part of the ``uri`` claim: ``api.coinbase.com`` (with a port if one is set)."""
    return urlsplit(base_url).netloc


class Signer:
    """Mints the per-request JWTs of one credential.

    Raises AuthenticationFailed when the stored private key no longer parses (a credential
    that passed ``check_credentials`` always does).
    """

    def __init__(self, credentials: Credentials, clock: Callable[[], float] = time.time) -> None:
        self._name = credentials[KEY_NAME]
        try:
            self._key = load_private_key(credentials[PRIVATE_KEY])
        except ValueError:
            raise errors.AuthenticationFailed(
                "the stored Coinbase private key is not readable", broker=SLUG
            ) from None
        self._algorithm = algorithm_of(self._key)
        self._clock = clock

    def __repr__(self) -> str:
        return f"Signer(algorithm={self._algorithm!r})"

    @property
    def key_name(self) -> str:
        return self._name

    def _token(self, uri: str | None) -> str:
        now = int(self._clock())
        claims: dict[str, object] = {
            "sub": self._name,
            "iss": ISSUER,
            "nbf": now,
            "exp": now + JWT_LIFETIME,
        }
        if uri is not None:
            claims["uri"] = uri
        return jwt.encode(
            claims,
            self._key,
            algorithm=self._algorithm,
            headers={"kid": self._name, "nonce": secrets.token_hex()},
        )

    def rest_jwt(self, method: str, host: str, path: str) -> str:
        """The JWT of one REST request: ``uri`` is ``"<METHOD> <host><path>"``."""
        return self._token(f"{method.upper()} {host}{path}")

    def ws_jwt(self) -> str:
        """The JWT of one WebSocket subscribe message (no ``uri`` claim)."""
        return self._token(None)

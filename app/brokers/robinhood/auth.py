"""Robinhood Crypto Trading API authentication: an API key and an Ed25519 signature per request.

https://docs.robinhood.com/crypto/trading/#section/Authentication: every request carries
``x-api-key``, ``x-timestamp`` (unix seconds, valid for 30 seconds) and ``x-signature``, the
base64 Ed25519 signature of ``f"{api_key}{timestamp}{path}{method}{body}"``. ``path`` is
the request target as sent, query string included (the docs' sample client signs
``/api/v1/crypto/trading/holdings/?asset_code=BTC``); ``body`` is the exact JSON text sent,
and empty for requests without one. The docs publish one worked example (key pair, request
and signature); ``tests/brokers/robinhood/test_auth.py`` reproduces it byte for byte.

The private key is what the user generated for the credential: the base64 of the 32-byte
Ed25519 seed (the docs' Python snippet) or of the 64-byte seed-and-public-key secret key
(the docs' Node.js snippet, tweetnacl). Either is accepted; the seed is what signs.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.brokers import errors
from app.brokers.http import credential_key
from app.security.credentials import Credentials, is_single_line, require_fields

SLUG = "robinhood"
API_KEY = "api_key"
PRIVATE_KEY = "private_key"
CREDENTIAL_FIELDS = frozenset({API_KEY, PRIVATE_KEY})
SIGNATURE_TTL_SECONDS = 30  # "timestamps are only valid for 30 seconds after they're generated"


def _seed(private_key_b64: str) -> bytes:
    """The 32-byte seed from either documented key format; ValueError (no key material)."""
    try:
        raw = base64.b64decode(private_key_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("private_key is not base64") from None
    if len(raw) == 32:
        return raw
    if len(raw) == 64:
        seed, public = raw[:32], raw[32:]
        derived = (
            Ed25519PrivateKey.from_private_bytes(seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        if derived != public:
            raise ValueError("private_key's public half does not match its seed")
        return seed
    raise ValueError("private_key must be a base64 Ed25519 key (32 or 64 bytes)")


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The credential mapping a connection stores; ValueError naming the problem (not values)."""
    require_fields(values, CREDENTIAL_FIELDS)
    api_key = values[API_KEY]
    if not is_single_line(api_key, 256):
        raise ValueError("api_key is not a valid Robinhood API key")
    _seed(values[PRIVATE_KEY].strip())
    return Credentials({API_KEY: api_key, PRIVATE_KEY: values[PRIVATE_KEY].strip()})


def signing_key(credentials: Credentials) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_seed(credentials[PRIVATE_KEY]))


def message(api_key: str, timestamp: int, path: str, method: str, body: str) -> bytes:
    """The signed message, exactly as the docs define it (no separators)."""
    return f"{api_key}{timestamp}{path}{method.upper()}{body}".encode()


def signature(key: Ed25519PrivateKey, msg: bytes) -> str:
    return base64.b64encode(key.sign(msg)).decode("ascii")


class RequestSigner:
    """``app.brokers.http.Signer`` for one credential: signs each request as it is sent.

    ``clock`` (unix seconds) is injectable so tests can reproduce the docs' example.
    """

    def __init__(self, credentials: Credentials, clock: Callable[[], float] = time.time) -> None:
        self._api_key = credentials[API_KEY]
        self._key = signing_key(credentials)
        self._clock = clock

    def __repr__(self) -> str:
        return "RequestSigner(robinhood)"

    def headers(self, method: str, target: str, body: str) -> dict[str, str]:
        timestamp = int(self._clock())
        return {
            "x-api-key": self._api_key,
            "x-timestamp": str(timestamp),
            "x-signature": signature(
                self._key, message(self._api_key, timestamp, target, method, body)
            ),
        }

    def __call__(self, request: httpx.Request) -> Mapping[str, str]:
        target = request.url.raw_path.decode("ascii")
        return self.headers(request.method, target, request.content.decode("utf-8"))


def signer(credentials: Credentials | None) -> RequestSigner:
    if credentials is None or not CREDENTIAL_FIELDS <= set(credentials):
        raise errors.AuthenticationFailed("no Robinhood API key for this connection", broker=SLUG)
    try:
        return RequestSigner(credentials)
    except ValueError as exc:
        raise errors.AuthenticationFailed(str(exc), broker=SLUG) from None


def bucket_key(credentials: Credentials) -> str:
    """Robinhood limits per user account; the API key stands for it."""
    return credential_key(SLUG, credentials[API_KEY])

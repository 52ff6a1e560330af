"""Plaid authentication: the deployment's client id and secret, the user's access token, and
the verification of Plaid's signed webhooks.

* Every request is a ``POST`` with a JSON body that carries ``client_id`` and ``secret``
  (https://plaid.com/docs/api/#api-access; the ``PLAID-CLIENT-ID``/``PLAID-SECRET`` headers
  are the documented alternative, not used here) and, for an Item, its ``access_token``.
* A Link's ``public_token`` is exchanged once for the Item's ``access_token``, which does not
  expire; it is the connection's credential (with the ``item_id``, which webhooks name) and
  is stored only through the vault, as a Tier C ``no_order_write`` token.
* Webhooks carry a JWT in the ``Plaid-Verification`` header, signed ES256 with a key whose
  ``kid`` is in the JWT header; the public key (a JWK) comes from
  ``/webhook_verification_key/get``. The JWT's ``iat`` must be at most 5 minutes old and its
  ``request_body_sha256`` the SHA-256 (hex) of the exact body
  (https://plaid.com/docs/api/webhooks/webhook-verification/).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import jwt

from app.brokers import errors
from app.brokers.http import HttpPool, credential_key
from app.brokers.plaid.mapping import SLUG
from app.config import Settings
from app.security.credentials import Credentials
from app.security.redaction import register_secret

ACCESS_TOKEN = "access_token"  # noqa: S105 - a field name, not a secret
ITEM_ID = "item_id"
CREDENTIAL_FIELDS = frozenset({ACCESS_TOKEN, ITEM_ID})
API_VERSION = "2020-09-14"  # the ``Plaid-Version`` the OpenAPI file describes
WEBHOOK_ALGORITHM = "ES256"
# A fetched verification key is trusted this long before it is asked for again (a key can
# be expired by Plaid; a cached copy would not know).
KEY_TTL = 3600.0
MAX_KEYS = 100


def configured(settings: Settings) -> bool:
    return settings.plaid_client_id is not None and settings.plaid_secret is not None


def client_body(settings: Settings) -> dict[str, str]:
    """``client_id`` and ``secret`` for a request body; AuthenticationFailed when unset."""
    if settings.plaid_client_id is None or settings.plaid_secret is None:
        raise errors.AuthenticationFailed("Plaid is not configured on this deployment", broker=SLUG)
    secret = settings.plaid_secret.get_secret_value()
    register_secret(secret)
    return {"client_id": settings.plaid_client_id.get_secret_value(), "secret": secret}


def client_key(settings: Settings) -> str:
    """The pacing key of calls made with the client credentials alone (link, exchange)."""
    client_id = settings.plaid_client_id.get_secret_value() if settings.plaid_client_id else ""
    return credential_key(SLUG, "client", client_id)


def credentials_from_exchange(access_token: str, item_id: str) -> Credentials:
    """The connection's credential; ValueError naming the field (never the value)."""
    for name, value in ((ACCESS_TOKEN, access_token), (ITEM_ID, item_id)):
        if not value or len(value) > 512 or not value.isprintable() or value.strip() != value:
            raise ValueError(f"Plaid sent an unusable {name}")
    return Credentials({ACCESS_TOKEN: access_token, ITEM_ID: item_id})


def require(credentials: Credentials | None) -> Credentials:
    if credentials is None or not CREDENTIAL_FIELDS <= set(credentials):
        raise errors.AuthenticationFailed("no Plaid access token for this connection", broker=SLUG)
    return credentials


def item_key(credentials: Credentials) -> str:
    """Plaid limits per Item: the bucket is keyed by a hash of the access token."""
    return credential_key(SLUG, credentials[ACCESS_TOKEN])


# --- webhooks ----------------------------------------------------------------------------


class WebhookRejected(Exception):
    """The webhook is not provably from Plaid; ``reason`` is safe to log (no token, no key)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def webhook_key_id(token: str | None) -> str:
    """The ``kid`` of a ``Plaid-Verification`` JWT whose header says ES256 (else refused)."""
    if not token:
        raise WebhookRejected("no Plaid-Verification header")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise WebhookRejected("the Plaid-Verification header is not a JWT") from None
    if header.get("alg") != WEBHOOK_ALGORITHM:
        raise WebhookRejected("the webhook JWT is not signed ES256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 200:
        raise WebhookRejected("the webhook JWT names no key")
    return kid


def verify_webhook(
    token: str, body: bytes, key: Mapping[str, Any], *, now: float, max_age: float
) -> None:
    """Raise ``WebhookRejected`` unless ``token`` is Plaid's signature of ``body``.

    Checks, in Plaid's order: the key is not expired, the signature verifies with the key
    (ES256 only), ``iat`` is within ``max_age`` seconds (and not in the future), and
    ``request_body_sha256`` equals the body's SHA-256 (constant-time comparison).
    """
    if key.get("expired_at") is not None:
        raise WebhookRejected("the webhook was signed with an expired key")
    try:
        public = jwt.PyJWK(dict(key), algorithm=WEBHOOK_ALGORITHM)
        claims = jwt.decode(
            token,
            key=public.key,
            algorithms=[WEBHOOK_ALGORITHM],
            options={"require": ["iat"], "verify_aud": False, "verify_iss": False},
            leeway=60,
        )
    except jwt.PyJWTError as exc:
        raise WebhookRejected(
            f"the webhook signature does not verify ({type(exc).__name__})"
        ) from None
    issued = claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        raise WebhookRejected("the webhook JWT has no usable iat")
    if issued < now - max_age:
        raise WebhookRejected("the webhook JWT is too old")
    claimed = claims.get("request_body_sha256")
    if not isinstance(claimed, str):
        raise WebhookRejected("the webhook JWT has no request_body_sha256")
    if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), claimed):
        raise WebhookRejected("the webhook body does not match its signature")


FetchKey = Callable[[str], Awaitable[dict[str, Any]]]


class WebhookKeys:
    """Verification keys by ``kid``, fetched on first use and kept ``KEY_TTL`` seconds.

    One fetch per kid at a time; a fetch that fails raises (the webhook is answered with an
    error so Plaid retries it later), nothing is cached.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._keys: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    async def get(self, kid: str, fetch: FetchKey) -> dict[str, Any]:
        found = self._keys.get(kid)
        if found is not None and found[0] > self._clock():
            return found[1]
        async with self._lock:
            found = self._keys.get(kid)
            if found is not None and found[0] > self._clock():
                return found[1]
            key = await fetch(kid)
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
            self._keys[kid] = (self._clock() + KEY_TTL, key)
            return key


_KEYS: weakref.WeakKeyDictionary[HttpPool, WebhookKeys] = weakref.WeakKeyDictionary()


def keys_for(pool: HttpPool) -> WebhookKeys:
    """The key cache of one app (its broker HTTP pool)."""
    found = _KEYS.get(pool)
    if found is None:
        found = _KEYS[pool] = WebhookKeys()
    return found

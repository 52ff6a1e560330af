"""tastytrade OAuth2: a refresh token exchanged for 15-minute access tokens.

https://developer.tastytrade.com/docs/authentication/oauth2 : every request carries
``Authorization: Bearer <access token>``; access tokens live 15 minutes and are minted with
``POST /oauth/token`` (JSON ``{"grant_type": "refresh_token", "refresh_token",
"client_secret"}``, ``client_id`` optional) on the API host itself. A user creates an OAuth
client and a personal grant on my.tastytrade.com and gets a refresh token that does not
expire; that refresh token and the client secret are the connection's credential (the legacy
``POST /sessions`` username/password login was decommissioned and is not used).

Every request, the token exchange included, must send a ``User-Agent`` of the form
``product/version`` or it is refused with a 401 (same page, "Every request needs a
User-Agent").

Access tokens are kept in memory only, per credential, shared by every adapter built on the
same ``HttpPool`` (adapters are built per request, and a token exchange per request would
double the traffic). Each instance mints its own tokens: a refresh token is not rotated by
the exchange, so instances never invalidate each other's tokens.

Why this is not on the generic token lifecycle (``app.services.token_lifecycle``): that
machinery refreshes grants made with the *deployment's* OAuth client (``OAuthSpec``,
client id and secret from the settings) and stores every new access token through the
vault, single-flight across instances, because a refresh may rotate the refresh token.
Here the OAuth client is the *user's* own (its secret is part of the credential), the
refresh token never rotates and never expires, and an access token is 15 minutes of
nothing worth persisting: moving it to the lifecycle would add a database write and a
cross-instance lock every 15 minutes per connection to protect against a race that cannot
happen. The token answer itself is parsed by the shared ``parse_token_response``.

The browser flow is not offered: tastytrade documents no authorization-code page for
third-party apps (third-party clients point at ``https://my.tastytrade.com/auth.html`` with
scopes ``read``/``trade``; unconfirmed, as is PKCE support).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping

from app.brokers import errors
from app.brokers.http import HttpPool, credential_key
from app.brokers.tastytrade.mapping import SLUG
from app.security.credentials import Credentials, is_single_line, require_fields
from app.security.redaction import register_secret

CLIENT_SECRET = "client_secret"  # noqa: S105 - a field name, not a secret
REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a field name, not a secret
CREDENTIAL_FIELDS = frozenset({CLIENT_SECRET, REFRESH_TOKEN})
USER_AGENT = "brokerage-gateway/0.1"


# The token endpoint, on the API base URL (production ``https://api.tastyworks.com``, sandbox
# ``https://api.cert.tastyworks.com``; a grant of one does not work on the other).
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
# Access token lifetime when an answer omits ``expires_in`` (the docs: 15 minutes).
ACCESS_TOKEN_SECONDS = 900

# Refresh this long before the broker's expiry (clock skew, request time).
EXPIRY_MARGIN = 60.0


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The credential a connection stores; ValueError naming the problem (never a value)."""
    require_fields(values, CREDENTIAL_FIELDS)
    for name in sorted(CREDENTIAL_FIELDS):
        value = values[name]
        if not is_single_line(value, 4096):
            raise ValueError(f"{name} is not a valid tastytrade {name.replace('_', ' ')}")
    return Credentials({name: values[name] for name in sorted(CREDENTIAL_FIELDS)})


def require(credentials: Credentials | None) -> Credentials:
    if credentials is None or not CREDENTIAL_FIELDS <= set(credentials):
        raise errors.AuthenticationFailed(
            "no tastytrade credential for this connection", broker=SLUG
        )
    return credentials


def token_request(credentials: Credentials) -> dict[str, str]:
    """The ``POST /oauth/token`` JSON body (tastyware/tastytrade ``Session.refresh``)."""
    return {
        "grant_type": "refresh_token",
        "refresh_token": credentials[REFRESH_TOKEN],
        "client_secret": credentials[CLIENT_SECRET],
    }


def credential_id(credentials: Credentials) -> str:
    """A stable key for one credential that does not contain it (buckets, token cache)."""
    return credential_key(SLUG, credentials[CLIENT_SECRET], credentials[REFRESH_TOKEN])


Fetch = Callable[[], Awaitable[tuple[str, float]]]


class AccessTokenSource:
    """One credential's current access token, refreshed single-flight before it expires.

    ``token(fetch)`` answers the cached token while it has more than ``EXPIRY_MARGIN`` left,
    else calls ``fetch`` (one caller at a time; the others wait and reuse its result).
    ``fetch`` returns ``(access_token, expires_in_seconds)`` or raises: AuthenticationFailed
    when the refresh token or client secret is refused, Transient when the exchange could
    not be made. ``invalidate(token)`` drops a token the API refused (401) so the next call
    mints a new one; a token minted meanwhile by another caller is kept.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AccessTokenSource(valid={self._valid()})"

    def _valid(self) -> bool:
        return self._token is not None and self._clock() < self._expires - EXPIRY_MARGIN

    async def token(self, fetch: Fetch) -> str:
        if self._valid():
            assert self._token is not None
            return self._token
        async with self._lock:
            if self._valid():
                assert self._token is not None
                return self._token
            token, expires_in = await fetch()
            register_secret(token)
            self._token = token
            self._expires = self._clock() + expires_in
            return token

    def invalidate(self, token: str) -> None:
        if self._token == token:
            self._token = None
            self._expires = 0.0


# Token sources per pool (so their lifetime is the pool's) and per credential.
_SOURCES: weakref.WeakKeyDictionary[HttpPool, dict[str, AccessTokenSource]] = (
    weakref.WeakKeyDictionary()
)
MAX_SOURCES = 10_000


def source_for(pool: HttpPool, credentials: Credentials) -> AccessTokenSource:
    sources = _SOURCES.setdefault(pool, {})
    key = credential_id(credentials)
    found = sources.get(key)
    if found is None:
        if len(sources) >= MAX_SOURCES:
            sources.clear()  # bounded; a dropped source only costs one token exchange
        found = sources[key] = AccessTokenSource()
    return found


def bearer(token: str) -> str:
    """The ``Authorization`` header value, also the streamer's ``auth-token``
    (tastyware/tastytrade ``AlertStreamer._subscribe``: ``"Bearer <token>"``)."""
    return f"Bearer {token}"

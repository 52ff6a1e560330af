"""Schwab OAuth2: the provider's facts as data, and the two token-endpoint calls.

Facts (https://developer.schwab.com/products/trader-api--individual/details/documentation/Retail%20Trader%20API%20Production,
"Authenticate with OAuth"; confirmed against alexgolec/schwab-py ``schwab/auth.py`` and
QuantConnect/Lean.Brokerages.CharlesSchwab ``CharlesSchwabTokenRefreshHandler.cs``):

* Authorization code grant. The browser goes to ``/v1/oauth/authorize?response_type=code
  &client_id=<app key>&redirect_uri=<registered callback>[&state=...]``; Schwab redirects
  back with ``?code=...&session=...`` (and the ``state`` it was given).
* ``POST /v1/oauth/token``: HTTP Basic client authentication (``client_secret_basic``:
  ``base64(app_key:app_secret)``), form body ``grant_type=authorization_code&code=...
  &redirect_uri=...`` or ``grant_type=refresh_token&refresh_token=...``. The answer is
  ``{"expires_in": 1800, "token_type": "Bearer", "scope": "api", "refresh_token": "...",
  "access_token": "...", "id_token": "..."}``.
* The access token lives 30 minutes; the refresh token 7 days from the authorization, a
  hard limit: after it the user must authorize again (schwab-py ``docs/auth.rst``).
* No PKCE is documented and no client (schwab-py, Schwabdev, Lean) sends a
  ``code_challenge``; no ``scope`` parameter is sent.
* A dead refresh token is refused with ``{"error": "invalid_client", "error_description":
  "refresh token invalid"}`` (schwab-py ``docs/auth.rst``, "invalid_client") or with
  ``{"error": "unsupported_token_type", "error_description": "400 Bad Request: ...
  refresh_token_authentication_error ..."}`` (tylerebowers/Schwabdev issue #40); RFC 6749's
  ``invalid_grant`` is accepted too. All three raise ``InvalidGrant``: never retried, the
  user re-authorizes. ``invalid_client`` about anything else (``"Unauthorized"``) means our
  app key/secret are wrong: ``ClientRejected``, an operator problem.

The browser flow (state, callback) and the refresh scheduler live outside this module; they
need only ``SCHWAB_OAUTH``, ``authorization_url``, ``exchange_code`` and ``refresh``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlencode

import httpx

from app.brokers import errors
from app.brokers.http import BrokerClient, HttpPool, credential_key, timeouts_from
from app.config import Settings
from app.security.credentials import Credentials
from app.security.redaction import register_secret

SLUG = "schwab"


@dataclass(frozen=True, slots=True)
class OAuthProvider:
    """How a broker does OAuth2, as data the generic browser flow and refresher read.

    URLs are production values; ``*_path`` joined to the ``base_url_setting`` value gives
    the URL actually used (tests point that setting at the fake).
    """

    slug: str
    authorize_url: str
    token_url: str
    authorize_path: str
    token_path: str
    client_auth_method: Literal["client_secret_basic", "client_secret_post"]
    pkce: bool
    scopes: tuple[str, ...]
    base_url_setting: str
    client_id_setting: str
    client_secret_setting: str
    redirect_uri_setting: str
    access_token_lifetime: timedelta
    refresh_token_lifetime: timedelta
    # Refresh the access token this long before it expires (schwab-py uses 300 s).
    refresh_leeway: timedelta
    # Does a refresh extend the refresh token's life? Schwab: no, 7 days from authorization.
    refresh_extends_grant: bool


SCHWAB_OAUTH = OAuthProvider(
    slug=SLUG,
    authorize_url="https://api.schwabapi.com/v1/oauth/authorize",
    token_url="https://api.schwabapi.com/v1/oauth/token",  # noqa: S106 - a URL, not a secret
    authorize_path="/v1/oauth/authorize",
    token_path="/v1/oauth/token",  # noqa: S106 - a path, not a secret
    client_auth_method="client_secret_basic",
    pkce=False,
    scopes=(),
    base_url_setting="schwab_base_url",
    client_id_setting="schwab_client_id",
    client_secret_setting="schwab_client_secret",  # noqa: S106 - a setting name
    redirect_uri_setting="schwab_redirect_uri",
    access_token_lifetime=timedelta(minutes=30),
    refresh_token_lifetime=timedelta(days=7),
    refresh_leeway=timedelta(minutes=5),
    refresh_extends_grant=False,
)

# Credential fields stored in the vault for a Schwab connection.
ACCESS_TOKEN = "access_token"  # noqa: S105 - field names, not secrets
REFRESH_TOKEN = "refresh_token"  # noqa: S105
EXPIRES_AT = "expires_at"
REFRESH_EXPIRES_AT = "refresh_expires_at"


class InvalidGrant(errors.AuthenticationFailed):
    """The refresh token (or authorization code) is dead: the user must authorize again.

    Never retried: a retry cannot succeed and Schwab may count it against the app.
    """


class ClientRejected(errors.AuthenticationFailed):
    """Schwab refused our app key/secret (``invalid_client``): an operator must fix them."""


@dataclass(frozen=True, slots=True)
class TokenSet:
    """One grant's tokens. ``repr`` never shows a token."""

    access_token: str
    refresh_token: str
    expires_at: datetime
    refresh_expires_at: datetime
    token_type: str = "Bearer"  # noqa: S105 - the scheme name
    scope: str = ""

    def __repr__(self) -> str:
        return (
            f"TokenSet(expires_at={self.expires_at.isoformat()}, "
            f"refresh_expires_at={self.refresh_expires_at.isoformat()}, scope={self.scope!r})"
        )

    __str__ = __repr__

    def to_credentials(self) -> Credentials:
        """The vault payload of a Schwab connection (store with these expiry times too)."""
        return Credentials(
            {
                ACCESS_TOKEN: self.access_token,
                REFRESH_TOKEN: self.refresh_token,
                EXPIRES_AT: self.expires_at.isoformat(),
                REFRESH_EXPIRES_AT: self.refresh_expires_at.isoformat(),
            }
        )

    @classmethod
    def from_credentials(cls, credentials: Mapping[str, str]) -> TokenSet:
        """Raises AuthenticationFailed when the stored credential is not a Schwab token set."""
        try:
            return cls(
                access_token=credentials[ACCESS_TOKEN],
                refresh_token=credentials[REFRESH_TOKEN],
                expires_at=_aware(datetime.fromisoformat(credentials[EXPIRES_AT])),
                refresh_expires_at=_aware(datetime.fromisoformat(credentials[REFRESH_EXPIRES_AT])),
            )
        except (KeyError, ValueError):
            raise errors.AuthenticationFailed(
                "the stored Schwab credential is not a token set", broker=SLUG
            ) from None


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def access_headers(credentials: Credentials | None) -> dict[str, str]:
    """``Authorization: Bearer <access token>`` for REST calls."""
    if credentials is None or ACCESS_TOKEN not in credentials:
        raise errors.AuthenticationFailed("no Schwab token for this connection", broker=SLUG)
    return {"Authorization": f"Bearer {credentials[ACCESS_TOKEN]}"}


def bucket_key(credentials: Credentials) -> str:
    """Requests are paced per grant: the refresh token outlives the 30-minute access token."""
    return credential_key(SLUG, credentials.get(REFRESH_TOKEN) or credentials[ACCESS_TOKEN])


def client_credentials(settings: Settings) -> tuple[str, str]:
    secret = settings.schwab_client_secret
    if not settings.schwab_client_id or secret is None or not secret.get_secret_value():
        raise ClientRejected("Schwab is not configured on this deployment", broker=SLUG)
    return settings.schwab_client_id, secret.get_secret_value()


def _base(settings: Settings) -> str:
    return settings.schwab_base_url.rstrip("/")


def authorization_url(settings: Settings, *, state: str) -> str:
    """Where to send the browser. Raises ValueError when no redirect URI is configured."""
    client_id, _secret = client_credentials(settings)
    if not settings.schwab_redirect_uri:
        raise ValueError("BROKERAGE_SCHWAB_REDIRECT_URI is not set")
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": settings.schwab_redirect_uri,
            "state": state,
        }
    )
    return f"{_base(settings)}{SCHWAB_OAUTH.authorize_path}?{query}"


def classify_token_error(response: httpx.Response, _method: str) -> errors.BrokerError:
    """The token endpoint's ``{"error", "error_description"}`` answers (RFC 6749 §5.2)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("error") if isinstance(body, dict) else None
    raw_description = body.get("error_description") if isinstance(body, dict) else None
    description = raw_description if isinstance(raw_description, str) else ""
    code = code if isinstance(code, str) else ""
    reason = f"{code}: {description}" if code else f"HTTP {response.status_code}"
    text = description.lower()
    if code == "invalid_grant":
        return InvalidGrant(reason, broker=SLUG)
    if code == "invalid_client" and "refresh token" in text:
        return InvalidGrant(reason, broker=SLUG)  # the 7-day limit (schwab-py docs/auth.rst)
    if code == "unsupported_token_type" and "refresh_token_authentication_error" in text:
        return InvalidGrant(reason, broker=SLUG)  # revoked (Schwabdev issue #40)
    if code == "invalid_client" or response.status_code == 401:
        return ClientRejected(reason, broker=SLUG)
    return errors.Rejected(reason, broker=SLUG)


class TokenEndpoint:
    """``POST /v1/oauth/token`` with our app's Basic credentials, paced per app."""

    def __init__(self, settings: Settings, pool: HttpPool | None = None) -> None:
        client_id, secret = client_credentials(settings)
        self._own_pool = pool is None
        self._pool = pool or HttpPool(timeouts=timeouts_from(settings))
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        per_minute = settings.schwab_requests_per_minute
        self._client = BrokerClient(
            self._pool,
            broker=SLUG,
            base_url=_base(settings),
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            bucket=self._pool.bucket(
                SLUG,
                credential_key(SLUG, "token-endpoint", client_id),
                rate=per_minute / 60.0,
                capacity=per_minute,
            ),
            classifier=classify_token_error,
        )

    def __repr__(self) -> str:
        return "TokenEndpoint(schwab)"

    async def post(self, form: dict[str, str]) -> dict[str, Any]:
        """One token request. A lost answer is ``Transient``: no token changes hands twice.

        A refresh can be repeated safely (Schwab does not rotate the refresh token); a lost
        code exchange cannot be repeated, but retrying it only fails with ``InvalidGrant``.
        """
        try:
            response = await self._client.request("POST", SCHWAB_OAUTH.token_path, data=form)
        except errors.OutcomeUnknown as exc:
            raise errors.Transient(exc.reason, broker=SLUG) from None
        except errors.OrderNotFound as exc:  # the generic 404 mapping has no meaning here
            raise errors.Rejected(exc.reason, broker=SLUG) from None
        try:
            body = response.json(parse_float=Decimal)
        except ValueError:
            raise errors.UnknownBrokerValue(
                "Schwab's token endpoint sent a body that is not JSON", broker=SLUG
            ) from None
        if not isinstance(body, dict):
            raise errors.UnknownBrokerValue("Schwab's token answer is not an object", broker=SLUG)
        return body

    async def close(self) -> None:
        if self._own_pool:
            await self._pool.aclose()


def token_set_from_answer(
    body: Mapping[str, Any], now: datetime, *, refresh_expires_at: datetime
) -> TokenSet:
    access = body.get("access_token")
    refresh_token = body.get("refresh_token")
    token_type = body.get("token_type")
    expires_in = body.get("expires_in")
    if not isinstance(access, str) or not access:
        raise errors.UnknownBrokerValue("Schwab's token answer has no access_token", broker=SLUG)
    if not isinstance(refresh_token, str) or not refresh_token:
        raise errors.UnknownBrokerValue("Schwab's token answer has no refresh_token", broker=SLUG)
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise errors.UnknownBrokerValue(
            f"Schwab sent an unknown token_type: {token_type!r}", broker=SLUG
        )
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | Decimal):
        raise errors.UnknownBrokerValue(
            f"Schwab sent an unknown expires_in: {expires_in!r}", broker=SLUG
        )
    register_secret(access)  # masked in any log line from here on
    register_secret(refresh_token)
    scope = body.get("scope")
    return TokenSet(
        access_token=access,
        refresh_token=refresh_token,
        expires_at=now + timedelta(seconds=int(expires_in)),
        refresh_expires_at=refresh_expires_at,
        token_type="Bearer",  # noqa: S106 - the scheme name
        scope=scope if isinstance(scope, str) else "",
    )


async def exchange_code(
    settings: Settings,
    code: str,
    *,
    pool: HttpPool | None = None,
    now: datetime | None = None,
) -> TokenSet:
    """Trade the callback's ``code`` for a token set (the grant's 7 days start now).

    Raises ``InvalidGrant`` (bad, used or expired code), ``ClientRejected`` (our app
    credentials), ``Rejected`` (another refusal), ``RateLimitExceeded``, ``Transient``.
    """
    if not settings.schwab_redirect_uri:
        raise ValueError("BROKERAGE_SCHWAB_REDIRECT_URI is not set")
    endpoint = TokenEndpoint(settings, pool)
    try:
        body = await endpoint.post(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": settings.schwab_redirect_uri,
            }
        )
    finally:
        await endpoint.close()
    at = now or datetime.now(UTC)
    return token_set_from_answer(
        body, at, refresh_expires_at=at + SCHWAB_OAUTH.refresh_token_lifetime
    )


async def refresh(
    settings: Settings,
    refresh_token: str,
    *,
    refresh_expires_at: datetime,
    pool: HttpPool | None = None,
    now: datetime | None = None,
) -> TokenSet:
    """A new access token from the grant's refresh token.

    ``refresh_expires_at`` is the current grant's limit: Schwab does not extend it, so it is
    kept unless Schwab hands out a different refresh token (then that one's 7 days count).
    Raises ``InvalidGrant`` when the refresh token is expired or revoked (never retry: the
    user must authorize again), and the errors of ``exchange_code`` otherwise.
    """
    endpoint = TokenEndpoint(settings, pool)
    try:
        body = await endpoint.post({"grant_type": "refresh_token", "refresh_token": refresh_token})
    finally:
        await endpoint.close()
    at = now or datetime.now(UTC)
    new_refresh = body.get("refresh_token")
    if isinstance(new_refresh, str) and new_refresh and new_refresh != refresh_token:
        refresh_expires_at = at + SCHWAB_OAUTH.refresh_token_lifetime
    return token_set_from_answer(body, at, refresh_expires_at=refresh_expires_at)

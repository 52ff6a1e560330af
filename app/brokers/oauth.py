"""Broker-neutral OAuth 2.0: a broker's authorization server described as data, and our client.

A broker package that connects through OAuth puts an ``OAuthSpec`` on its ``BrokerSpec``
(``oauth=``); nothing here knows any broker by name. The spec says where the authorization,
token and revocation endpoints are, how the client authenticates at the token endpoint,
whether PKCE is supported, the scopes, the refresh token's hard lifetime, and which
``Settings`` fields hold the app's client id, client secret and redirect URI.

``OAuthClient`` sends the requests (RFC 6749 authorization code and refresh grants, RFC 7636
PKCE S256, RFC 7009 revocation). authlib builds them (authorization URL, code challenge,
token request parameters, client authentication); they travel through ``BrokerClient`` like
every broker call, so they get the same timeouts, no redirects, pacing, error mapping and
redacted logging. Token endpoint errors (RFC 6749 §5.2 ``{"error": ...}`` bodies) become
``InvalidGrant`` (never retried: the grant is gone) or ``TokenEndpointError``; a broker that
reports a dead grant with another error code lists those answers in
``OAuthSpec.dead_grant_errors`` (Schwab), so they are ``InvalidGrant`` too.

Stored credentials of an OAuth connection are a ``Credentials`` mapping with
``access_token``, ``token_type``, ``expires_at`` (the access token's expiry, RFC 3339, when
known) and, when the broker issued them, ``refresh_token`` and ``scope``. Adapters read
``credentials["access_token"]`` (``bearer_headers`` builds the header) and, for a stream
bound to one token, ``access_token_expires_at``; they never see the token endpoint or
refresh anything themselves.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import url_decode
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7009 import prepare_revoke_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from pydantic import SecretStr

from app.brokers import errors
from app.brokers.http import BrokerClient, HttpPool, credential_key
from app.config import Settings
from app.security.credentials import Credentials

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]
TokenEncoding = Literal["form", "json"]
# A URL fixed by the broker, or computed from the settings (so a base-URL override such as
# BROKERAGE_SCHWAB_BASE_URL points the OAuth endpoints at a fake too).
SettingsValue = str | Callable[[Settings], str]

# Credential field names (not secrets).
ACCESS_TOKEN = "access_token"  # noqa: S105
REFRESH_TOKEN = "refresh_token"  # noqa: S105
TOKEN_TYPE = "token_type"  # noqa: S105
SCOPE = "scope"
EXPIRES_AT = "expires_at"

# Our callback route; every broker's redirect URI must end with it, so each broker has its
# own redirect URI (RFC 9700 §4.4 mix-up defence: distinct redirect URIs per AS).
CALLBACK_PATH = "/v1/oauth/{slug}/callback"
PKCE_VERIFIER_LENGTH = 64  # RFC 7636 §4.1: 43..128 characters of [A-Za-z0-9-._~]
_LOOPBACK_NAMES = frozenset({"localhost"})


class OAuthNotConfigured(ValueError):
    """The deployment lacks (or has an unusable) OAuth setting; the message names the setting."""


@dataclass(frozen=True, slots=True)
class OAuthSpec:
    """How one broker's authorization server works. Pure data; resolved per deployment.

    ``client_id_setting`` / ``client_secret_setting`` / ``redirect_uri_setting`` name
    ``Settings`` fields (``str | None``, ``SecretStr | None``, ``str | None``), by convention
    ``<slug>_client_id``, ``<slug>_client_secret``, ``<slug>_redirect_uri``
    (``BROKERAGE_<SLUG>_CLIENT_ID`` ...). ``refresh_token_lifetime`` is the refresh token's hard
    limit counted from the authorization (Schwab: 7 days), None when it does not expire.
    ``access_token_lifetime`` is used only when a token response omits ``expires_in``
    (None: such tokens are treated as not expiring). ``token_encoding="json"`` sends token
    requests as a JSON body (tastytrade) instead of the standard form; ``token_headers``
    are sent on every token endpoint request (e.g. a required ``User-Agent``).
    ``issuer``, when the broker implements RFC 9207, is compared with the callback's ``iss``.
    ``dead_grant_errors`` lists token endpoint answers other than ``invalid_grant`` that
    mean the grant is dead, as (``error`` code, text its ``error_description`` contains,
    compared case-insensitively): they raise ``InvalidGrant`` too, so the refresher marks
    the connection broken instead of retrying a refresh that can never succeed.
    """

    authorize_url: SettingsValue
    token_url: SettingsValue
    client_id_setting: str
    client_secret_setting: str
    redirect_uri_setting: str
    revoke_url: SettingsValue | None = None
    # Brokers with a separate refresh endpoint (Tradier); None: the token endpoint.
    refresh_url: SettingsValue | None = None
    client_auth: ClientAuthMethod = "client_secret_basic"
    pkce: bool = True
    scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    refresh_token_lifetime: timedelta | None = None
    access_token_lifetime: timedelta | None = None
    token_encoding: TokenEncoding = "form"  # noqa: S105 - an encoding name
    token_headers: tuple[tuple[str, str], ...] = ()
    authorize_params: tuple[tuple[str, str], ...] = ()
    issuer: str | None = None
    token_requests_per_minute: int = 60
    dead_grant_errors: tuple[tuple[str, str], ...] = ()

    def is_dead_grant(self, error: str, description: str | None) -> bool:
        """Whether a token endpoint ``error`` answer says the grant is gone for good."""
        if error == "invalid_grant":
            return True
        text = (description or "").lower()
        return any(
            error == code and fragment.lower() in text for code, fragment in self.dead_grant_errors
        )

    def resolve(self, settings: Settings, slug: str) -> OAuthConfig:
        """This deployment's concrete client configuration; ``OAuthNotConfigured`` if unusable."""
        client_id = getattr(settings, self.client_id_setting, None)
        if not isinstance(client_id, str) or not client_id:
            raise OAuthNotConfigured(f"{self.client_id_setting} is not set")
        secret = getattr(settings, self.client_secret_setting, None)
        if not isinstance(secret, SecretStr) or not secret.get_secret_value():
            raise OAuthNotConfigured(f"{self.client_secret_setting} is not set (a SecretStr)")
        redirect_uri = getattr(settings, self.redirect_uri_setting, None)
        if not isinstance(redirect_uri, str) or not redirect_uri:
            raise OAuthNotConfigured(f"{self.redirect_uri_setting} is not set")
        check_redirect_uri(redirect_uri, slug, production=settings.environment == "production")
        return OAuthConfig(
            slug=slug,
            spec=self,
            client_id=client_id,
            client_secret=secret,
            redirect_uri=redirect_uri,
            authorize_url=_value(self.authorize_url, settings),
            token_url=_value(self.token_url, settings),
            revoke_url=None if self.revoke_url is None else _value(self.revoke_url, settings),
            refresh_url=None if self.refresh_url is None else _value(self.refresh_url, settings),
        )

    def configured(self, settings: Settings, slug: str) -> bool:
        try:
            self.resolve(settings, slug)
        except OAuthNotConfigured:
            return False
        return True


def _value(value: SettingsValue, settings: Settings) -> str:
    return value(settings) if callable(value) else value


def check_redirect_uri(uri: str, slug: str, *, production: bool) -> str:
    """The redirect URI must be absolute, ours (``.../v1/oauth/<slug>/callback``) and exact.

    https only in production; http is accepted for loopback hosts, and outside production
    (tests and local runs). No query and no fragment: the authorization server compares
    the URI exactly (RFC 9700 §2.1), so it is one fixed string per broker.
    """
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise OAuthNotConfigured("the redirect URI must be an absolute http(s) URL")
    if parts.scheme == "http" and production and not _is_loopback(host):
        raise OAuthNotConfigured("the redirect URI must use https")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise OAuthNotConfigured("the redirect URI takes no query, fragment or user info")
    if not parts.path.endswith(CALLBACK_PATH.format(slug=slug)):
        raise OAuthNotConfigured(
            f"the redirect URI must end with {CALLBACK_PATH.format(slug=slug)}"
        )
    return uri


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """An ``OAuthSpec`` resolved against the settings. The secret stays a ``SecretStr``."""

    slug: str
    spec: OAuthSpec
    client_id: str
    client_secret: SecretStr
    redirect_uri: str
    authorize_url: str
    token_url: str
    revoke_url: str | None
    refresh_url: str | None = None


class TokenEndpointError(errors.Rejected):
    """The token or revocation endpoint answered an RFC 6749 §5.2 error (``error`` code)."""

    def __init__(self, error: str, description: str | None = None, *, broker: str = "") -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error, broker=broker)


class InvalidGrant(errors.AuthenticationFailed):
    """``invalid_grant``: the code or refresh token is invalid, expired, revoked or used.

    Terminal: retrying cannot help (and re-presenting a rotated refresh token can make the
    authorization server revoke the whole grant, RFC 9700 §4.14.2).
    """

    error = "invalid_grant"

    def __init__(self, description: str | None = None, *, broker: str = "") -> None:
        self.description = description
        super().__init__(
            f"invalid_grant: {description}" if description else "invalid_grant", broker=broker
        )


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1). The repr never shows the tokens."""

    access_token: str
    token_type: str
    expires_in: int | None
    refresh_token: str | None
    scope: str | None

    def __repr__(self) -> str:
        return (
            f"TokenResponse(token_type={self.token_type!r}, expires_in={self.expires_in!r}, "
            f"refresh_token={'<set>' if self.refresh_token else None}, scope={self.scope!r})"
        )

    def credentials(
        self, previous: Mapping[str, str] | None = None, *, expires_at: datetime | None = None
    ) -> Credentials:
        """The credential to store. Without a new refresh token the previous one is kept
        (RFC 6749 §6: the server MAY issue a new one). ``expires_at``: the access token's
        expiry (``expires_at()``), stored with it so an adapter knows when it dies."""
        values = {ACCESS_TOKEN: self.access_token, TOKEN_TYPE: self.token_type}
        if expires_at is not None:
            values[EXPIRES_AT] = expires_at.astimezone(UTC).isoformat()
        refresh = self.refresh_token or (previous or {}).get(REFRESH_TOKEN)
        if refresh:
            values[REFRESH_TOKEN] = refresh
        scope = self.scope if self.scope is not None else (previous or {}).get(SCOPE)
        if scope:
            values[SCOPE] = scope
        return Credentials(values)

    def expires_at(self, now: datetime, fallback: timedelta | None) -> datetime | None:
        if self.expires_in is not None:
            return now + timedelta(seconds=self.expires_in)
        return None if fallback is None else now + fallback


def new_code_verifier() -> str:
    """A fresh PKCE verifier: 64 characters from the RFC 7636 unreserved set."""
    return str(generate_token(PKCE_VERIFIER_LENGTH))


def new_state() -> str:
    """An unguessable ``state`` (256 bits), URL-safe."""
    return secrets.token_urlsafe(32)


def access_token_expires_at(credentials: Mapping[str, str]) -> datetime | None:
    """When the stored access token expires; None when unknown (not recorded, or unreadable:
    then the broker's refusal is what tells)."""
    value = credentials.get(EXPIRES_AT)
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def bearer_headers(credentials: Credentials | None, *, broker: str) -> dict[str, str]:
    """``Authorization: Bearer`` for an OAuth connection's adapter (RFC 6750 §2.1)."""
    if credentials is None or not credentials.get(ACCESS_TOKEN):
        raise errors.AuthenticationFailed("no access token for this connection", broker=broker)
    return {"Authorization": f"Bearer {credentials[ACCESS_TOKEN]}"}


class OAuthClient:
    """Talks to one broker's authorization server with the deployment's client credentials.

    Every request is sent once (token requests are POSTs: never resent blindly). Failures:
    ``InvalidGrant``; ``TokenEndpointError`` for other §5.2 errors; ``Transient`` /
    ``RateLimitExceeded`` / ``OutcomeUnknown`` from the transport mapping (a lost answer to
    a refresh may or may not have rotated the token); ``UnknownBrokerValue`` for a 2xx body
    that is not a token response.
    """

    def __init__(self, config: OAuthConfig, pool: HttpPool) -> None:
        self._config = config
        self._spec = config.spec
        self._pool = pool
        rate = self._spec.token_requests_per_minute
        self._bucket = pool.bucket(
            f"{config.slug}:oauth",
            credential_key("oauth", config.slug, config.client_id),
            rate=rate / 60.0,
            capacity=float(rate),
        )

    def __repr__(self) -> str:
        return f"OAuthClient(slug={self._config.slug!r}, client_id={self._config.client_id!r})"

    @property
    def config(self) -> OAuthConfig:
        return self._config

    def authorization_url(self, *, state: str, code_verifier: str | None) -> str:
        """The authorization request (RFC 6749 §4.1.1), with the S256 challenge (RFC 7636 §4.3)."""
        extra: dict[str, Any] = dict(self._spec.authorize_params)
        if code_verifier is not None:
            extra["code_challenge"] = create_s256_code_challenge(code_verifier)
            extra["code_challenge_method"] = "S256"
        scope = self._spec.scope_separator.join(self._spec.scopes) or None
        url: str = prepare_grant_uri(
            self._config.authorize_url,
            self._config.client_id,
            "code",
            redirect_uri=self._config.redirect_uri,
            scope=scope,
            state=state,
            **extra,
        )
        return url

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None
    ) -> TokenResponse:
        """Authorization code grant (RFC 6749 §4.1.3) with the PKCE verifier (RFC 7636 §4.5)."""
        params = {"code": code}
        if code_verifier is not None:
            params["code_verifier"] = code_verifier
        body = prepare_token_request("authorization_code", redirect_uri=redirect_uri, **params)
        return await self._token_request(body)

    async def refresh(self, refresh_token: str) -> TokenResponse:
        """Refresh grant (RFC 6749 §6); the scope stays what was granted."""
        body = prepare_token_request("refresh_token", refresh_token=refresh_token)
        url = self._config.refresh_url or self._config.token_url
        return parse_token_response(await self._post(url, body), self._config.slug)

    async def revoke(self, token: str, *, token_type_hint: str | None = None) -> bool:
        """RFC 7009 revocation; False when the broker has no revocation endpoint.

        A 200 means the token is gone (or was unknown, §2.2). A 503 raises ``OutcomeUnknown``
        (the server asks to retry later, §2.2.1).
        """
        if self._config.revoke_url is None:
            return False
        body, _ = prepare_revoke_token_request(token, token_type_hint)
        await self._post(self._config.revoke_url, body)
        return True

    async def _token_request(self, body: str) -> TokenResponse:
        response = await self._post(self._config.token_url, body)
        return parse_token_response(response, self._config.slug)

    async def _post(self, url: str, form_body: str) -> httpx.Response:
        headers = {"Accept": "application/json", **dict(self._spec.token_headers)}
        auth = ClientAuth(
            self._config.client_id,
            self._config.client_secret.get_secret_value(),
            self._spec.client_auth,
        )
        _, headers, form_body = auth.prepare("POST", url, headers, form_body)
        fields = dict(url_decode(form_body))
        base, path = _split(url)
        client = BrokerClient(
            self._pool,
            broker=self._config.slug,
            base_url=base,
            headers=headers,
            bucket=self._bucket,
            classifier=_classifier(self._spec, self._config.slug),
        )
        if self._spec.token_encoding == "json":  # noqa: S105 - an encoding name
            return await client.request("POST", path, json=fields)
        return await client.request("POST", path, data=fields)


def _split(url: str) -> tuple[str, str]:
    """``https://host:port/a/b?q`` -> (``https://host:port``, ``/a/b?q``): httpx would add a
    trailing slash to a base URL that is the whole endpoint."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return f"{parts.scheme}://{parts.netloc}", path


def _classifier(
    spec: OAuthSpec, slug: str
) -> Callable[[httpx.Response, str], errors.BrokerError | None]:
    def classify(response: httpx.Response, _method: str) -> errors.BrokerError | None:
        try:
            body = response.json()
        except ValueError:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return None
        error: str = body["error"]
        description = body.get("error_description")
        text = description if isinstance(description, str) else None
        if error == "invalid_grant":
            return InvalidGrant(text, broker=slug)
        if spec.is_dead_grant(error, text):
            # Keep the broker's own words: which of its answers it was.
            return InvalidGrant(f"{error}: {text}" if text else error, broker=slug)
        return TokenEndpointError(error, text, broker=slug)

    return classify


def parse_token_response(response: httpx.Response, slug: str) -> TokenResponse:
    """RFC 6749 §5.1. ``token_type`` may be absent (Tradier omits it) but must be Bearer
    when present; ``expires_in`` may arrive as a number or a numeric string. Also for a
    broker that mints access tokens itself (tastytrade's per-user personal grant).
    ``UnknownBrokerValue`` for anything else."""
    try:
        body = response.json(parse_float=Decimal)
    except ValueError:
        raise errors.UnknownBrokerValue(
            "the token endpoint sent a body that is not JSON", broker=slug
        ) from None
    if not isinstance(body, dict):
        raise errors.UnknownBrokerValue("the token response is not an object", broker=slug)
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise errors.UnknownBrokerValue("the token response has no access_token", broker=slug)
    token_type = body.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise errors.UnknownBrokerValue("the token response is not a Bearer token", broker=slug)
    refresh = body.get("refresh_token")
    if refresh is not None and (not isinstance(refresh, str) or not refresh):
        raise errors.UnknownBrokerValue("the token response has a bad refresh_token", broker=slug)
    scope = body.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise errors.UnknownBrokerValue("the token response has a bad scope", broker=slug)
    return TokenResponse(
        access_token=access,
        token_type="Bearer",  # noqa: S106 - the token type name
        expires_in=_expires_in(body.get("expires_in"), slug),
        refresh_token=refresh,
        scope=scope,
    )


def _expires_in(value: object, slug: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise errors.UnknownBrokerValue("the token response has a bad expires_in", broker=slug)
    try:
        seconds = int(Decimal(str(value)))
    except (ArithmeticError, ValueError):
        raise errors.UnknownBrokerValue(
            "the token response has a bad expires_in", broker=slug
        ) from None
    if seconds < 0:
        raise errors.UnknownBrokerValue("the token response has a bad expires_in", broker=slug)
    return seconds

"""Tradier authentication: one bearer access token on every request, and the OAuth facts.

A connection stores a personal API access token (web.tradier.com -> API Access) as the
credential field ``access_token``; requests send ``Authorization: Bearer <token>``
(https://docs.tradier.com/docs/authentication). The token is validated against the broker
(``GET /v1/user/profile``) before it is stored.

Tradier also offers OAuth 2.0 for apps acting on behalf of users. Its endpoint facts are kept
here as data (``OAUTH``) for the generic OAuth flow; connections use ``api_key`` for now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from app.brokers import errors
from app.brokers.http import credential_key
from app.security.credentials import Credentials

SLUG = "tradier"
ACCESS_TOKEN = "access_token"  # noqa: S105 - a field name, not a secret
CREDENTIAL_FIELDS = frozenset({ACCESS_TOKEN})


@dataclass(frozen=True, slots=True)
class OAuthEndpoints:
    """What a generic authorization-code flow needs to know about one broker."""

    authorize_url: str
    token_url: str
    refresh_url: str | None
    scopes: tuple[str, ...]
    scope_separator: str
    # How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
    token_endpoint_auth: str
    pkce: bool
    access_token_lifetime: timedelta
    # Refresh tokens are issued to approved partners only; None: the user re-authorizes.
    refresh_token_lifetime: timedelta | None
    refresh_tokens_for_partners_only: bool


# https://documentation.tradier.com/brokerage-api/oauth/authorization-code,
# .../oauth/access-token and .../oauth/refresh-token:
# * authorize: GET https://api.tradier.com/v1/oauth/authorize?client_id=&scope=&state=
#   (comma-delimited scopes; the code lives 10 minutes);
# * token: POST https://api.tradier.com/v1/oauth/accesstoken, HTTP Basic client_id:secret,
#   form grant_type=authorization_code&code=...; JSON answer with access_token, expires_in
#   (86399: access tokens last 24 hours), issued_at, scope, status, [refresh_token];
# * refresh: POST https://api.tradier.com/v1/oauth/refreshtoken, grant_type=refresh_token,
#   Basic auth, partners only ("must approve your application for refresh tokens"), refresh
#   tokens do not expire. PKCE is not documented.
OAUTH = OAuthEndpoints(
    authorize_url="https://api.tradier.com/v1/oauth/authorize",
    token_url="https://api.tradier.com/v1/oauth/accesstoken",  # noqa: S106 - a URL
    refresh_url="https://api.tradier.com/v1/oauth/refreshtoken",
    scopes=("read", "write", "market", "trade", "stream"),
    scope_separator=",",
    token_endpoint_auth="client_secret_basic",  # noqa: S106 - a method name
    pkce=False,
    access_token_lifetime=timedelta(hours=24),
    refresh_token_lifetime=None,
    refresh_tokens_for_partners_only=True,
)


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The credential mapping a connection stores; ValueError naming the problem (not values)."""
    missing = CREDENTIAL_FIELDS - set(values)
    extra = set(values) - CREDENTIAL_FIELDS
    if missing:
        raise ValueError(f"missing credentials: {', '.join(sorted(missing))}")
    if extra:
        raise ValueError(f"unknown credentials: {', '.join(sorted(extra))}")
    token = values[ACCESS_TOKEN]
    if (
        not token
        or len(token) > 512
        or not token.isascii()
        or not token.isprintable()
        or any(c.isspace() for c in token)
    ):
        raise ValueError(f"{ACCESS_TOKEN} is not a valid Tradier access token")
    return Credentials({ACCESS_TOKEN: token})


def headers(credentials: Credentials | None) -> dict[str, str]:
    """Bearer token, and JSON answers: Tradier's default response format is XML.

    https://docs.tradier.com/docs/requests ("Accept" defaults to application/xml).
    """
    if credentials is None or ACCESS_TOKEN not in credentials:
        raise errors.AuthenticationFailed(
            "no Tradier access token for this connection", broker=SLUG
        )
    return {
        "Authorization": f"Bearer {credentials[ACCESS_TOKEN]}",
        "Accept": "application/json",
    }


def bucket_key(credentials: Credentials) -> str:
    """Tradier limits per access token: buckets are keyed by a hash of the token."""
    return credential_key(SLUG, credentials[ACCESS_TOKEN])

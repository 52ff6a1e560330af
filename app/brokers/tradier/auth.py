"""Tradier authentication: one bearer access token on every request, and the OAuth facts.

A connection stores a personal API access token (web.tradier.com -> API Access) as the
credential field ``access_token``; requests send ``Authorization: Bearer <token>``
(https://docs.tradier.com/docs/authentication). The token is validated against the broker
(``GET /v1/user/profile``) before it is stored.

Tradier also offers OAuth 2.0 to approved partners. It is not offered here, and the
connection kind stays ``api_key`` (a personal access token), for three reasons:

* One ``BrokerSpec`` carries one ``auth`` kind and ``GET /v1/brokers`` shows one ``auth``
  value per broker; the services branch on it (``POST /v1/connections`` refuses ``oauth2``
  brokers, the authorize route refuses the others, the broker list gates ``oauth2`` brokers
  on their OAuth client settings). Offering both kinds needs an addition to the public
  Broker object and to those branches, not a Tradier change.
* Tradier documents the happy path only (below). What its token endpoints answer for a bad
  or used code, a wrong client secret or a revoked refresh token is not documented (its API
  gateway's other errors are not RFC 6749 bodies), so a fake would have to invent exactly
  the answers the token lifecycle relies on to tell a dead grant from a retryable failure.
* OAuth is for Tradier partners, and refresh tokens need a second approval; without them an
  access token lasts 24 hours and cannot be renewed, so such a connection would be
  ``expiring`` from the moment it is made.

The facts, for when it is wired (https://docs.tradier.com/docs/authentication and
https://documentation.tradier.com/brokerage-api/oauth/authorization-code, with its
siblings ``.../oauth/access-token`` and ``.../oauth/refresh-token``):

* authorize: ``GET https://api.tradier.com/v1/oauth/authorize?client_id=&scope=&state=``,
  comma-delimited scopes ``read,write,market,trade,stream``; no ``redirect_uri`` parameter
  (the callback is the one registered with the app); the code lives 10 minutes;
* token: ``POST /v1/oauth/accesstoken``, HTTP Basic ``client_id:secret``, form
  ``grant_type=authorization_code&code=...``; JSON answer ``{"access_token", "expires_in":
  86399, "issued_at", "scope", "status", ["refresh_token"]}`` (no ``token_type``);
* refresh: ``POST /v1/oauth/refreshtoken``, ``grant_type=refresh_token``, partners only;
  refresh tokens do not expire.

PKCE is not documented.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.brokers import errors
from app.brokers.http import credential_key
from app.security.credentials import Credentials, require_fields

SLUG = "tradier"
ACCESS_TOKEN = "access_token"  # noqa: S105 - a field name, not a secret
CREDENTIAL_FIELDS = frozenset({ACCESS_TOKEN})


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The credential mapping a connection stores; ValueError naming the problem (not values)."""
    require_fields(values, CREDENTIAL_FIELDS)
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

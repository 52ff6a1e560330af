"""Schwab OAuth2 as data for the generic flow and refresher (``app.brokers.oauth``).

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
  "access_token": "...", "id_token": "..."}``; a refresh returns the same refresh token.
* The access token lives 30 minutes; the refresh token 7 days from the authorization, a
  hard limit a refresh does not extend: after it the user must authorize again (schwab-py
  ``docs/auth.rst``).
* No PKCE is documented and no client (schwab-py, Schwabdev, Lean) sends a
  ``code_challenge``; no ``scope`` parameter is sent.
* A dead refresh token is refused with ``{"error": "invalid_client", "error_description":
  "refresh token invalid"}`` (schwab-py ``docs/auth.rst``, "invalid_client") or with
  ``{"error": "unsupported_token_type", "error_description": "400 Bad Request: ...
  refresh_token_authentication_error ..."}`` (tylerebowers/Schwabdev issue #40); both are
  ``dead_grant_errors``: ``InvalidGrant``, never retried, the connection is broken and the
  user re-authorizes. ``invalid_client`` about anything else (``"Unauthorized"``) means our
  app key/secret are wrong: a ``TokenEndpointError`` that the refresher retries (an operator
  fixes the settings), not a dead grant.

The endpoints are derived from ``BROKERAGE_SCHWAB_BASE_URL`` (tests point it at the fake).
"""

from __future__ import annotations

from datetime import timedelta

from app.brokers.http import credential_key
from app.brokers.oauth import ACCESS_TOKEN, REFRESH_TOKEN, OAuthSpec
from app.config import Settings
from app.security.credentials import Credentials

SLUG = "schwab"


def _base(settings: Settings) -> str:
    return settings.schwab_base_url.rstrip("/")


def authorize_url(settings: Settings) -> str:
    return f"{_base(settings)}/v1/oauth/authorize"


def token_url(settings: Settings) -> str:
    return f"{_base(settings)}/v1/oauth/token"


SCHWAB_OAUTH = OAuthSpec(
    authorize_url=authorize_url,
    token_url=token_url,
    client_id_setting="schwab_client_id",
    client_secret_setting="schwab_client_secret",  # noqa: S106 - a setting name
    redirect_uri_setting="schwab_redirect_uri",
    client_auth="client_secret_basic",
    pkce=False,
    scopes=(),
    refresh_token_lifetime=timedelta(days=7),
    access_token_lifetime=timedelta(minutes=30),
    # Schwab's non-order limit (120 a minute, schwab-py docs) covers the token endpoint too.
    token_requests_per_minute=120,
    dead_grant_errors=(
        # The 7-day limit passed (schwab-py docs/auth.rst, "invalid_client").
        ("invalid_client", "refresh token invalid"),
        # Revoked by the customer (https://github.com/tylerebowers/Schwabdev/issues/40).
        ("unsupported_token_type", "refresh_token_authentication_error"),
    ),
)


def bucket_key(credentials: Credentials) -> str:
    """Requests are paced per grant: the refresh token outlives the 30-minute access token."""
    return credential_key(SLUG, credentials.get(REFRESH_TOKEN) or credentials[ACCESS_TOKEN])

"""Charles Schwab Trader API (Tier A, OAuth2): https://developer.schwab.com/products/trader-api--individual."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.schwab.adapter import SchwabAdapter

    return SchwabAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    return settings.schwab_configured


def _endpoint(path: str) -> Callable[[Settings], str]:
    # One host serves OAuth and the API; the base URL setting points tests at the fake.
    return lambda settings: settings.schwab_base_url.rstrip("/") + path


def schwab_spec() -> BrokerSpec:
    from app.brokers.oauth import OAuthSpec
    from app.brokers.registry import BrokerSpec
    from app.brokers.schwab.adapter import SCHWAB_CAPABILITIES

    return BrokerSpec(
        slug="schwab",
        name="Schwab",
        tier=Tier.A,
        auth=AuthKind.oauth2,
        capabilities=SCHWAB_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        # https://developer.schwab.com/user-guides/get-started/authenticate-with-oauth:
        # Basic client auth at the token endpoint, no PKCE, 30-minute access tokens, refresh
        # tokens that die 7 days after the authorization whatever is refreshed.
        oauth=OAuthSpec(
            authorize_url=_endpoint("/v1/oauth/authorize"),
            token_url=_endpoint("/v1/oauth/token"),
            client_id_setting="schwab_client_id",
            client_secret_setting="schwab_client_secret",  # noqa: S106 - a setting name
            redirect_uri_setting="schwab_redirect_uri",
            client_auth="client_secret_basic",
            pkce=False,
            access_token_lifetime=timedelta(minutes=30),
            refresh_token_lifetime=timedelta(days=7),
        ),
    )

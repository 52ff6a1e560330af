"""tastytrade (Tier A, OAuth2 refresh token): https://developer.tastytrade.com/ ."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.tastytrade.adapter import TastytradeAdapter

    return TastytradeAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    return bool(settings.tastytrade_base_url and settings.tastytrade_streamer_url)


def tastytrade_spec() -> BrokerSpec:
    """The connection takes the OAuth client secret and the refresh token of a personal
    grant (``api_key`` kind: the user pastes them, no browser redirect). Access tokens are
    minted per instance in memory, not by the token lifecycle (``auth`` says why)."""
    from app.brokers.registry import BrokerSpec
    from app.brokers.tastytrade.adapter import TASTYTRADE_CAPABILITIES
    from app.brokers.tastytrade.auth import check_credentials

    return BrokerSpec(
        slug="tastytrade",
        name="tastytrade",
        tier=Tier.A,
        auth=AuthKind.api_key,
        capabilities=TASTYTRADE_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        check_credentials=check_credentials,
    )

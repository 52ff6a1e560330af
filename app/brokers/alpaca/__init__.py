"""Alpaca (Tier A, API key): https://docs.alpaca.markets/reference/ (Trading API v2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.alpaca.adapter import AlpacaAdapter

    return AlpacaAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    return bool(settings.alpaca_trading_url and settings.alpaca_data_url)


def _platform_credentials(settings: Settings) -> Credentials | None:
    """The platform's default Alpaca key (BROKERAGE_ALPACA_PLATFORM_KEY_ID / _SECRET)."""
    from app.brokers.alpaca.auth import check_credentials

    key_id, secret = settings.alpaca_platform_key_id, settings.alpaca_platform_secret
    if key_id is None or secret is None:
        return None
    return check_credentials(
        {"api_key_id": key_id.get_secret_value(), "api_secret_key": secret.get_secret_value()}
    )


def alpaca_spec() -> BrokerSpec:
    from app.brokers.alpaca.adapter import ALPACA_CAPABILITIES
    from app.brokers.alpaca.auth import check_credentials
    from app.brokers.registry import BrokerSpec

    return BrokerSpec(
        slug="alpaca",
        name="Alpaca",
        tier=Tier.A,
        auth=AuthKind.api_key,
        capabilities=ALPACA_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        check_credentials=check_credentials,
        platform_credentials=_platform_credentials,
    )

"""Coinbase Advanced Trade (Tier A, CDP API key): https://docs.cdp.coinbase.com/advanced-trade/."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.coinbase.adapter import CoinbaseAdapter

    return CoinbaseAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    return bool(settings.coinbase_base_url and settings.coinbase_ws_url)


def coinbase_spec() -> BrokerSpec:
    """The connection takes a CDP API key: its name (``organizations/{org}/apiKeys/{id}``)
    and its private key (ECDSA P-256 PEM or Ed25519), checked to parse before the broker is
    asked (``auth.check_credentials``) and stored only through the vault."""
    from app.brokers.coinbase.adapter import COINBASE_CAPABILITIES
    from app.brokers.coinbase.auth import check_credentials
    from app.brokers.registry import BrokerSpec

    return BrokerSpec(
        slug="coinbase",
        name="Coinbase",
        tier=Tier.A,
        auth=AuthKind.api_key,
        capabilities=COINBASE_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        check_credentials=check_credentials,
    )

"""Tradier (Tier A, bearer access token): https://docs.tradier.com (Brokerage API v1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.tradier.adapter import TradierAdapter

    return TradierAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    return bool(settings.tradier_base_url)


def tradier_spec() -> BrokerSpec:
    from app.brokers.registry import BrokerSpec
    from app.brokers.tradier.adapter import TRADIER_CAPABILITIES
    from app.brokers.tradier.auth import check_credentials

    return BrokerSpec(
        slug="tradier",
        name="Tradier",
        tier=Tier.A,
        auth=AuthKind.api_key,
        capabilities=TRADIER_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        check_credentials=check_credentials,
        # One streaming session per user at a time, and it carries every account's events
        # (https://documentation.tradier.com/brokerage-api/streaming/wss-account-websocket).
        shared_order_stream=True,
    )

"""Charles Schwab Trader API (Tier A, OAuth2): https://developer.schwab.com/products/trader-api--individual."""

from __future__ import annotations

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


def schwab_spec() -> BrokerSpec:
    from app.brokers.registry import BrokerSpec
    from app.brokers.schwab.adapter import SCHWAB_CAPABILITIES
    from app.brokers.schwab.auth import SCHWAB_OAUTH

    return BrokerSpec(
        slug="schwab",
        name="Schwab",
        tier=Tier.A,
        auth=AuthKind.oauth2,
        capabilities=SCHWAB_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        oauth=SCHWAB_OAUTH,
    )

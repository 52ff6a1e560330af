"""Robinhood crypto (Tier A, API key + Ed25519 signature): the official Crypto Trading API,
https://docs.robinhood.com/crypto/trading/. Crypto only: Robinhood publishes no API for
equities or options, which are reachable only through an aggregator (never by scraping)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.robinhood.adapter import RobinhoodAdapter

    return RobinhoodAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    # Each user brings their own key: the deployment needs no app credentials.
    return bool(settings.robinhood_base_url)


def robinhood_spec() -> BrokerSpec:
    from app.brokers.registry import BrokerSpec
    from app.brokers.robinhood.adapter import ROBINHOOD_CAPABILITIES
    from app.brokers.robinhood.auth import check_credentials

    return BrokerSpec(
        slug="robinhood",
        name="Robinhood Crypto",
        tier=Tier.A,
        auth=AuthKind.api_key,
        capabilities=ROBINHOOD_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        check_credentials=check_credentials,
    )

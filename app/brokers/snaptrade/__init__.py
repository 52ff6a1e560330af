"""SnapTrade (Tier B aggregator): https://docs.snaptrade.com .

SnapTrade holds the brokerage login (Schwab, Interactive Brokers, Robinhood equities,
Fidelity, ...); a connection here is one SnapTrade user whose secret is sealed in the vault
(``tier_b``), linked to brokerages through SnapTrade's Connection Portal. Each brokerage
login shows as "Connected: Schwab via SnapTrade"; one SnapTrade marks read-only (Fidelity)
never takes orders (its credential is stored ``no_order_write``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.snaptrade.adapter import SnaptradeAdapter

    return SnaptradeAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    return bool(
        settings.snaptrade_base_url
        and settings.snaptrade_client_id
        and settings.snaptrade_consumer_key is not None
    )


def snaptrade_spec() -> BrokerSpec:
    """Connections start with ``POST /v1/connections {"broker": "snaptrade"}`` (no
    credentials: SnapTrade's user is registered for the connection) and are linked in the
    browser at the Connection Portal URL the answer carries."""
    from app.brokers.registry import BrokerSpec
    from app.brokers.snaptrade.adapter import SNAPTRADE_CAPABILITIES
    from app.brokers.snaptrade.auth import verify_webhook

    return BrokerSpec(
        slug="snaptrade",
        name="SnapTrade",
        tier=Tier.B,
        auth=AuthKind.aggregator,
        capabilities=SNAPTRADE_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        portal_connect=True,
        webhook=verify_webhook,
    )

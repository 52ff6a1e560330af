"""Brokers for the market-data tests whose market is the paper market.

The licensing rules depend on a connection's ownership (a user's own credential, or the
platform's), and caps on a broker's capabilities; the paper broker is neither. These specs
put the real ``PaperAdapter`` (its real market-data session and bar history) behind a Tier A
API-key path, so a user can connect it with a key of their own (ownership ``byob``) or as
the platform's default connection, with the caps a test needs. Nothing is mocked: the
connection flow, the vault, the adapter and the session are the real ones.
"""

from __future__ import annotations

from dataclasses import replace

from app.brokers.base import (
    NO_MARKET_DATA,
    AuthKind,
    BarInterval,
    Capabilities,
    MarketDataCapabilities,
    Tier,
)
from app.brokers.registry import AdapterContext, BrokerRegistry, BrokerSpec, default_registry
from app.paper.adapter import PAPER_CAPABILITIES, PaperAdapter
from app.security.credentials import Credentials

CAPPED_SYMBOLS = 3


def _factory(ctx: AdapterContext, _credentials: Credentials | None) -> PaperAdapter:
    return PaperAdapter(ctx.paper_engine, owner=ctx.owner)


def _spec(slug: str, market_data: MarketDataCapabilities) -> BrokerSpec:
    caps: Capabilities = replace(PAPER_CAPABILITIES, market_data=market_data)
    return BrokerSpec(
        slug=slug,
        name=slug.title(),
        tier=Tier.A,
        auth=AuthKind.api_key,
        capabilities=caps,
        factory=_factory,  # type: ignore[arg-type]
        configured=lambda _settings: True,
        check_credentials=lambda raw: Credentials(raw),
        platform_credentials=lambda _settings: Credentials({"key": "the-platform-key"}),
    )


def market_registry() -> BrokerRegistry:
    """The default brokers plus:

    ``papermd``: the paper market behind a key, capped at ``CAPPED_SYMBOLS`` symbols per
    upstream session, with 1-minute history only (other intervals are aggregated).
    ``papernomd``: the same broker without any market data.
    """
    registry = default_registry()
    md = PAPER_CAPABILITIES.market_data
    registry.register(
        _spec(
            "papermd",
            replace(
                md,
                max_symbols=CAPPED_SYMBOLS,
                max_sessions=1,
                history_intervals=frozenset({BarInterval.m1}),
            ),
        )
    )
    registry.register(_spec("papernomd", NO_MARKET_DATA))
    return registry

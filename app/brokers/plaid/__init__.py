"""Plaid Investments (Tier C, read-only import, "Linked"): https://plaid.com/docs/investments/ .

Connections are made through Plaid Link, not ``POST /v1/connections``: the frontend gets a
link token (``POST /v1/plaid/link-token``), runs Link, and hands the resulting public token
to ``POST /v1/plaid/exchange``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.plaid.adapter import PlaidAdapter

    return PlaidAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    from app.brokers.plaid.auth import configured

    return configured(settings)


def plaid_spec() -> BrokerSpec:
    from app.brokers.plaid.adapter import PLAID_CAPABILITIES
    from app.brokers.registry import BrokerSpec

    return BrokerSpec(
        slug="plaid",
        name="Plaid",
        tier=Tier.C,
        auth=AuthKind.aggregator,
        capabilities=PLAID_CAPABILITIES,
        factory=_factory,
        configured=_configured,
    )

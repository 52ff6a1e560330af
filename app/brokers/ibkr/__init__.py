"""Interactive Brokers (Tier A, ``gateway``): the Client Portal Web API through the user's
own Client Portal Gateway, https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/.
The connection stores the gateway's base URL (e.g. ``https://localhost:5000/v1/api``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import AdapterContext, BrokerSpec
    from app.security.credentials import Credentials


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.ibkr.adapter import IbkrAdapter

    return IbkrAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    # Needs no app credentials, only somewhere a gateway may run.
    return bool(settings.ibkr_gateway_hosts)


def ibkr_spec() -> BrokerSpec:
    from app.brokers.ibkr.adapter import IBKR_CAPABILITIES
    from app.brokers.ibkr.auth import check_credentials
    from app.brokers.registry import BrokerSpec

    return BrokerSpec(
        slug="ibkr",
        name="Interactive Brokers",
        tier=Tier.A,
        auth=AuthKind.gateway,
        capabilities=IBKR_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        check_credentials=check_credentials,
    )

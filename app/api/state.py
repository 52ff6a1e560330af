"""The typed application state the lifespan builds and the routers read."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.security.jwt import TokenVerifier
from app.services.accounts import AccountService
from app.services.admin import AdminService
from app.services.bar_history import BarHistoryService
from app.services.connections import ConnectionService
from app.services.context import ServiceContext
from app.services.events import EventService
from app.services.key_rewrap import KeyRewrap
from app.services.market_data import MarketDataService
from app.services.oauth import OAuthFlowService
from app.services.ops_metrics import OpsGauges
from app.services.options import OptionsService
from app.services.orders import OrderService
from app.services.plaid import PlaidService
from app.services.portfolio import PortfolioService
from app.services.routing import RoutingService
from app.services.token_lifecycle import TokenLifecycle
from app.services.token_rotation import TokenRotationSweep
from app.services.upstream import UpstreamStreams
from app.streaming.runtime import StreamRuntime


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    ctx: ServiceContext
    verifier: TokenVerifier
    orders: OrderService
    accounts: AccountService
    connections: ConnectionService
    admin: AdminService
    events: EventService
    stream: StreamRuntime
    upstream: UpstreamStreams
    keys: KeyRewrap
    rotation: TokenRotationSweep
    portfolio: PortfolioService
    oauth: OAuthFlowService
    tokens: TokenLifecycle
    routing: RoutingService
    plaid: PlaidService
    market: MarketDataService
    bars: BarHistoryService
    options: OptionsService
    ops_gauges: OpsGauges

"""A test-only OAuth broker ("example") that plugs in exactly as a real one would.

Its ``BrokerSpec`` carries an ``OAuthSpec`` pointing at the fake authorization server
(``tests/fakes/oauth``), its settings live on a ``Settings`` subclass (as a broker package's
fields would live on ``Settings``), and its adapter reads the stored access token and
sends it as a Bearer token to the fake's small API. Nothing in ``app/`` knows it exists:
tests register it with ``BrokerRegistry.register``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    AuthKind,
    Balances,
    BrokerAccount,
    BrokerAdapter,
    BrokerOrder,
    Capabilities,
    OrderChanges,
    OrderListFilter,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Support,
    Tier,
    TimeInForce,
    Transaction,
)
from app.brokers.http import BrokerClient, HttpPool, credential_key
from app.brokers.oauth import ACCESS_TOKEN, OAuthSpec, bearer_headers
from app.brokers.registry import AdapterContext, BrokerRegistry, BrokerSpec, default_registry
from app.config import Settings
from app.security.credentials import Credentials

SLUG = "example"
N, U = Support.native, Support.unsupported

CAPABILITIES = Capabilities(
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: U,
        AssetClass.crypto: U,
        AssetClass.mutual_fund: U,
    },
    order_types={
        OrderType.market: N,
        OrderType.limit: U,
        OrderType.stop: U,
        OrderType.stop_limit: U,
    },
    time_in_force={TimeInForce.day: N, TimeInForce.gtc: U, TimeInForce.ioc: U, TimeInForce.fok: U},
    fractional=U,
    extended_hours=U,
    short_selling=U,
    multi_leg=U,
    modify=U,
    order_stream=U,
)


class ExampleSettings(Settings):
    """The settings a broker package adds: base URL, client id, secret and redirect URI."""

    example_base_url: str = ""
    example_client_id: str | None = None
    example_client_secret: SecretStr | None = None
    example_redirect_uri: str | None = None


def _base(settings: Settings) -> str:
    base = getattr(settings, "example_base_url", "")
    return str(base).rstrip("/")


EXAMPLE_OAUTH = OAuthSpec(
    authorize_url=lambda s: f"{_base(s)}/oauth/authorize",
    token_url=lambda s: f"{_base(s)}/oauth/token",
    revoke_url=lambda s: f"{_base(s)}/oauth/revoke",
    client_id_setting="example_client_id",
    client_secret_setting="example_client_secret",
    redirect_uri_setting="example_redirect_uri",
    client_auth="client_secret_basic",
    pkce=True,
    scopes=("read", "trade"),
    refresh_token_lifetime=timedelta(days=7),
)


class ExampleAdapter:
    slug = SLUG
    capabilities = CAPABILITIES

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials | None,
        pool: HttpPool,
        *,
        streaming: bool = False,
    ) -> None:
        self._streaming = streaming
        if streaming:
            self.capabilities = dataclasses.replace(CAPABILITIES, order_stream=N)
        headers = bearer_headers(credentials, broker=SLUG)
        assert credentials is not None
        self.access_token = credentials[ACCESS_TOKEN]  # tests check which token was used
        bucket = pool.bucket(
            SLUG, credential_key(SLUG, credentials[ACCESS_TOKEN]), rate=100.0, capacity=100.0
        )
        self._client = BrokerClient(
            pool, broker=SLUG, base_url=_base(settings), headers=headers, bucket=bucket
        )

    async def list_accounts(self) -> list[BrokerAccount]:
        body = (await self._client.request("GET", "/api/v1/accounts")).json()
        return [
            BrokerAccount(
                broker_account_id=a["id"],
                name=a["name"],
                number_masked="****" + a["number"][-4:],
            )
            for a in body["accounts"]
        ]

    async def get_balances(self, account_ref: str) -> Balances:
        path = f"/api/v1/accounts/{account_ref}/balances"
        body = (await self._client.request("GET", path)).json()
        return Balances(
            cash=Decimal(body["cash"]),
            equity=Decimal(body["equity"]),
            buying_power=Decimal(body["buying_power"]),
            currency=body["currency"],
            as_of=datetime.now(UTC),
        )

    async def check_symbol(self, symbol: str) -> None:
        return None

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        path = f"/api/v1/accounts/{account_ref}/orders"
        wire: dict[str, Any] = {
            "client_order_id": order.client_order_id,
            "symbol": order.symbol,
            "side": order.side.value,
            "quantity": str(order.quantity),
        }
        body = (await self._client.request("POST", path, json=wire)).json()
        created = datetime.fromisoformat(body["created_at"])
        return BrokerOrder(
            broker_order_id=body["id"],
            client_order_id=body["client_order_id"],
            symbol=body["symbol"],
            side=order.side,
            quantity=Decimal(body["quantity"]),
            filled_quantity=Decimal(0),
            avg_fill_price=None,
            order_type=order.order_type,
            time_in_force=order.time_in_force,
            status=OrderStatus(body["status"]),
            limit_price=None,
            stop_price=None,
            created_at=created,
            updated_at=created,
        )

    async def get_positions(self, account_ref: str) -> list[Position]:
        raise errors.NotSupported("positions", broker=SLUG)

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        raise errors.NotSupported("positions", broker=SLUG)

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        raise errors.NotSupported("modify", broker=SLUG)

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        raise errors.NotSupported("cancel", broker=SLUG)

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        raise errors.NotSupported("orders", broker=SLUG)

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        raise errors.NotSupported("orders", broker=SLUG)

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        raise errors.NotSupported("orders", broker=SLUG)

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        raise errors.NotSupported("orders", broker=SLUG)

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        raise errors.NotSupported("transactions", broker=SLUG)

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        raise errors.NotSupported("quotes", broker=SLUG)

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return self._stream(account_ref) if self._streaming else None

    async def _stream(self, account_ref: str) -> AsyncIterator[OrderUpdate]:
        """A stream that authenticates (one bearer request) and then ends: enough to see
        how the supervisor treats a refused token."""
        await self._client.request("GET", f"/api/v1/accounts/{account_ref}/balances")
        return
        yield  # an async generator that yields nothing

    async def close(self) -> None:
        return None


# Every adapter the factory built, newest last (tests check the token each one got).
BUILT: list[ExampleAdapter] = []


def _factory(streaming: bool) -> Callable[[AdapterContext, Credentials | None], BrokerAdapter]:
    def build(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
        assert ctx.http is not None
        adapter = ExampleAdapter(ctx.settings, credentials, ctx.http, streaming=streaming)
        BUILT.append(adapter)
        return adapter

    return build


def _configured(settings: Settings) -> bool:
    return bool(_base(settings))


def example_spec(oauth: OAuthSpec = EXAMPLE_OAUTH, *, streaming: bool = False) -> BrokerSpec:
    capabilities = dataclasses.replace(CAPABILITIES, order_stream=N) if streaming else CAPABILITIES
    return BrokerSpec(
        slug=SLUG,
        name="Example",
        tier=Tier.A,
        auth=AuthKind.oauth2,
        capabilities=capabilities,
        factory=_factory(streaming),
        configured=_configured,
        oauth=oauth,
    )


def example_registry(
    oauth: OAuthSpec = EXAMPLE_OAUTH, *, streaming: bool = False
) -> BrokerRegistry:
    registry = default_registry()
    registry.register(example_spec(oauth, streaming=streaming))
    return registry

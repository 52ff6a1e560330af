"""The Alpaca Trading API v2 adapter (Tier A, API key).

One adapter per connection, bound to that connection's decrypted key. An Alpaca key sees
exactly one account, so ``account_ref`` is the account's ``id`` from ``GET /v2/account``
and is not sent on the wire (requests are scoped by the key).

Quirks, with their doc pages:

* ``client_order_id`` is ours (https://docs.alpaca.markets/reference/postorder); Alpaca
  refuses a reused one (``client_order_id must be unique``), which we answer by fetching the
  order it names, so a placement is idempotent end to end.
* Replace creates a **new order with a new id** (``PATCH /v2/orders/{id}``,
  https://docs.alpaca.markets/reference/patchorderbyorderid); the old one becomes
  ``replaced``. We return the new order, whose ``replaces`` names the old id.
* Cancel answers 204 with no body (https://docs.alpaca.markets/reference/deleteorderbyorderid);
  the order's state afterwards comes from a GET (usually ``pending_cancel`` or ``canceled``).
* ``GET /v2/orders`` filters ``after``/``until`` on submission time, not update time
  (https://docs.alpaca.markets/reference/getallorders).
* Market data lives on another host (``data.alpaca.markets``) and sends numbers, not strings.
* API keys cannot be revoked through the API: the Trading API has no key-management
  endpoint (https://docs.alpaca.markets/openapi/trading-api.json lists none); the user
  regenerates or deletes a key in the dashboard
  (https://forum.alpaca.markets/t/alpaca-ui-dashboard/18758). So this adapter has no
  ``revoke``: disconnecting forgets the key on our side only (``revoke_credential`` answers
  ``unsupported``) and the connection tells the user to delete the key at Alpaca.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from app.brokers import errors
from app.brokers.alpaca import auth, mapping
from app.brokers.alpaca.mapping import SLUG
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    BrokerOrder,
    Capabilities,
    OrderChanges,
    OrderListFilter,
    OrderRequest,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Support,
    TimeInForce,
    Transaction,
)
from app.brokers.http import HttpPool
from app.brokers.pooled_adapter import PooledAdapter
from app.config import Settings
from app.security.credentials import Credentials

N, U = Support.native, Support.unsupported

ALPACA_CAPABILITIES = Capabilities(
    # Options and crypto trade at Alpaca but this adapter maps equities only so far.
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: U,
        AssetClass.crypto: U,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),
    time_in_force=dict.fromkeys(TimeInForce, N),
    fractional=N,
    extended_hours=N,
    short_selling=N,
    multi_leg=U,
    modify=N,
    order_stream=N,
)

MAX_PAGE = 500  # GET /v2/orders ``limit`` maximum
ASSET_TTL = 3600.0  # seconds a tradable asset lookup is trusted


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response)


def stream_url(settings: Settings) -> str:
    if settings.alpaca_stream_url:
        return settings.alpaca_stream_url
    base = settings.alpaca_trading_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/stream"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/stream"
    return base + "/stream"


class AlpacaAdapter(PooledAdapter):
    slug = SLUG
    capabilities = ALPACA_CAPABILITIES

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        self._credentials = credentials
        headers = auth.headers(credentials)
        assert credentials is not None  # auth.headers refused None
        per_minute = settings.alpaca_requests_per_minute
        bucket = self._pacer(auth.bucket_key(credentials), per_minute=per_minute)
        self._trading, self._data = (
            self._broker_client(url, headers=headers, bucket=bucket, classifier=mapping.classify)
            for url in (settings.alpaca_trading_url, settings.alpaca_data_url)
        )

    def __repr__(self) -> str:
        return f"AlpacaAdapter(trading_url={self._settings.alpaca_trading_url!r})"

    # --- account ---------------------------------------------------------------------

    async def get_account(self) -> dict[str, Any]:
        """``GET /v2/account``: also how a new key is validated before it is stored."""
        body = _loads(await self._trading.request("GET", "/v2/account"))
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise mapping.unknown("account payload", type(body).__name__)
        return body

    async def list_accounts(self) -> list[BrokerAccount]:
        body = await self.get_account()
        number = str(body.get("account_number") or body["id"])
        return [
            BrokerAccount(
                broker_account_id=body["id"],
                name=f"Alpaca {_masked(number)}",
                number_masked=_masked(number),
                currency=str(body.get("currency") or "USD"),
            )
        ]

    async def get_balances(self, account_ref: str) -> Balances:
        return mapping.balances_from_account(await self.get_account(), self._now())

    async def get_positions(self, account_ref: str) -> list[Position]:
        body = _loads(await self._trading.request("GET", "/v2/positions"))
        if not isinstance(body, list):
            raise mapping.unknown("positions payload", type(body).__name__)
        now = self._now()
        return [mapping.position_from_wire(item, now) for item in body]

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        path = f"/v2/positions/{quote(mapping.to_alpaca_symbol(symbol), safe='')}"
        try:
            body = _loads(await self._trading.request("GET", path))
        except (errors.OrderNotFound, errors.UnknownSymbol):
            return None  # 404 {"code": 40410000, "message": "position does not exist"}
        return mapping.position_from_wire(body, self._now())

    async def check_symbol(self, symbol: str) -> None:
        """``GET /v2/assets/{symbol}``: 404 or an inactive/untradable asset is refused.

        A tradable answer is remembered for ``ASSET_TTL`` (shared by every connection of this
        deployment): an asset's status changes rarely, and the lookup would otherwise add a
        broker round trip to every order. Refusals are not remembered.
        """
        memo_key = ("alpaca-asset", self._settings.alpaca_trading_url, symbol)
        if self._pool.recall(memo_key) is True:
            return
        path = f"/v2/assets/{quote(mapping.to_alpaca_symbol(symbol), safe='')}"
        try:
            body = _loads(await self._trading.request("GET", path))
        except errors.OrderNotFound as exc:
            raise errors.UnknownSymbol(f"Alpaca does not list {symbol}", broker=SLUG) from exc
        except errors.UnknownSymbol as exc:
            raise errors.UnknownSymbol(f"Alpaca does not list {symbol}", broker=SLUG) from exc
        if not isinstance(body, dict):
            raise mapping.unknown("asset payload", type(body).__name__)
        if body.get("status") != "active" or body.get("tradable") is not True:
            raise errors.UnsupportedOrder(f"{symbol} is not tradable at Alpaca", broker=SLUG)
        self._pool.remember(memo_key, True, ASSET_TTL)

    # --- orders ----------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        try:
            response = await self._trading.request(
                "POST", "/v2/orders", json=mapping.order_to_wire(order)
            )
        except errors.Rejected as exc:
            if mapping.DUPLICATE_CLIENT_ORDER_ID not in exc.reason:
                raise
            # Our client_order_id is already there: that order is this one (idempotent).
            # If we cannot read it now, the order exists but its state is unknown: never
            # report it rejected.
            try:
                found = await self.find_order_by_client_id(account_ref, order.client_order_id)
            except errors.BrokerError as lookup:
                raise errors.OutcomeUnknown(
                    f"the order exists at Alpaca but could not be read: {lookup.reason}",
                    broker=SLUG,
                ) from lookup
            if found is None:
                raise errors.OutcomeUnknown(
                    "Alpaca reports the client_order_id in use but cannot find it", broker=SLUG
                ) from exc
            return found
        return mapping.order_from_wire(_loads(response))

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """``PATCH /v2/orders/{id}``: Alpaca answers with a NEW order that replaces this one.

        The spec's PatchOrderRequest requires ``limit_price`` (and, for stops, ``stop_price``)
        even when they do not change, so they are read from the current order if the caller
        did not give them. The new order gets a client order id derived from the old broker
        id (``replacement_client_order_id``), so a replace whose answer is lost can still be
        found by client order id.
        """
        if changes.is_empty():
            return await self.get_order(account_ref, broker_order_id)
        body = mapping.changes_to_wire(changes)
        if "limit_price" not in body or "stop_price" not in body:
            current = await self.get_order(account_ref, broker_order_id)
            if "limit_price" not in body and current.limit_price is not None:
                body["limit_price"] = str(current.limit_price)
            if "stop_price" not in body and current.stop_price is not None:
                body["stop_price"] = str(current.stop_price)
        body["client_order_id"] = replacement_client_order_id(broker_order_id)
        response = await self._trading.request(
            "PATCH", f"/v2/orders/{quote(broker_order_id, safe='')}", json=body
        )
        # The answer is the NEW order (new id, ``replaces`` = the old id).
        return mapping.order_from_wire(_loads(response))

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        await self._trading.request("DELETE", f"/v2/orders/{quote(broker_order_id, safe='')}")
        try:
            return await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError as exc:
            # The cancel was accepted (204); only its result is unknown. Reporting the read
            # failure as such would make the caller believe nothing changed.
            raise errors.OutcomeUnknown(
                f"the cancel was accepted but the order could not be read: {exc.reason}",
                broker=SLUG,
            ) from exc

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        response = await self._trading.request(
            "GET", f"/v2/orders/{quote(broker_order_id, safe='')}"
        )
        return mapping.order_from_wire(_loads(response))

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        try:
            response = await self._trading.request(
                "GET",
                "/v2/orders:by_client_order_id",
                params={"client_order_id": client_order_id},
            )
        except errors.OrderNotFound:
            return None
        return mapping.order_from_wire(_loads(response))

    async def _orders(self, params: dict[str, str]) -> list[BrokerOrder]:
        body = _loads(await self._trading.request("GET", "/v2/orders", params=params))
        if not isinstance(body, list):
            raise mapping.unknown("orders payload", type(body).__name__)
        return [mapping.order_from_wire(item) for item in body]

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        params = {
            "status": status,
            "limit": str(max(1, min(limit, MAX_PAGE))),
            "direction": "desc",
        }
        return await self._orders(params)

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        params = {"status": "all", "limit": str(MAX_PAGE), "direction": "desc"}
        if start is not None:
            params["after"] = mapping.iso(start)
        if end is not None:
            params["until"] = mapping.iso(end)
        if symbol is not None:
            params["symbols"] = mapping.to_alpaca_symbol(symbol)
        return await self._orders(params)

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        params = {"direction": "desc", "page_size": "100"}
        if start is not None:
            params["after"] = mapping.iso(start)
        if end is not None:
            params["until"] = mapping.iso(end)
        body = _loads(await self._trading.request("GET", "/v2/account/activities", params=params))
        if not isinstance(body, list):
            raise mapping.unknown("activities payload", type(body).__name__)
        result = [t for t in (mapping.transaction_from_activity(a) for a in body) if t]
        if type_ is not None:
            result = [t for t in result if t.type == type_]
        return result

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        if not symbols:
            return {}
        wire = ",".join(mapping.to_alpaca_symbol(s) for s in symbols)
        quotes, trades = await asyncio.gather(
            self._data.request("GET", "/v2/stocks/quotes/latest", params={"symbols": wire}),
            self._data.request("GET", "/v2/stocks/trades/latest", params={"symbols": wire}),
        )
        return mapping.quotes_from_wire(_loads(quotes), _loads(trades), symbols)

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        from app.brokers.alpaca.stream import TradeUpdatesStream

        assert self._credentials is not None
        return TradeUpdatesStream(
            stream_url(self._settings), self._credentials, account_ref, catch_up=self.recent_orders
        ).updates()

    async def recent_orders(self, account_ref: str) -> list[BrokerOrder]:
        """After a gap: the newest orders in any state (the stream's own replay is absent).

        ``after`` filters on submission time, so an old order that changed during the gap
        would be missed by a time filter; the newest ``MAX_PAGE`` orders catch it instead.
        """
        return await self._orders({"status": "all", "limit": str(MAX_PAGE), "direction": "desc"})


def replacement_client_order_id(broker_order_id: str) -> str:
    """The client order id of the order replacing ``broker_order_id`` (<= 128 characters).

    An order is replaced at most once (it is ``replaced`` afterwards), so this is unique.
    """
    return f"bgr-{broker_order_id}"[:128]


def _masked(number: str) -> str:
    return "****" + number[-4:] if len(number) > 4 else "****"

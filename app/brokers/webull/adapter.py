"""The Webull OpenAPI adapter (Tier A, HMAC-signed requests + app-confirmed access token).

One adapter per connection, bound to the user's App Key/Secret and the access token issued
for them (``auth``). An App Key sees the user's accounts (``GET /openapi/account/list``);
``account_ref`` is the ``account_id`` every account and order call takes.

Quirks, with their doc pages:

* Every request is signed over its path, query and body (``auth.RequestSigner``); the
  access token goes in ``x-access-token``. A token still ``PENDING`` (not confirmed in the
  Webull app, https://developer.webull.com/apis/docs/authentication/token) is refused for
  every order write before anything is sent.
* Orders are found, replaced and cancelled by ``client_order_id``
  (``/openapi/trade/order/detail?client_order_id=``, ``.../stock/order/cancel``,
  ``.../stock/order/replace``), so that is the ``broker_order_id`` (``mapping``).
* Replace changes the order in place (``modify_orders``): same id afterwards.
* Writes answer only ``{"client_order_id", "order_id"}``: the order is read back.
* No push here (trade events are a gRPC stream, https://developer.webull.com/api-doc/trade/
  streaming/): open orders are polled by the reconciler's open-order sweep.
* Rate limits (https://developer.webull.com/apis/llms.txt "Rate Limits"): order
  place/replace/cancel 600 per minute, order queries 2 per 2 seconds, token calls 10 per
  30 seconds; one pacer each, keyed by App Key. Other reads share the query pace
  (``settings.webull_queries_per_second``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
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
    TimeInForce,
    Transaction,
)
from app.brokers.http import BrokerClient, HttpPool
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.webull import auth, mapping
from app.brokers.webull.mapping import SLUG
from app.config import Settings
from app.security.credentials import Credentials

N, U = Support.native, Support.unsupported

WEBULL_CAPABILITIES = Capabilities(
    # Options, futures and crypto trade at Webull; this adapter maps US stock orders only.
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: U,
        AssetClass.crypto: U,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),
    time_in_force={
        TimeInForce.day: N,
        TimeInForce.gtc: N,
        TimeInForce.ioc: N,
        TimeInForce.fok: U,
    },
    fractional=U,  # fractional shares go by amount (entrust_type AMOUNT), not mapped here
    extended_hours=N,  # support_trading_session ALL
    short_selling=U,
    multi_leg=U,
    modify=N,
    order_stream=U,  # polled by the reconciler's open-order sweep
    client_order_ids=N,
)

PAGE = 100
MAX_PAGES = 20
HISTORY_WINDOW = timedelta(days=30)
VERSION = {"x-version": "v2"}  # the SDK's ``version='v2'`` on every v2 request


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response)


class WebullAdapter(PooledAdapter):
    slug = SLUG
    capabilities = WEBULL_CAPABILITIES

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        signer = auth.signer(credentials)
        assert credentials is not None  # auth.signer refused None
        self._credentials = credentials
        key = auth.bucket_key(credentials)
        self._base = settings.webull_base_url.rstrip("/")

        def client(bucket_name: str, rate: float, capacity: float, **extra: Any) -> BrokerClient:
            return self._broker_client(
                self._base,
                headers=VERSION,
                bucket=self._pool.bucket(
                    f"{SLUG}-{bucket_name}", key, rate=rate, capacity=capacity
                ),
                classifier=mapping.classify,
                signer=extra.get("signer", signer),
            )

        self._trade = client("trade", 600 / 60.0, 10)
        self._query = client("query", settings.webull_queries_per_second, 2)
        self._token = client(
            "token", 10 / 30.0, 10, signer=auth.signer(credentials, with_access_token=False)
        )

    def __repr__(self) -> str:
        return f"WebullAdapter(base_url={self._base!r})"

    # --- the access token ------------------------------------------------------------

    async def _token_call(self, path: str, body: dict[str, str]) -> tuple[str, str, str]:
        return mapping.token_from_wire(_loads(await self._token.request("POST", path, json=body)))

    async def create_token(self) -> Credentials:
        """``POST /openapi/auth/token/create``: a new token, ``PENDING`` until the user enters
        the SMS code in the Webull app (``NORMAL`` at once without two-factor auth)."""
        token, expires, status = await self._token_call("/openapi/auth/token/create", {})
        return auth.with_token(self._credentials, token, status, expires)

    async def check_token(self) -> Credentials:
        """``POST /openapi/auth/token/check``: the stored token's status now."""
        current = self._credentials.get(auth.ACCESS_TOKEN)
        if not current:
            raise errors.AuthenticationFailed("no Webull access token to check", broker=SLUG)
        token, expires, status = await self._token_call(
            "/openapi/auth/token/check", {"token": current}
        )
        return auth.with_token(self._credentials, token, status, expires)

    async def refresh_token(self) -> Credentials:
        """``POST /openapi/auth/token/refresh`` with ``{"token": <current>}`` (the official
        SDK's ``RefreshTokenRequest``): a confirmed token lasts 15 days and "needs to be
        refreshed before expiration" (https://developer.webull.com/apis/docs/reference/create-token).

        Answers ``{"token", "expires", "status"}`` like create/check: ``NORMAL`` with the new
        ``expires`` when renewed, ``INVALID``/``EXPIRED`` when the token can no longer be
        renewed (the user connects again). Raises ``app.brokers.errors`` like any call.
        """
        current = self._credentials.get(auth.ACCESS_TOKEN)
        if not current:
            raise errors.AuthenticationFailed("no Webull access token to refresh", broker=SLUG)
        token, expires, status = await self._token_call(
            "/openapi/auth/token/refresh", {"token": current}
        )
        return auth.with_token(self._credentials, token, status, expires)

    def _ensure_confirmed(self) -> None:
        if not auth.token_usable(self._credentials):
            raise errors.AuthenticationFailed(
                "the Webull access token is not confirmed; enter the code in the Webull app",
                broker=SLUG,
            )

    # --- account ---------------------------------------------------------------------

    async def list_accounts(self) -> list[BrokerAccount]:
        body = _loads(await self._query.request("GET", "/openapi/account/list"))
        if not isinstance(body, list):
            raise mapping.unknown("account list payload", type(body).__name__)
        result = []
        for item in body:
            if not isinstance(item, dict) or not isinstance(item.get("account_id"), str):
                raise mapping.unknown("account", type(item).__name__)
            number = str(item.get("account_number") or item["account_id"])
            masked = "****" + number[-4:] if len(number) > 4 else "****"
            label = item.get("account_label") or item.get("account_type") or "Account"
            result.append(
                BrokerAccount(
                    broker_account_id=item["account_id"],
                    name=f"Webull {label} {masked}",
                    number_masked=masked,
                )
            )
        return result

    async def get_balances(self, account_ref: str) -> Balances:
        body = _loads(
            await self._query.request(
                "GET", "/openapi/assets/balance", params={"account_id": account_ref}
            )
        )
        return mapping.balances_from_wire(body, self._now())

    async def get_positions(self, account_ref: str) -> list[Position]:
        body = _loads(
            await self._query.request(
                "GET", "/openapi/assets/positions", params={"account_id": account_ref}
            )
        )
        if not isinstance(body, list):
            raise mapping.unknown("positions payload", type(body).__name__)
        now = self._now()
        return [mapping.position_from_wire(item, now) for item in body]

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        return next((p for p in await self.get_positions(account_ref) if p.symbol == symbol), None)

    async def check_symbol(self, symbol: str) -> None:
        """``GET /openapi/instrument/stock/list?symbols=&category=US_STOCK``."""
        memo_key = ("webull-instrument", self._base, symbol)
        if self._pool.recall(memo_key) is True:
            return
        body = _loads(
            await self._query.request(
                "GET",
                "/openapi/instrument/stock/list",
                params={"symbols": symbol, "category": "US_STOCK"},
            )
        )
        if not isinstance(body, list):
            raise mapping.unknown("instrument list payload", type(body).__name__)
        if not any(isinstance(i, dict) and i.get("symbol") == symbol for i in body):
            raise errors.UnknownSymbol(f"Webull does not list {symbol}", broker=SLUG)
        self._pool.remember(memo_key, True, 3600.0)

    # --- orders ----------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        self._ensure_confirmed()
        body = {"account_id": account_ref, "new_orders": [mapping.order_to_wire(order)]}
        try:
            answer = await self._trade.request(
                "POST", "/openapi/trade/stock/order/place", json=body
            )
        except mapping.DuplicateClientOrderId as exc:
            # Our client_order_id is there already: that order is this one (idempotent).
            try:
                found = await self.find_order_by_client_id(account_ref, order.client_order_id)
            except errors.BrokerError as lookup:
                raise errors.OutcomeUnknown(
                    f"the order exists at Webull but could not be read: {lookup.reason}",
                    broker=SLUG,
                ) from lookup
            if found is None:
                raise errors.Rejected(exc.reason, broker=SLUG) from exc
            return found
        wire_id = mapping.write_answer(_loads(answer))
        return await self._read_after_write(account_ref, wire_id, "placed")

    async def _read_after_write(self, account_ref: str, wire_id: str, what: str) -> BrokerOrder:
        try:
            return await self.get_order(account_ref, wire_id)
        except errors.BrokerError as exc:
            # The write was accepted; only its result is unknown. Never report it refused.
            raise errors.OutcomeUnknown(
                f"the order was {what} but could not be read: {exc.reason}", broker=SLUG
            ) from exc

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """``POST /openapi/trade/stock/order/replace``: in place, the id stays."""
        self._ensure_confirmed()
        if changes.is_empty():
            return await self.get_order(account_ref, broker_order_id)
        body = {
            "account_id": account_ref,
            "modify_orders": [mapping.changes_to_wire(broker_order_id, changes)],
        }
        await self._trade.request("POST", "/openapi/trade/stock/order/replace", json=body)
        return await self._read_after_write(account_ref, broker_order_id, "changed")

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        """Cancels work with an unconfirmed token too: reducing risk is never refused here."""
        await self._trade.request(
            "POST",
            "/openapi/trade/stock/order/cancel",
            json={"account_id": account_ref, "client_order_id": broker_order_id},
        )
        current = await self._read_after_write(account_ref, broker_order_id, "cancelled")
        if current.status in (OrderStatus.accepted, OrderStatus.partially_filled):
            return dataclasses.replace(current, status=OrderStatus.pending_cancel)
        return current

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        body = _loads(
            await self._query.request(
                "GET",
                "/openapi/trade/order/detail",
                params={"account_id": account_ref, "client_order_id": broker_order_id},
            )
        )
        return mapping.order_from_wire(body)

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        try:
            return await self.get_order(
                account_ref, mapping.client_order_id_to_wire(client_order_id)
            )
        except errors.OrderNotFound:
            return None

    async def _pages(
        self, path: str, params: dict[str, str], limit: int
    ) -> AsyncIterator[list[Any]]:
        """Pages of combo wrappers, continued by ``last_client_order_id``."""
        query = {**params, "page_size": str(min(PAGE, max(1, limit)))}
        for _ in range(MAX_PAGES):
            body = _loads(await self._query.request("GET", path, params=query))
            if not isinstance(body, list):
                raise mapping.unknown("orders payload", type(body).__name__)
            yield body
            if len(body) < int(query["page_size"]) or not body:
                return
            last = body[-1].get("client_order_id") if isinstance(body[-1], dict) else None
            if not isinstance(last, str):
                return
            query = {**query, "last_client_order_id": last}

    async def _orders(self, path: str, params: dict[str, str], limit: int) -> list[BrokerOrder]:
        result: list[BrokerOrder] = []
        async for page in self._pages(path, params, limit):
            result.extend(mapping.order_from_wire(item) for item in page)
            if len(result) >= limit:
                break
        return result[:limit]

    def _history_params(
        self, account_ref: str, start: datetime | None, end: datetime | None
    ) -> dict[str, str]:
        start = start or self._now() - HISTORY_WINDOW
        params = {"account_id": account_ref, "start_date": start.strftime("%Y-%m-%d")}
        if end is not None:
            params["end_date"] = end.strftime("%Y-%m-%d")
        return params

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        if status == "open":
            return await self._orders(
                "/openapi/trade/order/open", {"account_id": account_ref}, limit
            )
        found = await self._orders(
            "/openapi/trade/order/history", self._history_params(account_ref, None, None), limit
        )
        if status == "closed":
            open_statuses = (
                OrderStatus.accepted,
                OrderStatus.partially_filled,
                OrderStatus.pending_cancel,
            )
            found = [o for o in found if o.status not in open_statuses]
        return found

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        found = await self._orders(
            "/openapi/trade/order/history",
            self._history_params(account_ref, start, end),
            PAGE * MAX_PAGES,
        )
        return [o for o in found if symbol is None or o.symbol == symbol]

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        """Trades from the order history (one per order at its average price): the v2 API
        reports no cash activity."""
        if type_ is not None and type_ not in ("buy", "sell"):
            return []
        trades = [
            t
            for t in (
                mapping.trade_from_order(o)
                for o in await self.order_history(account_ref, start, end, None)
            )
            if t is not None
        ]
        return [t for t in trades if type_ is None or t.type == type_]

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """``GET /openapi/market-data/stock/snapshot`` (needs a market-data subscription)."""
        if not symbols:
            return {}
        body = _loads(
            await self._query.request(
                "GET",
                "/openapi/market-data/stock/snapshot",
                params={"symbols": ",".join(symbols), "category": "US_STOCK"},
            )
        )
        if not isinstance(body, list):
            raise mapping.unknown("snapshot payload", type(body).__name__)
        now = self._now()
        quotes = [mapping.quote_from_snapshot(item, now) for item in body]
        return {q.symbol: q for q in quotes if q.symbol in symbols}

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return None  # gRPC trade events are not used: the reconciler polls open orders

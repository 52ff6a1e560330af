"""The Webull OpenAPI adapter (Tier A, HMAC-signed requests + app-confirmed access token).

API generation: the current one, as the official Python SDK 3.x calls it (PyPI
``webull-openapi-python-sdk`` 3.0.4, ``TradeClient.account_v2`` and ``order_v3``):
``/trading/accounts/list``, ``/trading/assets/balances/get``, ``/trading/assets/positions/
list``, ``/trading/orders/{place,preview,replace,cancel,get}``, ``/trading/orders/
open-orders/list`` and ``/trading/orders/historical-orders/list``, tokens at ``/auth/tokens/
{create,check}`` (refresh still ``/openapi/auth/token/refresh``), market data at
``/market-data/{stocks,options}/snapshots/list``, HMAC-SHA256 signatures (``auth``). The
older ``/openapi/account/...``, ``/openapi/trade/...`` paths are still shipped (the SDK's
deprecated ``OrderOperationV2``; the Java SDK's ``TradeClientV2``/``V3``), so the fake keeps
answering them; this adapter no longer sends them.

One adapter per connection, bound to the user's App Key/Secret and the access token issued
for them (``auth``). ``account_ref`` is the ``account_id`` every account and order call takes.

Quirks, with their doc pages:

* Every request is signed over its path, query and body (``auth.RequestSigner``); the
  access token goes in ``x-access-token``. A token still ``PENDING`` (not confirmed in the
  Webull app, https://developer.webull.com/apis/docs/authentication/token) is refused for
  every order write before anything is sent.
* ``x-version`` picks the protocol of a path: ``v3`` everywhere (the 3.x SDK's requests),
  but ``v2`` on the two order lists, whose "legacy pagination protocol" (``page_size`` +
  ``last_client_order_id``, a JSON list of combos) the 3.x ``get_order_open`` /
  ``get_order_history`` still use ("The x-version header distinguishes the legacy and new
  pagination protocols for this path", ``order_operation_v3.py``).
* Orders are found, replaced and cancelled by ``client_order_id``, so that is the
  ``broker_order_id`` (``mapping``). Replace changes the order in place: same id afterwards;
  an option order's replace names its legs by their ``id`` (3.x sample "replace for Webull
  US").
* Writes answer only ``{"client_order_id", "order_id"}``: the order is read back.
* Options (``options``): single- and multi-leg orders through the same order endpoints,
  legs decomposed, ``option_strategy`` inferred from the legs; no chain or expiration
  endpoint exists (``capabilities.options.chain`` unsupported); quotes of known contracts
  from the option snapshot.
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
    OptionCapabilities,
    OrderChanges,
    OrderListFilter,
    OrderPreview,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    PriceEffect,
    Quote,
    Support,
    TimeInForce,
    Transaction,
    is_option_symbol,
)
from app.brokers.http import BrokerClient, HttpPool
from app.brokers.market_data.polling import PollingMarketDataSession, polling_capabilities
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import RowList, read_rows
from app.brokers.webull import auth, mapping, options
from app.brokers.webull.mapping import SLUG
from app.config import Settings
from app.security.credentials import Credentials

N, U = Support.native, Support.unsupported

WEBULL_CAPABILITIES = Capabilities(
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: N,  # single-stock options (index options excluded)
        # Crypto pairs (https://developer.webull.com/apis/docs/trade-api/crypto; 3.x sample
        # "Crypto Order Example": symbol BTCUSD, instrument_type CRYPTO) in the user's crypto
        # account; the gateway's BTC-USD form both ways (``mapping``).
        AssetClass.crypto: N,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),
    time_in_force={
        TimeInForce.day: N,
        TimeInForce.gtc: N,
        TimeInForce.ioc: N,
        TimeInForce.fok: U,
    },
    # Fractional quantities: crypto by quantity; stocks by amount only (``notional``,
    # entrust_type AMOUNT): a fractional stock quantity is refused before any request.
    fractional=N,
    extended_hours=N,  # support_trading_session ALL
    short_selling=N,  # side SHORT (webull/trade/common/order_side.py)
    multi_leg=N,
    modify=N,
    order_stream=U,  # polled by the reconciler's open-order sweep
    client_order_ids=N,
    options=OptionCapabilities(
        chain=U,  # no chain or expiration endpoint in the SDK or the docs
        expirations=U,
        max_legs=options.MAX_LEGS,
        # Limit only, day or GTC: every official option example is a limit order, and the
        # docs disagree on MARKET for options (docs/reference notes), so it is not offered.
        combo_order_types=frozenset({OrderType.limit}),
        combo_time_in_force=frozenset({TimeInForce.day, TimeInForce.gtc}),
        combo_price_effects=frozenset({PriceEffect.debit, PriceEffect.credit}),  # side BUY/SELL
        single_order_types=frozenset({OrderType.limit}),
        single_time_in_force=frozenset({TimeInForce.day, TimeInForce.gtc}),
        greeks=U,
    ),
    preview=N,  # POST /trading/orders/preview
    notional=N,  # entrust_type AMOUNT + total_cash_amount, market orders
    notional_limit=U,
    # Webull pushes quotes over MQTT/gRPC, not reachable here: snapshots are polled every
    # 10 s instead, at most 3 calls (stocks, crypto, options of at most 20), 18 of the 60
    # reads a minute the query pacer allows, shared with the order sweep
    # (https://developer.webull.com/apis/llms.txt, "Rate Limits").
    market_data=polling_capabilities(10.0, max_symbols=20),
)

PAGE = 100
MAX_PAGES = 20
HISTORY_WINDOW = timedelta(days=30)
VERSION = {"x-version": "v3"}  # the 3.x SDK's ``version='v3'``
LEGACY_PAGES = {"x-version": "v2"}  # the order lists' legacy pagination protocol
OPTION_SNAPSHOT_BATCH = 20  # "up to 20 symbols" (get_option_snapshot_request.py)


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
                headers=extra.get("headers", VERSION),
                bucket=self._pool.bucket(
                    f"{SLUG}-{bucket_name}", key, rate=rate, capacity=capacity
                ),
                classifier=mapping.classify,
                signer=extra.get("signer", signer),
            )

        self._trade = client("trade", 600 / 60.0, 10)
        # Placements carry a ``category`` header (market + "_" + instrument type) as the 3.x
        # SDK adds it (``place_order_request.py`` ``add_custom_headers_from_order``); it is not
        # signed. One client per category, all on the one order pacer.
        self._placers = {
            category: client("trade", 600 / 60.0, 10, headers={**VERSION, "category": category})
            for category in mapping.CATEGORIES
        }
        self._query = client("query", settings.webull_queries_per_second, 2)
        self._lists = client("query", settings.webull_queries_per_second, 2, headers=LEGACY_PAGES)
        self._token = client(
            "token", 10 / 30.0, 10, signer=auth.signer(credentials, with_access_token=False)
        )

    def __repr__(self) -> str:
        return f"WebullAdapter(base_url={self._base!r})"

    # --- the access token ------------------------------------------------------------

    async def _token_call(self, path: str, body: dict[str, str]) -> tuple[str, str, str]:
        return mapping.token_from_wire(_loads(await self._token.request("POST", path, json=body)))

    async def create_token(self) -> Credentials:
        """``POST /auth/tokens/create``: a new token, ``PENDING`` until the user enters
        the SMS code in the Webull app (``NORMAL`` at once without two-factor auth)."""
        token, expires, status = await self._token_call("/auth/tokens/create", {})
        return auth.with_token(self._credentials, token, status, expires)

    async def check_token(self) -> Credentials:
        """``POST /auth/tokens/check``: the stored token's status now."""
        current = self._credentials.get(auth.ACCESS_TOKEN)
        if not current:
            raise errors.AuthenticationFailed("no Webull access token to check", broker=SLUG)
        token, expires, status = await self._token_call("/auth/tokens/check", {"token": current})
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
        """``GET /trading/accounts/list``."""
        body = _loads(await self._query.request("GET", "/trading/accounts/list"))
        if not isinstance(body, list):
            raise mapping.unknown("account list payload", type(body).__name__)
        return read_rows(
            body,
            _account_from_wire,
            broker=SLUG,
            kind="accounts",
            row_id=lambda row: row.get("account_id"),
        )

    async def get_balances(self, account_ref: str) -> Balances:
        body = _loads(
            await self._query.request(
                "GET", "/trading/assets/balances/get", params={"account_id": account_ref}
            )
        )
        return mapping.balances_from_wire(body, self._now())

    async def get_positions(self, account_ref: str) -> list[Position]:
        """``GET /trading/assets/positions/list``: an option strategy row gives one position
        per leg."""
        body = _loads(
            await self._query.request(
                "GET", "/trading/assets/positions/list", params={"account_id": account_ref}
            )
        )
        if not isinstance(body, list):
            raise mapping.unknown("positions payload", type(body).__name__)
        now = self._now()
        rows = read_rows(
            body,
            lambda row: mapping.positions_from_wire(row, now),
            broker=SLUG,
            kind="positions",
            row_id=lambda row: row.get("position_id"),
        )
        result: RowList[Position] = RowList(p for group in rows for p in group)
        result.skipped = rows.skipped
        return result

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        return next((p for p in await self.get_positions(account_ref) if p.symbol == symbol), None)

    async def check_symbol(self, symbol: str) -> None:
        """``GET /openapi/instrument/stock/list?symbols=&category=US_STOCK`` (the 3.x SDK's
        ``get_instruments_request.py`` keeps this path); an option contract by its
        underlying."""
        if is_option_symbol(symbol):
            from app.brokers.base import OptionContract

            symbol = OptionContract.parse(symbol).underlying
        memo_key = ("webull-instrument", self._base, symbol)
        if self._pool.recall(memo_key) is True:
            return
        # Crypto: ``/openapi/instrument/crypto/list`` (3.x ``get_crypto_instruments_request.py``,
        # symbols such as ``BTCUSD``, category ``US_CRYPTO``).
        crypto = mapping.is_crypto_symbol(symbol)
        wire = mapping.crypto_symbol_to_wire(symbol) if crypto else symbol
        body = _loads(
            await self._query.request(
                "GET",
                "/openapi/instrument/crypto/list" if crypto else "/openapi/instrument/stock/list",
                params={"symbols": wire, "category": "US_CRYPTO" if crypto else "US_STOCK"},
            )
        )
        if not isinstance(body, list):
            raise mapping.unknown("instrument list payload", type(body).__name__)
        if not any(isinstance(i, dict) and i.get("symbol") == wire for i in body):
            raise errors.UnknownSymbol(f"Webull does not list {symbol}", broker=SLUG)
        self._pool.remember(memo_key, True, 3600.0)

    # --- orders ----------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        self._ensure_confirmed()
        entry = mapping.order_to_wire(order)
        body = {"account_id": account_ref, "new_orders": [entry]}
        placer = self._placers[mapping.category(entry)]
        try:
            answer = await placer.request("POST", "/trading/orders/place", json=body)
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

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        """``POST /trading/orders/preview`` with the ``new_orders`` a placement would send."""
        body = {"account_id": account_ref, "new_orders": [mapping.order_to_wire(order)]}
        try:
            answer = await self._trade.request("POST", "/trading/orders/preview", json=body)
        except errors.Rejected as exc:
            if isinstance(exc, errors.UnsupportedOrder):
                raise
            return dataclasses.replace(
                mapping.preview_from_wire({"estimated_cost": "0"}, order),
                rejections=(exc.reason,),
            )
        return mapping.preview_from_wire(_loads(answer), order)

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """``POST /trading/orders/replace``: in place, the id stays. An option order's new
        quantity is sent per leg too, each leg by its ``id``."""
        self._ensure_confirmed()
        if changes.is_empty():
            return await self.get_order(account_ref, broker_order_id)
        entry = mapping.changes_to_wire(broker_order_id, changes)
        if changes.quantity is not None:
            detail = await self._detail(account_ref, broker_order_id)
            legs = mapping.order_item(detail).get("legs")
            if isinstance(legs, list) and legs:
                entry["legs"] = options.replace_legs(mapping.order_item(detail), changes.quantity)
        body = {"account_id": account_ref, "modify_orders": [entry]}
        await self._trade.request("POST", "/trading/orders/replace", json=body)
        return await self._read_after_write(account_ref, broker_order_id, "changed")

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        """Cancels work with an unconfirmed token too: reducing risk is never refused here."""
        await self._trade.request(
            "POST",
            "/trading/orders/cancel",
            json={"account_id": account_ref, "client_order_id": broker_order_id},
        )
        current = await self._read_after_write(account_ref, broker_order_id, "cancelled")
        if current.status in (OrderStatus.accepted, OrderStatus.partially_filled):
            return dataclasses.replace(current, status=OrderStatus.pending_cancel)
        return current

    async def _detail(self, account_ref: str, broker_order_id: str) -> Any:
        return _loads(
            await self._query.request(
                "GET",
                "/trading/orders/get",
                params={"account_id": account_ref, "client_order_id": broker_order_id},
            )
        )

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        """``GET /trading/orders/get?client_order_id=``."""
        return mapping.order_from_wire(await self._detail(account_ref, broker_order_id))

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
            body = _loads(await self._lists.request("GET", path, params=query))
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
        result: RowList[BrokerOrder] = RowList()
        async for page in self._pages(path, params, limit):
            rows = read_rows(
                page,
                mapping.order_from_wire,
                broker=SLUG,
                kind="orders",
                row_id=lambda row: row.get("client_order_id"),
            )
            result.extend(rows)
            result.skipped += rows.skipped
            if len(result) >= limit:
                break
        del result[limit:]
        return result

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
                "/trading/orders/open-orders/list", {"account_id": account_ref}, limit
            )
        found = await self._orders(
            "/trading/orders/historical-orders/list",
            self._history_params(account_ref, None, None),
            limit,
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
            "/trading/orders/historical-orders/list",
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
        """Stocks from ``GET /market-data/stocks/snapshots/list``, option contracts from
        ``GET /market-data/options/snapshots/list`` (category ``US_OPTION``, at most 20 a
        call); both need a market-data subscription."""
        if not symbols:
            return {}
        option_symbols = [s for s in symbols if is_option_symbol(s)]
        cryptos = [s for s in symbols if mapping.is_crypto_symbol(s)]
        stocks = [s for s in symbols if not is_option_symbol(s) and s not in cryptos]
        now = self._now()
        result: dict[str, Quote] = {}
        if stocks:
            body = _loads(
                await self._query.request(
                    "GET",
                    "/market-data/stocks/snapshots/list",
                    params={"symbols": ",".join(stocks), "category": "US_STOCK"},
                )
            )
            if not isinstance(body, list):
                raise mapping.unknown("snapshot payload", type(body).__name__)
            quotes = [mapping.quote_from_snapshot(item, now) for item in body]
            result.update({q.symbol: q for q in quotes if q.symbol in stocks})
        if cryptos:
            # ``/market-data/crypto/snapshots/list`` (3.x ``get_crypto_snapshot_request.py``).
            body = _loads(
                await self._query.request(
                    "GET",
                    "/market-data/crypto/snapshots/list",
                    params={
                        "symbols": ",".join(mapping.crypto_symbol_to_wire(s) for s in cryptos),
                        "category": "US_CRYPTO",
                    },
                )
            )
            if not isinstance(body, list):
                raise mapping.unknown("crypto snapshot payload", type(body).__name__)
            for item in body:
                quote = mapping.quote_from_snapshot(item, now)
                pair = mapping.crypto_symbol_from_wire(quote.symbol)
                if pair in cryptos:
                    result[pair] = dataclasses.replace(quote, symbol=pair)
        if option_symbols:
            from app.brokers.base import OptionContract

            wanted = {OptionContract.parse(s).symbol: s for s in option_symbols}
            names = list(wanted)
            for i in range(0, len(names), OPTION_SNAPSHOT_BATCH):
                batch = names[i : i + OPTION_SNAPSHOT_BATCH]
                body = _loads(
                    await self._query.request(
                        "GET",
                        "/market-data/options/snapshots/list",
                        params={"symbols": ",".join(batch), "category": "US_OPTION"},
                    )
                )
                if not isinstance(body, list):
                    raise mapping.unknown("option snapshot payload", type(body).__name__)
                for item in body:
                    quote = mapping.option_quote_from_snapshot(item, now)
                    if quote.symbol in wanted:
                        result[wanted[quote.symbol]] = quote
        return result

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return None  # gRPC trade events are not used: the reconciler polls open orders

    def market_data_session(self) -> PollingMarketDataSession:
        """Quote snapshots polled through ``get_quotes`` (``capabilities.market_data``)."""
        return PollingMarketDataSession(self)


def _account_from_wire(item: object) -> BrokerAccount:
    """One row of ``/trading/accounts/list`` (Java SDK ``trade/response/v3/Account.java``)."""
    if not isinstance(item, dict) or not isinstance(item.get("account_id"), str):
        raise mapping.unknown("account", type(item).__name__)
    number = str(item.get("account_number") or item["account_id"])
    masked = "****" + number[-4:] if len(number) > 4 else "****"
    label = item.get("account_label") or item.get("account_type") or "Account"
    return BrokerAccount(
        broker_account_id=item["account_id"],
        name=f"Webull {label} {masked}",
        number_masked=masked,
    )

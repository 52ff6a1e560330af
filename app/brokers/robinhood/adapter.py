"""The Robinhood Crypto Trading API adapter (Tier A, API key + Ed25519-signed requests).

One adapter per connection, bound to that connection's decrypted key. A key sees exactly one
crypto account (``GET /api/v1/crypto/trading/accounts/`` answers one object), so
``account_ref`` is its ``account_number`` and is not sent on the wire. Robinhood equities and
options have no official API and are not offered here (no password scraping, ever): they
are reachable only through an aggregator.

Quirks, with their doc pages (https://docs.robinhood.com/crypto/trading/):

* Every request is signed (``auth.RequestSigner``) over the exact path, query and body sent;
  ``app.brokers.http.BrokerClient`` builds the request first and signs that.
* ``client_order_id`` must be a UUID ("Place New Crypto Order"); ``mapping`` maps ours to one
  and back exactly.
* There is no replace: ``modify_order`` raises ``NotSupported`` (capabilities say so).
* Cancel (``POST .../orders/{id}/cancel/``) answers 200 ``text/plain`` "Cancel request was
  submitted for order {id}": the order's state is read afterwards, and an order still
  ``open`` then is reported ``pending_cancel``.
* No order stream: open orders are polled. The reconciler's open-order sweep
  (``app.services.reconciliation``, ``_SWEEPS["open"]``) calls ``get_order`` for every
  submitted/accepted/partially filled order not updated for
  ``reconcile_unknown_after_seconds``, every ``reconcile_interval_seconds``.
* The orders list has no ``client_order_id`` filter ("Get Crypto Orders" query parameters),
  so ``find_order_by_client_id`` pages through recently created orders.
* Holdings carry no cost basis (``Holding``: account_number, asset_code, total_quantity,
  quantity_available_for_trading): the average cost is replayed from the account's fills.
* Rate limit: 100 requests per minute per account, bursts of 300 (token bucket, "Rate
  Limiting"); ``settings.robinhood_requests_per_minute`` / ``robinhood_burst``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

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
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Support,
    TimeInForce,
    Transaction,
)
from app.brokers.http import HttpPool
from app.brokers.market_data.polling import PollingMarketDataSession, polling_capabilities
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.robinhood import auth, mapping
from app.brokers.robinhood.mapping import SLUG
from app.brokers.rows import RowList, read_rows
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

N, U = Support.native, Support.unsupported

ROBINHOOD_CAPABILITIES = Capabilities(
    asset_classes={
        AssetClass.equity: U,  # no official equities API: only through an aggregator
        # Robinhood options exist only on its private API (never used): option orders are
        # refused by the pre-trade gate (``unsupported_order``); ``options`` is NO_OPTIONS.
        AssetClass.option: U,
        AssetClass.crypto: N,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),  # stop is Robinhood's stop_loss
    # Order configs take time_in_force "gtc" (docs' samples); market orders take none.
    time_in_force={
        TimeInForce.gtc: N,
        TimeInForce.day: U,
        TimeInForce.ioc: U,
        TimeInForce.fok: U,
    },
    fractional=N,
    extended_hours=U,
    short_selling=U,
    multi_leg=U,
    modify=U,
    order_stream=U,  # polled by the reconciler's open-order sweep
    client_order_ids=N,
    # Dollar amounts are ``quote_amount`` of limit, stop-loss and stop-limit configs only;
    # the market config takes ``asset_quantity`` alone ("Place New Crypto Order").
    notional=U,
    notional_limit=N,
    # No market stream: quotes by polling best_bid_ask (all symbols in one call) every 5 s,
    # 12 of the account's 100 requests a minute, shared with orders
    # (https://docs.robinhood.com/crypto/trading/, "Rate Limiting").
    market_data=polling_capabilities(5.0, max_symbols=20),
)

BASE = "/api/v1/crypto"
ORDERS = f"{BASE}/trading/orders/"
PAGE = 100
MAX_PAGES = 20  # bounds every paged read (2,000 rows)
CLIENT_ID_WINDOW = timedelta(days=7)  # how far back find_order_by_client_id looks
PAIR_TTL = 3600.0  # seconds a tradable trading pair is trusted


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response)


class RobinhoodAdapter(PooledAdapter):
    slug = SLUG
    capabilities = ROBINHOOD_CAPABILITIES

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        signer = auth.signer(credentials)
        assert credentials is not None  # auth.signer refused None
        bucket = self._pacer(
            auth.bucket_key(credentials),
            per_minute=settings.robinhood_requests_per_minute,
            capacity=settings.robinhood_burst,
        )
        self._base = settings.robinhood_base_url.rstrip("/")
        self._client = self._broker_client(
            self._base,
            headers={"Accept": "application/json"},
            bucket=bucket,
            classifier=mapping.classify,
            signer=signer,
        )

    def __repr__(self) -> str:
        return f"RobinhoodAdapter(base_url={self._base!r})"

    # --- plumbing --------------------------------------------------------------------

    def _next_target(self, next_url: object) -> str | None:
        """The ``next`` page as a request target on our own host (never another host: the
        request would carry our signature there)."""
        if not next_url:
            return None
        if not isinstance(next_url, str):
            raise mapping.unknown("next page", next_url)
        parts, base = urlsplit(next_url), urlsplit(self._base)
        if parts.netloc and (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise mapping.unknown("next page host", parts.netloc)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    async def _pages(
        self, path: str, params: list[tuple[str, str]], max_pages: int = MAX_PAGES
    ) -> AsyncIterator[list[Any]]:
        """Each page's ``results``, following ``next`` (cursor pagination, docs: Pagination)."""
        target: str | None = path
        query: list[tuple[str, str]] | None = params
        for _ in range(max_pages):
            assert target is not None
            body = _loads(await self._client.request("GET", target, params=query))
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise mapping.unknown("page payload", type(body).__name__)
            yield body["results"]
            target, query = self._next_target(body.get("next")), None
            if target is None:
                return

    # --- account ---------------------------------------------------------------------

    async def get_account(self) -> dict[str, Any]:
        """``GET .../accounts/``: also how a new key is validated before it is stored."""
        return mapping.account_from_wire(
            _loads(await self._client.request("GET", f"{BASE}/trading/accounts/"))
        )

    async def list_accounts(self) -> list[BrokerAccount]:
        body = await self.get_account()
        number = body["account_number"]
        masked = "****" + number[-4:] if len(number) > 4 else "****"
        return [
            BrokerAccount(
                broker_account_id=number,
                name=f"Robinhood Crypto {masked}",
                number_masked=masked,
                currency=str(body.get("buying_power_currency") or "USD"),
            )
        ]

    async def _holdings(
        self, asset_codes: list[str] | None = None
    ) -> tuple[dict[str, Decimal], int]:
        """Asset code -> total quantity, for holdings that are not empty; and how many
        holdings were left out as unrepresentable."""
        params = [("asset_code", code) for code in asset_codes or []]
        params.append(("limit", str(PAGE)))
        found: dict[str, Decimal] = {}
        skipped = 0
        async for page in self._pages(f"{BASE}/trading/holdings/", params):
            rows = read_rows(
                page,
                mapping.holding_quantity,
                broker=SLUG,
                kind="positions",
                row_id=lambda r: r.get("asset_code"),
            )
            skipped += rows.skipped
            for code, quantity in rows:
                if quantity:
                    found[code] = quantity
        return found, skipped

    async def get_balances(self, account_ref: str) -> Balances:
        account = await self.get_account()
        holdings, _skipped = await self._holdings()
        value = Decimal(0)
        if holdings:
            symbols = [mapping.symbol_for_asset(code) for code in holdings]
            quotes = await self.get_quotes(symbols)
            for code, quantity in holdings.items():
                quote = quotes.get(mapping.symbol_for_asset(code))
                if quote is None:
                    raise mapping.unknown("holding without a price", code)
                value += quantity * quote.last
        return mapping.balances_from_account(account, value, self._now())

    async def _positions(self, asset_codes: list[str] | None) -> RowList[Position]:
        holdings, skipped = await self._holdings(asset_codes)
        result: RowList[Position] = RowList()
        result.skipped = skipped
        if not holdings:
            return result
        symbols = [mapping.symbol_for_asset(code) for code in holdings]
        quotes = await self.get_quotes(symbols)
        costs = await self._average_costs(set(symbols))
        now = self._now()
        for code, quantity in sorted(holdings.items()):
            symbol = mapping.symbol_for_asset(code)
            quote = quotes.get(symbol)
            if quote is None:
                raise mapping.unknown("holding without a price", code)
            replayed = costs.get(symbol)
            if replayed is not None and replayed[0] == quantity:
                avg_cost = replayed[1]
            else:
                # Part of the holding came from outside this API's fills (a transfer, trades
                # older than the history read): its cost is not knowable here.
                log.warning(
                    "robinhood holding not explained by its fills; cost shown at market",
                    extra={"broker": SLUG, "symbol": symbol},
                )
                avg_cost = quote.last
            result.append(mapping.position(symbol, quantity, avg_cost, quote.last, now))
        return result

    async def get_positions(self, account_ref: str) -> list[Position]:
        return await self._positions(None)

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        found = await self._positions([mapping.asset_code(symbol)])
        return next((p for p in found if p.symbol == symbol), None)

    async def _average_costs(self, symbols: set[str]) -> dict[str, tuple[Decimal, Decimal]]:
        """Symbol -> (quantity, average cost) replayed from the fills, oldest first."""
        fills: list[tuple[datetime, str, OrderSide, Decimal, Decimal]] = []

        def order_fills(item: Any) -> list[tuple[datetime, str, OrderSide, Decimal, Decimal]]:
            if not isinstance(item, dict) or item.get("symbol") not in symbols:
                return []
            order = mapping.order_from_wire(item)
            return [
                (fill.occurred_at, order.symbol, order.side, fill.quantity, fill.price)
                for fill in mapping.fills_from_wire(item)
            ]

        async for page in self._pages(ORDERS, [("limit", str(PAGE))]):
            for found in read_rows(page, order_fills, broker=SLUG, kind="orders"):
                fills.extend(found)
        books: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (quantity, cost)
        for _at, symbol, side, quantity, price in sorted(fills, key=lambda f: f[0]):
            held, cost = books.get(symbol, (Decimal(0), Decimal(0)))
            if side is OrderSide.buy:
                held, cost = held + quantity, cost + quantity * price
            elif held:
                cost -= cost * min(quantity, held) / held
                held -= quantity
            books[symbol] = (held, cost)
        return {s: (q, c / q) for s, (q, c) in books.items() if q > 0}

    async def check_symbol(self, symbol: str) -> None:
        """``GET .../trading_pairs/?symbol=``: an unlisted pair is unknown, an untradable
        one unsupported. A tradable answer is remembered for ``PAIR_TTL``."""
        memo_key = ("robinhood-pair", self._base, symbol)
        if self._pool.recall(memo_key) is True:
            return
        if not symbol.isprintable() or "/" in symbol:
            raise errors.UnknownSymbol(f"Robinhood does not list {symbol}", broker=SLUG)
        pairs: list[Any] = []
        try:
            async for page in self._pages(
                f"{BASE}/trading/trading_pairs/", [("symbol", symbol)], max_pages=1
            ):
                pairs.extend(page)
        except (errors.OrderNotFound, errors.UnknownSymbol) as exc:
            raise errors.UnknownSymbol(f"Robinhood does not list {symbol}", broker=SLUG) from exc
        pair = next((p for p in pairs if isinstance(p, dict) and p.get("symbol") == symbol), None)
        if pair is None:
            raise errors.UnknownSymbol(f"Robinhood does not list {symbol}", broker=SLUG)
        if pair.get("status") != "tradable":
            raise errors.UnsupportedOrder(f"{symbol} is not tradable at Robinhood", broker=SLUG)
        self._pool.remember(memo_key, True, PAIR_TTL)

    # --- orders ----------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        body = mapping.order_to_wire(order)
        try:
            response = await self._client.request("POST", ORDERS, json=body)
        except mapping.DuplicateClientOrderId as exc:
            # Our client_order_id is refused: if an order carries it, that order is this one
            # (idempotent); if it cannot be read now, its state is unknown, never rejected.
            try:
                found = await self.find_order_by_client_id(account_ref, order.client_order_id)
            except errors.BrokerError as lookup:
                raise errors.OutcomeUnknown(
                    f"Robinhood refused the client order id and the order could not be read: "
                    f"{lookup.reason}",
                    broker=SLUG,
                ) from lookup
            if found is None:
                raise errors.Rejected(exc.reason, broker=SLUG) from exc
            return found
        return mapping.order_from_wire(_loads(response))

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        raise errors.NotSupported(
            "Robinhood crypto orders cannot be modified; cancel and place a new one",
            broker=SLUG,
        )

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        await self._client.request("POST", f"{ORDERS}{quote(broker_order_id, safe='')}/cancel/")
        try:
            current = await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError as exc:
            raise errors.OutcomeUnknown(
                f"the cancel was accepted but the order could not be read: {exc.reason}",
                broker=SLUG,
            ) from exc
        if current.status in (OrderStatus.accepted, OrderStatus.partially_filled):
            # "Cancel request was submitted": still open means the cancel is on its way.
            return dataclasses.replace(current, status=OrderStatus.pending_cancel)
        return current

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        response = await self._client.request("GET", f"{ORDERS}{quote(broker_order_id, safe='')}/")
        return mapping.order_from_wire(_loads(response))

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        wanted = mapping.client_order_id_to_wire(client_order_id)
        since = mapping.iso(self._now() - CLIENT_ID_WINDOW)
        async for page in self._pages(ORDERS, [("created_at_start", since), ("limit", str(PAGE))]):
            for item in page:
                if isinstance(item, dict) and item.get("client_order_id") == wanted:
                    return mapping.order_from_wire(item)
        return None

    async def _orders(
        self, params: list[tuple[str, str]], limit: int, keep: frozenset[str] | None = None
    ) -> RowList[BrokerOrder]:
        """Orders page by page; one the gateway cannot represent is skipped, logged with its
        id and counted (``app.brokers.rows``), never breaking the list."""
        result: RowList[BrokerOrder] = RowList()
        async for page in self._pages(ORDERS, [*params, ("limit", str(PAGE))]):
            wanted = [
                item
                for item in page
                if keep is None or not isinstance(item, dict) or item.get("state") in keep
            ]
            rows = read_rows(wanted, mapping.order_from_wire, broker=SLUG, kind="orders")
            result.skipped += rows.skipped
            result.extend(rows)
            if len(result) >= limit:
                del result[limit:]
                return result
        return result

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        limit = max(1, limit)
        if status == "open":
            found = await self._orders([("state", "open")], limit)
            partial = await self._orders([("state", "partially_filled")], limit)
            found.extend(partial)
            found.skipped += partial.skipped
        elif status == "closed":
            found = await self._orders([], limit, frozenset({"filled", "canceled", "failed"}))
        else:
            found = await self._orders([], limit)
        found.sort(key=lambda o: o.created_at, reverse=True)
        del found[limit:]
        return found

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        params: list[tuple[str, str]] = []
        if start is not None:
            params.append(("created_at_start", mapping.iso(start)))
        if end is not None:
            params.append(("created_at_end", mapping.iso(end)))
        if symbol is not None:
            params.append(("symbol", symbol))
        found = await self._orders(params, PAGE * MAX_PAGES)
        found.sort(key=lambda o: o.created_at, reverse=True)
        return found

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        """Trades only: the API reports no deposits, withdrawals or fees."""
        if type_ is not None and type_ not in ("buy", "sell"):
            return []
        params: list[tuple[str, str]] = [("limit", str(PAGE))]
        if start is not None:
            params.append(("updated_at_start", mapping.iso(start)))
        if end is not None:
            params.append(("created_at_end", mapping.iso(end)))
        found: list[Transaction] = []
        skipped = 0
        async for page in self._pages(ORDERS, params):
            rows = read_rows(page, mapping.trades_from_order, broker=SLUG, kind="transactions")
            skipped += rows.skipped
            for trades in rows:
                found.extend(trades)
        result: RowList[Transaction] = RowList(
            t
            for t in found
            if (start is None or t.occurred_at >= start)
            and (end is None or t.occurred_at <= end)
            and (type_ is None or t.type == type_)
        )
        result.sort(key=lambda t: t.occurred_at, reverse=True)
        result.skipped = skipped
        return result

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """``GET .../marketdata/best_bid_ask/?symbol=A&symbol=B`` (uppercase pairs)."""
        wanted = [s for s in symbols if s.isprintable() and "/" not in s]
        if not wanted:
            return {}
        try:
            body = _loads(
                await self._client.request(
                    "GET",
                    f"{BASE}/marketdata/best_bid_ask/",
                    params=[("symbol", s) for s in wanted],
                )
            )
        except errors.UnknownSymbol:
            return {}
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise mapping.unknown("best bid/ask payload", type(body).__name__)
        quotes = [mapping.quote_from_wire(item) for item in body["results"]]
        return {q.symbol: q for q in quotes if q.symbol in wanted}

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return None  # no push: the reconciler polls open orders

    def market_data_session(self) -> PollingMarketDataSession:
        """Quotes polled from ``best_bid_ask`` (``capabilities.market_data``)."""
        return PollingMarketDataSession(self)

"""The Coinbase Advanced Trade adapter (Tier A, CDP API key, per-request ES256/EdDSA JWT).

One adapter per connection, bound to that connection's decrypted key name and private key.
Coinbase "accounts" are per-currency wallets inside a portfolio; a CDP key belongs to one
portfolio, which is the gateway's account: ``account_ref`` is the wallets'
``retail_portfolio_id``. Orders are scoped by the key itself (no portfolio on the wire).

Quirks, with their doc pages (payload quirks are in ``mapping``):

* Every request is signed with its own JWT whose ``uri`` claim names the method, host and
  path (``auth``; https://docs.cdp.coinbase.com/coinbase-app/authentication-authorization/
  api-key-authentication).
* ``POST /orders`` answers 200 ``success: false`` for a refused order (``mapping.
  placed_order_id``) and only the new order's id on success; the order itself is read back
  with ``GET /orders/historical/{order_id}``.
* ``client_order_id`` is required (create-order reference). There is no lookup by it (the
  ``client_order_id`` query of get-order is deprecated), so ``find_order_by_client_id``
  scans the newest orders, page by page.
* Cancel is ``POST /orders/batch_cancel`` with one id; its per-order result is checked
  (``success: false`` with ``failure_reason``), and a refused cancel is explained by reading
  the order (already finished: ``OrderNotModifiable``; gone: ``OrderNotFound``).
* Edit (``POST /orders/edit``) changes a good-till-cancelled limit order in place, same id,
  and takes the new ``price`` and ``size`` together (edit-order reference: "Only limit order
  types, with time in force type of good-till-cancelled can be edited").
* Balances and positions come from the wallets (``GET /accounts``), valued at the best bid
  and ask (``GET /best_bid_ask``); the cost basis only exists in the portfolio breakdown
  (``GET /portfolios/{uuid}``).
* Fills are trades (``GET /orders/historical/fills``); deposits and withdrawals are only in
  the Coinbase App API (``GET /v2/accounts/{wallet uuid}/transactions``), which takes the same
  CDP key and JWT (https://docs.cdp.coinbase.com/coinbase-app/track-apis/transactions).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    Bar,
    BarInterval,
    BrokerAccount,
    BrokerOrder,
    Capabilities,
    OrderChanges,
    OrderListFilter,
    OrderPreview,
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
from app.brokers.coinbase import auth, mapping
from app.brokers.coinbase.mapping import CASH_CURRENCY, SLUG
from app.brokers.coinbase.market_data import COINBASE_MARKET_DATA, CoinbaseMarketSession
from app.brokers.coinbase.market_data import get_bars as _get_bars
from app.brokers.http import BrokerClient, HttpPool
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import RowList, read_rows
from app.brokers.symbols import asset_class_of
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

N, U = Support.native, Support.unsupported

COINBASE_CAPABILITIES = Capabilities(
    asset_classes={
        AssetClass.equity: U,
        # Advanced Trade has no options API: option orders are refused by the pre-trade
        # gate (``unsupported_order``) before any request; ``options`` stays NO_OPTIONS.
        AssetClass.option: U,
        AssetClass.crypto: N,
        AssetClass.mutual_fund: U,
    },
    # No stop-market configuration exists; stops are stop-limit orders.
    order_types={
        OrderType.market: N,
        OrderType.limit: N,
        OrderType.stop: U,
        OrderType.stop_limit: N,
    },
    # Crypto trades around the clock: there is no "day". Which type takes which time in
    # force is narrower still (``mapping.ORDER_CONFIGURATIONS``; market orders are IOC).
    time_in_force={
        TimeInForce.day: U,
        TimeInForce.gtc: N,
        TimeInForce.ioc: N,
        TimeInForce.fok: N,
    },
    fractional=N,  # sizes are decimal amounts of the base currency
    extended_hours=U,  # no sessions to extend
    short_selling=U,  # spot: a sell needs the coins
    multi_leg=U,
    modify=N,  # good-till-cancelled limit orders: price and size, in place
    order_stream=N,
    # POST /orders/preview (preview-orders reference): Coinbase's own preview.
    preview=N,
    # Market orders by quote_size (create-order reference; the SDK README's first example).
    notional=N,
    market_data=COINBASE_MARKET_DATA,  # market WebSocket and REST candles (market_data.py)
)

PREFIX = "/api/v3/brokerage"
USER_AGENT = "brokerage-gateway/0.1"
PAGE = 250  # accounts: "limit" maximum 250 (list-accounts reference); used for orders/fills
MAX_PAGES = 8  # pages read by one lookup, history or transactions call
PRODUCT_TTL = 3600.0  # seconds a tradable product lookup is trusted
_FINISHED = frozenset(
    {
        OrderStatus.filled,
        OrderStatus.canceled,
        OrderStatus.expired,
        OrderStatus.rejected,
        OrderStatus.replaced,
    }
)
# Edit failure reasons (edit-order reference, EditOrderFailureReason) that mean the order
# is not in a state that can change.
_NOT_EDITABLE = frozenset(
    {
        "ONLY_OPEN_ORDERS_CAN_BE_EDITED",
        "CANNOT_EDIT_ORDER_PENDING_CANCEL",
        "ORDER_IS_ALREADY_BEING_REPLACED",
        "CANNOT_EDIT_TRIGGERED_ORDER",
    }
)


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response)


def _masked(number: str) -> str:
    return "****" + number[-4:] if len(number) > 4 else "****"


class CoinbaseAdapter(PooledAdapter):
    slug = SLUG
    capabilities = COINBASE_CAPABILITIES

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        self._credentials = auth.require(credentials)
        self._signer = auth.Signer(self._credentials)
        self._host = auth.jwt_host(settings.coinbase_base_url)
        rate = settings.coinbase_requests_per_second
        self._bucket = self._pool.bucket(
            SLUG, auth.bucket_key(self._credentials), rate=rate, capacity=max(1.0, rate)
        )

    def __repr__(self) -> str:
        return f"CoinbaseAdapter(base_url={self._settings.coinbase_base_url!r})"

    # --- transport ---------------------------------------------------------------------

    def _client(self, method: str, path: str) -> BrokerClient:
        """A client for one request: its JWT signs exactly this method and path."""
        token = self._signer.rest_jwt(method, self._host, path)
        return self._broker_client(
            self._settings.coinbase_base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            bucket=self._bucket,
            classifier=mapping.classify,
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """One request to ``path`` (already carrying its ``/api/v3/brokerage`` or ``/v2``
        prefix); the decoded JSON answer, or a BrokerError (``http``, ``mapping.classify``)."""
        client = self._client(method, path)
        response = await client.request(method, path, params=params, json=json)
        return _loads(response)

    @staticmethod
    def _order_path(order_id: str) -> str:
        return f"{PREFIX}/orders/historical/{quote(order_id, safe='')}"

    # --- accounts ----------------------------------------------------------------------

    async def _wallets(self) -> RowList[mapping.Wallet]:
        """Every active wallet the key sees (``GET /accounts``, page by page)."""
        wallets: RowList[mapping.Wallet] = RowList()
        cursor: str | None = None
        for _ in range(MAX_PAGES * 4):
            params: dict[str, Any] = {"limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            page = mapping.page_of(
                await self._call("GET", f"{PREFIX}/accounts", params=params), "accounts"
            )
            rows = read_rows(page.items, mapping.wallet_from_wire, broker=SLUG, kind="accounts")
            wallets.extend(rows)
            wallets.skipped += rows.skipped
            cursor = page.cursor
            if cursor is None:
                break
        return wallets

    async def _portfolio_wallets(self, account_ref: str) -> list[mapping.Wallet]:
        """The portfolio's wallets. A portfolio the key no longer sees (the key was
        re-scoped, the portfolio deleted) is refused rather than shown as empty."""
        wallets = [w for w in await self._wallets() if w.portfolio == account_ref]
        if not wallets:
            raise errors.Rejected(
                f"this Coinbase key no longer sees portfolio {_masked(account_ref)}",
                broker=SLUG,
            )
        return wallets

    async def list_accounts(self) -> list[BrokerAccount]:
        """One account per portfolio the key's wallets belong to (one for a CDP key).

        Also how a new key is validated before it is stored: a refused JWT is a 401 here.
        """
        wallets = await self._wallets()
        portfolios = list(dict.fromkeys(w.portfolio for w in wallets))
        accounts: RowList[BrokerAccount] = RowList(
            BrokerAccount(
                broker_account_id=portfolio,
                name=f"Coinbase {_masked(portfolio)}",
                number_masked=_masked(portfolio),
                currency=CASH_CURRENCY,
            )
            for portfolio in portfolios
        )
        accounts.skipped = wallets.skipped
        return accounts

    async def _mids(self, currencies: list[str]) -> dict[str, Decimal]:
        """Each currency's price in USD: the middle of its ``<CUR>-USD`` best bid and ask."""
        if not currencies:
            return {}
        body = await self._call(
            "GET",
            f"{PREFIX}/best_bid_ask",
            params={"product_ids": [f"{c}-{CASH_CURRENCY}" for c in currencies]},
        )
        result: dict[str, Decimal] = {}
        for product, book in mapping.books_from_wire(body).items():
            if book.mid is not None and mapping.quote_currency(product) == CASH_CURRENCY:
                result[mapping.base_currency(product)] = book.mid
        return result

    @staticmethod
    def _unpriced(wallets: list[mapping.Wallet], prices: dict[str, Decimal]) -> None:
        missing = sorted(w.currency for w in wallets if w.currency not in prices)
        if missing:
            log.warning(
                "coinbase holdings without a USD book are left out of values",
                extra={"broker": SLUG, "currencies": missing},
            )

    async def get_balances(self, account_ref: str) -> Balances:
        """Cash is the USD wallet (available plus held for open orders); buying power what
        is available; equity adds every other holding at its USD mid price."""
        wallets = await self._portfolio_wallets(account_ref)
        usd = [w for w in wallets if w.currency == CASH_CURRENCY]
        held = [w for w in wallets if w.currency != CASH_CURRENCY and w.total != 0]
        prices = await self._mids([w.currency for w in held])
        self._unpriced(held, prices)
        cash = sum((w.total for w in usd), Decimal(0))
        holdings = sum(
            (w.total * prices[w.currency] for w in held if w.currency in prices), Decimal(0)
        )
        return Balances(
            cash=cash,
            equity=cash + holdings,
            buying_power=sum((w.available for w in usd), Decimal(0)),
            currency=CASH_CURRENCY,
            as_of=self._now(),
        )

    async def get_positions(self, account_ref: str) -> list[Position]:
        wallets = await self._portfolio_wallets(account_ref)
        held = [w for w in wallets if w.currency != CASH_CURRENCY and w.total != 0]
        if not held:
            return []
        prices, breakdown = await asyncio.gather(
            self._mids([w.currency for w in held]),
            self._call("GET", f"{PREFIX}/portfolios/{quote(account_ref, safe='')}"),
        )
        self._unpriced(held, prices)
        basis = mapping.cost_basis_from_breakdown(breakdown)
        now = self._now()
        return read_rows(
            [w for w in held if w.currency in prices],
            lambda w: mapping.position_from(w, prices[w.currency], basis.get(w.currency), now),
            broker=SLUG,
            kind="positions",
            row_id=lambda w: w.uuid,
        )

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        wanted = mapping.to_product_id(symbol)
        for position in await self.get_positions(account_ref):
            if position.symbol == wanted:
                return position
        return None

    async def check_symbol(self, symbol: str) -> None:
        """``GET /products/{product_id}``: unknown, disabled, view- or cancel-only products
        are refused. A tradable answer is remembered for ``PRODUCT_TTL``."""
        if asset_class_of(symbol) is not AssetClass.crypto:
            raise errors.UnknownSymbol(
                f"Coinbase lists crypto pairs (BTC-USD), not {symbol}", broker=SLUG
            )
        product_id = mapping.to_product_id(symbol)
        memo_key = ("coinbase-product", self._settings.coinbase_base_url, product_id)
        if self._pool.recall(memo_key) is True:
            return
        try:
            body = await self._call("GET", f"{PREFIX}/products/{quote(product_id, safe='')}")
        except errors.OrderNotFound as exc:
            raise errors.UnknownSymbol(f"Coinbase does not list {symbol}", broker=SLUG) from exc
        except errors.Rejected as exc:
            # An unknown product id may be answered 400 INVALID_ARGUMENT (unconfirmed).
            raise errors.UnknownSymbol(
                f"Coinbase does not list {symbol}: {exc.reason}", broker=SLUG
            ) from exc
        if not isinstance(body, dict):
            raise mapping.unknown("product payload", type(body).__name__)
        tradable = (
            body.get("status") == "online"
            and body.get("trading_disabled") is not True
            and body.get("is_disabled") is not True
            and body.get("cancel_only") is not True
            and body.get("view_only") is not True
            and body.get("product_type") in (None, "SPOT")
        )
        if not tradable:
            raise errors.UnsupportedOrder(
                f"{symbol} is not open for trading at Coinbase", broker=SLUG
            )
        self._pool.remember(memo_key, True, PRODUCT_TTL)

    # --- orders ------------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        """``POST /orders``; the new order is then read back. A refusal inside the 200 is a
        Rejected; a combination Coinbase lacks is NotSupported before anything is sent."""
        body = mapping.order_to_wire(order)
        answer = await self._call("POST", f"{PREFIX}/orders", json=body)
        order_id = mapping.placed_order_id(answer)
        try:
            return await self.get_order(account_ref, order_id)
        except errors.BrokerError as exc:
            # Coinbase took the order; only its current state is unreadable right now.
            # It is reported as submitted (taken, not yet seen working) and reconciliation
            # reads it later. Never "rejected": it exists.
            log.warning(
                "coinbase accepted an order that could not be read back",
                extra={"broker": SLUG, "reason": exc.reason},
            )
            now = self._now()
            return BrokerOrder(
                broker_order_id=order_id,
                client_order_id=order.client_order_id,
                symbol=mapping.to_product_id(order.symbol),
                side=order.side,
                quantity=order.quantity,
                notional=order.notional,
                filled_quantity=Decimal(0),
                avg_fill_price=None,
                order_type=order.order_type,
                time_in_force=order.time_in_force,
                status=OrderStatus.submitted,
                limit_price=order.limit_price,
                stop_price=order.stop_price,
                created_at=now,
                updated_at=now,
            )

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        """``POST /orders/preview`` with the order's own body (less ``client_order_id``):
        Coinbase's ``order_total``, ``commission_total``, ``errs`` and ``warning``
        (https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/orders/
        preview-orders). Places nothing; refusals come back in ``errs`` (200)."""
        body = mapping.order_to_wire(order)
        del body["client_order_id"]
        answer = await self._call("POST", f"{PREFIX}/orders/preview", json=body)
        return mapping.preview_from_wire(answer, order.side)

    async def _raw_order(self, broker_order_id: str) -> dict[str, Any]:
        return mapping.order_of(await self._call("GET", self._order_path(broker_order_id)))

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        return mapping.order_from_wire(await self._raw_order(broker_order_id))

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        answer = await self._call(
            "POST", f"{PREFIX}/orders/batch_cancel", json={"order_ids": [broker_order_id]}
        )
        result = mapping.cancel_result(answer, broker_order_id)
        if result.success:
            try:
                return await self.get_order(account_ref, broker_order_id)
            except errors.BrokerError as exc:
                # The cancel was accepted; only its result is unknown.
                raise errors.OutcomeUnknown(
                    f"the cancel was accepted but the order could not be read: {exc.reason}",
                    broker=SLUG,
                ) from exc
        # Refused: the order's own state says why (finished, gone, or already cancelling).
        current = await self.get_order(account_ref, broker_order_id)
        if current.status in _FINISHED:
            raise errors.OrderNotModifiable(
                f"the order is already {current.status.value} ({result.failure_reason})",
                broker=SLUG,
            )
        if current.status is OrderStatus.pending_cancel:
            return current
        raise errors.Rejected(
            f"Coinbase refused the cancel ({result.failure_reason or 'no reason given'})",
            broker=SLUG,
        )

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """``POST /orders/edit``: a GTC limit order's price and/or size, in place (same id).

        Both are sent (the current value for the one not changing). Other changes are
        refused before the request: Coinbase cannot change a stop or a time in force.
        """
        if changes.is_empty():
            return await self.get_order(account_ref, broker_order_id)
        if changes.stop_price is not None or changes.time_in_force is not None:
            raise errors.UnsupportedOrder(
                "Coinbase changes only the limit price and the size of an order; cancel it "
                "and place a new one",
                broker=SLUG,
            )
        current = await self.get_order(account_ref, broker_order_id)
        if current.order_type is not OrderType.limit or current.time_in_force is not (
            TimeInForce.gtc
        ):
            raise errors.UnsupportedOrder(
                "Coinbase edits good-till-cancelled limit orders only", broker=SLUG
            )
        if current.status in _FINISHED:
            raise errors.OrderNotModifiable(
                f"the order is already {current.status.value}", broker=SLUG
            )
        price = changes.limit_price if changes.limit_price is not None else current.limit_price
        size = changes.quantity if changes.quantity is not None else current.quantity
        assert price is not None  # a limit order has one
        body = {
            "order_id": broker_order_id,
            "price": mapping.plain(price),
            "size": mapping.plain(size),
        }
        result = mapping.edit_result(await self._call("POST", f"{PREFIX}/orders/edit", json=body))
        if not result.success:
            reason = ", ".join(result.reasons) or "no reason given"
            if "ORDER_NOT_FOUND" in result.reasons:
                raise errors.OrderNotFound(
                    f"Coinbase does not know the order ({reason})", broker=SLUG
                )
            if _NOT_EDITABLE & set(result.reasons):
                raise errors.OrderNotModifiable(
                    f"Coinbase cannot edit the order ({reason})", broker=SLUG
                )
            if any("INSUFFICIENT" in r for r in result.reasons):
                raise errors.InsufficientFunds(f"Coinbase refused the edit ({reason})", broker=SLUG)
            raise errors.Rejected(f"Coinbase refused the edit ({reason})", broker=SLUG)
        try:
            return await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError as exc:
            raise errors.OutcomeUnknown(
                f"the edit was accepted but the order could not be read: {exc.reason}",
                broker=SLUG,
            ) from exc

    @staticmethod
    def _modelled(items: list[Any]) -> RowList[BrokerOrder]:
        """Each order the gateway can represent; one it cannot (a GTD, a bracket, a futures
        order placed in the Coinbase app, an unknown status) is skipped, logged with its
        ``order_id`` and counted (``app.brokers.rows``), never breaking the list."""
        return read_rows(items, mapping.order_from_wire, broker=SLUG, kind="orders")

    async def _order_pages(
        self, params: dict[str, Any], *, pages: int = MAX_PAGES
    ) -> AsyncIterator[list[Any]]:
        """``GET /orders/historical/batch`` (newest first), one page of raw orders at a time."""
        cursor: str | None = None
        for _ in range(pages):
            query = {**params, "limit": PAGE}
            if cursor:
                query["cursor"] = cursor
            page = mapping.page_of(
                await self._call("GET", f"{PREFIX}/orders/historical/batch", params=query),
                "orders",
            )
            yield page.items
            cursor = page.cursor
            if cursor is None:
                return

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        async for items in self._order_pages({}):
            for item in items:
                if isinstance(item, dict) and item.get("client_order_id") == client_order_id:
                    return mapping.order_from_wire(item)
        return None

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        limit = max(1, limit)
        params: dict[str, Any] = {}
        if status == "open":
            params["order_status"] = list(mapping.OPEN_WIRE_STATUSES)
        result: RowList[BrokerOrder] = RowList()
        async for items in self._order_pages(params):
            rows = self._modelled(items)
            result.skipped += rows.skipped
            for order in rows:
                if status == "closed" and order.status not in _FINISHED:
                    continue
                result.append(order)
            if len(result) >= limit:
                break
        del result[limit:]
        return result

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        params: dict[str, Any] = {}
        if start is not None:
            params["start_date"] = mapping.iso(start)
        if end is not None:
            params["end_date"] = mapping.iso(end)
        if symbol is not None:
            params["product_ids"] = [mapping.to_product_id(symbol)]
        result: RowList[BrokerOrder] = RowList()
        async for items in self._order_pages(params):
            rows = self._modelled(items)
            result.extend(rows)
            result.skipped += rows.skipped
        return result

    async def recent_orders(self, account_ref: str) -> list[BrokerOrder]:
        """After a stream gap: the newest page of orders in any state (no replay exists)."""
        async for items in self._order_pages({}, pages=1):
            return self._modelled(items)
        return []

    # --- transactions ------------------------------------------------------------------

    async def _fills(self, start: datetime | None, end: datetime | None) -> RowList[Transaction]:
        params: dict[str, Any] = {"limit": PAGE}
        if start is not None:
            params["start_sequence_timestamp"] = mapping.iso(start)
        if end is not None:
            params["end_sequence_timestamp"] = mapping.iso(end)
        result: RowList[Transaction] = RowList()
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            query = dict(params)
            if cursor:
                query["cursor"] = cursor
            page = mapping.page_of(
                await self._call("GET", f"{PREFIX}/orders/historical/fills", params=query),
                "fills",
            )
            rows = read_rows(
                page.items,
                mapping.transaction_from_fill,
                broker=SLUG,
                kind="transactions",
                row_id=lambda r: r.get("entry_id") or r.get("trade_id"),
            )
            result.extend(rows)
            result.skipped += rows.skipped
            cursor = page.cursor
            if cursor is None:
                break
        return result

    async def _cash_movements(self, account_ref: str) -> RowList[Transaction]:
        """Deposits and withdrawals of the portfolio's USD wallet (Coinbase App v2 API)."""
        wallets = [
            w for w in await self._portfolio_wallets(account_ref) if w.currency == CASH_CURRENCY
        ]
        result: RowList[Transaction] = RowList()
        for wallet in wallets:
            path = f"/v2/accounts/{quote(wallet.uuid, safe='')}/transactions"
            params: dict[str, Any] = {"limit": 100, "order": "desc"}
            for _ in range(MAX_PAGES):
                body = await self._call("GET", path, params=params)
                data = body.get("data") if isinstance(body, dict) else None
                if not isinstance(data, list):
                    raise mapping.unknown("v2 transactions answer", body)
                rows = read_rows(
                    data, mapping.transaction_from_v2, broker=SLUG, kind="transactions"
                )
                result.extend(rows)
                result.skipped += rows.skipped
                pagination = body.get("pagination")
                next_uri = pagination.get("next_uri") if isinstance(pagination, dict) else None
                if not isinstance(next_uri, str) or not next_uri:
                    break
                split = urlsplit(next_uri)
                path, params = split.path, dict(parse_qsl(split.query))
        return result

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        found: list[Transaction] = []
        skipped = 0
        if type_ in (None, "buy", "sell"):
            fills = await self._fills(start, end)
            found.extend(fills)
            skipped += fills.skipped
        if type_ in (None, "deposit", "withdrawal"):
            cash = await self._cash_movements(account_ref)
            found.extend(cash)
            skipped += cash.skipped
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

    # --- quotes ------------------------------------------------------------------------

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """Bid and ask from ``GET /best_bid_ask``, the last trade from ``GET /products``."""
        crypto = [s for s in symbols if asset_class_of(s) is AssetClass.crypto]
        if not crypto:
            return {}
        products = list(dict.fromkeys(mapping.to_product_id(s) for s in crypto))
        books, listed = await asyncio.gather(
            self._call("GET", f"{PREFIX}/best_bid_ask", params={"product_ids": products}),
            self._call("GET", f"{PREFIX}/products", params={"product_ids": products}),
        )
        return mapping.quotes_from(
            mapping.books_from_wire(books),
            mapping.prices_from_products(listed),
            crypto,
            self._now(),
        )

    # --- stream ------------------------------------------------------------------------

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        from app.brokers.coinbase.stream import UserChannelStream

        return UserChannelStream(
            self._settings.coinbase_ws_url,
            account_ref,
            jwt=self._signer.ws_jwt,
            catch_up=self.recent_orders,
            fetch=self.get_order,
            idle_timeout=self._settings.coinbase_stream_idle_seconds,
        ).updates()

    # --- market data (market_data.py) ----------------------------------------------------

    def market_data_session(self) -> CoinbaseMarketSession:
        return CoinbaseMarketSession(
            self._settings.coinbase_market_ws_url,
            jwt=self._signer.ws_jwt,
            idle_timeout=self._settings.coinbase_stream_idle_seconds,
        )

    async def get_bars(
        self, symbol: str, interval: BarInterval, start: datetime, end: datetime, limit: int
    ) -> list[Bar]:
        """``GET /products/{product_id}/candles`` (market_data.get_bars)."""

        async def request(path: str, params: dict[str, str]) -> Any:
            return await self._call("GET", path, params=params)

        return await _get_bars(request, symbol, interval, start, end, limit, self._now())

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
* Options (https://docs.alpaca.markets/docs/options-trading,
  https://docs.alpaca.markets/docs/options-level-3-trading): contracts by unpadded OCC
  symbol; single-leg orders take ``position_intent``; multi-leg orders are
  ``order_class: "mleg"`` with ``legs[]`` and a SIGNED net ``limit_price`` (mapping). An mleg
  order comes back as one parent whose ``legs[]`` are child orders, and only with
  ``nested=true`` on ``GET /v2/orders`` and ``GET /v2/orders/{id}`` (spec parameter
  ``nested``: "roll up multi-leg orders under the legs field"), so every order read asks for
  it. The whole mleg order can be replaced (``PATCH`` with ``qty``/``limit_price``) and
  canceled; its legs cannot on their own ("cannot cancel individual legs of a mleg order",
  https://github.com/alpacahq/alpaca-py/blob/master/examples/options/options-trading-mleg.ipynb).
  No expirations endpoint: they
  are derived from ``GET /v2/options/contracts``. No preview endpoint: the service
  estimates (``preview`` emulated).
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
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from app.brokers import errors
from app.brokers.alpaca import auth, chain, mapping
from app.brokers.alpaca.mapping import SLUG
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    BrokerOrder,
    Capabilities,
    OptionCapabilities,
    OptionChainQuery,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OrderChanges,
    OrderListFilter,
    OrderRequest,
    OrderSide,
    OrderType,
    OrderUpdate,
    Position,
    PositionEffect,
    PriceEffect,
    Quote,
    Support,
    TimeInForce,
    Transaction,
    is_option_symbol,
)
from app.brokers.http import BrokerClient, HttpPool
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import read_rows
from app.config import Settings
from app.security.credentials import Credentials

N, E, U = Support.native, Support.emulated, Support.unsupported

ALPACA_OPTIONS = OptionCapabilities(
    chain=N,  # GET /v2/options/contracts + GET /v1beta1/options/snapshots/{underlying}
    expirations=E,  # no endpoint: the distinct expiration dates of the contracts
    max_legs=mapping.MAX_LEGS,
    combo_order_types=frozenset({OrderType.market, OrderType.limit}),
    combo_time_in_force=mapping.COMBO_TIME_IN_FORCE,
    greeks=N,  # snapshot ``greeks`` and ``impliedVolatility``
    # Options take market and limit orders, day or gtc (the spec's order notes).
    single_order_types=frozenset({OrderType.market, OrderType.limit}),
    single_time_in_force=frozenset({TimeInForce.day, TimeInForce.gtc}),
    # POST /v2/positions/{symbol_or_contract_id}/exercise and .../do-not-exercise (spec
    # operations optionExercise, optionDoNotExercise): ``exercise_option``/``do_not_exercise``.
    exercise=N,
)

ALPACA_CAPABILITIES = Capabilities(
    # Option orders are narrower than equity ones (market/limit, day/gtc, whole contracts,
    # no extended hours), and crypto ones too (``BTC/USD`` pairs, gtc/ioc, no shorts): the
    # adapter refuses the rest before any call (mapping).
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: N,
        AssetClass.crypto: N,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),
    time_in_force=dict.fromkeys(TimeInForce, N),
    fractional=N,
    extended_hours=N,
    short_selling=N,
    multi_leg=N,
    modify=N,
    order_stream=N,
    options=ALPACA_OPTIONS,
    preview=E,  # Alpaca has no preview or what-if endpoint: the gateway estimates
    # ``notional`` on market orders, day (equities) or gtc/ioc (crypto): spec ``notional``
    # "Can only work for market order types and day for time in force".
    notional=N,
    notional_limit=U,
)

MAX_PAGE = 500  # GET /v2/orders ``limit`` maximum
ASSET_TTL = 3600.0  # seconds a tradable asset lookup is trusted
CONTRACTS_PAGE = 10000  # GET /v2/options/contracts ``limit`` maximum (spec)
SNAPSHOTS_PAGE = 1000  # GET /v1beta1/options/snapshots ``limit`` maximum (data spec)
MAX_CHAIN_PAGES = 10  # pages followed for one chain or expiration list (bounded paging)
OPTION_QUOTES_BATCH = 100  # /v1beta1/options/quotes/latest: "a limit of 100" symbols
NESTED = {"nested": "true"}  # mleg orders with their legs (spec parameter ``nested``)


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
        positions = read_rows(
            body, lambda item: mapping.position_from_wire(item, now), broker=SLUG, kind="position"
        )
        positions[:] = await asyncio.gather(*(self._with_terms(p) for p in positions))
        return positions

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        path = f"/v2/positions/{quote(mapping.wire_symbol(symbol), safe='')}"
        try:
            body = _loads(await self._trading.request("GET", path))
        except (errors.OrderNotFound, errors.UnknownSymbol):
            return None  # 404 {"code": 40410000, "message": "position does not exist"}
        return await self._with_terms(mapping.position_from_wire(body, self._now()))

    async def _with_terms(self, position: Position) -> Position:
        """An option position with its contract's own terms (underlying, multiplier, style:
        the position carries none of them) from ``GET /v2/options/contracts/{symbol}``,
        remembered for ``ASSET_TTL``. A contract Alpaca no longer lists (expired today)
        keeps the terms its OCC symbol gives (a standard 100 multiplier)."""
        if position.contract is None:
            return position
        symbol = position.contract.symbol
        memo_key = ("alpaca-contract", self._settings.alpaca_trading_url, symbol)
        terms = self._pool.recall(memo_key)
        if not isinstance(terms, OptionContract):
            try:
                body = _loads(
                    await self._trading.request(
                        "GET", f"/v2/options/contracts/{quote(symbol, safe='')}"
                    )
                )
            except (errors.OrderNotFound, errors.UnknownSymbol):
                return position
            terms = chain.contract_from_wire(body).contract
            self._pool.remember(memo_key, terms, ASSET_TTL)
        return replace(position, contract=terms)

    async def check_symbol(self, symbol: str) -> None:
        """``GET /v2/assets/{symbol}``: 404 or an inactive/untradable asset is refused.

        A tradable answer is remembered for ``ASSET_TTL`` (shared by every connection of this
        deployment): an asset's status changes rarely, and the lookup would otherwise add a
        broker round trip to every order. Refusals are not remembered.
        """
        memo_key = ("alpaca-asset", self._settings.alpaca_trading_url, symbol)
        if self._pool.recall(memo_key) is True:
            return
        if is_option_symbol(symbol):
            await self._check_contract(symbol)
            self._pool.remember(memo_key, True, ASSET_TTL)
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

    async def _check_contract(self, symbol: str) -> None:
        """``GET /v2/options/contracts/{symbol}``: unknown, inactive or untradable refused."""
        wire = mapping.wire_symbol(symbol)
        try:
            body = _loads(
                await self._trading.request("GET", f"/v2/options/contracts/{quote(wire, safe='')}")
            )
        except (errors.OrderNotFound, errors.UnknownSymbol) as exc:
            raise errors.UnknownSymbol(f"Alpaca does not list {wire}", broker=SLUG) from exc
        listed = chain.contract_from_wire(body)
        if not isinstance(body, dict) or body.get("status") != "active" or not listed.tradable:
            raise errors.UnsupportedOrder(f"{wire} is not tradable at Alpaca", broker=SLUG)

    # --- options discovery -----------------------------------------------------------

    async def _paged(
        self, client: BrokerClient, path: str, params: dict[str, str], key: str, size: int
    ) -> list[Any]:
        """Every item of a paged answer, following ``next_page_token`` up to
        ``MAX_CHAIN_PAGES`` pages (a chain larger than that is cut, never looped on)."""
        items: list[Any] = []
        token: str | None = None
        for _ in range(MAX_CHAIN_PAGES):
            query = {**params, "limit": str(size)}
            if token:
                query["page_token"] = token
            found, token = chain.page(_loads(await client.request("GET", path, params=query)), key)
            if isinstance(found, list):
                items.extend(found)
            elif isinstance(found, dict):
                items.extend(found.items())
            else:
                raise mapping.unknown(key, type(found).__name__)
            if token is None:
                break
        return items

    async def _contracts(self, underlying: str, params: dict[str, str]) -> list[Any]:
        # By default Alpaca lists only contracts expiring before the coming weekend (spec:
        # "By default only active contracts that expire before the upcoming weekend"), so
        # an explicit date range is always sent.
        query = {"underlying_symbols": underlying, "status": "active", **params}
        if "expiration_date" not in query:
            query.setdefault("expiration_date_gte", self._now().date().isoformat())
        return await self._paged(
            self._trading, "/v2/options/contracts", query, "option_contracts", CONTRACTS_PAGE
        )

    async def _require_underlying(self, underlying: str) -> None:
        """An empty answer is an unknown underlying only if Alpaca does not list it."""
        path = f"/v2/assets/{quote(mapping.to_alpaca_symbol(underlying), safe='')}"
        try:
            await self._trading.request("GET", path)
        except (errors.OrderNotFound, errors.UnknownSymbol) as exc:
            raise errors.UnknownSymbol(f"Alpaca does not list {underlying}", broker=SLUG) from exc

    async def list_option_expirations(self, underlying: str) -> list[OptionExpiration]:
        listed = chain.contracts_from_wire(await self._contracts(underlying.upper(), {}))
        if not listed:
            await self._require_underlying(underlying.upper())
        return chain.expirations(listed)

    async def get_option_chain(self, query: OptionChainQuery) -> list[OptionQuote]:
        """Contracts (terms, open interest) joined with their snapshots (quotes, greeks).

        Both calls take the same filters (Alpaca applies them); the service applies them
        again. Both follow their pages up to ``MAX_CHAIN_PAGES``.
        """
        underlying = query.underlying.upper()
        filters: dict[str, str] = {}
        if query.expiration is not None:
            filters["expiration_date"] = query.expiration.isoformat()
        else:
            filters["expiration_date_gte"] = self._now().date().isoformat()
        if query.right is not None:
            filters["type"] = query.right.value
        if query.strike_gte is not None:
            filters["strike_price_gte"] = str(query.strike_gte)
        if query.strike_lte is not None:
            filters["strike_price_lte"] = str(query.strike_lte)
        raw_contracts, raw_snapshots = await asyncio.gather(
            self._contracts(underlying, filters),
            self._paged(
                self._data,
                f"/v1beta1/options/snapshots/{quote(underlying, safe='')}",
                filters,
                "snapshots",
                SNAPSHOTS_PAGE,
            ),
        )
        listed = chain.contracts_from_wire(raw_contracts)
        if not listed:
            await self._require_underlying(underlying)
            return []
        snapshots = chain.snapshots_from_wire(dict(raw_snapshots))
        return chain.chain(listed, snapshots, self._now())

    # --- orders ----------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        body = mapping.order_to_wire(order)  # refuses what Alpaca cannot take, before any call
        if is_short_or_cover(order):
            refusal = await self._short_refusal(order)
            if refusal is not None:
                # A retry of an order that already went through (its cover filled, say)
                # must find that order, not be refused for the state it left behind.
                found = await self.find_order_by_client_id(account_ref, order.client_order_id)
                if found is not None:
                    return found
                raise errors.UnsupportedOrder(refusal, broker=SLUG)
        try:
            response = await self._trading.request("POST", "/v2/orders", json=body)
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

    async def _short_refusal(self, order: OrderRequest) -> str | None:
        """Alpaca shorts by position, so ``open``/``close`` on an equity is checked, not
        sent: a sell that opens needs a margin account that may short (account
        ``shorting_enabled``) and no long position (the sell would close it instead); a buy
        that closes needs a short position of at least its quantity (it would open a long).
        https://docs.alpaca.markets/docs/margin-and-short-selling"""
        held = await self.get_position("", order.symbol)
        quantity = held.quantity if held is not None else Decimal(0)
        if order.side is OrderSide.buy:
            if quantity >= 0 or order.quantity > -quantity:
                return f"no short position of {order.quantity} {order.symbol} to cover"
            return None
        if quantity > 0:
            return f"a long position in {order.symbol} is held: a sell closes it, not a short"
        account = await self.get_account()
        if account.get("shorting_enabled") is not True:
            return "this Alpaca account cannot sell short (a margin account with shorting)"
        return None

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
        current = await self.get_order(account_ref, broker_order_id)
        if current.legs:
            body = self._mleg_changes(current, changes)
        else:
            if is_option_symbol(current.symbol):
                self._check_option_changes(changes)
            body = mapping.changes_to_wire(changes)
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

    @staticmethod
    def _check_option_changes(changes: OrderChanges) -> None:
        """An option order stays whole contracts, day or gtc, without a stop (mapping)."""
        quantity = changes.quantity
        if quantity is not None and quantity != quantity.to_integral_value():
            raise errors.UnsupportedOrder(
                f"an option order's quantity is whole contracts (got {quantity})", broker=SLUG
            )
        if changes.time_in_force not in (None, *mapping.OPTION_TIME_IN_FORCE):
            raise errors.UnsupportedOrder(
                "Alpaca takes option orders with time in force day or gtc only", broker=SLUG
            )
        if changes.stop_price is not None:
            raise errors.UnsupportedOrder("option orders take no stop price", broker=SLUG)

    @staticmethod
    def _mleg_changes(current: BrokerOrder, changes: OrderChanges) -> dict[str, Any]:
        """The replace body of a whole mleg order: strategy units and the signed net price.

        The direction is the current order's: a debit stays a debit. An ``even`` order
        cannot be given a non-zero price (its direction would be a guess).
        """
        if changes.stop_price is not None:
            raise errors.UnsupportedOrder("multi-leg orders take no stop price", broker=SLUG)
        if changes.time_in_force not in (None, *mapping.COMBO_TIME_IN_FORCE):
            raise errors.UnsupportedOrder(
                "Alpaca takes multi-leg orders with time in force day only", broker=SLUG
            )
        if changes.limit_price is not None and current.order_type is not OrderType.limit:
            raise errors.UnsupportedOrder("a market order takes no limit price", broker=SLUG)
        effect = current.price_effect or PriceEffect.even
        body = mapping.changes_to_wire(changes, effect)
        if "limit_price" not in body and current.limit_price is not None:
            body["limit_price"] = str(mapping.signed_limit_price(current.limit_price, effect))
        return body

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
            "GET", f"/v2/orders/{quote(broker_order_id, safe='')}", params=NESTED
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
        body = _loads(await self._trading.request("GET", "/v2/orders", params={**params, **NESTED}))
        if not isinstance(body, list):
            raise mapping.unknown("orders payload", type(body).__name__)
        return read_rows(body, mapping.order_from_wire, broker=SLUG, kind="order")

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
            params["symbols"] = mapping.wire_symbol(symbol)
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
        result = read_rows(body, mapping.transaction_from_activity, broker=SLUG, kind="transaction")
        if type_ is not None:
            result[:] = [t for t in result if t.type == type_]
        return result

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """Latest quotes and trades: stocks from ``/v2/stocks/...``, option contracts from
        ``/v1beta1/options/quotes/latest`` and ``/trades/latest`` (at most 100 symbols a
        call, data spec parameter ``option_symbols``)."""
        options = [s for s in symbols if is_option_symbol(s)]
        stocks = [s for s in symbols if not is_option_symbol(s)]
        batches = [("/v2/stocks", stocks)] if stocks else []
        batches += [
            ("/v1beta1/options", options[i : i + OPTION_QUOTES_BATCH])
            for i in range(0, len(options), OPTION_QUOTES_BATCH)
        ]
        found = await asyncio.gather(*(self._latest(base, batch) for base, batch in batches))
        return {symbol: q for part in found for symbol, q in part.items()}

    async def _latest(self, base: str, symbols: list[str]) -> dict[str, Quote]:
        wire = ",".join(mapping.wire_symbol(s) for s in symbols)
        quotes, trades = await asyncio.gather(
            self._data.request("GET", f"{base}/quotes/latest", params={"symbols": wire}),
            self._data.request("GET", f"{base}/trades/latest", params={"symbols": wire}),
        )
        return mapping.quotes_from_wire(_loads(quotes), _loads(trades), symbols)

    # --- option exercise instructions ------------------------------------------------

    async def exercise_option(self, account_ref: str, symbol: str) -> None:
        """``POST /v2/positions/{symbol_or_contract_id}/exercise``: exercise every available
        contract of a long position now (spec ``optionExercise``: 200 without a body; 403
        "no available position for the specified contract" or "cannot exercise short
        position"; requests between market close and midnight are refused)."""
        await self._instruct(symbol, "exercise")

    async def do_not_exercise(self, account_ref: str, symbol: str) -> None:
        """``POST /v2/positions/{symbol_or_contract_id}/do-not-exercise``: no automatic
        exercise at expiry of an in-the-money long position (spec ``optionDoNotExercise``)."""
        await self._instruct(symbol, "do-not-exercise")

    async def _instruct(self, symbol: str, action: str) -> None:
        if not is_option_symbol(symbol):
            raise errors.UnsupportedOrder(f"{symbol!r} is not an option contract", broker=SLUG)
        wire = mapping.wire_symbol(symbol)
        await self._trading.request("POST", f"/v2/positions/{quote(wire, safe='')}/{action}")

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


def is_short_or_cover(order: OrderRequest) -> bool:
    """An equity sell that opens (a short sale) or buy that closes (a cover)."""
    if order.is_multi_leg or is_option_symbol(order.symbol) or order.position_effect is None:
        return False
    opens = order.position_effect is PositionEffect.open
    return (order.side is OrderSide.sell) == opens


def replacement_client_order_id(broker_order_id: str) -> str:
    """The client order id of the order replacing ``broker_order_id`` (<= 128 characters).

    An order is replaced at most once (it is ``replaced`` afterwards), so this is unique.
    """
    return f"bgr-{broker_order_id}"[:128]


def _masked(number: str) -> str:
    return "****" + number[-4:] if len(number) > 4 else "****"

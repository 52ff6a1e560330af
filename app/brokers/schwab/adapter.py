"""The Charles Schwab Trader API adapter (Tier A, OAuth2 bearer token).

One adapter per connection, bound to that connection's decrypted OAuth credential
(``app.brokers.oauth``; the token lifecycle refreshes it, this adapter only uses the access
token). ``account_ref``
is the account's ``hashValue``: Schwab's paths never take the plain account number.

Quirks, each with its doc page (Trader API spec, https://developer.schwab.com/products/trader-api--individual/details/specifications/Retail%20Trader%20API%20Production):

* Account paths use the encrypted ``hashValue`` from ``GET /accounts/accountNumbers``, never
  the plain number; the plain number appears only inside bodies (and the stream).
* ``POST /accounts/{hash}/orders`` answers **201 with an empty body**; the new order's id is
  only in ``Location`` (schwab-py ``Utils.extract_order_id``). The order is read back.
* There is **no client order id**: an order whose submit answer was lost is found again by
  its fingerprint (symbol, side, quantity, type, duration, prices) in a time window after
  the submit (``find_order_by_fingerprint``; ``capabilities.client_order_ids`` says so).
* Replace (``PUT /accounts/{hash}/orders/{id}``) takes a whole order, cancels the old one and
  creates a **new order with a new id**, again only in ``Location`` (201).
* Cancel (``DELETE``) answers 200 with no body; the state afterwards comes from a GET.
* Order lists need ``fromEnteredTime`` and ``toEnteredTime`` and filter on entry time only.
* Quotes live under ``/marketdata/v1`` on the same host; unknown symbols come back in
  ``errors.invalidSymbols`` of a 200 answer.
* Rate limits: 120 non-order requests a minute; order writes 0-120 a minute per account
  (chosen when the app is registered), each paced by its own bucket.

Options (schwab-py ``orders/options.py``, ``client/base.py``; https://github.com/alexgolec/schwab-py):

* Option symbols are OCC padded to six characters (``AAPL  261218C00150000``) on the wire
  and canonical (unpadded) everywhere else; instructions are BUY_TO_OPEN / SELL_TO_OPEN /
  BUY_TO_CLOSE / SELL_TO_CLOSE.
* A combo is one ``SINGLE`` order with several legs; a limit combo's direction is its
  ``orderType`` (NET_DEBIT / NET_CREDIT / NET_ZERO) with a positive ``price``, and
  ``complexOrderStrategyType`` is inferred from the legs (``mapping.complex_strategy``).
  A market combo is ``orderType: MARKET`` without a price, as is NET_ZERO (jkoelker/schwab-mcp
  ``src/schwab_mcp/tools/orders.py`` ``place_option_combo_order``; Schwab's own docs show no
  example). Legs and their fills come back in
  ``orderLegCollection[].legId`` and ``orderActivityCollection[].executionLegs[].legId``.
* Maximum legs: Schwab publishes no limit. 4 is assumed: schwab-py's helpers and every
  strategy in ``ComplexOrderStrategyType`` (iron condor, condor, double diagonal) have at
  most four legs, and the research notes (options-and-market-data.md 1.4d) mark it
  unconfirmed.
* Chains: ``GET /marketdata/v1/chains`` (greeks in each contract, ``volatility`` in percent);
  expirations: ``GET /marketdata/v1/expirationchain``.
* Preview: ``POST /accounts/{hash}/previewOrder``, whose HTTP 200 can carry
  ``orderValidationResult.rejects`` (returned as the preview's rejections).
* Lifecycle: an expiry, assignment or exercise is a ``RECEIVE_AND_DELIVER`` transaction
  "REMOVAL OF OPTION DUE TO ..." of the contract, read as ``option_expiration`` /
  ``option_assignment`` / ``option_exercise`` with an unsigned quantity
  (``mapping._OPTION_REMOVALS`` has the sources); the lifecycle sweep makes it an order
  with the side the account held (app/services/lifecycle.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

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
    Fill,
    OptionCapabilities,
    OptionChainQuery,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OptionRight,
    OrderChanges,
    OrderFingerprint,
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
    is_option_symbol,
)
from app.brokers.http import BrokerClient, HttpPool, credential_key
from app.brokers.oauth import bearer_headers
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import RowList
from app.brokers.schwab import auth, mapping, market_data
from app.brokers.schwab.mapping import SLUG
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

N, U = Support.native, Support.unsupported
T = TypeVar("T")

SCHWAB_CAPABILITIES = Capabilities(
    # Schwab trades mutual funds and more; this adapter maps equities and options.
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: N,
        AssetClass.crypto: U,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),
    time_in_force=dict.fromkeys(TimeInForce, N),
    fractional=U,  # whole shares only through the Trader API
    extended_hours=N,  # session SEAMLESS
    # A sell that opens is SELL_SHORT, a buy that closes BUY_TO_COVER (margin accounts;
    # schwab-py ``equity_sell_short_market`` / ``equity_buy_to_cover_market``).
    short_selling=N,
    multi_leg=N,  # one order, orderLegCollection + complexOrderStrategyType
    modify=N,  # replace: a new order id
    order_stream=N,  # streamer ACCT_ACTIVITY
    client_order_ids=U,  # reconciliation by fingerprint (legs included)
    options=OptionCapabilities(
        chain=N,  # GET /marketdata/v1/chains
        expirations=N,  # GET /marketdata/v1/expirationchain
        max_legs=4,  # assumed: see the module docstring
        # market (orderType MARKET) or limit (NET_DEBIT / NET_CREDIT / NET_ZERO)
        combo_order_types=frozenset({OrderType.market, OrderType.limit}),
        combo_time_in_force=frozenset({TimeInForce.day, TimeInForce.gtc}),
        greeks=N,  # in each chain contract; volatility in percent
        exercise=U,  # no exercise instruction in the Trader API
    ),
    preview=N,  # POST /accounts/{hash}/previewOrder
    market_data=market_data.SCHWAB_MARKET_DATA,  # streamer services, price history
)

ACCOUNT_TTL = 600.0  # seconds the accountNumbers map is trusted
QUOTE_SYMBOL_TTL = 3600.0  # seconds a known-symbol answer is trusted
OPEN_LOOKBACK = timedelta(days=365)  # GTC orders can stay open for months
HISTORY_LOOKBACK = timedelta(days=60)
CATCH_UP_LOOKBACK = timedelta(days=60)
# Fingerprint lookup: Schwab's clock may run a little behind ours, and Schwab enters the
# order within the submit's timeout after we committed the intent.
FINGERPRINT_SKEW = timedelta(seconds=30)
FINGERPRINT_WINDOW = timedelta(minutes=5)


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response)


def _wire_symbol(symbol: str) -> str:
    """Schwab's form of a symbol: an option's OCC symbol padded, a ticker as it is."""
    return OptionContract.parse(symbol).occ_padded if is_option_symbol(symbol) else symbol


class SchwabAdapter(PooledAdapter):
    slug = SLUG
    capabilities = SCHWAB_CAPABILITIES
    fingerprint_window = FINGERPRINT_WINDOW

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        headers = bearer_headers(credentials, broker=SLUG)
        assert credentials is not None  # bearer_headers refused None
        self._credentials = credentials
        self._headers = {**headers, "Accept": "application/json"}
        self._base = settings.schwab_base_url.rstrip("/")
        per_minute = settings.schwab_requests_per_minute
        self._api = self._broker_client(
            self._base,
            headers=self._headers,
            bucket=self._pacer(auth.bucket_key(credentials), per_minute=per_minute),
            classifier=mapping.classify,
        )
        self._order_clients: dict[str, BrokerClient] = {}

    def __repr__(self) -> str:
        return f"SchwabAdapter(base_url={self._base!r})"

    def _orders_client(self, account_hash: str) -> BrokerClient:
        """Order writes are paced per account by their own limit (set at app registration)."""
        found = self._order_clients.get(account_hash)
        if found is None:
            per_minute = self._settings.schwab_order_requests_per_minute
            found = self._broker_client(
                self._base,
                headers=self._headers,
                bucket=self._pacer(
                    credential_key(SLUG, "orders", account_hash), per_minute=per_minute
                ),
                classifier=mapping.classify,
            )
            self._order_clients[account_hash] = found
        return found

    @staticmethod
    def _account_path(account_hash: str, *rest: str) -> str:
        parts = [quote(account_hash, safe=""), *(quote(p, safe="") for p in rest)]
        return "/trader/v1/accounts/" + "/".join(parts)

    # --- accounts ----------------------------------------------------------------------

    async def account_numbers(self) -> dict[str, str]:
        """Plain account number -> hashValue, remembered per grant for ``ACCOUNT_TTL``."""
        memo_key = ("schwab-account-numbers", self._base, auth.bucket_key(self._credentials))
        found = self._pool.recall(memo_key)
        if isinstance(found, dict):
            return dict(found)
        body = _loads(await self._api.request("GET", "/trader/v1/accounts/accountNumbers"))
        numbers = mapping.account_numbers(body)
        self._pool.remember(memo_key, dict(numbers), ACCOUNT_TTL)
        return numbers

    async def list_accounts(self) -> list[BrokerAccount]:
        """Every account the grant covers; also how a new grant is checked before storing."""
        numbers = await self.account_numbers()
        body = _loads(await self._api.request("GET", "/trader/v1/accounts"))
        if not isinstance(body, list):
            raise mapping.unknown("accounts payload", type(body).__name__)

        def account(item: object) -> BrokerAccount:
            securities = mapping.securities_account(item)
            number = str(securities.get("accountNumber"))
            hash_value = numbers.get(number)
            if hash_value is None:
                raise mapping.unknown("account without a hashValue", mapping.masked(number))
            return mapping.broker_account(securities, hash_value)

        return mapping.representable(body, account, "account")

    async def _account(self, account_ref: str, *, positions: bool) -> Any:
        params = {"fields": "positions"} if positions else None
        return _loads(
            await self._api.request("GET", self._account_path(account_ref), params=params)
        )

    async def get_balances(self, account_ref: str) -> Balances:
        return mapping.balances_from_account(
            await self._account(account_ref, positions=False), self._now()
        )

    async def get_positions(self, account_ref: str) -> list[Position]:
        body = await self._account(account_ref, positions=True)
        return mapping.positions_from_account(body, self._now())

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        """By ticker, or by option symbol padded or not (positions carry the canonical one)."""
        if is_option_symbol(symbol):
            symbol = OptionContract.parse(symbol).symbol
        for position in await self.get_positions(account_ref):
            if position.symbol == symbol:
                return position
        return None

    async def check_symbol(self, symbol: str) -> None:
        """``GET /marketdata/v1/quotes``: a symbol Schwab does not know is refused (an option
        is asked for by its padded OCC symbol, as Schwab's quote examples show).

        A known symbol is remembered for ``QUOTE_SYMBOL_TTL`` for the whole deployment.
        """
        memo_key = ("schwab-symbol", self._base, symbol)
        if self._pool.recall(memo_key) is True:
            return
        wire = _wire_symbol(symbol)
        body = _loads(
            await self._api.request(
                "GET", "/marketdata/v1/quotes", params={"symbols": wire, "fields": "quote"}
            )
        )
        if wire in mapping.invalid_symbols(body) or not isinstance(body, dict):
            raise errors.UnknownSymbol(f"Schwab does not list {symbol}", broker=SLUG)
        if not isinstance(body.get(wire), dict):
            raise errors.UnknownSymbol(f"Schwab does not list {symbol}", broker=SLUG)
        self._pool.remember(memo_key, True, QUOTE_SYMBOL_TTL)

    # --- orders ------------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        """Place, then read the order back by the id in ``Location``.

        A 201 without a usable ``Location`` means the order exists but we cannot name it:
        ``OutcomeUnknown``, and reconciliation finds it by fingerprint. A read-back failure
        after the 201 is not an error: the order is reported ``submitted`` under its id.
        """
        response = await self._orders_client(account_ref).request(
            "POST", self._account_path(account_ref, "orders"), json=mapping.order_to_wire(order)
        )
        order_id = mapping.order_id_from_location(response.headers.get("Location"), account_ref)
        if order_id is None:
            raise errors.OutcomeUnknown(
                "Schwab accepted the order but did not say its id", broker=SLUG
            )
        try:
            return await self.get_order(account_ref, order_id)
        except errors.BrokerError as exc:
            log.warning(
                "schwab order placed but not read back",
                extra={"broker": SLUG, "broker_order_id": order_id, "reason": exc.reason},
            )
            return mapping.submitted_order(order_id, order, self._now())

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """Replace: Schwab cancels the order and creates a new one (new id in ``Location``).

        The whole order is sent (``PUT`` takes an ``OrderRequest``), built from the current
        order and the changes. If the answer is lost, the old order is read: when Schwab
        reports it replaced, its ``replacingOrderCollection`` names the new order, which is
        returned as if the answer had arrived.
        """
        current = await self.get_order(account_ref, broker_order_id)
        if changes.is_empty():
            return current
        body = mapping.order_to_wire(mapping.replacement_request(current, changes))
        path = self._account_path(account_ref, "orders", broker_order_id)
        try:
            response = await self._orders_client(account_ref).request("PUT", path, json=body)
        except errors.OutcomeUnknown:
            found = await self._replacement_of(account_ref, broker_order_id)
            if found is None:
                raise
            return found
        except errors.Rejected as exc:
            raise await self._refusal(account_ref, broker_order_id, exc) from exc
        new_id = mapping.order_id_from_location(response.headers.get("Location"), account_ref)
        if new_id is None:
            found = await self._replacement_of(account_ref, broker_order_id)
            if found is None:
                raise errors.OutcomeUnknown(
                    "Schwab accepted the replace but did not say the new order's id", broker=SLUG
                )
            return found
        try:
            new = await self.get_order(account_ref, new_id)
        except errors.BrokerError:
            new = mapping.submitted_order(
                new_id, mapping.replacement_request(current, changes), self._now()
            )
        return mapping.with_replaces(new, broker_order_id)

    async def _replacement_of(self, account_ref: str, old_id: str) -> BrokerOrder | None:
        try:
            old = await self.get_order(account_ref, old_id)
            if old.status is not OrderStatus.replaced or old.replaced_by is None:
                return None
            new = await self.get_order(account_ref, old.replaced_by)
        except errors.BrokerError:
            return None
        return mapping.with_replaces(new, old_id)

    async def _refusal(
        self, account_ref: str, broker_order_id: str, exc: errors.Rejected
    ) -> errors.BrokerError:
        """A refused cancel/replace of an order that is done is ``OrderNotModifiable``."""
        if type(exc) is not errors.Rejected:
            return exc
        try:
            current = await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError:
            return exc
        if current.status in (
            OrderStatus.filled,
            OrderStatus.canceled,
            OrderStatus.expired,
            OrderStatus.replaced,
            OrderStatus.rejected,
        ):
            return errors.OrderNotModifiable(
                f"the order is {current.status.value} at Schwab: {exc.reason}", broker=SLUG
            )
        return exc

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        path = self._account_path(account_ref, "orders", broker_order_id)
        try:
            await self._orders_client(account_ref).request("DELETE", path)
        except errors.Rejected as exc:
            raise await self._refusal(account_ref, broker_order_id, exc) from exc
        try:
            return await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError as exc:
            # The cancel was accepted (200); only its result is unknown.
            raise errors.OutcomeUnknown(
                f"the cancel was accepted but the order could not be read: {exc.reason}",
                broker=SLUG,
            ) from exc

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        order, _ = await self.get_order_and_fills(account_ref, broker_order_id)
        return order

    async def get_order_and_fills(
        self, account_ref: str, broker_order_id: str
    ) -> tuple[BrokerOrder, tuple[Fill, ...]]:
        """The order and every execution of it (per leg for a combo), from one read."""
        if not broker_order_id.isdigit():
            # Schwab order ids are int64; anything else cannot name an order there.
            raise errors.OrderNotFound("no such order at Schwab", broker=SLUG)
        response = await self._api.request(
            "GET", self._account_path(account_ref, "orders", broker_order_id)
        )
        body = _loads(response)
        return mapping.order_from_wire(body), mapping.fills_from_wire(body)

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        raise errors.NotSupported(
            "Schwab has no client order id; orders are found by fingerprint", broker=SLUG
        )

    async def find_order_by_fingerprint(
        self, account_ref: str, fingerprint: OrderFingerprint, claimed: frozenset[str]
    ) -> BrokerOrder | None:
        """The order Schwab entered for a submit whose answer was lost, if any.

        Candidates: orders entered from ``FINGERPRINT_SKEW`` before the submit to
        ``FINGERPRINT_WINDOW`` after it, with the same fingerprint, not ``claimed`` by
        another order of ours. Of several, the one entered closest to the submit wins, so
        two identical orders submitted apart are each matched to their own.
        """
        start = fingerprint.submitted_at - FINGERPRINT_SKEW
        end = fingerprint.submitted_at + FINGERPRINT_WINDOW
        candidates = [
            o
            for o in await self._orders(account_ref, start, end)
            if fingerprint.matches(o)
            and o.broker_order_id not in claimed
            and start <= o.created_at <= end
        ]
        if not candidates:
            return None
        if len(candidates) > 1:
            log.warning(
                "several Schwab orders match an unknown submit; taking the nearest in time",
                extra={"broker": SLUG, "candidates": len(candidates)},
            )
        return min(
            candidates,
            key=lambda o: (abs(o.created_at - fingerprint.submitted_at), o.broker_order_id),
        )

    async def _orders(
        self, account_ref: str, start: datetime, end: datetime, *, status: str | None = None
    ) -> list[BrokerOrder]:
        params = {
            "fromEnteredTime": mapping.query_time(start),
            "toEnteredTime": mapping.query_time(end),
        }
        if status is not None:
            params["status"] = status
        body = _loads(
            await self._api.request("GET", self._account_path(account_ref, "orders"), params=params)
        )
        orders = mapping.orders_from_wire(body)
        orders.sort(key=lambda o: (o.created_at, o.broker_order_id), reverse=True)
        return orders

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        now = self._now()
        if status == "open":
            found = await self._orders(account_ref, now - OPEN_LOOKBACK, now)
            orders = [o for o in found if o.status in _OPEN]
        else:
            found = await self._orders(account_ref, now - HISTORY_LOOKBACK, now)
            orders = [o for o in found if status != "closed" or o.status not in _OPEN]
        return _rows_like(found, orders[: max(1, limit)])

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        end = end or self._now()
        start = start or end - HISTORY_LOOKBACK
        found = await self._orders(account_ref, start, end)
        return _rows_like(found, [o for o in found if symbol is None or o.symbol == symbol])

    async def recent_orders(self, account_ref: str) -> list[BrokerOrder]:
        """After a stream gap: every order entered in the catch-up window, in any state."""
        now = self._now()
        return await self._orders(account_ref, now - CATCH_UP_LOOKBACK, now)

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        """``GET /accounts/{hash}/transactions``: ``types`` is required; dates within a year."""
        end = end or self._now()
        start = start or end - HISTORY_LOOKBACK
        params = {
            "startDate": mapping.query_time(start),
            "endDate": mapping.query_time(end),
            "types": ",".join(mapping.TRANSACTION_TYPES),
        }
        body = _loads(
            await self._api.request(
                "GET", self._account_path(account_ref, "transactions"), params=params
            )
        )
        if not isinstance(body, list):
            raise mapping.unknown("transactions payload", type(body).__name__)
        rows = mapping.representable(body, mapping.transaction_from_wire, "transaction")
        result = RowList(t for t in rows if type_ is None or t.type == type_)
        result.skipped = rows.skipped
        result.sort(key=lambda t: t.occurred_at, reverse=True)
        return result

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """Equities by ticker; options by their canonical symbol, asked for padded."""
        if not symbols:
            return {}
        wire = {_wire_symbol(s): s for s in symbols}
        body = _loads(
            await self._api.request(
                "GET",
                "/marketdata/v1/quotes",
                params={"symbols": ",".join(wire), "fields": "quote"},
            )
        )
        found = mapping.quotes_from_wire(body, list(wire))
        return {
            wire[w]: Quote(symbol=wire[w], bid=q.bid, ask=q.ask, last=q.last, as_of=q.as_of)
            for w, q in found.items()
        }

    # --- options -----------------------------------------------------------------------

    async def list_option_expirations(self, underlying: str) -> list[OptionExpiration]:
        """``GET /marketdata/v1/expirationchain?symbol=``; an empty list means Schwab lists
        no options on ``underlying`` (``UnknownSymbol``), never "no expirations"."""
        body = _loads(
            await self._api.request(
                "GET", "/marketdata/v1/expirationchain", params={"symbol": underlying}
            )
        )
        found = mapping.expirations_from_wire(body)
        if not found:
            raise errors.UnknownSymbol(f"Schwab lists no options on {underlying}", broker=SLUG)
        return found

    async def get_option_chain(self, query: OptionChainQuery) -> list[OptionQuote]:
        """``GET /marketdata/v1/chains``: Schwab filters right (``contractType``) and
        expiration (``fromDate``/``toDate``); the strike range is applied here."""
        params = {
            "symbol": query.underlying,
            "strategy": "SINGLE",
            "contractType": {OptionRight.call: "CALL", OptionRight.put: "PUT", None: "ALL"}[
                query.right
            ],
        }
        if query.expiration is not None:
            params["fromDate"] = params["toDate"] = query.expiration.isoformat()
        body = _loads(await self._api.request("GET", "/marketdata/v1/chains", params=params))
        return [
            q
            for q in mapping.chain_from_wire(body, query)
            if (query.expiration is None or q.contract.expiration == query.expiration)
            and (query.right is None or q.contract.right is query.right)
            and (query.strike_gte is None or q.contract.strike >= query.strike_gte)
            and (query.strike_lte is None or q.contract.strike <= query.strike_lte)
        ]

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        """``POST /accounts/{hash}/previewOrder`` with the body placing would send.

        Places nothing, so it is paced and retried as a read (``safe``). Rejections in a 200
        are returned; a 4xx (a malformed order) raises like any refused request.
        """
        balances = await self.get_balances(account_ref)
        response = await self._api.request(
            "POST",
            self._account_path(account_ref, "previewOrder"),
            json=mapping.order_to_wire(order),
            safe=True,
        )
        return mapping.preview_from_wire(_loads(response), order, balances.buying_power)

    # --- streaming ---------------------------------------------------------------------

    async def streamer_info(self) -> dict[str, str]:
        """``GET /trader/v1/userPreference`` -> where and how to log in to the streamer."""
        body = _loads(await self._api.request("GET", "/trader/v1/userPreference"))
        return mapping.streamer_info(body)

    def market_data_session(self) -> market_data.SchwabMarketSession:
        """Level-one quotes, trades and greeks and 1-minute bars over the streamer."""
        return market_data.SchwabMarketSession(
            self.streamer_info,
            self._credentials,
            self._base,
            streamer_url_override=self.streamer_url_override,
        )

    async def get_bars(
        self, symbol: str, interval: BarInterval, start: datetime, end: datetime, limit: int
    ) -> list[Bar]:
        return await market_data.get_bars(self._api, symbol, interval, start, end, limit)

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        from app.brokers.schwab.stream import AccountActivityStream

        return AccountActivityStream(self, self._credentials, account_ref).updates()

    @property
    def streamer_url_override(self) -> str | None:
        """The configured socket replacing the advertised ``streamerSocketUrl`` (tests)."""
        return self._settings.schwab_streamer_url


def _rows_like(source: list[T], kept: list[T]) -> RowList[T]:
    """``kept`` (filtered from ``source``) still saying how many rows ``source`` left out."""
    result: RowList[T] = RowList(kept)
    result.skipped = source.skipped if isinstance(source, RowList) else 0
    return result


_OPEN = frozenset(
    {
        OrderStatus.submitted,
        OrderStatus.accepted,
        OrderStatus.partially_filled,
        OrderStatus.pending_cancel,
        OrderStatus.pending_replace,
        OrderStatus.unknown,
    }
)

"""The Tradier Brokerage API adapter (Tier A, bearer access token).

One adapter per connection, bound to that connection's decrypted token. A Tradier token sees
every account of its user (``GET /v1/user/profile``); ``account_ref`` is the account number
and is part of every account path.

Quirks, with their doc pages:

* Request bodies are form-encoded, never JSON
  (https://documentation.tradier.com/brokerage-api/trading/place-equity-order).
* ``Accept: application/json`` on every request: the default answer is XML
  (https://docs.tradier.com/docs/requests); ``auth.headers`` sets it.
* A write answers only ``{"order": {"id", "status": "ok"}}``; the order itself is read back
  with ``GET .../orders/{id}?includeTags=true`` (the tag is only returned when asked for,
  https://documentation.tradier.com/brokerage-api/accounts/get-account-order).
* Downstream refusals arrive as **200** with an ``errors`` body
  (https://docs.tradier.com/docs/error-responses): every answer is checked for one.
* Modify (``PUT``) changes the order in place, keeping its id, and cannot change quantity
  (https://documentation.tradier.com/brokerage-api/trading/change-order).
* There is no lookup by tag: ``find_order_by_client_id`` pages through the account's orders.
* Three rate buckets per token (https://docs.tradier.com/docs/rate-limiting): standard
  (accounts, user, order reads), market data, trading (writes).
* Options: single-leg ``class=option`` and ``class=multileg`` orders of up to four legs
  (place-option-order, place-multileg-order), chains with ORATS greeks (``greeks=true`` on
  ``GET /v1/markets/options/chains``, which has no strike or right filter: the service
  filters), expirations, and ``preview=true`` on the same order form (trading/preview-order).
  A multileg order is modified in place like any other (change-order takes ``type`` debit or
  credit, ``duration`` and ``price``); its quantity is not modifiable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    Bar,
    BarInterval,
    BrokerAccount,
    BrokerOrder,
    BrokerOrderLeg,
    Capabilities,
    OptionCapabilities,
    OptionChainQuery,
    OptionExpiration,
    OptionQuote,
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
from app.brokers.http import BrokerClient, HttpPool
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import RowList, read_rows
from app.brokers.tradier import auth, mapping
from app.brokers.tradier.mapping import SLUG
from app.brokers.tradier.market_data import TRADIER_MARKET_DATA, TradierMarketSession
from app.brokers.tradier.market_data import get_bars as _get_bars
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

_T = TypeVar("_T")

N, U = Support.native, Support.unsupported

TRADIER_CAPABILITIES = Capabilities(
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: N,
        AssetClass.crypto: U,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),
    # Durations are day, gtc, pre, post: no IOC or FOK.
    time_in_force={
        TimeInForce.day: N,
        TimeInForce.gtc: N,
        TimeInForce.ioc: U,
        TimeInForce.fok: U,
    },
    fractional=U,  # quantity is whole shares (IncorrectOrderQuantity: 1..10,000,000)
    # duration pre/post: equity limit day orders, session by the New York clock
    extended_hours=N,
    short_selling=N,  # side sell_short / buy_to_cover from the position effect (margin accounts)
    multi_leg=N,
    modify=N,
    order_stream=N,
    options=OptionCapabilities(
        chain=N,  # GET /v1/markets/options/chains?symbol&expiration&greeks=true
        expirations=N,  # GET /v1/markets/options/expirations
        max_legs=mapping.MAX_LEGS,
        # multileg type market | debit | credit | even: our market, and limit + price effect
        combo_order_types=frozenset({OrderType.market, OrderType.limit}),
        combo_time_in_force=frozenset({TimeInForce.day, TimeInForce.gtc}),
        greeks=N,  # ORATS, tagged source "orats"
    ),
    preview=N,  # preview=true on the order form
    # No dollar-amount orders: the order form has ``quantity`` (whole shares) only.
    notional=U,
    notional_limit=U,
    # The market WebSocket (quotes, trades; 1-minute bars built from trades) and REST bars
    # (history, timesales): market_data.py.
    market_data=TRADIER_MARKET_DATA,
)

# Statuses in which an order may still trade (what ``status=open`` lists).
_WORKING = frozenset(
    {
        OrderStatus.submitted,
        OrderStatus.accepted,
        OrderStatus.partially_filled,
        OrderStatus.pending_cancel,
        OrderStatus.pending_replace,
    }
)

PAGE = 100  # orders/history page size we ask for
MAX_PAGES = 10  # pages read for a listing or a tag search
QUOTE_TTL = 3600.0  # seconds a "this symbol exists" answer is trusted
EXPIRATIONS_TTL = 300.0  # seconds an underlying's expirations are reused


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response)


def _checked(response: httpx.Response, method: str) -> Any:
    """The JSON body, or the refusal it carries (Tradier's 200-with-``errors`` answers)."""
    body = _loads(response)
    messages = mapping.error_messages(body)
    if messages is not None:
        raise mapping.classify_messages(messages, method)
    return body


def _published(settings: Settings) -> tuple[int, int, int]:
    """(standard, market data, trading) per minute for the configured host."""
    sandbox = "sandbox" in (urlsplit(settings.tradier_base_url).hostname or "")
    standard, market, trading = (60, 60, 60) if sandbox else (120, 120, 60)
    return (
        settings.tradier_standard_per_minute or standard,
        settings.tradier_market_data_per_minute or market,
        settings.tradier_trading_per_minute or trading,
    )


def stream_url(settings: Settings) -> str:
    """The account-events WebSocket for the configured REST host.

    https://docs.tradier.com/reference/websocket-account-data-streaming:
    wss://ws.tradier.com/v1/accounts/events, paper: wss://sandbox-ws.tradier.com.
    """
    if settings.tradier_stream_url:
        return settings.tradier_stream_url
    parts = urlsplit(settings.tradier_base_url)
    host = parts.netloc
    if parts.hostname == "api.tradier.com":
        return "wss://ws.tradier.com/v1/accounts/events"
    if parts.hostname == "sandbox.tradier.com":
        return "wss://sandbox-ws.tradier.com/v1/accounts/events"
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{host}/v1/accounts/events"


class TradierAdapter(PooledAdapter):
    slug = SLUG
    capabilities = TRADIER_CAPABILITIES

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        self._credentials = credentials
        headers = auth.headers(credentials)
        assert credentials is not None  # auth.headers refused None
        key = auth.bucket_key(credentials)
        standard, market, trading = _published(settings)

        def client(kind: str, per_minute: int) -> BrokerClient:
            return self._broker_client(
                settings.tradier_base_url,
                headers=headers,
                bucket=self._pacer(f"{key}:{kind}", per_minute=per_minute),
                classifier=mapping.classify,
                retry_after_from=mapping.retry_after,
            )

        self._standard = client("standard", standard)
        self._market = client("market", market)
        self._trading = client("trading", trading)

    def __repr__(self) -> str:
        return f"TradierAdapter(base_url={self._settings.tradier_base_url!r})"

    @staticmethod
    def _account(account_ref: str) -> str:
        return f"/v1/accounts/{quote(account_ref, safe='')}"

    def _order_path(self, account_ref: str, broker_order_id: str) -> str:
        return f"{self._account(account_ref)}/orders/{quote(broker_order_id, safe='')}"

    # --- account ---------------------------------------------------------------------

    async def get_profile(self) -> list[dict[str, Any]]:
        """``GET /v1/user/profile``: the token's accounts; how a new token is validated."""
        response = await self._standard.request("GET", "/v1/user/profile")
        return mapping.profile_accounts(_checked(response, "GET"))

    async def list_accounts(self) -> list[BrokerAccount]:
        return read_rows(
            await self.get_profile(),
            _account_from_wire,
            broker=SLUG,
            kind="account",
            row_id=lambda row: _masked(str(row.get("account_number") or "")),
        )

    async def get_balances(self, account_ref: str) -> Balances:
        response = await self._standard.request("GET", f"{self._account(account_ref)}/balances")
        return mapping.balances_from_wire(_checked(response, "GET"), self._now())

    async def _raw_positions(self, account_ref: str) -> list[dict[str, Any]]:
        response = await self._standard.request("GET", f"{self._account(account_ref)}/positions")
        return mapping.items(_checked(response, "GET"), "positions", "position")

    async def get_positions(self, account_ref: str) -> list[Position]:
        raw = await self._raw_positions(account_ref)
        symbols = sorted({str(p.get("symbol")) for p in raw if isinstance(p.get("symbol"), str)})
        quotes = await self.get_quotes(symbols) if symbols else {}
        now = self._now()
        return read_rows(
            raw,
            lambda p: mapping.position_from_wire(p, quotes.get(str(p.get("symbol"))), now),
            broker=SLUG,
            kind="position",
        )

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        """No single-position endpoint: the list, filtered, priced for that symbol only."""
        for item in await self._raw_positions(account_ref):
            if item.get("symbol") == symbol:
                quotes = await self.get_quotes([symbol])
                return mapping.position_from_wire(item, quotes.get(symbol), self._now())
        return None

    async def _quotes_body(self, symbols: list[str]) -> Any:
        response = await self._market.request(
            "GET", "/v1/markets/quotes", params={"symbols": ",".join(symbols), "greeks": "false"}
        )
        return _checked(response, "GET")

    async def check_symbol(self, symbol: str) -> None:
        """A symbol Tradier lists in ``unmatched_symbols`` (or does not quote) is refused.

        A known answer is remembered for ``QUOTE_TTL``; refusals are not remembered.
        """
        memo_key = ("tradier-symbol", self._settings.tradier_base_url, symbol)
        if self._pool.recall(memo_key) is True:
            return
        body = await self._quotes_body([symbol])
        known = {i.get("symbol") for i in mapping.items(body, "quotes", "quote")}
        if symbol in mapping.unmatched_symbols(body) or symbol not in known:
            raise errors.UnknownSymbol(f"Tradier does not list {symbol}", broker=SLUG)
        self._pool.remember(memo_key, True, QUOTE_TTL)

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        if not symbols:
            return {}
        return mapping.quotes_from_wire(await self._quotes_body(symbols), symbols)

    # --- orders ----------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        """``POST .../orders`` (form), then the order read back by the id Tradier gave.

        If the read-back fails, the order is known to exist (Tradier said ``ok`` and gave
        its id), so it is reported ``submitted`` from what was sent, never as a failure.
        """
        form = mapping.order_to_form(order, self._now())
        response = await self._trading.request(
            "POST", f"{self._account(account_ref)}/orders", data=form
        )
        broker_order_id = mapping.ack_id(_checked(response, "POST"))
        try:
            return await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError as exc:
            log.warning(
                "tradier accepted an order that could not be read back",
                extra={"broker": SLUG, "reason": exc.reason},
            )
            now = self._now()
            return BrokerOrder(
                broker_order_id=broker_order_id,
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=order.side,
                quantity=order.quantity,
                filled_quantity=Decimal(0),
                avg_fill_price=None,
                order_type=order.order_type,
                time_in_force=order.time_in_force,
                status=OrderStatus.submitted,
                limit_price=order.limit_price,
                stop_price=order.stop_price,
                created_at=now,
                updated_at=now,
                position_effect=order.position_effect,
                legs=tuple(
                    BrokerOrderLeg(
                        symbol=leg.symbol,
                        side=leg.side,
                        ratio=leg.ratio,
                        position_effect=leg.position_effect,
                        filled_quantity=Decimal(0),
                        avg_fill_price=None,
                    )
                    for leg in order.legs
                ),
                price_effect=order.price_effect,
            )

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        """The same form with ``preview=true``: Tradier runs every validation and buying-power
        check and answers costs, fees and the margin change, placing nothing
        (https://documentation.tradier.com/brokerage-api/trading/preview-order). A refusal
        (``errors``, with status 200 for downstream checks) is returned as rejections; a
        malformed request (400) still raises."""
        form = {**mapping.order_to_form(order, self._now()), "preview": "true"}
        response = await self._trading.request(
            "POST", f"{self._account(account_ref)}/orders", data=form
        )
        return mapping.preview_from_wire(_loads(response), mapping.order_direction(order))

    # --- options discovery -------------------------------------------------------------

    async def list_option_expirations(self, underlying: str) -> list[OptionExpiration]:
        """``GET /v1/markets/options/expirations`` with ``includeAllRoots`` (so SPXW-style
        weekly roots are listed, get-options-expirations) and ``expirationType``."""
        memo_key = ("tradier-expirations", self._settings.tradier_base_url, underlying)
        remembered = self._pool.recall(memo_key)
        if isinstance(remembered, list):
            return list(remembered)
        response = await self._market.request(
            "GET",
            "/v1/markets/options/expirations",
            params={"symbol": underlying, "includeAllRoots": "true", "expirationType": "true"},
        )
        found = mapping.expirations_from_wire(_checked(response, "GET"))
        if found is None:
            raise errors.UnknownSymbol(f"Tradier lists no options on {underlying}", broker=SLUG)
        self._pool.remember(memo_key, found, EXPIRATIONS_TTL)
        return list(found)

    async def get_option_chain(self, query: OptionChainQuery) -> list[OptionQuote]:
        """``GET /v1/markets/options/chains?symbol&expiration&greeks=true``: one expiration per
        call, so without one every listed expiration is read (the service bounds the query).
        Tradier cannot filter by right or strike; the filters are applied here too."""
        if query.expiration is not None:
            days = [query.expiration]
        else:
            days = [e.expiration for e in await self.list_option_expirations(query.underlying)]
        result: list[OptionQuote] = []
        for day_ in days:
            response = await self._market.request(
                "GET",
                "/v1/markets/options/chains",
                params={
                    "symbol": query.underlying,
                    "expiration": day_.isoformat(),
                    "greeks": "true",
                },
            )
            result.extend(mapping.chain_from_wire(_checked(response, "GET"), self._now()))
        return [q for q in result if _wanted(q, query)]

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """``PUT .../orders/{id}`` (form): price, stop, duration; the id is kept. For a
        multileg order the price is the unsigned net price (its type keeps the sign)."""
        if changes.is_empty():
            return await self.get_order(account_ref, broker_order_id)
        form = mapping.changes_to_form(changes)
        response = await self._trading.request(
            "PUT", self._order_path(account_ref, broker_order_id), data=form
        )
        mapping.ack_id(_checked(response, "PUT"))
        return await self._read_after_write(account_ref, broker_order_id, "change")

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        response = await self._trading.request(
            "DELETE", self._order_path(account_ref, broker_order_id)
        )
        mapping.ack_id(_checked(response, "DELETE"))
        return await self._read_after_write(account_ref, broker_order_id, "cancel")

    async def _read_after_write(
        self, account_ref: str, broker_order_id: str, what: str
    ) -> BrokerOrder:
        try:
            return await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError as exc:
            # The write was acknowledged; only its result is unknown. Reporting the read
            # failure as such would make the caller believe nothing changed.
            raise errors.OutcomeUnknown(
                f"the {what} was accepted but the order could not be read: {exc.reason}",
                broker=SLUG,
            ) from exc

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        response = await self._standard.request(
            "GET", self._order_path(account_ref, broker_order_id), params={"includeTags": "true"}
        )
        body = _checked(response, "GET")
        if not isinstance(body, dict):
            raise mapping.unknown("order payload", type(body).__name__)
        return mapping.order_from_wire(body.get("order"))

    async def _order_pages(
        self, account_ref: str, params: dict[str, str]
    ) -> AsyncIterator[RowList[BrokerOrder]]:
        """Pages of orders (``page``/``limit``). A row the mapping cannot represent (a
        combo/oto/oco/otoco order, an unknown value) is left out and counted (``read_rows``)."""
        for page in range(1, MAX_PAGES + 1):
            query = {**params, "page": str(page), "limit": str(PAGE), "includeTags": "true"}
            response = await self._standard.request(
                "GET", f"{self._account(account_ref)}/orders", params=query
            )
            raw = mapping.items(_checked(response, "GET"), "orders", "order")
            yield read_rows(raw, mapping.order_from_wire, broker=SLUG, kind="order")
            if len(raw) < PAGE:
                return

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        """The order whose tag maps back to ``client_order_id``, from the recent listing.

        Tradier cannot look an order up by tag; the default listing (today's session and
        open orders) is paged through. Recent is what reconciliation needs.
        """
        async for page in self._order_pages(account_ref, {}):
            for order in page:
                if order.client_order_id == client_order_id:
                    return order
        return None

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        wanted: list[BrokerOrder] = []
        skipped = 0
        async for page in self._order_pages(account_ref, {}):
            skipped += page.skipped
            for order in page:
                is_open = order.status in _WORKING
                if status == "all" or (status == "open") == is_open:
                    wanted.append(order)
        wanted.sort(key=lambda o: o.created_at, reverse=True)
        return _rows(wanted[: max(1, limit)], skipped)

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        """``filter=all`` with ``start``/``end`` dates (at most a month per the docs)."""
        params = {"filter": "all"}
        if start is not None:
            params["start"] = mapping.day(start)
        if end is not None:
            params["end"] = mapping.day(end)
        result: list[BrokerOrder] = []
        skipped = 0
        async for page in self._order_pages(account_ref, params):
            skipped += page.skipped
            result.extend(o for o in page if symbol is None or o.symbol == symbol)
        result.sort(key=lambda o: o.created_at, reverse=True)
        return _rows(result, skipped)

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        """``GET .../history``: nightly data from the clearing firm (no intraday events).

        Its ``symbol`` parameter is documented only as "Filter by security symbol" (with
        ``exactMatch``, "Filter using the exact match";
        https://developer.tradier.com/documentation/accounts/get-account-history), not as
        returning the ``OPTEXP`` rows of an option symbol (they carry no symbol), so it is
        not used to tell which contract expired."""
        params = {"limit": str(PAGE * MAX_PAGES)}
        if start is not None:
            params["start"] = mapping.day(start)
        if end is not None:
            params["end"] = mapping.day(end)
        response = await self._standard.request(
            "GET", f"{self._account(account_ref)}/history", params=params
        )
        events = mapping.items(_checked(response, "GET"), "history", "event")
        result = read_rows(
            enumerate(events),
            lambda pair: mapping.transaction_from_event(*pair),
            broker=SLUG,
            kind="transaction",
            row_id=lambda pair: f"{pair[1].get('date')}#{pair[0]}",
        )
        if type_ is not None:
            return _rows([t for t in result if t.type == type_], result.skipped)
        return result

    # --- streaming -------------------------------------------------------------------

    async def create_stream_session(self) -> str:
        """``POST /v1/accounts/events/session`` -> the session id (valid five minutes).

        https://documentation.tradier.com/brokerage-api/streaming/create-account-session:
        ``{"stream": {"url": ..., "sessionid": ...}}``. The URL in the answer is ignored:
        where we connect is configuration, never something a response decides.
        """
        response = await self._standard.request("POST", "/v1/accounts/events/session")
        body = _checked(response, "POST")
        stream = body.get("stream") if isinstance(body, dict) else None
        session = stream.get("sessionid") if isinstance(stream, dict) else None
        if not isinstance(session, str) or not session:
            raise mapping.unknown("stream session", body)
        return session

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return self.stream_accounts_order_updates([account_ref])

    def stream_accounts_order_updates(
        self, account_refs: Sequence[str]
    ) -> AsyncIterator[OrderUpdate]:
        """One session for all of them: Tradier allows one streaming session per user."""
        from app.brokers.tradier.stream import AccountEventsStream

        return AccountEventsStream(
            stream_url(self._settings),
            account_refs,
            create_session=self.create_stream_session,
            fetch_order=self.get_order,
            catch_up=self.recent_orders,
        ).updates()

    async def recent_orders(self, account_ref: str) -> list[BrokerOrder]:
        """After a gap: the account's current listing (the stream has no replay)."""
        return await self.list_orders(account_ref, "all", PAGE * MAX_PAGES)

    # --- market data -------------------------------------------------------------------

    async def create_market_session(self) -> str:
        """``POST /v1/markets/events/session`` -> a market-stream session id (5 minutes)."""
        response = await self._market.request("POST", "/v1/markets/events/session")
        body = _checked(response, "POST")
        stream = body.get("stream") if isinstance(body, dict) else None
        session = stream.get("sessionid") if isinstance(stream, dict) else None
        if not isinstance(session, str) or not session:
            raise mapping.unknown("market stream session", body)
        return session

    def market_data_session(self) -> TradierMarketSession:
        """The market WebSocket beside the account one (same host, ``/v1/markets/events``)."""
        url = stream_url(self._settings).replace("/v1/accounts/events", "/v1/markets/events")
        return TradierMarketSession(url, self.create_market_session)

    async def get_bars(
        self, symbol: str, interval: BarInterval, start: datetime, end: datetime, limit: int
    ) -> list[Bar]:
        async def request(path: str, params: dict[str, str]) -> Any:
            return _checked(await self._market.request("GET", path, params=params), "GET")

        return await _get_bars(request, symbol, interval, start, end, limit, self._now())


def _wanted(quote: OptionQuote, query: OptionChainQuery) -> bool:
    contract = quote.contract
    if query.right is not None and contract.right is not query.right:
        return False
    if query.strike_gte is not None and contract.strike < query.strike_gte:
        return False
    return query.strike_lte is None or contract.strike <= query.strike_lte


def _rows(items: list[_T], skipped: int) -> RowList[_T]:
    rows: RowList[_T] = RowList(items)
    rows.skipped = skipped
    return rows


def _account_from_wire(account: dict[str, Any]) -> BrokerAccount | None:
    """One ``profile.account``; a closed account is not listed (None: not a row of the list).
    Documented statuses: active, closed (https://docs.tradier.com/docs/user-profile)."""
    number = account.get("account_number")
    if not isinstance(number, str) or not number:
        raise mapping.unknown("account_number", number)
    if account.get("status") == "closed":
        return None
    masked = _masked(number)
    kind = account.get("classification") or account.get("type") or "account"
    return BrokerAccount(
        broker_account_id=number,
        name=f"Tradier {str(kind).replace('_', ' ')} {masked}",
        number_masked=masked,
    )


def _masked(number: str) -> str:
    return "****" + number[-4:] if len(number) > 4 else "****"

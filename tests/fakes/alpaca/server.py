"""A fake Alpaca (Trading API v2, latest market data, trade_updates stream) for tests.

It speaks the real protocol: the paths, the ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``
headers, the field names and string decimals of the spec's ``Order``, ``Account``,
``Position``, ``Assets`` and activity schemas (../shared/specs/alpaca-trading-api.json, the
equity order example is copied field for field), the status vocabulary, ``{"code",
"message"}`` error bodies, 429 with ``Retry-After``, and the stream handshake of
https://docs.alpaca.markets/docs/websocket-streaming (JSON in binary frames, as Alpaca sends).

Prices come from the paper market (``app.paper.quotes.SeededQuoteSource``) and orders match by
the paper broker's rules (``app.paper.matching.decide``), over in-memory books. Why not a
``PaperEngine``: this stands in for another company's server, so it must not share the
gateway's database, must start instantly for ``scripts/fake-brokers``, and must model
Alpaca's own semantics (replace makes a new order id, ``new``/``accepted`` statuses, 204 on
cancel, a unique ``client_order_id``), which the paper engine rightly does not have.

Options (contracts, chain snapshots, single-leg and ``mleg`` orders) list and price the
paper option market (``app.paper.options_market.SeededOptionMarket``), so the fake's chain is
the paper broker's. An mleg order is one parent whose ``legs[]`` are child orders (spec
example ``MultilegOptionsOrderResponse``); it fills atomically, every leg at once, when the
legs' natural net price reaches its signed limit (positive debit, negative credit).

Matching happens when the test (or the fake-brokers ticker) calls ``match()``: nothing moves
on its own, so tests are deterministic. Fault switches live in ``faults``; see ``Faults``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers.base import (
    AssetClass,
    InvalidOptionSymbol,
    OptionContract,
    OptionRight,
    OrderSide,
    OrderType,
    TimeInForce,
    is_option_symbol,
)
from app.paper.matching import OrderState, decide
from app.paper.options_market import SeededOptionMarket
from app.paper.quotes import UNIVERSE, PaperQuote, SeededQuoteSource
from tests.fakes.alpaca.market_stream import AlpacaMarketStream

ZERO = Decimal(0)
OPEN_STATUSES = frozenset(
    {
        "new",
        "partially_filled",
        "accepted",
        "pending_new",
        "pending_cancel",
        "pending_replace",
        "held",
        "accepted_for_bidding",
        "done_for_day",
        "stopped",
        "suspended",
        "calculated",
    }
)
REPLACEABLE = frozenset({"new", "partially_filled", "held", "done_for_day"})
FINAL = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})
MULTIPLIER = Decimal(100)
INTENTS = {
    "buy_to_open": "buy",
    "buy_to_close": "buy",
    "sell_to_open": "sell",
    "sell_to_close": "sell",
}
# Spec ``OrderType``: "Options trading: market, limit. Multileg Options trading: market,
# limit". TIF: the spec says day for options; GTC was added later
# (https://alpaca.markets/learn/how-to-trade-good-til-canceled-options-trading-with-python-and-alpaca).
OPTION_TYPES = frozenset({"market", "limit"})
OPTION_TIFS = frozenset({"day", "gtc"})


def iso(at: datetime) -> str:
    """Alpaca's timestamps: RFC 3339 UTC with nanoseconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def error(status: int, code: int, message: str, **headers: str) -> JSONResponse:
    """The spec's ``Error`` schema: ``{"code": number, "message": string}``."""
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds added before every REST answer; ``latency_by_key`` overrides it
    for the requests of one API key (one slow account among many). ``server_errors`` /
    ``server_error_status``: the next N REST requests (of ``server_errors_method`` only, when
    set) answer 5xx. ``rate_limited`` /
    ``retry_after``: the next N answer 429 with ``Retry-After``. ``timeout_after_accept``: the
    next N ``POST /v2/orders`` create the order, then hold the answer ``hang_seconds`` (the
    client times out). ``timeout_after_replace``: the same for the next N replaces
    (``PATCH /v2/orders/{id}``): the replacement exists, its answer never comes.
    ``stream_silent``: stream connections stay open and say nothing.
    ``drop_streams()`` and ``revoke(key)`` on ``FakeAlpaca`` cover the rest.
    """

    latency: float = 0.0
    latency_by_key: dict[str, float] = field(default_factory=dict)
    server_errors: int = 0
    server_error_status: int = 500
    server_errors_method: str | None = None  # only requests with this method fail
    rate_limited: int = 0
    rate_limited_method: str | None = None  # only requests with this method answer 429
    retry_after: int = 7
    timeout_after_accept: int = 0
    timeout_after_replace: int = 0
    hang_seconds: float = 30.0
    stream_silent: bool = False


@dataclass
class FakeOrder:
    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    created_at: datetime
    status: str = "new"
    filled_qty: Decimal = ZERO
    filled_avg_price: Decimal | None = None
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    stop_triggered: bool = False
    asset_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Options: ``order_class`` "simple" or "mleg"; an mleg parent has ``legs`` (child
    # orders, kept in ``FakeAccount.legs``) and "" for symbol, side and asset class; a child
    # has ``type`` "", its ``ratio_qty`` and its ``position_intent``.
    order_class: str = ""
    position_intent: str | None = None
    ratio_qty: Decimal | None = None
    legs: list[FakeOrder] | None = None
    # A dollar-amount order: ``qty`` on the wire is null (spec ``Order.notional``: "If
    # entered, qty will be null"); ``qty`` here is the estimate, fixed at the fill price.
    notional: Decimal | None = None

    @property
    def is_option(self) -> bool:
        return is_option_symbol(self.symbol) if self.symbol else False

    @property
    def is_mleg(self) -> bool:
        return self.legs is not None

    def asset_class(self) -> str:
        if self.is_mleg:
            return ""
        if self.is_option:
            return "us_option"
        return "crypto" if "/" in self.symbol else "us_equity"

    def wire(self, *, nested: bool = True) -> dict[str, Any]:
        """Field for field the spec's ``EquityOrderResponse`` example (``OptionOrderResponse``
        and ``MultilegOptionsOrderResponse`` for options). ``nested``: an mleg parent with
        its legs (spec parameter ``nested``; without it ``legs`` is null)."""

        def opt(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        def opt_ts(value: datetime | None) -> str | None:
            return None if value is None else iso(value)

        wire = {
            "asset_class": self.asset_class(),
            "asset_id": "" if self.is_mleg else self.asset_id,
            "canceled_at": opt_ts(self.canceled_at),
            "client_order_id": self.client_order_id,
            "created_at": iso(self.created_at),
            "expired_at": opt_ts(self.expired_at),
            "extended_hours": self.extended_hours,
            "failed_at": None,
            "filled_at": opt_ts(self.filled_at),
            "filled_avg_price": opt(self.filled_avg_price),
            "filled_qty": str(self.filled_qty),
            "hwm": None,
            "id": self.id,
            "legs": [leg.wire() for leg in self.legs or ()] if self.is_mleg and nested else None,
            "limit_price": opt(self.limit_price),
            "notional": opt(self.notional),
            "order_class": self.order_class,
            "order_type": self.type,
            "qty": None if self.notional is not None else str(self.qty),
            "replaced_at": opt_ts(self.replaced_at),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "side": self.side,
            "source": None,
            "status": self.status,
            "stop_price": opt(self.stop_price),
            "submitted_at": iso(self.created_at),
            "subtag": None,
            "symbol": self.symbol,
            "time_in_force": self.time_in_force,
            "trail_percent": None,
            "trail_price": None,
            "type": self.type,
            "updated_at": iso(self.updated_at or self.created_at),
        }
        if self.position_intent is not None:
            wire["position_intent"] = self.position_intent
        if self.ratio_qty is not None:
            wire["ratio_qty"] = str(self.ratio_qty)
            wire["expires_at"] = iso(self.created_at.replace(hour=21, minute=0, second=0))
        return wire


@dataclass
class FakePosition:
    qty: Decimal = ZERO
    cost_basis: Decimal = ZERO


@dataclass
class FakeAccount:
    key_id: str
    secret: str
    cash: Decimal
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    account_number: str = field(default_factory=lambda: "PA" + uuid.uuid4().hex[:10].upper())
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    revoked: bool = False
    # Level 3 trades multi-leg options (account fields ``options_approved_level`` /
    # ``options_trading_level``; https://docs.alpaca.markets/docs/options-level-3-trading).
    options_level: int = 3
    # A margin account that may sell short (account ``shorting_enabled``; a sell with no
    # long position is then a short sale, https://docs.alpaca.markets/docs/margin-and-short-selling).
    shorting: bool = False
    do_not_exercise: set[str] = field(default_factory=set)
    # Rows placed outside this fake's order form, answered as given (``GET /v2/orders``
    # and ``GET /v2/positions``): what another client or Alpaca's dashboard left there.
    foreign_orders: list[dict[str, Any]] = field(default_factory=list)
    foreign_positions: list[dict[str, Any]] = field(default_factory=list)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    legs: dict[str, FakeOrder] = field(default_factory=dict)  # mleg child orders by id
    positions: dict[str, FakePosition] = field(default_factory=dict)
    activities: list[dict[str, Any]] = field(default_factory=list)
    streams: set[asyncio.Queue[bytes | None]] = field(default_factory=set)


class FakeAlpaca:
    """The fake's state, its fault switches and its ASGI ``app``."""

    def __init__(
        self, *, seed: int = 20260522, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.quotes = SeededQuoteSource(seed)
        self.options = SeededOptionMarket(self.quotes)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.accounts: dict[str, FakeAccount] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST request
        # (method, path, APCA-API-KEY-ID header) of every REST request: which key was used
        self.keyed_requests: list[tuple[str, str, str]] = []
        self._release = asyncio.Event()
        self._sockets: set[WebSocket] = set()
        self.app = Starlette(
            routes=[
                Route("/v2/account", self.get_account, methods=["GET"]),
                Route("/v2/account/activities", self.get_activities, methods=["GET"]),
                Route("/v2/account/configurations", self.configurations, methods=["GET"]),
                Route("/v2/clock", self.get_clock, methods=["GET"]),
                Route("/v2/positions", self.get_positions, methods=["GET", "DELETE"]),
                Route("/v2/positions/{symbol:path}/exercise", self.exercise, methods=["POST"]),
                Route(
                    "/v2/positions/{symbol:path}/do-not-exercise",
                    self.do_not_exercise,
                    methods=["POST"],
                ),
                Route("/v2/positions/{symbol:path}", self.get_position, methods=["GET", "DELETE"]),
                Route("/v2/assets/{symbol:path}", self.get_asset, methods=["GET"]),
                Route("/v2/orders", self.orders, methods=["GET", "POST", "DELETE"]),
                Route("/v2/orders:by_client_order_id", self.by_client_id, methods=["GET"]),
                Route("/v2/orders/{order_id}", self.order, methods=["GET", "PATCH", "DELETE"]),
                Route("/v2/stocks/quotes/latest", self.latest_quotes, methods=["GET"]),
                Route("/v2/stocks/trades/latest", self.latest_trades, methods=["GET"]),
                Route("/v2/options/contracts", self.option_contracts, methods=["GET"]),
                Route(
                    "/v2/options/contracts/{symbol_or_id}",
                    self.option_contract,
                    methods=["GET"],
                ),
                Route("/v1beta1/options/quotes/latest", self.latest_option_quotes, methods=["GET"]),
                Route("/v1beta1/options/trades/latest", self.latest_option_trades, methods=["GET"]),
                Route(
                    "/v1beta1/options/snapshots/{underlying}",
                    self.option_snapshots,
                    methods=["GET"],
                ),
                WebSocketRoute("/stream", self.stream),
            ],
            exception_handlers={HTTPException: _http_error},
        )
        self.market = AlpacaMarketStream(self)  # market-data streams and bars (market_stream)
        self.app.router.routes.extend(self.market.routes())

    # --- test controls -----------------------------------------------------------------

    def add_account(
        self, key_id: str | None = None, secret: str | None = None, cash: str = "100000"
    ) -> FakeAccount:
        account = FakeAccount(
            key_id=key_id or "PK" + uuid.uuid4().hex[:18].upper(),
            secret=secret or uuid.uuid4().hex + uuid.uuid4().hex,
            cash=Decimal(cash),
        )
        self.accounts[account.key_id] = account
        account.activities.append(
            {
                "activity_type": "CSD",
                "id": f"{self.clock():%Y%m%d%H%M%S%f}::{uuid.uuid4()}",
                "date": self.clock().date().isoformat(),
                "net_amount": money(account.cash),
                "description": "",
                "status": "executed",
            }
        )
        return account

    def revoke(self, key_id: str) -> None:
        self.accounts[key_id].revoked = True

    def regenerate_key(self, key_id: str) -> FakeAccount:
        """A new key id and secret for the same account; the old key stops working.

        What the dashboard's "regenerate" does to an API key
        (https://forum.alpaca.markets/t/alpaca-ui-dashboard/18758): the account, its orders
        and positions stay, only the credential changes.
        """
        account = self.accounts.pop(key_id)
        account.key_id = "PK" + uuid.uuid4().hex[:18].upper()
        account.secret = uuid.uuid4().hex + uuid.uuid4().hex
        self.accounts[account.key_id] = account
        return account

    def drop_streams(self) -> None:
        """Close every stream connection at once (as a network drop would)."""
        for account in self.accounts.values():
            for queue in account.streams:
                queue.put_nowait(None)

    def release_hung(self) -> None:
        """Let requests held by ``timeout_after_accept`` finish (used at shutdown)."""
        self._release.set()

    def set_status(self, order_id: str, status: str) -> None:
        """Force a status, even one outside Alpaca's vocabulary (for mapping tests)."""
        for account in self.accounts.values():
            if order_id in account.orders:
                account.orders[order_id].status = status
                return
        raise KeyError(order_id)

    def order_count(self, key_id: str) -> int:
        return len(self.accounts[key_id].orders)

    async def match(self) -> int:
        """Evaluate every working order against the current quote; returns fills made."""
        fills = 0
        for account in self.accounts.values():
            for order in list(account.orders.values()):
                if order.status not in ("new", "partially_filled"):
                    continue
                if order.is_mleg:
                    fills += self._evaluate_mleg(account, order)
                elif order.is_option:
                    fills += self._evaluate_option(account, order)
                else:
                    fills += self._evaluate(account, order)
        return fills

    # --- plumbing ------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> FakeAccount | JSONResponse:
        key = request.headers.get("APCA-API-KEY-ID")
        secret = request.headers.get("APCA-API-SECRET-KEY")
        account = self.accounts.get(key or "")
        if account is None or account.secret != secret or account.revoked:
            return error(401, 40110000, "request is not authorized")
        return account

    async def _gate(self, request: Request) -> FakeAccount | Response:
        self.requests.append((request.method, request.url.path))
        self.keyed_requests.append(
            (request.method, request.url.path, request.headers.get("APCA-API-KEY-ID") or "")
        )
        await request.body()  # received in full before any delay, as a real server would
        latency = self.faults.latency_by_key.get(
            request.headers.get("APCA-API-KEY-ID") or "", self.faults.latency
        )
        if latency:
            # Ends early only at shutdown (``release_hung``), so a stopping fake does not
            # have to cancel handlers still sleeping out a long latency.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), latency)
        method_matches = self.faults.server_errors_method in (None, request.method)
        if self.faults.server_errors > 0 and method_matches:
            self.faults.server_errors -= 1
            status = self.faults.server_error_status
            return error(status, status * 100000, "internal server error")
        if self.faults.rate_limited > 0 and self.faults.rate_limited_method in (
            None,
            request.method,
        ):
            self.faults.rate_limited -= 1
            return error(
                429,
                42910000,
                "rate limit exceeded",
                **{"Retry-After": str(self.faults.retry_after)},
            )
        return self._authenticate(request)

    def _now(self) -> datetime:
        return self.clock()

    def _instrument_symbol(self, symbol: str) -> str:
        return symbol.replace("/", "-")

    def _broadcast(self, account: FakeAccount, event: str, order: FakeOrder, **extra: Any) -> None:
        data = {"event": event, "order": order.wire(), "timestamp": iso(self._now()), **extra}
        if event in ("fill", "partial_fill"):
            data.setdefault("execution_id", str(uuid.uuid4()))
        frame = json.dumps({"stream": "trade_updates", "data": data}).encode()
        if self.faults.stream_silent:
            return
        for queue in account.streams:
            queue.put_nowait(frame)

    # --- account, positions, assets, activities -----------------------------------------

    def _position_value(self, account: FakeAccount) -> Decimal:
        total = ZERO
        for symbol, position in account.positions.items():
            total += position.qty * self._mark(symbol) * self._multiplier(symbol)
        return total

    def _mark(self, symbol: str) -> Decimal:
        if is_option_symbol(symbol):
            return self.options.quote(OptionContract.parse(symbol), self._now()).mark
        return self.quotes.quote(self._instrument_symbol(symbol), self._now()).last

    @staticmethod
    def _multiplier(symbol: str) -> Decimal:
        return MULTIPLIER if is_option_symbol(symbol) else Decimal(1)

    def _reserved(self, account: FakeAccount) -> Decimal:
        reserved = ZERO
        for order in account.orders.values():
            if order.status not in OPEN_STATUSES:
                continue
            remaining = order.qty - order.filled_qty
            if order.is_mleg:
                net = order.limit_price if order.limit_price is not None else self._natural(order)
                reserved += max(net, ZERO) * remaining * MULTIPLIER
            elif order.side == "buy":
                price = order.limit_price or self._touch(order.symbol, "buy")
                reserved += remaining * price * self._multiplier(order.symbol)
        return reserved

    def _touch(self, symbol: str, side: str) -> Decimal:
        """The price a marketable order of ``side`` trades at now (ask to buy, bid to sell)."""
        if is_option_symbol(symbol):
            q = self.options.quote(OptionContract.parse(symbol), self._now())
            return q.ask if side == "buy" else q.bid
        quote = self.quotes.quote(self._instrument_symbol(symbol), self._now())
        return quote.ask if side == "buy" else quote.bid

    def _natural(self, order: FakeOrder) -> Decimal:
        """An mleg order's natural net price per strategy unit: legs bought at the ask, sold
        at the bid; positive is a debit, negative a credit (the ``limit_price`` sign)."""
        net = ZERO
        for leg in order.legs or ():
            ratio = leg.ratio_qty or Decimal(1)
            price = self._touch(leg.symbol, leg.side)
            net += ratio * price if leg.side == "buy" else -ratio * price
        return net

    async def get_account(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        long_value = self._position_value(account)
        equity = account.cash + long_value
        buying_power = account.cash - self._reserved(account)
        return JSONResponse(
            {
                "account_blocked": False,
                "account_number": account.account_number,
                "accrued_fees": "0",
                "balance_asof": self._now().date().isoformat(),
                "buying_power": money(buying_power),
                "cash": money(account.cash),
                "created_at": iso(account.created_at),
                "crypto_status": "ACTIVE",
                "currency": "USD",
                "daytrade_count": 0,
                "daytrading_buying_power": "0",
                "equity": money(equity),
                "id": account.id,
                "initial_margin": "0",
                "last_equity": money(equity),
                "last_maintenance_margin": "0",
                "long_market_value": money(long_value),
                "maintenance_margin": "0",
                "multiplier": "2" if account.shorting else "1",
                "non_marginable_buying_power": money(buying_power),
                "options_approved_level": account.options_level,
                "options_buying_power": money(buying_power),
                "options_trading_level": account.options_level,
                "pattern_day_trader": False,
                "pending_reg_taf_fees": "0",
                "portfolio_value": money(equity),
                "regt_buying_power": money(buying_power),
                "short_market_value": "0",
                "shorting_enabled": account.shorting,
                "sma": "0",
                "status": "ACTIVE",
                "trade_suspended_by_user": False,
                "trading_blocked": False,
                "transfers_blocked": False,
            }
        )

    def _option_position_wire(self, symbol: str, position: FakePosition) -> dict[str, Any]:
        """An option position (spec ``Position``): per-share prices, ``market_value`` and
        ``cost_basis`` in dollars with the multiplier, signed for a short (``side: short``),
        ``exchange`` "" ("Can be empty ... for options contracts", ``ExchangeForPosition``)."""
        mark = self._mark(symbol)
        market_value = position.qty * mark * MULTIPLIER
        avg = (abs(position.cost_basis) / (abs(position.qty) * MULTIPLIER)).quantize(
            Decimal("0.0001")
        )
        pl = market_value - position.cost_basis
        plpc = (
            (pl / abs(position.cost_basis)).quantize(Decimal("0.0001"))
            if position.cost_basis
            else 0
        )
        return {
            "asset_class": "us_option",
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-option:" + symbol)),
            "asset_marginable": False,
            "avg_entry_price": str(avg),
            "change_today": "0",
            "cost_basis": money(position.cost_basis),
            "current_price": str(mark),
            "exchange": "",
            "lastday_price": str(mark),
            "market_value": money(market_value),
            "qty": str(position.qty),
            "qty_available": str(position.qty),
            "side": "long" if position.qty > 0 else "short",
            "symbol": symbol,
            "unrealized_intraday_pl": money(pl),
            "unrealized_intraday_plpc": str(plpc),
            "unrealized_pl": money(pl),
            "unrealized_plpc": str(plpc),
        }

    def _position_wire(self, symbol: str, position: FakePosition) -> dict[str, Any]:
        if is_option_symbol(symbol):
            return self._option_position_wire(symbol, position)
        quote = self.quotes.quote(self._instrument_symbol(symbol), self._now())
        market_value = position.qty * quote.last
        avg = (position.cost_basis / position.qty).quantize(Decimal("0.0001"))
        pl = market_value - position.cost_basis
        basis = abs(position.cost_basis)
        plpc = (pl / basis).quantize(Decimal("0.0001")) if basis else 0
        crypto = "/" in symbol
        return {
            "asset_class": "crypto" if crypto else "us_equity",
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
            "asset_marginable": not crypto,
            "avg_entry_price": str(avg),
            "change_today": "0",
            "cost_basis": money(position.cost_basis),
            "current_price": str(quote.last),
            "exchange": "" if crypto else "NASDAQ",
            "lastday_price": str(quote.last),
            "market_value": money(market_value),
            "qty": str(position.qty),
            "qty_available": str(position.qty),
            "side": "long" if position.qty > 0 else "short",
            "symbol": symbol.replace("/", "") if crypto else symbol,
            "unrealized_intraday_pl": money(pl),
            "unrealized_intraday_plpc": str(plpc),
            "unrealized_pl": money(pl),
            "unrealized_plpc": str(plpc),
        }

    async def get_positions(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        if request.method == "DELETE":
            # Spec ``deleteAllOpenPositions``: 207, one ``PositionClosedReponse`` each.
            if request.query_params.get("cancel_orders") == "true":
                self._cancel_all(account)
            answers = []
            for symbol, position in list(account.positions.items()):
                if position.qty:
                    order = self._closing_order(account, symbol, abs(position.qty))
                    wire_symbol = symbol.replace("/", "") if "/" in symbol else symbol
                    answers.append({"body": order.wire(), "status": 200, "symbol": wire_symbol})
            return JSONResponse(answers, status_code=207)
        return JSONResponse(
            [
                *(self._position_wire(s, p) for s, p in account.positions.items() if p.qty),
                *account.foreign_positions,
            ]
        )

    @staticmethod
    def _held_symbol(account: FakeAccount, symbol: str) -> str:
        """Crypto positions answer to ``BTC/USD`` and to ``BTCUSD`` (their position form)."""
        if symbol in account.positions:
            return symbol
        for held in account.positions:
            if "/" in held and held.replace("/", "") == symbol:
                return held
        return symbol

    def _closing_order(self, account: FakeAccount, symbol: str, qty: Decimal) -> FakeOrder:
        """The market order that closes ``qty`` of a position (long or short)."""
        position = account.positions[symbol]
        now = self._now()
        crypto = "/" in symbol
        order = FakeOrder(
            id=str(uuid.uuid4()),
            client_order_id=str(uuid.uuid4()),
            symbol=symbol,
            side="sell" if position.qty > 0 else "buy",
            type="market",
            time_in_force="gtc" if crypto else "day",
            qty=qty,
            limit_price=None,
            stop_price=None,
            extended_hours=False,
            created_at=now,
            updated_at=now,
            status="accepted",
            order_class="simple" if is_option_symbol(symbol) else "",
        )
        if is_option_symbol(symbol):
            order.position_intent = "sell_to_close" if position.qty > 0 else "buy_to_close"
        account.orders[order.id] = order
        self._broadcast(account, "new", order)
        order.status = "new"
        return order

    async def get_position(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        symbol = self._held_symbol(account, request.path_params["symbol"])
        position = account.positions.get(symbol)
        if position is None or not position.qty:
            return error(404, 40410000, "position does not exist")
        if request.method == "DELETE":
            # Spec ``deleteOpenPosition``: ``qty`` or ``percentage``, the closing Order.
            params = request.query_params
            held = abs(position.qty)
            try:
                qty = _opt_decimal(params.get("qty"))
                percentage = _opt_decimal(params.get("percentage"))
            except InvalidOperation:
                return error(422, 40010001, "invalid qty or percentage")
            if qty is not None and percentage is not None:
                return error(422, 40010001, "qty and percentage cannot be used together")
            if percentage is not None:
                if not ZERO < percentage <= 100:
                    return error(422, 40010001, "percentage must be between 0 and 100")
                share = (held * percentage / 100).quantize(Decimal("0.000000001"))
                qty = Decimal(format(share.normalize(), "f"))
            qty = held if qty is None else qty
            if qty <= 0 or qty > held:
                return error(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: {qty}, available: {held})",
                )
            return JSONResponse(self._closing_order(account, symbol, qty).wire())
        return JSONResponse(self._position_wire(symbol, position))

    async def configurations(self, request: Request) -> Response:
        """``GET /v2/account/configurations`` (spec ``AccountConfigurations`` example)."""
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        return JSONResponse(
            {
                "disable_overnight_trading": False,
                "dtbp_check": "entry",
                "fractional_trading": True,
                "max_margin_multiplier": "2" if account.shorting else "1",
                "max_options_trading_level": account.options_level,
                "no_shorting": not account.shorting,
                "pdt_check": "entry",
                "ptp_no_exception_entry": False,
                "suspend_trade": False,
                "trade_confirm_email": "all",
            }
        )

    async def get_clock(self, request: Request) -> Response:
        """``GET /v2/clock`` (spec ``legacy_clock``): timestamps in US/Eastern with offset.
        The fake's market is a plain weekday 09:30-16:00 at a fixed -05:00 (no holidays)."""
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        eastern = timezone(timedelta(hours=-5))
        now = self._now().astimezone(eastern)
        opening = now.replace(hour=9, minute=30, second=0, microsecond=0)
        closing = now.replace(hour=16, minute=0, second=0, microsecond=0)
        is_open = now.weekday() < 5 and opening <= now < closing
        next_open = opening if now < opening else opening + timedelta(days=1)
        while next_open.weekday() >= 5:
            next_open += timedelta(days=1)
        next_close = closing if now < closing else closing + timedelta(days=1)
        while next_close.weekday() >= 5:
            next_close += timedelta(days=1)
        return JSONResponse(
            {
                "is_open": is_open,
                "next_close": next_close.isoformat(),
                "next_open": next_open.isoformat(),
                "timestamp": now.isoformat(),
            }
        )

    # --- option exercise and end of life -------------------------------------------------

    def _long_contract(
        self, account: FakeAccount, symbol: str, verb: str
    ) -> FakePosition | Response:
        if not is_option_symbol(symbol):
            return error(422, 42210000, "invalid symbol")
        position = account.positions.get(OptionContract.parse(symbol).symbol)
        if position is None or not position.qty:
            return error(403, 40310000, "no available position for the specified contract")
        if position.qty < 0:
            return error(403, 40310001, f"cannot {verb} short position")
        return position

    async def exercise(self, request: Request) -> Response:
        """Spec ``optionExercise``: the whole available long position, at once; 200, no
        body."""
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        symbol = request.path_params["symbol"]
        position = self._long_contract(account, symbol, "exercise")
        if isinstance(position, Response):
            return position
        self.settle_option(account.key_id, OptionContract.parse(symbol).symbol, "OPEXC")
        return Response(status_code=200)

    async def do_not_exercise(self, request: Request) -> Response:
        """Spec ``optionDoNotExercise``: 200, no body; the contract then expires unexercised."""
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        symbol = request.path_params["symbol"]
        position = self._long_contract(account, symbol, "submit DNE for")
        if isinstance(position, Response):
            return position
        account.do_not_exercise.add(OptionContract.parse(symbol).symbol)
        return Response(status_code=200)

    def settle_option(self, key_id: str, symbol: str, activity_type: str) -> None:
        """Test hook: end an option position's life as Alpaca reports it. ``OPEXP``
        (expired worthless), ``OPEXC`` (a long exercised), ``OPASN`` (a short assigned):
        the contract leaves the account with a non-trade activity whose ``qty`` is the
        signed change of the position; exercise and assignment add the underlying's
        ``OPTRD`` at the strike
        (https://docs.alpaca.markets/docs/non-trade-activities-for-option-events)."""
        account = self.accounts[key_id]
        contract = OptionContract.parse(symbol)
        position = account.positions.pop(contract.symbol)
        now = self._now()
        names = {"OPEXP": "Option Expiry", "OPEXC": "Option Exercise", "OPASN": "Option Assignment"}
        account.activities.append(
            {
                "activity_type": activity_type,
                "date": now.date().isoformat(),
                "description": names[activity_type],
                "id": f"{now:%Y%m%d%H%M%S%f}::{uuid.uuid4()}",
                "net_amount": "0",
                "qty": str(-position.qty),
                "status": "executed",
                "symbol": contract.symbol,
            }
        )
        if activity_type == "OPEXP":
            return
        shares = position.qty * contract.multiplier
        if contract.right is OptionRight.put:
            shares = -shares  # a long put sells the underlying, a short put buys it
        cash = -shares * contract.strike
        account.cash += cash
        underlying = account.positions.setdefault(contract.underlying, FakePosition())
        underlying.qty += shares
        underlying.cost_basis += shares * contract.strike
        account.activities.append(
            {
                "activity_type": "OPTRD",
                "date": now.date().isoformat(),
                "description": "Option Trade",
                "id": f"{now:%Y%m%d%H%M%S%f}::{uuid.uuid4()}",
                "net_amount": money(cash),
                "price": str(contract.strike),
                "qty": str(shares),
                "status": "executed",
                "symbol": contract.underlying,
            }
        )

    async def get_asset(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        symbol = request.path_params["symbol"]
        instrument = UNIVERSE.get(self._instrument_symbol(symbol))
        if instrument is None:
            return error(404, 40410000, "asset not found")
        crypto = instrument.asset_class is AssetClass.crypto
        return JSONResponse(
            {
                "attributes": [],
                "class": "crypto" if crypto else "us_equity",
                "easy_to_borrow": not crypto,
                "exchange": "OTC" if crypto else "NASDAQ",
                "fractionable": True,
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
                "maintenance_margin_requirement": 30,
                "marginable": not crypto,
                "name": f"{instrument.symbol} (fake)",
                "shortable": not crypto,
                "status": "active",
                "symbol": symbol,
                "tradable": True,
            }
        )

    async def get_activities(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        items = list(account.activities)
        if request.query_params.get("direction", "desc") == "desc":
            items.reverse()
        return JSONResponse(items)

    # --- orders --------------------------------------------------------------------------

    async def orders(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        if request.method == "POST":
            return await self._place(request, account)
        if request.method == "DELETE":
            return self._cancel_all(account)
        params = request.query_params
        status = params.get("status", "open")
        selected = list(account.orders.values())
        if status == "open":
            selected = [o for o in selected if o.status in OPEN_STATUSES]
        elif status == "closed":
            selected = [o for o in selected if o.status not in OPEN_STATUSES]
        elif status != "all":
            return error(422, 42210000, "invalid status")
        if "after" in params:
            after = datetime.fromisoformat(params["after"].replace("Z", "+00:00"))
            selected = [o for o in selected if o.created_at > after]
        if "until" in params:
            until = datetime.fromisoformat(params["until"].replace("Z", "+00:00"))
            selected = [o for o in selected if o.created_at < until]
        if "symbols" in params:
            wanted = set(params["symbols"].split(","))
            selected = [
                o
                for o in selected
                if o.symbol in wanted or any(leg.symbol in wanted for leg in o.legs or ())
            ]
        if "side" in params:
            selected = [o for o in selected if o.side == params["side"]]
        classes = {c for v in params.getlist("asset_class") for c in v.split(",") if c}
        if classes and "all" not in classes:
            selected = [o for o in selected if o.asset_class() in classes]
        for name, later in (("after_order_id", True), ("before_order_id", False)):
            if name in params:
                anchor = self._find(account, params[name])
                if anchor is None:
                    return error(422, 42210000, f"invalid {name}")
                selected = [
                    o
                    for o in selected
                    if (o.created_at > anchor.created_at) == later and o.id != anchor.id
                ]
        selected.sort(key=lambda o: o.created_at, reverse=params.get("direction") != "asc")
        limit = min(int(params.get("limit", "50")), 500)
        nested = params.get("nested") == "true"
        foreign = [
            row
            for row in account.foreign_orders
            if status == "all" or (row.get("status") in OPEN_STATUSES) == (status == "open")
        ]
        return JSONResponse([*foreign, *(o.wire(nested=nested) for o in selected)][:limit])

    def _cancel(self, account: FakeAccount, order: FakeOrder) -> None:
        now = self._now()
        for part in (order, *(order.legs or ())):
            part.status, part.canceled_at, part.updated_at = "canceled", now, now
        self._broadcast(account, "canceled", order)

    def _cancel_all(self, account: FakeAccount) -> Response:
        """``DELETE /v2/orders``: 207 with one ``CanceledOrderResponse`` per open order
        (spec ``deleteAllOrders``)."""
        answers = []
        for order in list(account.orders.values()):
            if order.status in OPEN_STATUSES:
                self._cancel(account, order)
                answers.append({"id": order.id, "status": 200})
        return JSONResponse(answers, status_code=207)

    async def _place(self, request: Request, account: FakeAccount) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return error(400, 40010000, "request body format is invalid")
        if not isinstance(body, dict):
            return error(400, 40010000, "request body format is invalid")
        client_order_id = str(body.get("client_order_id") or uuid.uuid4())
        if any(o.client_order_id == client_order_id for o in account.orders.values()):
            return error(422, 40010001, "client_order_id must be unique")
        if body.get("order_class") == "mleg":
            return await self._place_mleg(body, account, client_order_id)
        if isinstance(body.get("symbol"), str) and is_option_symbol(body["symbol"]):
            return await self._place_option(body, account, client_order_id)
        parsed = self._parse_order(body)
        if isinstance(parsed, Response):
            return parsed
        symbol, qty, side, type_, tif, limit_price, stop_price, notional = parsed
        quote = self.quotes.quote(self._instrument_symbol(symbol), self._now())
        crypto = "/" in symbol
        if notional is not None:
            qty = (notional / (quote.ask if side == "buy" else quote.bid)).quantize(
                Decimal("0.000000001")
            )
        if side == "buy":
            cost = notional if notional is not None else qty * (limit_price or quote.ask)
            if cost > account.cash - self._reserved(account):
                return error(403, 40310000, "insufficient buying power")
        elif (
            account.shorting
            and not crypto
            and account.positions.get(symbol, FakePosition()).qty <= 0
        ):
            # A short sale: whole shares only ("fractional orders ... cannot be sold short",
            # https://docs.alpaca.markets/docs/fractional-trading).
            if notional is not None or qty != qty.to_integral_value():
                return error(403, 40310000, "fractional orders cannot be sold short")
        else:
            held = account.positions.get(symbol, FakePosition()).qty
            selling = sum(
                (
                    o.qty - o.filled_qty
                    for o in account.orders.values()
                    if o.side == "sell" and o.symbol == symbol and o.status in OPEN_STATUSES
                ),
                ZERO,
            )
            if qty > held - selling:
                return error(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: {qty}, "
                    f"available: {held - selling})",
                )
        now = self._now()
        order = FakeOrder(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=type_,
            time_in_force=tif,
            qty=qty,
            limit_price=limit_price,
            stop_price=stop_price,
            extended_hours=bool(body.get("extended_hours", False)),
            created_at=now,
            updated_at=now,
            status="new",
            notional=notional,
        )
        return await self._accept(account, order)

    async def _accept(self, account: FakeAccount, order: FakeOrder) -> Response:
        account.orders[order.id] = order
        for leg in order.legs or ():
            account.legs[leg.id] = leg
        self._broadcast(account, "new", order)
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return JSONResponse(order.wire())

    # --- option orders -------------------------------------------------------------------

    def _listed(self, symbol: object) -> OptionContract | None:
        """The listed, unexpired contract ``symbol`` names in Alpaca's (unpadded) form."""
        if not isinstance(symbol, str):
            return None
        try:
            contract = OptionContract.parse(symbol)
        except InvalidOptionSymbol:
            return None
        if contract.symbol != symbol or not self.options.is_listed(contract, self._today()):
            return None
        return contract

    def _today(self) -> date:
        return self._now().date()

    def _option_terms(
        self, body: dict[str, Any], *, qty_name: str = "qty"
    ) -> tuple[Decimal, str, str, Decimal | None] | Response:
        type_, tif = body.get("type"), body.get("time_in_force")
        if type_ not in OPTION_TYPES:
            return error(422, 42210000, "options orders support only market and limit types")
        if tif not in OPTION_TIFS:
            return error(422, 42210000, "invalid time_in_force for options orders")
        if body.get("extended_hours"):
            return error(422, 42210000, "extended hours are not supported for options orders")
        try:
            qty = Decimal(str(body.get(qty_name)))
            limit_price = _opt_decimal(body.get("limit_price"))
        except InvalidOperation:
            return error(422, 40010000, "qty and limit_price must be decimal strings")
        if not qty.is_finite() or qty <= 0 or qty != qty.to_integral_value():
            return error(422, 40010001, "qty must be a whole number for options orders")
        if type_ == "limit" and limit_price is None:
            return error(422, 42210000, "limit_price is required for limit orders")
        if type_ == "market" and limit_price is not None:
            return error(422, 42210000, "limit_price is not allowed for market orders")
        return qty, str(type_), str(tif), limit_price

    def _intent(self, body: dict[str, Any]) -> tuple[str, str | None] | Response:
        """``side`` and ``position_intent``: either is enough, both must agree (alpaca-py:
        "at least one of side or position_intent must be provided"; the server's answer to a
        bad intent: "invalid position_intent specified", https://github.com/alpacahq/alpaca-trade-api-go/issues/289)."""
        side, intent = body.get("side"), body.get("position_intent")
        if intent is not None and intent not in INTENTS:
            return error(422, 40010001, "invalid position_intent specified")
        if side is None and intent is not None:
            side = INTENTS[intent]
        if side not in ("buy", "sell") or (intent is not None and INTENTS[intent] != side):
            return error(422, 40010001, "invalid position_intent specified")
        return str(side), None if intent is None else str(intent)

    def _closable(self, account: FakeAccount, symbol: str, side: str) -> Decimal:
        """Contracts a closing order of ``side`` may close now: the position held on the
        other side, minus what open closing orders already hold."""
        held = account.positions.get(symbol, FakePosition()).qty
        held = held if side == "sell" else -held
        working = [*account.orders.values(), *account.legs.values()]
        pending = sum(
            (
                o.qty - o.filled_qty
                for o in working
                if o.symbol == symbol
                and o.side == side
                and o.status in OPEN_STATUSES
                and (o.position_intent or "").endswith("_to_close")
            ),
            ZERO,
        )
        return max(held, ZERO) - pending

    async def _place_option(
        self, body: dict[str, Any], account: FakeAccount, client_order_id: str
    ) -> Response:
        symbol = body["symbol"]
        if self._listed(symbol) is None:
            return error(422, 42210000, f"asset {symbol} not found")
        terms = self._option_terms(body)
        if isinstance(terms, Response):
            return terms
        qty, type_, tif, limit_price = terms
        intent = self._intent(body)
        if isinstance(intent, Response):
            return intent
        side, position_intent = intent
        if position_intent is not None and position_intent.endswith("_to_close"):
            available = self._closable(account, symbol, side)
            if qty > available:
                return error(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: {qty}, "
                    f"available: {available})",
                )
        if side == "buy":
            cost = qty * (limit_price or self._touch(symbol, "buy")) * MULTIPLIER
            if cost > account.cash - self._reserved(account):
                return error(403, 40310000, "insufficient options buying power")
        now = self._now()
        order = FakeOrder(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=type_,
            time_in_force=tif,
            qty=qty,
            limit_price=limit_price,
            stop_price=None,
            extended_hours=False,
            created_at=now,
            updated_at=now,
            order_class="simple",
            position_intent=position_intent,
            asset_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-option:" + symbol)),
        )
        return await self._accept(account, order)

    async def _place_mleg(
        self, body: dict[str, Any], account: FakeAccount, client_order_id: str
    ) -> Response:
        """``order_class: mleg`` (spec ``MLegOrderLeg``; alpaca-py's checks: qty required, 2
        to 4 legs, distinct symbols, market or limit; limit_price signed)."""
        raw_legs = body.get("legs")
        if not isinstance(raw_legs, list) or not 2 <= len(raw_legs) <= 4:
            return error(422, 40010001, "mleg orders require between 2 and 4 legs")
        terms = self._option_terms(body)
        if isinstance(terms, Response):
            return terms
        qty, type_, tif, limit_price = terms
        now = self._now()
        legs: list[FakeOrder] = []
        for raw in raw_legs:
            if not isinstance(raw, dict):
                return error(400, 40010000, "request body format is invalid")
            contract = self._listed(raw.get("symbol"))
            if contract is None:
                return error(422, 42210000, f"asset {raw.get('symbol')} not found")
            try:
                ratio = Decimal(str(raw.get("ratio_qty")))
            except InvalidOperation:
                return error(422, 40010001, "ratio_qty must be a decimal string")
            if not ratio.is_finite() or ratio <= 0 or ratio != ratio.to_integral_value():
                return error(422, 40010001, "ratio_qty must be a positive whole number")
            intent = self._intent(raw)
            if isinstance(intent, Response):
                return intent
            side, position_intent = intent
            legs.append(
                FakeOrder(
                    id=str(uuid.uuid4()),
                    client_order_id=str(uuid.uuid4()),
                    symbol=contract.symbol,
                    side=side,
                    type="",
                    time_in_force=tif,
                    qty=ratio * qty,
                    limit_price=None,
                    stop_price=None,
                    extended_hours=False,
                    created_at=now,
                    updated_at=now,
                    order_class="mleg",
                    position_intent=position_intent,
                    ratio_qty=ratio,
                    asset_id=str(
                        uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-option:" + contract.symbol)
                    ),
                )
            )
        if len({leg.symbol for leg in legs}) != len(legs):
            return error(422, 40010001, "all legs must have unique symbols")
        for leg in legs:
            if (leg.position_intent or "").endswith("_to_close") and leg.qty > self._closable(
                account, leg.symbol, leg.side
            ):
                return error(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: {leg.qty}, "
                    f"available: {self._closable(account, leg.symbol, leg.side)})",
                )
        parent = FakeOrder(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol="",
            side="",
            type=type_,
            time_in_force=tif,
            qty=qty,
            limit_price=limit_price,
            stop_price=None,
            extended_hours=False,
            created_at=now,
            updated_at=now,
            order_class="mleg",
            legs=legs,
        )
        net = limit_price if limit_price is not None else self._natural(parent)
        if max(net, ZERO) * qty * MULTIPLIER > account.cash - self._reserved(account):
            return error(403, 40310000, "insufficient options buying power")
        return await self._accept(account, parent)

    def _parse_order(
        self, body: dict[str, Any]
    ) -> (
        tuple[str, Decimal, str, str, str, Decimal | None, Decimal | None, Decimal | None]
        | Response
    ):
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            return error(422, 40010000, "symbol is required")
        if self._instrument_symbol(symbol) not in UNIVERSE:
            return error(422, 42210000, f"asset {symbol} not found")
        side, type_, tif = body.get("side"), body.get("type"), body.get("time_in_force")
        if side not in {s.value for s in OrderSide}:
            return error(422, 42210000, "invalid side")
        if type_ not in {*(t.value for t in OrderType), "trailing_stop"}:
            return error(422, 42210000, "invalid order type")
        if type_ == "trailing_stop":
            return error(422, 42210000, "trailing_stop orders are not supported by this fake")
        if tif not in {*(t.value for t in TimeInForce), "opg", "cls"}:
            return error(422, 42210000, "invalid time_in_force")
        try:
            raw_qty = _opt_decimal(body.get("qty"))
            notional = _opt_decimal(body.get("notional"))
            limit_price = _opt_decimal(body.get("limit_price"))
            stop_price = _opt_decimal(body.get("stop_price"))
        except InvalidOperation:
            return error(422, 40010000, "qty, limit_price and stop_price must be decimal strings")
        if "/" in symbol and tif not in ("gtc", "ioc"):
            # Spec ``TimeInForce``: "Crypto trading: gtc, ioc".
            return error(422, 42210000, "invalid crypto time_in_force")
        if (raw_qty is None) == (notional is None):
            return error(422, 40010001, "qty or notional is required, not both")
        if notional is not None:
            # Spec ``notional``: "Can only work for market order types and day for time in
            # force" (crypto: its own gtc/ioc).
            if notional <= 0:
                return error(422, 40010001, "notional must be > 0")
            if type_ != "market" or ("/" not in symbol and tif != "day"):
                return error(
                    422, 40010001, "notional orders only work with market type and day tif"
                )
        qty = raw_qty if raw_qty is not None else ZERO
        if notional is None and (not qty.is_finite() or qty <= 0):
            return error(422, 40010000, "qty must be > 0")
        if type_ in ("limit", "stop_limit") and limit_price is None:
            return error(422, 42210000, "limit_price is required for limit orders")
        if type_ in ("stop", "stop_limit") and stop_price is None:
            return error(422, 42210000, "stop_price is required for stop orders")
        return symbol, qty, str(side), str(type_), str(tif), limit_price, stop_price, notional

    def _find(self, account: FakeAccount, order_id: str) -> FakeOrder | None:
        return account.orders.get(order_id)

    async def by_client_id(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        wanted = request.query_params.get("client_order_id")
        for order in [*account.orders.values(), *account.legs.values()]:
            if order.client_order_id == wanted:
                return JSONResponse(order.wire())
        return error(404, 40410000, "order not found")

    async def order(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        order_id = request.path_params["order_id"]
        leg = account.legs.get(order_id)
        if leg is not None:
            # A leg is readable on its own but never canceled or replaced alone
            # (the server's answers in
            # https://github.com/alpacahq/alpaca-py/blob/master/examples/options/options-trading-mleg.ipynb).
            if request.method == "GET":
                return JSONResponse(leg.wire())
            verb = "cancel" if request.method == "DELETE" else "replace"
            return error(422, 42210000, f"cannot {verb} individual legs of a mleg order")
        order = self._find(account, order_id)
        if order is None:
            return error(404, 40410000, "order not found")
        if request.method == "GET":
            return JSONResponse(order.wire(nested=request.query_params.get("nested") == "true"))
        if request.method == "DELETE":
            if order.status in FINAL:
                return error(422, 42210000, f'order is already in "{order.status}" state')
            self._cancel(account, order)
            return Response(status_code=204)
        return await self._replace(request, account, order)

    async def _replace(self, request: Request, account: FakeAccount, old: FakeOrder) -> Response:
        if old.status not in REPLACEABLE:
            return error(422, 42210000, f'order is not replaceable in "{old.status}" state')
        try:
            body = await request.json()
            qty = _opt_decimal(body.get("qty"))
            limit_price = _opt_decimal(body.get("limit_price"))
            stop_price = _opt_decimal(body.get("stop_price"))
        except (ValueError, InvalidOperation, AttributeError):
            return error(400, 40010000, "request body format is invalid")
        tif = body.get("time_in_force") or old.time_in_force
        if tif not in {t.value for t in TimeInForce}:
            return error(422, 42210000, "invalid time_in_force")
        client_order_id = str(body.get("client_order_id") or uuid.uuid4())
        if any(o.client_order_id == client_order_id for o in account.orders.values()):
            return error(422, 40010001, "client_order_id must be unique")
        if old.is_option or old.is_mleg:
            if tif not in OPTION_TIFS:
                return error(422, 42210000, "invalid time_in_force for options orders")
            if qty is not None and (qty <= 0 or qty != qty.to_integral_value()):
                return error(422, 40010001, "qty must be a whole number for options orders")
        now = self._now()
        new_qty = qty if qty is not None else old.qty
        legs = None
        if old.legs is not None:
            legs = [
                FakeOrder(
                    id=str(uuid.uuid4()),
                    client_order_id=str(uuid.uuid4()),
                    symbol=leg.symbol,
                    side=leg.side,
                    type="",
                    time_in_force=str(tif),
                    qty=(leg.ratio_qty or Decimal(1)) * new_qty,
                    limit_price=None,
                    stop_price=None,
                    extended_hours=False,
                    created_at=now,
                    updated_at=now,
                    order_class="mleg",
                    position_intent=leg.position_intent,
                    ratio_qty=leg.ratio_qty,
                    asset_id=leg.asset_id,
                )
                for leg in old.legs
            ]
            for leg in old.legs:
                leg.status, leg.replaced_at, leg.updated_at = "replaced", now, now
            for leg in legs:
                account.legs[leg.id] = leg
        new = FakeOrder(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol=old.symbol,
            side=old.side,
            type=old.type,
            time_in_force=str(tif),
            qty=qty if qty is not None else old.qty,
            limit_price=limit_price if limit_price is not None else old.limit_price,
            stop_price=stop_price if stop_price is not None else old.stop_price,
            extended_hours=old.extended_hours,
            created_at=now,
            updated_at=now,
            status="new",
            replaces=old.id,
            asset_id=old.asset_id,
            order_class=old.order_class,
            position_intent=old.position_intent,
            legs=legs,
        )
        old.status, old.replaced_at, old.replaced_by, old.updated_at = "replaced", now, new.id, now
        account.orders[new.id] = new
        self._broadcast(account, "replaced", old)
        self._broadcast(account, "new", new)
        if self.faults.timeout_after_replace > 0:
            self.faults.timeout_after_replace -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return JSONResponse(new.wire())

    def _evaluate(self, account: FakeAccount, order: FakeOrder) -> int:
        now = self._now()
        quote = self.quotes.quote(self._instrument_symbol(order.symbol), now)
        if order.notional is not None and not order.filled_qty:
            # A notional market order buys (sells) what the amount pays for at the touch.
            touch = quote.ask if order.side == "buy" else quote.bid
            order.qty = (order.notional / touch).quantize(Decimal("0.000000001"))
        decision = decide(
            OrderState(
                side=OrderSide(order.side),
                order_type=OrderType(order.type),
                time_in_force=TimeInForce(order.time_in_force),
                remaining=order.qty - order.filled_qty,
                limit_price=order.limit_price,
                stop_price=order.stop_price,
                stop_triggered=order.stop_triggered,
            ),
            quote,
        )
        order.stop_triggered = decision.stop_triggered
        filled = 0
        if decision.fills and decision.fill_price is not None:
            filled = 1
            qty, price = decision.fill_quantity, decision.fill_price
            previous = order.filled_qty * (order.filled_avg_price or ZERO)
            order.filled_qty += qty
            order.filled_avg_price = ((previous + qty * price) / order.filled_qty).quantize(
                Decimal("0.0001")
            )
            order.updated_at = now
            position = account.positions.setdefault(order.symbol, FakePosition())
            signed = qty if order.side == "buy" else -qty
            account.cash -= signed * price
            if position.qty == 0 or (position.qty > 0) == (signed > 0):
                position.cost_basis += signed * price  # opening (a short's basis is negative)
                position.qty += signed
            else:
                closing = min(abs(signed), abs(position.qty))
                position.cost_basis -= position.cost_basis * closing / abs(position.qty)
                position.qty += signed
                if abs(signed) > closing:  # crossed through zero: the rest opens anew
                    position.cost_basis = position.qty * price
            done = order.filled_qty >= order.qty
            order.status = "filled" if done else "partially_filled"
            if done:
                order.filled_at = now
            account.activities.append(
                {
                    "activity_type": "FILL",
                    "cum_qty": str(order.filled_qty),
                    "id": f"{now:%Y%m%d%H%M%S%f}::{uuid.uuid4()}",
                    "leaves_qty": str(order.qty - order.filled_qty),
                    "order_id": order.id,
                    "order_status": order.status,
                    "price": str(price),
                    "qty": str(qty),
                    "side": order.side,
                    "symbol": order.symbol,
                    "transaction_time": iso(now),
                    "type": "fill" if done else "partial_fill",
                }
            )
            self._broadcast(
                account,
                "fill" if done else "partial_fill",
                order,
                price=str(price),
                qty=str(qty),
                position_qty=str(position.qty),
            )
        if decision.cancel_remainder and order.status not in FINAL:
            order.status, order.canceled_at, order.updated_at = "canceled", now, now
            self._broadcast(account, "canceled", order)
        return filled

    # --- option matching ---------------------------------------------------------------

    def _apply_option_fill(
        self, account: FakeAccount, order: FakeOrder, qty: Decimal, price: Decimal
    ) -> FakePosition:
        """Cash, the signed position and a FILL activity for ``qty`` contracts at ``price``
        (per share; the dollars carry the multiplier)."""
        now = self._now()
        signed = qty if order.side == "buy" else -qty
        account.cash -= signed * price * MULTIPLIER
        position = account.positions.setdefault(order.symbol, FakePosition())
        if position.qty == 0 or (position.qty > 0) == (signed > 0):
            position.cost_basis += signed * price * MULTIPLIER
            position.qty += signed
        else:
            closing = min(abs(signed), abs(position.qty))
            position.cost_basis -= position.cost_basis * closing / abs(position.qty)
            position.qty += signed
            if abs(signed) > closing:  # crossed through zero: the rest opens anew
                position.cost_basis = position.qty * price * MULTIPLIER
        previous = order.filled_qty * (order.filled_avg_price or ZERO)
        order.filled_qty += qty
        order.filled_avg_price = ((previous + qty * price) / order.filled_qty).quantize(
            Decimal("0.01")
        )
        done = order.filled_qty >= order.qty
        order.status = "filled" if done else "partially_filled"
        order.updated_at = now
        if done:
            order.filled_at = now
        account.activities.append(
            {
                "activity_type": "FILL",
                "cum_qty": str(order.filled_qty),
                "id": f"{now:%Y%m%d%H%M%S%f}::{uuid.uuid4()}",
                "leaves_qty": str(order.qty - order.filled_qty),
                "order_id": order.id,
                "order_status": order.status,
                "price": str(price),
                "qty": str(qty),
                "side": order.side,
                "symbol": order.symbol,
                "transaction_time": iso(now),
                "type": "fill" if done else "partial_fill",
            }
        )
        return position

    def _evaluate_option(self, account: FakeAccount, order: FakeOrder) -> int:
        """A single-leg option order by the paper matching rules on the model quote."""
        now = self._now()
        model = self.options.quote(OptionContract.parse(order.symbol), now)
        quote = PaperQuote(
            symbol=order.symbol,
            bid=model.bid,
            ask=model.ask,
            last=model.last,
            bid_size=Decimal(500),
            ask_size=Decimal(500),
            as_of=model.as_of,
            step=0,
        )
        decision = decide(
            OrderState(
                side=OrderSide(order.side),
                order_type=OrderType(order.type),
                time_in_force=TimeInForce(order.time_in_force),
                remaining=order.qty - order.filled_qty,
                limit_price=order.limit_price,
            ),
            quote,
        )
        if not decision.fills or decision.fill_price is None:
            return 0
        qty, price = decision.fill_quantity, decision.fill_price
        position = self._apply_option_fill(account, order, qty, price)
        self._broadcast(
            account,
            "fill" if order.status == "filled" else "partial_fill",
            order,
            price=str(price),
            qty=str(qty),
            position_qty=str(position.qty),
        )
        return 1

    def _evaluate_mleg(self, account: FakeAccount, order: FakeOrder) -> int:
        """All legs at once, when the natural net price is at or better than the signed
        limit (a debit pays at most it, a credit receives at least its absolute value)."""
        natural = self._natural(order)
        if order.limit_price is not None and natural > order.limit_price:
            return 0
        units = order.qty - order.filled_qty
        for leg in order.legs or ():
            self._apply_option_fill(
                account,
                leg,
                units * (leg.ratio_qty or Decimal(1)),
                self._touch(leg.symbol, leg.side),
            )
        now = self._now()
        previous = order.filled_qty * (order.filled_avg_price or ZERO)
        order.filled_qty += units
        order.filled_avg_price = ((previous + units * natural) / order.filled_qty).quantize(
            Decimal("0.01")
        )
        order.status, order.filled_at, order.updated_at = "filled", now, now
        # One event for the parent with its legs: Broker API trade events carry ``legs[]``
        # (https://docs.alpaca.markets/changelog) and mleg orders ride trade_updates
        # (https://github.com/alpacahq/alpaca-py/pull/557). ``qty`` is strategy units,
        # ``price`` the signed net price (its sign on the wire is unconfirmed).
        self._broadcast(account, "fill", order, price=str(natural), qty=str(units))
        return 1

    # --- option contracts and chain snapshots ------------------------------------------

    def _contract_wire(self, contract: OptionContract) -> dict[str, Any]:
        """Spec schema ``OptionContract`` (every decimal a string)."""
        now = self._now()
        close = self.options.quote(contract, now).mark
        digest = hashlib.blake2b(contract.symbol.encode(), digest_size=4).digest()
        right = "Call" if contract.right is OptionRight.call else "Put"
        return {
            "close_price": str(close),
            "close_price_date": now.date().isoformat(),
            "expiration_date": contract.expiration.isoformat(),
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-option:" + contract.symbol)),
            "multiplier": "100",
            "name": f"{contract.root} {contract.expiration:%b %d %Y} {contract.strike} {right}",
            "open_interest": str(int.from_bytes(digest, "big") % 5000),
            "open_interest_date": now.date().isoformat(),
            "root_symbol": contract.root,
            "size": "100",
            "status": "active",
            "strike_price": str(contract.strike),
            "style": contract.style.value,
            "symbol": contract.symbol,
            "tradable": True,
            "type": contract.right.value,
            "underlying_asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, contract.underlying)),
            "underlying_symbol": contract.underlying,
        }

    def _select_contracts(
        self, underlyings: list[str], params: Any, *, default_window: bool
    ) -> list[OptionContract] | Response:
        """The filters both the contracts list and the chain snapshots take."""
        today = self._today()
        try:
            exact = _opt_date(params.get("expiration_date"))
            gte = _opt_date(params.get("expiration_date_gte"))
            lte = _opt_date(params.get("expiration_date_lte"))
            strike_gte = _opt_decimal(params.get("strike_price_gte"))
            strike_lte = _opt_decimal(params.get("strike_price_lte"))
        except (ValueError, InvalidOperation):
            return error(422, 40010001, "invalid query parameter")
        if default_window and exact is None and gte is None and lte is None:
            # "By default only active contracts that expire before the upcoming weekend are
            # returned" (spec, GET /v2/options/contracts).
            lte = today + timedelta(days=(5 - today.weekday()) % 7)
        right, root = params.get("type"), params.get("root_symbol")
        if params.get("status", "active") != "active" or params.get("style") == "european":
            return []
        found: list[OptionContract] = []
        for underlying in underlyings:
            if not self.options.has_options(underlying) or root not in (None, underlying):
                continue
            for expiration in self.options.expirations(underlying, today):
                day = expiration.expiration
                if (exact and day != exact) or (gte and day < gte) or (lte and day > lte):
                    continue
                for contract in self.options.contracts(underlying, day):
                    if right not in (None, contract.right.value):
                        continue
                    if strike_gte is not None and contract.strike < strike_gte:
                        continue
                    if strike_lte is not None and contract.strike > strike_lte:
                        continue
                    found.append(contract)
        return found

    async def option_contracts(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        params = request.query_params
        underlyings = [u for u in params.get("underlying_symbols", "").split(",") if u]
        selected = self._select_contracts(underlyings, params, default_window=True)
        if isinstance(selected, Response):
            return selected
        limit = min(int(params.get("limit", "100")), 10000)
        items, token = _paginate(selected, params.get("page_token"), limit)
        return JSONResponse(
            {"option_contracts": [self._contract_wire(c) for c in items], "next_page_token": token}
        )

    async def option_contract(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        wanted = request.path_params["symbol_or_id"]
        contract = self._listed(wanted)
        if contract is None:
            return error(404, 40410000, f"option contract {wanted} not found")
        return JSONResponse(self._contract_wire(contract))

    def _option_quotes(self, request: Request) -> list[Any]:
        """The listed contracts among ``symbols`` (at most 100: data spec) and their quotes."""
        now = self._now()
        wanted = [s for s in request.query_params.get("symbols", "").split(",") if s][:100]
        return [
            self.options.quote(contract, now)
            for contract in (self._listed(symbol) for symbol in wanted)
            if contract is not None
        ]

    async def latest_option_quotes(self, request: Request) -> Response:
        """``GET /v1beta1/options/quotes/latest`` (data spec ``option_latest_quotes_resp``)."""
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        quotes = {
            q.contract.symbol: {
                "ap": float(q.ask),
                "as": 25,
                "ax": "C",
                "bp": float(q.bid),
                "bs": 25,
                "bx": "C",
                "c": "A",
                "t": iso(q.as_of),
            }
            for q in self._option_quotes(request)
        }
        return JSONResponse({"quotes": quotes})

    async def latest_option_trades(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        trades = {
            q.contract.symbol: {"c": "I", "p": float(q.last), "s": 1, "t": iso(q.as_of), "x": "C"}
            for q in self._option_quotes(request)
        }
        return JSONResponse({"trades": trades})

    async def option_snapshots(self, request: Request) -> Response:
        """``GET /v1beta1/options/snapshots/{underlying}`` (data spec ``OptionChain``):
        JSON numbers, ``limit`` 1..1000 counting snapshots, ``next_page_token``."""
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        params = request.query_params
        selected = self._select_contracts(
            [request.path_params["underlying"]], params, default_window=False
        )
        if isinstance(selected, Response):
            return selected
        limit = min(max(int(params.get("limit", "100")), 1), 1000)
        items, token = _paginate(selected, params.get("page_token"), limit)
        now = self._now()
        snapshots: dict[str, Any] = {}
        for contract in items:
            q = self.options.quote(contract, now)
            g = q.greeks
            snapshots[contract.symbol] = {
                "greeks": {
                    "delta": float(g.delta or 0),
                    "gamma": float(g.gamma or 0),
                    "rho": float(g.rho or 0),
                    "theta": float(g.theta or 0),
                    "vega": float(g.vega or 0),
                },
                "impliedVolatility": float(g.iv or 0),
                "latestQuote": {
                    "ap": float(q.ask),
                    "as": 25,
                    "ax": "C",
                    "bp": float(q.bid),
                    "bs": 25,
                    "bx": "C",
                    "c": "A",
                    "t": iso(q.as_of),
                },
                "latestTrade": {"c": "I", "p": float(q.last), "s": 1, "t": iso(q.as_of), "x": "C"},
            }
        return JSONResponse({"snapshots": snapshots, "next_page_token": token})

    # --- market data (same fake, data host paths) ----------------------------------------

    async def latest_quotes(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        now = self._now()
        quotes: dict[str, Any] = {}
        for symbol in request.query_params.get("symbols", "").split(","):
            if self._instrument_symbol(symbol) not in UNIVERSE:
                continue
            q = self.quotes.quote(self._instrument_symbol(symbol), now)
            quotes[symbol] = {
                "ap": float(q.ask),
                "as": int(q.ask_size),
                "ax": "V",
                "bp": float(q.bid),
                "bs": int(q.bid_size),
                "bx": "V",
                "c": ["R"],
                "t": iso(q.as_of),
                "z": "C",
            }
        return JSONResponse({"quotes": quotes})

    async def latest_trades(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        now = self._now()
        trades: dict[str, Any] = {}
        for symbol in request.query_params.get("symbols", "").split(","):
            if self._instrument_symbol(symbol) not in UNIVERSE:
                continue
            q = self.quotes.quote(self._instrument_symbol(symbol), now)
            trades[symbol] = {
                "c": ["@"],
                "i": q.step,
                "p": float(q.last),
                "s": 100,
                "t": iso(q.as_of),
                "x": "V",
                "z": "C",
            }
        return JSONResponse({"trades": trades})

    # --- trade_updates stream ------------------------------------------------------------

    async def stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            account = await self._stream_handshake(websocket)
        except (WebSocketDisconnect, ValueError, KeyError):
            return
        if account is None:
            await websocket.close(code=1008)
            return
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        account.streams.add(queue)

        async def drain() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
            queue.put_nowait(None)

        reader = asyncio.create_task(drain())
        try:
            while True:
                frame = await queue.get()
                if frame is None:
                    break
                await websocket.send_bytes(frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            account.streams.discard(queue)
            reader.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1011)

    async def _stream_handshake(self, websocket: WebSocket) -> FakeAccount | None:
        async def receive_json() -> dict[str, Any]:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            raw = message.get("text") or (message.get("bytes") or b"").decode()
            parsed = json.loads(raw)
            if not isinstance(parsed, dict):
                raise ValueError("not an object")
            return parsed

        hello = await receive_json()
        if hello.get("action") == "auth":  # current docs
            key, secret = hello.get("key"), hello.get("secret")
        elif hello.get("action") == "authenticate":  # older docs, alpaca-py
            data = hello.get("data") or {}
            key, secret = data.get("key_id"), data.get("secret_key")
        else:
            key = secret = None
        account = self.accounts.get(str(key))
        ok = account is not None and account.secret == secret and not account.revoked
        answer = {
            "stream": "authorization",
            "data": {"action": "authenticate", "status": "authorized" if ok else "unauthorized"},
        }
        await websocket.send_bytes(json.dumps(answer).encode())
        if not ok:
            return None
        listen = await receive_json()
        streams = (listen.get("data") or {}).get("streams") or []
        if listen.get("action") != "listen":
            return None
        await websocket.send_bytes(
            json.dumps(
                {
                    "stream": "listening",
                    "data": {"streams": [s for s in streams if s == "trade_updates"]},
                }
            ).encode()
        )
        return account


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods answer Alpaca's ``{"code", "message"}`` envelope (spec
    ``Error``), never Starlette's plain text."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "endpoint not found" if status == 404 else "method not allowed"
    return error(status, status * 100000, message)


def _opt_date(value: object) -> date | None:
    return None if value in (None, "") else date.fromisoformat(str(value))


def _paginate(items: list[Any], token: str | None, limit: int) -> tuple[list[Any], str | None]:
    """One page and the token of the next (an opaque base64 offset), None on the last."""
    start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    end = start + limit
    following = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else None
    return items[start:end], following


def _opt_decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    result = Decimal(str(value))
    if not result.is_finite():
        raise InvalidOperation
    return result

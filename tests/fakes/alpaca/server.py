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

Matching happens when the test (or the fake-brokers ticker) calls ``match()``: nothing moves
on its own, so tests are deterministic. Fault switches live in ``faults``; see ``Faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers.base import AssetClass, OrderSide, OrderType, TimeInForce
from app.paper.matching import OrderState, decide
from app.paper.quotes import UNIVERSE, SeededQuoteSource

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

    def wire(self) -> dict[str, Any]:
        """Field for field the spec's ``EquityOrderResponse`` example."""

        def opt(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        def opt_ts(value: datetime | None) -> str | None:
            return None if value is None else iso(value)

        return {
            "asset_class": "crypto" if "/" in self.symbol else "us_equity",
            "asset_id": self.asset_id,
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
            "legs": None,
            "limit_price": opt(self.limit_price),
            "notional": None,
            "order_class": "",
            "order_type": self.type,
            "qty": str(self.qty),
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
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    positions: dict[str, FakePosition] = field(default_factory=dict)
    activities: list[dict[str, Any]] = field(default_factory=list)
    streams: set[asyncio.Queue[bytes | None]] = field(default_factory=set)


class FakeAlpaca:
    """The fake's state, its fault switches and its ASGI ``app``."""

    def __init__(
        self, *, seed: int = 20260522, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.quotes = SeededQuoteSource(seed)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.accounts: dict[str, FakeAccount] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST request
        self._release = asyncio.Event()
        self._sockets: set[WebSocket] = set()
        self.app = Starlette(
            routes=[
                Route("/v2/account", self.get_account, methods=["GET"]),
                Route("/v2/account/activities", self.get_activities, methods=["GET"]),
                Route("/v2/positions", self.get_positions, methods=["GET"]),
                Route("/v2/positions/{symbol:path}", self.get_position, methods=["GET"]),
                Route("/v2/assets/{symbol:path}", self.get_asset, methods=["GET"]),
                Route("/v2/orders", self.orders, methods=["GET", "POST"]),
                Route("/v2/orders:by_client_order_id", self.by_client_id, methods=["GET"]),
                Route("/v2/orders/{order_id}", self.order, methods=["GET", "PATCH", "DELETE"]),
                Route("/v2/stocks/quotes/latest", self.latest_quotes, methods=["GET"]),
                Route("/v2/stocks/trades/latest", self.latest_trades, methods=["GET"]),
                WebSocketRoute("/stream", self.stream),
            ]
        )

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
                if order.status in ("new", "partially_filled"):
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
            quote = self.quotes.quote(self._instrument_symbol(symbol), self._now())
            total += position.qty * quote.last
        return total

    def _reserved(self, account: FakeAccount) -> Decimal:
        reserved = ZERO
        for order in account.orders.values():
            if order.side == "buy" and order.status in OPEN_STATUSES:
                price = (
                    order.limit_price
                    or self.quotes.quote(self._instrument_symbol(order.symbol), self._now()).ask
                )
                reserved += (order.qty - order.filled_qty) * price
        return reserved

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
                "multiplier": "1",
                "non_marginable_buying_power": money(buying_power),
                "options_approved_level": 0,
                "options_buying_power": money(buying_power),
                "options_trading_level": 0,
                "pattern_day_trader": False,
                "pending_reg_taf_fees": "0",
                "portfolio_value": money(equity),
                "regt_buying_power": money(buying_power),
                "short_market_value": "0",
                "shorting_enabled": False,
                "sma": "0",
                "status": "ACTIVE",
                "trade_suspended_by_user": False,
                "trading_blocked": False,
                "transfers_blocked": False,
            }
        )

    def _position_wire(self, symbol: str, position: FakePosition) -> dict[str, Any]:
        quote = self.quotes.quote(self._instrument_symbol(symbol), self._now())
        market_value = position.qty * quote.last
        avg = (position.cost_basis / position.qty).quantize(Decimal("0.0001"))
        pl = market_value - position.cost_basis
        plpc = (pl / position.cost_basis).quantize(Decimal("0.0001")) if position.cost_basis else 0
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
            "side": "long",
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
        return JSONResponse(
            [self._position_wire(s, p) for s, p in account.positions.items() if p.qty]
        )

    async def get_position(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        symbol = request.path_params["symbol"]
        position = account.positions.get(symbol)
        if position is None or not position.qty:
            return error(404, 40410000, "position does not exist")
        return JSONResponse(self._position_wire(symbol, position))

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
            selected = [o for o in selected if o.symbol in wanted]
        selected.sort(key=lambda o: o.created_at, reverse=params.get("direction") != "asc")
        limit = min(int(params.get("limit", "50")), 500)
        return JSONResponse([o.wire() for o in selected[:limit]])

    async def _place(self, request: Request, account: FakeAccount) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return error(400, 40010000, "request body format is invalid")
        if not isinstance(body, dict):
            return error(400, 40010000, "request body format is invalid")
        parsed = self._parse_order(body)
        if isinstance(parsed, Response):
            return parsed
        client_order_id = str(body.get("client_order_id") or uuid.uuid4())
        if any(o.client_order_id == client_order_id for o in account.orders.values()):
            return error(422, 40010001, "client_order_id must be unique")
        symbol, qty, side, type_, tif, limit_price, stop_price = parsed
        quote = self.quotes.quote(self._instrument_symbol(symbol), self._now())
        if side == "buy":
            cost = qty * (limit_price or quote.ask)
            if cost > account.cash - self._reserved(account):
                return error(403, 40310000, "insufficient buying power")
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
        )
        account.orders[order.id] = order
        self._broadcast(account, "new", order)
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return JSONResponse(order.wire())

    def _parse_order(
        self, body: dict[str, Any]
    ) -> tuple[str, Decimal, str, str, str, Decimal | None, Decimal | None] | Response:
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
            qty = Decimal(str(body.get("qty")))
            limit_price = _opt_decimal(body.get("limit_price"))
            stop_price = _opt_decimal(body.get("stop_price"))
        except InvalidOperation:
            return error(422, 40010000, "qty, limit_price and stop_price must be decimal strings")
        if not qty.is_finite() or qty <= 0:
            return error(422, 40010000, "qty must be > 0")
        if type_ in ("limit", "stop_limit") and limit_price is None:
            return error(422, 42210000, "limit_price is required for limit orders")
        if type_ in ("stop", "stop_limit") and stop_price is None:
            return error(422, 42210000, "stop_price is required for stop orders")
        return symbol, qty, str(side), str(type_), str(tif), limit_price, stop_price

    def _find(self, account: FakeAccount, order_id: str) -> FakeOrder | None:
        return account.orders.get(order_id)

    async def by_client_id(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        wanted = request.query_params.get("client_order_id")
        for order in account.orders.values():
            if order.client_order_id == wanted:
                return JSONResponse(order.wire())
        return error(404, 40410000, "order not found")

    async def order(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        order = self._find(account, request.path_params["order_id"])
        if order is None:
            return error(404, 40410000, "order not found")
        if request.method == "GET":
            return JSONResponse(order.wire())
        if request.method == "DELETE":
            if order.status in FINAL:
                return error(422, 42210000, f'order is already in "{order.status}" state')
            now = self._now()
            order.status, order.canceled_at, order.updated_at = "canceled", now, now
            self._broadcast(account, "canceled", order)
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
        now = self._now()
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
            if order.side == "buy":
                account.cash -= qty * price
                position.cost_basis += qty * price
                position.qty += qty
            else:
                account.cash += qty * price
                if position.qty:
                    position.cost_basis -= position.cost_basis * qty / position.qty
                position.qty -= qty
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


def _opt_decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    result = Decimal(str(value))
    if not result.is_finite():
        raise InvalidOperation
    return result

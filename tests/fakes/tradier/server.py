"""A fake Tradier (Brokerage API v1 and account streaming) for tests.

It speaks the real protocol: the ``/v1`` paths, ``Authorization: Bearer`` tokens, form-encoded
request bodies (a JSON body is not read, as at Tradier), JSON only when asked for with
``Accept: application/json`` (XML otherwise, Tradier's default), JSON numbers for quantities
and prices, the single-object and ``"null"`` collection quirks, ``tag`` with its character
rules, the documented status vocabulary, ``{"errors": {"error": ...}}`` refusals (400 for bad
parameters, 200 for downstream risk refusals), API-gateway faults for bad tokens and 5xx,
429 with ``Retry-After`` and ``X-Ratelimit-*`` headers, and the account-streaming handshake
(session, subscription payload, heartbeats, order events).

Sources: https://docs.tradier.com (profile, balances, positions, orders, history, quotes,
error responses, rate limiting, account streaming), and for bodies the docs do not show,
QuantConnect's recorded Tradier answers (QuantConnect/Lean.Brokerages.Tradier tests):
``{"fault": {"faultstring": "Invalid Access Token", ...}}``, ``"Unauthorized Account: <id>"``
for an order id the account does not have, ``order already in finalized state`` on cancelling
a closed order, and ``["Backoffice rejected override of the order.",
"DayTradingBuyingPowerExceeded"]`` for an order beyond the buying power. Not confirmed
anywhere and so chosen here: the exact status of those last answers (400), the 429 body
(the API gateway's quota fault), and what the WebSocket does with an unknown session id
(closes with 1008).

Prices come from the paper market (``app.paper.quotes.SeededQuoteSource``) and orders match
by the paper broker's rules (``app.paper.matching.decide``) over in-memory books, when the
test (or the fake-brokers ticker) calls ``match()``. Fault switches live in ``faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers.base import OrderSide, OrderType, TimeInForce
from app.paper.matching import OrderState, decide
from app.paper.quotes import UNIVERSE, SeededQuoteSource

ZERO = Decimal(0)
WORKING = frozenset({"open", "partially_filled", "pending"})
FINAL = frozenset({"filled", "canceled", "expired", "rejected", "error"})
SIDES = frozenset({"buy", "buy_to_cover", "sell", "sell_short"})
TYPES = frozenset({"market", "limit", "stop", "stop_limit"})
DURATIONS = frozenset({"day", "gtc", "pre", "post"})
TAG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
BACKOFFICE = "Backoffice rejected override of the order."
SESSION_TTL = timedelta(minutes=5)


def iso_ms(at: datetime) -> str:
    """Order dates: ``2018-06-01T12:02:29.682Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _number(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)  # Tradier sends JSON numbers
    raise TypeError(type(value).__name__)


def _xml(name: str, value: object) -> str:
    if isinstance(value, dict):
        inner = "".join(_xml(k, v) for k, v in value.items())
        return f"<{name}>{inner}</{name}>"
    if isinstance(value, list):
        return "".join(_xml(name, v) for v in value)
    text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"<{name}>{escape(text)}</{name}>"


def answer(request: Request, body: dict[str, Any], status: int = 200, **headers: str) -> Response:
    """JSON when the client asked for it, XML otherwise (Tradier's default format)."""
    if "application/json" in request.headers.get("accept", ""):
        content = json.dumps(body, default=_number)
        return Response(content, status, headers=headers, media_type="application/json")
    [(root, value)] = body.items()
    content = '<?xml version="1.0" encoding="UTF-8"?>' + _xml(
        root, json.loads(json.dumps(value, default=_number))
    )
    return Response(content, status, headers=headers, media_type="application/xml")


def one_or_many(values: list[Any]) -> Any:
    """Tradier's collection quirk: one item is a bare object, none is the string "null"."""
    if not values:
        return "null"
    return values[0] if len(values) == 1 else values


def refusal(request: Request, status: int, *messages: str) -> Response:
    """``{"errors": {"error": "..." | [...]}}``."""
    error: object = messages[0] if len(messages) == 1 else list(messages)
    return answer(request, {"errors": {"error": error}}, status)


def fault(request: Request, status: int, text: str, code: str, **headers: str) -> Response:
    body = {"fault": {"faultstring": text, "detail": {"errorcode": code}}}
    return Response(json.dumps(body), status, headers=headers, media_type="application/json")


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds added before every REST answer. ``server_errors`` (of
    ``server_errors_method`` only, when set) answer ``server_error_status`` with the gateway's
    fault body. ``rate_limited``: the next N answer 429 with ``Retry-After: retry_after``.
    ``timeout_after_accept``: the next N order placements create the order, then hold the
    answer ``hang_seconds``. ``stream_silent``: streams send nothing, not even heartbeats.
    ``revoke(token)``, ``expire(token)`` and ``drop_streams()`` on ``FakeTradier`` cover the rest.
    """

    latency: float = 0.0
    server_errors: int = 0
    server_error_status: int = 500
    server_errors_method: str | None = None
    rate_limited: int = 0
    rate_limited_method: str | None = None  # only requests with this method answer 429
    retry_after: int = 7
    timeout_after_accept: int = 0
    hang_seconds: float = 30.0
    stream_silent: bool = False
    heartbeat_seconds: float = 60.0


@dataclass
class FakeOrder:
    id: int
    account: str
    symbol: str
    side: str
    type: str
    duration: str
    quantity: Decimal
    price: Decimal | None
    stop: Decimal | None
    tag: str | None
    created_at: datetime
    status: str = "open"
    exec_quantity: Decimal = ZERO
    avg_fill_price: Decimal = ZERO
    last_fill_price: Decimal = ZERO
    last_fill_quantity: Decimal = ZERO
    updated_at: datetime | None = None
    stop_triggered: bool = False

    @property
    def remaining(self) -> Decimal:
        return ZERO if self.status in FINAL else self.quantity - self.exec_quantity

    def wire(self, include_tags: bool) -> dict[str, Any]:
        """Field for field the documented order object (get-account-order)."""
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "symbol": self.symbol,
            "side": self.side,
            "quantity": self.quantity,
            "status": self.status,
            "duration": self.duration,
        }
        if self.price is not None:
            body["price"] = self.price
        if self.stop is not None:
            body["stop_price"] = self.stop
        body.update(
            {
                "avg_fill_price": self.avg_fill_price,
                "exec_quantity": self.exec_quantity,
                "last_fill_price": self.last_fill_price,
                "last_fill_quantity": self.last_fill_quantity,
                "remaining_quantity": self.remaining,
                "create_date": iso_ms(self.created_at),
                "transaction_date": iso_ms(self.updated_at or self.created_at),
                "class": "equity",
            }
        )
        if include_tags and self.tag:
            body["tag"] = self.tag
        return body

    def event(self) -> dict[str, Any]:
        """The account-streaming order event (account-streaming-responses)."""
        body: dict[str, Any] = {
            "id": self.id,
            "event": "order",
            "status": self.status,
            "type": self.type,
            "price": self.price or ZERO,
            "stop_price": self.stop or ZERO,
            "avg_fill_price": self.avg_fill_price,
            "exec_quantity": self.exec_quantity,
            "last_fill_quantity": self.last_fill_quantity,
            "remaining_quantity": self.remaining,
            "transaction_date": iso_ms(self.updated_at or self.created_at),
            "create_date": iso_ms(self.created_at),
            "account": self.account,
        }
        if self.tag:
            body["tag"] = self.tag
        return body


@dataclass
class FakePosition:
    id: int
    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    date_acquired: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class FakeAccount:
    number: str
    cash: Decimal
    created_at: datetime
    orders: dict[int, FakeOrder] = field(default_factory=dict)
    positions: dict[str, FakePosition] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeUser:
    token: str
    accounts: list[FakeAccount]
    name: str = "Fake Trader"
    id: str = field(default_factory=lambda: "id-" + uuid.uuid4().hex[:10])
    revoked: bool = False
    expired: bool = False
    sessions: dict[str, datetime] = field(default_factory=dict)
    streams: set[asyncio.Queue[str | None]] = field(default_factory=set)

    @property
    def account(self) -> FakeAccount:
        return self.accounts[0]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


class FakeTradier:
    """The fake's state, its fault switches and its ASGI ``app``."""

    def __init__(
        self, *, seed: int = 20260522, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.quotes = SeededQuoteSource(seed)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.users: dict[str, FakeUser] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST request
        self.recorded: list[Recorded] = []
        self._ids = itertools.count(228175)
        self._numbers = itertools.count(1)
        self._release = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/v1/user/profile", self.profile, methods=["GET"]),
                Route("/v1/accounts/events/session", self.session, methods=["POST"]),
                Route("/v1/accounts/{account}/balances", self.balances, methods=["GET"]),
                Route("/v1/accounts/{account}/positions", self.positions, methods=["GET"]),
                Route("/v1/accounts/{account}/history", self.history, methods=["GET"]),
                Route("/v1/accounts/{account}/orders", self.orders, methods=["GET", "POST"]),
                Route(
                    "/v1/accounts/{account}/orders/{order_id}",
                    self.order,
                    methods=["GET", "PUT", "DELETE"],
                ),
                Route("/v1/markets/quotes", self.market_quotes, methods=["GET", "POST"]),
                WebSocketRoute("/v1/accounts/events", self.stream),
            ]
        )

    # --- test controls -----------------------------------------------------------------

    def add_user(
        self, token: str | None = None, cash: str = "100000", accounts: int = 1
    ) -> FakeUser:
        now = self.clock()
        user = FakeUser(
            token=token or uuid.uuid4().hex[:28],
            accounts=[
                FakeAccount(
                    number=f"VA{next(self._numbers):08d}", cash=Decimal(cash), created_at=now
                )
                for _ in range(accounts)
            ],
        )
        for account in user.accounts:
            account.history.append(
                {
                    "amount": Decimal(cash),
                    "date": now.strftime("%Y-%m-%dT00:00:00Z"),
                    "type": "ach",
                    "ach": {"description": "ACH DEPOSIT", "quantity": ZERO},
                }
            )
        self.users[user.token] = user
        return user

    def revoke(self, token: str) -> None:
        self.users[token].revoked = True

    def expire(self, token: str) -> None:
        self.users[token].expired = True

    def drop_streams(self) -> None:
        for user in self.users.values():
            for queue in user.streams:
                queue.put_nowait(None)

    def release_hung(self) -> None:
        self._release.set()

    def find_order(self, order_id: int) -> tuple[FakeUser, FakeAccount, FakeOrder]:
        for user in self.users.values():
            for account in user.accounts:
                if order_id in account.orders:
                    return user, account, account.orders[order_id]
        raise KeyError(order_id)

    def set_status(self, order_id: int | str, status: str) -> None:
        """Force a status, even one outside Tradier's vocabulary (for mapping tests)."""
        _user, _account, order = self.find_order(int(order_id))
        order.status = status

    def order_count(self, account_number: str) -> int:
        for user in self.users.values():
            for account in user.accounts:
                if account.number == account_number:
                    return len(account.orders)
        raise KeyError(account_number)

    async def match(self) -> int:
        """Evaluate every working order against the current quote; returns fills made."""
        fills = 0
        for user in self.users.values():
            for account in user.accounts:
                for order in list(account.orders.values()):
                    if order.status in ("open", "partially_filled"):
                        fills += self._evaluate(user, account, order)
        return fills

    # --- plumbing ------------------------------------------------------------------------

    async def _gate(self, request: Request) -> FakeUser | Response:
        raw = await request.body()  # received in full before any delay
        form: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        request.state.form = form
        self.requests.append((request.method, request.url.path))
        self.recorded.append(
            Recorded(
                request.method,
                request.url.path,
                dict(request.query_params),
                form,
                {k.lower(): v for k, v in request.headers.items()},
            )
        )
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if self.faults.server_errors > 0 and self.faults.server_errors_method in (
            None,
            request.method,
        ):
            self.faults.server_errors -= 1
            return fault(
                request,
                self.faults.server_error_status,
                "Datastore Error",
                "steps.servicecallout.ExecutionFailed",
            )
        if self.faults.rate_limited > 0 and self.faults.rate_limited_method in (
            None,
            request.method,
        ):
            self.faults.rate_limited -= 1
            expiry = int((time.time() + self.faults.retry_after) * 1000)
            return fault(
                request,
                429,
                "Rate limit quota violation. Quota limit exceeded.",
                "policies.ratelimit.QuotaViolation",
                **{
                    "Retry-After": str(self.faults.retry_after),
                    "X-Ratelimit-Allowed": "120",
                    "X-Ratelimit-Used": "121",
                    "X-Ratelimit-Available": "0",
                    "X-Ratelimit-Expiry": str(expiry),
                },
            )
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        user = self.users.get(token)
        if user is None or user.revoked:
            return fault(
                request, 401, "Invalid Access Token", "keymanagement.service.invalid_access_token"
            )
        if user.expired:
            return fault(
                request, 401, "Access Token expired", "keymanagement.service.access_token_expired"
            )
        return user

    async def _account_gate(self, request: Request) -> tuple[FakeUser, FakeAccount] | Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        wanted = request.path_params["account"]
        for account in user.accounts:
            if account.number == wanted:
                return user, account
        return PlainTextResponse(f"Unauthorized Account: {wanted}", 400)

    def _now(self) -> datetime:
        return self.clock()

    def _broadcast(self, user: FakeUser, order: FakeOrder) -> None:
        if self.faults.stream_silent:
            return
        frame = json.dumps(order.event(), default=_number)
        for queue in user.streams:
            queue.put_nowait(frame)

    def _positions_value(self, account: FakeAccount) -> Decimal:
        return sum(
            (
                p.quantity * self.quotes.quote(s, self._now()).last
                for s, p in account.positions.items()
            ),
            ZERO,
        )

    def _reserved(self, account: FakeAccount) -> Decimal:
        reserved = ZERO
        for order in account.orders.values():
            if order.side in ("buy", "buy_to_cover") and order.status in WORKING:
                price = order.price or self.quotes.quote(order.symbol, self._now()).ask
                reserved += (order.quantity - order.exec_quantity) * price
        return reserved

    # --- user, account -----------------------------------------------------------------

    async def profile(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        accounts = [
            {
                "account_number": a.number,
                "classification": "individual",
                "date_created": iso_ms(a.created_at),
                "day_trader": False,
                "option_level": 2,
                "status": "active",
                "type": "margin",
                "last_update_date": iso_ms(a.created_at),
            }
            for a in user.accounts
        ]
        return answer(
            request,
            {"profile": {"account": one_or_many(accounts), "id": user.id, "name": user.name}},
        )

    async def balances(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _user, account = found
        long_value = self._positions_value(account)
        buying_power = account.cash - self._reserved(account)
        pending = sum(1 for o in account.orders.values() if o.status in WORKING)
        return answer(
            request,
            {
                "balances": {
                    "option_short_value": 0,
                    "total_equity": account.cash + long_value,
                    "account_number": account.number,
                    "account_type": "margin",
                    "close_pl": 0,
                    "current_requirement": 0,
                    "equity": 0,
                    "long_market_value": long_value,
                    "market_value": long_value,
                    "open_pl": 0,
                    "option_long_value": 0,
                    "option_requirement": 0,
                    "pending_orders_count": pending,
                    "short_market_value": 0,
                    "stock_long_value": long_value,
                    "total_cash": account.cash,
                    "uncleared_funds": 0,
                    "pending_cash": 0,
                    "margin": {
                        "fed_call": 0,
                        "maintenance_call": 0,
                        "option_buying_power": buying_power,
                        "stock_buying_power": buying_power,
                        "stock_short_value": 0,
                        "sweep": 0,
                    },
                }
            },
        )

    async def positions(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _user, account = found
        rows = [
            {
                "cost_basis": p.cost_basis,
                "date_acquired": iso_ms(p.date_acquired),
                "id": p.id,
                "quantity": p.quantity,
                "symbol": symbol,
            }
            for symbol, p in sorted(account.positions.items())
            if p.quantity
        ]
        if not rows:
            return answer(request, {"positions": "null"})
        return answer(request, {"positions": {"position": one_or_many(rows)}})

    async def history(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _user, account = found
        params = request.query_params
        events = list(reversed(account.history))  # newest first
        if "type" in params:
            events = [e for e in events if e["type"] == params["type"]]
        if "start" in params:
            events = [e for e in events if e["date"][:10] >= params["start"]]
        if "end" in params:
            events = [e for e in events if e["date"][:10] <= params["end"]]
        limit = int(params.get("limit", "25"))
        page = int(params.get("page", "1"))
        events = events[(page - 1) * limit : page * limit]
        if not events:
            return answer(request, {"history": "null"})
        return answer(request, {"history": {"event": one_or_many(events)}})

    # --- orders --------------------------------------------------------------------------

    async def orders(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        user, account = found
        if request.method == "POST":
            return await self._place(request, user, account)
        params = request.query_params
        selected = sorted(account.orders.values(), key=lambda o: o.id)
        if params.get("filter") == "all":
            if "start" in params:
                selected = [o for o in selected if iso_ms(o.created_at)[:10] >= params["start"]]
            if "end" in params:
                selected = [o for o in selected if iso_ms(o.created_at)[:10] <= params["end"]]
        limit = int(params.get("limit", "25"))
        page = int(params.get("page", "1"))
        selected = selected[(page - 1) * limit : page * limit]
        include = params.get("includeTags") == "true"
        if not selected:
            return answer(request, {"orders": "null"})
        return answer(
            request, {"orders": {"order": one_or_many([o.wire(include) for o in selected])}}
        )

    async def _place(self, request: Request, user: FakeUser, account: FakeAccount) -> Response:
        form: dict[str, str] = request.state.form
        for name in ("class", "symbol", "side", "quantity", "type", "duration"):
            if not form.get(name):
                return refusal(request, 400, f"Invalid parameter, {name}: is required")
        if form["class"] != "equity":
            return refusal(request, 400, f"Invalid parameter, class: {form['class']}")
        side, type_, duration = form["side"], form["type"], form["duration"]
        if side not in SIDES:
            return refusal(request, 400, f"Invalid parameter, side: {side}")
        if type_ not in TYPES:
            return refusal(request, 400, f"Invalid parameter, type: {type_}")
        if duration not in DURATIONS:
            return refusal(request, 400, f"Invalid parameter, duration: {duration}")
        tag = form.get("tag") or None
        if tag is not None and (len(tag) > 255 or not set(tag) <= TAG_CHARS):
            return refusal(request, 400, "Invalid parameter, tag: invalid characters or length")
        try:
            quantity = Decimal(form["quantity"])
            price = Decimal(form["price"]) if form.get("price") else None
            stop = Decimal(form["stop"]) if form.get("stop") else None
        except InvalidOperation:
            return refusal(request, 400, "Invalid parameter, quantity: not a number")
        # Downstream (risk system) refusals: status 200 with an errors body.
        if quantity != quantity.to_integral_value() or not 1 <= quantity <= 10_000_000:
            return refusal(request, 200, "IncorrectOrderQuantity")
        if type_ in ("limit", "stop_limit") and price is None:
            return refusal(request, 200, "LimitPriceUndefined")
        if type_ in ("stop", "stop_limit") and stop is None:
            return refusal(request, 200, "StopPriceUndefined")
        if type_ == "market" and duration == "gtc":
            return refusal(request, 200, "MarketOrderIsGtc")
        symbol = form["symbol"]
        if symbol not in UNIVERSE or "-" in symbol:
            return refusal(request, 200, f"Undefined symbol: {symbol}")
        if side in ("sell_short", "buy_to_cover"):
            return refusal(request, 200, BACKOFFICE, "ShortStockTradingDeniedForAccount")
        quote = self.quotes.quote(symbol, self._now())
        if side == "buy":
            cost = quantity * (price or quote.ask)
            if cost > account.cash - self._reserved(account):
                return refusal(request, 200, BACKOFFICE, "DayTradingBuyingPowerExceeded")
        else:
            held = account.positions.get(symbol, FakePosition(0)).quantity
            selling = sum(
                (
                    o.quantity - o.exec_quantity
                    for o in account.orders.values()
                    if o.side == "sell" and o.symbol == symbol and o.status in WORKING
                ),
                ZERO,
            )
            if held <= 0:
                return refusal(request, 200, BACKOFFICE, "UnexpectedSellOrder")
            if quantity > held - selling:
                return refusal(request, 200, BACKOFFICE, "LongPositionCrossZero")
        now = self._now()
        order = FakeOrder(
            id=next(self._ids),
            account=account.number,
            symbol=symbol,
            side=side,
            type=type_,
            duration=duration,
            quantity=quantity,
            price=price if type_ in ("limit", "stop_limit") else None,
            stop=stop if type_ in ("stop", "stop_limit") else None,
            tag=tag,
            created_at=now,
            updated_at=now,
        )
        account.orders[order.id] = order
        self._broadcast(user, order)
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return answer(
            request, {"order": {"id": order.id, "status": "ok", "partner_id": str(uuid.uuid4())}}
        )

    async def order(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        user, account = found
        raw_id = request.path_params["order_id"]
        order = account.orders.get(int(raw_id)) if raw_id.isdigit() else None
        if order is None:
            return PlainTextResponse(f"Unauthorized Account: {account.number}", 400)
        if request.method == "GET":
            include = request.query_params.get("includeTags") == "true"
            return answer(request, {"order": order.wire(include)})
        if order.status in FINAL:
            return refusal(request, 400, f"order already in finalized state: {order.status}")
        now = self._now()
        if request.method == "DELETE":
            order.status, order.updated_at = "canceled", now
            self._broadcast(user, order)
            return answer(request, {"order": {"id": order.id, "status": "ok"}})
        form: dict[str, str] = request.state.form
        try:
            price = Decimal(form["price"]) if form.get("price") else None
            stop = Decimal(form["stop"]) if form.get("stop") else None
        except InvalidOperation:
            return refusal(request, 400, "Invalid parameter, price: not a number")
        type_ = form.get("type") or order.type
        duration = form.get("duration") or order.duration
        if type_ not in TYPES:
            return refusal(request, 400, f"Invalid parameter, type: {type_}")
        if duration not in DURATIONS:
            return refusal(request, 400, f"Invalid parameter, duration: {duration}")
        order.type, order.duration = type_, duration
        if price is not None:
            order.price = price
        if stop is not None:
            order.stop = stop
        order.updated_at = now
        self._broadcast(user, order)
        return answer(
            request, {"order": {"id": order.id, "status": "ok", "partner_id": str(uuid.uuid4())}}
        )

    def _evaluate(self, user: FakeUser, account: FakeAccount, order: FakeOrder) -> int:
        now = self._now()
        quote = self.quotes.quote(order.symbol, now)
        decision = decide(
            OrderState(
                side=OrderSide.buy if order.side.startswith("buy") else OrderSide.sell,
                order_type=OrderType(order.type),
                time_in_force=TimeInForce.gtc if order.duration == "gtc" else TimeInForce.day,
                remaining=order.quantity - order.exec_quantity,
                limit_price=order.price,
                stop_price=order.stop,
                stop_triggered=order.stop_triggered,
            ),
            quote,
        )
        order.stop_triggered = decision.stop_triggered
        if not (decision.fills and decision.fill_price is not None):
            return 0
        qty, price = decision.fill_quantity, decision.fill_price
        previous = order.exec_quantity * order.avg_fill_price
        order.exec_quantity += qty
        order.avg_fill_price = ((previous + qty * price) / order.exec_quantity).quantize(
            Decimal("0.0001")
        )
        order.last_fill_price, order.last_fill_quantity = price, qty
        order.updated_at = now
        order.status = "filled" if order.exec_quantity >= order.quantity else "partially_filled"
        position = account.positions.setdefault(order.symbol, FakePosition(next(self._ids)))
        if order.side == "buy":
            account.cash -= qty * price
            position.cost_basis += qty * price
            position.quantity += qty
        else:
            account.cash += qty * price
            if position.quantity:
                position.cost_basis -= position.cost_basis * qty / position.quantity
            position.quantity -= qty
        position.date_acquired = now
        signed = qty if order.side == "buy" else -qty
        account.history.append(
            {
                "amount": -signed * price,
                "date": now.strftime("%Y-%m-%dT00:00:00Z"),
                "type": "trade",
                "trade": {
                    "commission": ZERO,
                    "description": f"{order.symbol} (fake)",
                    "price": price,
                    "quantity": signed,
                    "symbol": order.symbol,
                    "trade_type": "Equity",
                },
            }
        )
        self._broadcast(user, order)
        return 1

    # --- market data ---------------------------------------------------------------------

    async def market_quotes(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        raw = request.state.form.get("symbols") or request.query_params.get("symbols", "")
        now = self._now()
        found, unmatched = [], []
        for symbol in [s for s in raw.split(",") if s]:
            if symbol not in UNIVERSE or "-" in symbol:
                unmatched.append(symbol)
                continue
            q = self.quotes.quote(symbol, now)
            stamp = epoch_ms(q.as_of)
            found.append(
                {
                    "symbol": symbol,
                    "description": f"{symbol} (fake)",
                    "exch": "Q",
                    "type": "stock",
                    "last": q.last,
                    "change": 0,
                    "volume": 0,
                    "open": q.last,
                    "high": q.last,
                    "low": q.last,
                    "close": None,
                    "bid": q.bid,
                    "ask": q.ask,
                    "change_percentage": 0,
                    "average_volume": 0,
                    "last_volume": 100,
                    "trade_date": stamp,
                    "prevclose": q.last,
                    "week_52_high": q.last,
                    "week_52_low": q.last,
                    "bidsize": int(q.bid_size) // 100,
                    "bidexch": "Q",
                    "bid_date": stamp,
                    "asksize": int(q.ask_size) // 100,
                    "askexch": "Q",
                    "ask_date": stamp,
                    "root_symbols": symbol,
                }
            )
        body: dict[str, Any] = {}
        if found:
            body["quote"] = one_or_many(found)
        if unmatched:
            body["unmatched_symbols"] = {"symbol": one_or_many(unmatched)}
        return answer(request, {"quotes": body})

    # --- account streaming ---------------------------------------------------------------

    async def session(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        session_id = uuid.uuid4().hex.upper()
        user.sessions[session_id] = self._now() + SESSION_TTL
        url = f"{'wss' if request.url.scheme == 'https' else 'ws'}://{request.url.netloc}"
        return answer(
            request,
            {"stream": {"url": f"{url}/v1/accounts/events", "sessionid": session_id}},
        )

    async def stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            message = await websocket.receive_text()
            payload = json.loads(message)
        except (WebSocketDisconnect, ValueError, KeyError, RuntimeError):
            return
        user = self._session_user(payload.get("sessionid") if isinstance(payload, dict) else None)
        if user is None or "order" not in (payload.get("events") or []):
            await websocket.close(code=1008)
            return
        excluded = set(payload.get("excludeAccounts") or [])
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        user.streams.add(queue)

        async def drain() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    received = await websocket.receive()
                    if received["type"] == "websocket.disconnect":
                        break
            queue.put_nowait(None)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self.faults.heartbeat_seconds)
                if not self.faults.stream_silent:
                    stamp = self._now().strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
                    queue.put_nowait(
                        json.dumps({"event": "heartbeat", "status": "active", "timestamp": stamp})
                    )

        reader = asyncio.create_task(drain())
        beats = asyncio.create_task(heartbeat())
        try:
            while True:
                frame = await queue.get()
                if frame is None:
                    break
                if json.loads(frame).get("account") in excluded:
                    continue
                await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            user.streams.discard(queue)
            reader.cancel()
            beats.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1011)

    def _session_user(self, session_id: object) -> FakeUser | None:
        if not isinstance(session_id, str):
            return None
        for user in self.users.values():
            expires = user.sessions.get(session_id)
            if expires is not None and expires >= self._now() and not user.revoked:
                return user
        return None

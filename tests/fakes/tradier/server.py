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
anywhere and so chosen here: the status of the buying-power refusal (200, as documented for
downstream refusals), the 429 body (the API gateway's quota fault), and what the WebSocket
does with an unknown session id (closes with 1008).

Answers the brokerage backend gives as plain text, not JSON, are plain text here too: a
cancel or change of a finished order is **400** ``order already in finalized state: <status>``
(lumiwealth-tradier's ``Orders.cancel`` matches ``"400 - order already in finalized state"``
on the raw answer), and an order id or account number the token's account does not own is
**401** ``Unauthorized Account: <account>`` (the status as seen at the real sandbox, issue 15;
the text as QuantConnect's tests record it), which is not the gateway's bad-token fault. New
orders are first ``pending`` (as at the real sandbox; lumibot's Tradier tests and its status
table carry ``pending`` too) and become ``open`` when the market acknowledges them: here at the
next ``match()``.

Short sales (margin accounts only, ``account_type``): ``sell_short`` opens or adds to a short,
``buy_to_cover`` closes it, with the documented refusals (https://docs.tradier.com/docs/
error-responses): ``ShortStockTradingDeniedForAccount`` (cash account), ``ShortOrderIsGtc``,
``UnexpectedSellShortOrder`` (a long position is held), ``UnexpectedBuyOrder`` (a plain buy
against a short), ``UnexpectedBuyToCoverOrder`` (no short), ``ShortPositionCrossZero``.
Extended hours: ``duration`` ``pre``/``post`` for equity limit orders only
(``LimitOrderRequiredOutsideMarketHours`` otherwise), entered in the session windows
04:00-09:24 and 16:00-19:55 New York time (documentation.tradier.com/brokerage-api/trading/
getting-started, as QuantConnect cites it); outside them ``Invalid parameter, duration: pre
market no longer available`` (QuantConnect's recorded text), 400. They match like day orders.

Unknown routes answer as Tradier's API gateway (Apigee: its faults ``keymanagement.service.*``,
``policies.ratelimit.QuotaViolation`` are Apigee policy codes) answers an unrouted request:
404 ``{"fault": {"faultstring": "Unable to identify proxy for host: default and url: <path>",
"detail": {"errorcode": "messaging.adaptors.http.flow.ApplicationNotFound"}}}``
(https://docs.apigee.com/api-platform/troubleshoot/runtime/404-unable-identify-proxy-host; the
virtual host name ``default`` is the fake's choice).

Rows the adapter cannot represent (for list tests): ``FakeAccount.raw_orders``,
``raw_positions``, ``raw_history`` and ``FakeUser.raw_accounts`` hold wire rows served as they
are, mixed into the real lists.

Prices come from the paper market (``app.paper.quotes.SeededQuoteSource``) and orders match
by the paper broker's rules (``app.paper.matching.decide``) over in-memory books, when the
test (or the fake-brokers ticker) calls ``match()``. Fault switches live in ``faults``.

Options: listed contracts, quotes and greeks come from the paper option market
(``app.paper.options_market.SeededOptionMarket``, the same market the paper broker trades),
served as Tradier's chain (``GET /v1/markets/options/chains``, contract fields as in
jiak94/asynctradier's recorded answers, greeks with ``mid_iv``/``smv_vol`` as from ORATS) and
expirations (``expirationType`` values ``weeklys``/``standard``/``quarterlys``). Option and
multileg orders (``class=option``; ``class=multileg`` with indexed ``option_symbol[n]``,
``side[n]``, ``quantity[n]`` and ``type`` market/debit/credit/even) fill whole and at once,
each leg at its own side of its quote (buys at the ask, sells at the bid), when the net
price is marketable. A multileg order reads back as one order with ``num_legs``, ``strategy``
and its legs in ``leg`` (https://docs.tradier.com/docs/orders); the top-level ``quantity``
is the strategy quantity (the legs' greatest common divisor: the form has none of its own,
so this is the fake's choice). Account events: each leg's change is an order event with
``parent_id`` = the multileg order (a documented field of account-streaming-responses; that
legs are what it names is this fake's reading), then the multileg order's own event.
``preview=true`` answers the documented preview object (commission $0.35 per contract here,
the fake's figure) and places nothing. Not checked here: option approval levels and whether
a short leg is covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers.base import (
    InvalidOptionSymbol,
    OptionContract,
    OrderSide,
    OrderType,
    TimeInForce,
    is_option_symbol,
)
from app.paper.market_data import PaperMarketData
from app.paper.matching import OrderState, decide
from app.paper.options_market import OptionModelQuote, SeededOptionMarket
from app.paper.quotes import UNIVERSE, SeededQuoteSource
from tests.fakes.tradier.market_stream import MARKET_PATH, FakeTradierMarket

ZERO = Decimal(0)
WORKING = frozenset({"open", "partially_filled", "pending"})
FINAL = frozenset({"filled", "canceled", "expired", "rejected", "error"})
SIDES = frozenset({"buy", "buy_to_cover", "sell", "sell_short"})
OPTION_SIDES = frozenset({"buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close"})
TYPES = frozenset({"market", "limit", "stop", "stop_limit"})
MULTILEG_TYPES = frozenset({"market", "debit", "credit", "even"})
# change-order: "type ... One of: limit, stop, stop_limit, debit, credit"
CHANGE_TYPES = {"single": TYPES, "multileg": frozenset({"market", "debit", "credit", "even"})}
MAX_LEGS = 4
MULTIPLIER = Decimal(100)
COMMISSION_PER_CONTRACT = Decimal("0.35")  # the fake's figure for previews
DURATIONS = frozenset({"day", "gtc", "pre", "post"})
TAG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
BACKOFFICE = "Backoffice rejected override of the order."
SESSION_TTL = timedelta(minutes=5)
EASTERN = ZoneInfo("America/New_York")
# Order entry windows of the extended sessions (trading/getting-started, via QuantConnect).
EXTENDED_WINDOWS = {
    "pre": (clock_time(4, 0), clock_time(9, 24)),
    "post": (clock_time(16, 0), clock_time(19, 55)),
}
FINALIZED = "order already in finalized state"


def _truthy(value: str | None) -> bool:
    """Boolean query flags; lumiwealth-tradier sends Python's ``True`` for ``includeTags``
    and relies on the tags coming back, so the flag is read without regard to case."""
    return (value or "").lower() == "true"


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


def unauthorized_account(number: str) -> Response:
    """An order id or account the token's account does not own (module docstring)."""
    return PlainTextResponse(f"Unauthorized Account: {number}", 401)


def fault(request: Request, status: int, text: str, code: str, **headers: str) -> Response:
    body = {"fault": {"faultstring": text, "detail": {"errorcode": code}}}
    return Response(json.dumps(body), status, headers=headers, media_type="application/json")


# Our expiration types as Tradier names them (``weeklys``, ``standard``, ``quarterlys`` in
# jiak94/asynctradier's recorded answers; ``eom`` for end of month).
_TRADIER_EXPIRATION_TYPES = {
    "standard": "standard",
    "weekly": "weeklys",
    "quarterly": "quarterlys",
    "end_of_month": "eom",
    "other": "standard",
}


def _tag_ok(form: dict[str, str]) -> bool:
    tag = form.get("tag") or None
    return tag is None or (len(tag) <= 255 and set(tag) <= TAG_CHARS)


def _strategy(legs: int) -> str:
    """A documented ``strategy`` value (reference/response/orders) by leg count only."""
    return {2: "spread", 4: "condor"}.get(legs, "freeform")


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
    status: str = "pending"
    exec_quantity: Decimal = ZERO
    avg_fill_price: Decimal = ZERO
    last_fill_price: Decimal = ZERO
    last_fill_quantity: Decimal = ZERO
    updated_at: datetime | None = None
    stop_triggered: bool = False
    klass: str = "equity"
    option_symbol: str | None = None
    legs: list[FakeOrder] = field(default_factory=list)
    parent_id: int | None = None
    strategy: str | None = None

    @property
    def remaining(self) -> Decimal:
        return ZERO if self.status in FINAL else self.quantity - self.exec_quantity

    @property
    def is_buy(self) -> bool:
        return self.side.startswith("buy")

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
                "class": self.klass,
            }
        )
        if self.option_symbol is not None:
            body["option_symbol"] = self.option_symbol
        if self.klass == "multileg":
            body["num_legs"] = len(self.legs)
            body["strategy"] = self.strategy or "unknown"
            body["leg"] = [leg.wire(False) for leg in self.legs]
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
        if self.parent_id is not None:
            body["parent_id"] = self.parent_id
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
    account_type: str = "margin"  # margin | cash (pdt is a margin account flagged for PDT)
    orders: dict[int, FakeOrder] = field(default_factory=dict)
    positions: dict[str, FakePosition] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    raw_orders: list[dict[str, Any]] = field(default_factory=list)
    raw_positions: list[dict[str, Any]] = field(default_factory=list)
    raw_history: list[dict[str, Any]] = field(default_factory=list)
    closed_positions: list[dict[str, Any]] = field(default_factory=list)


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
    raw_accounts: list[dict[str, Any]] = field(default_factory=list)

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
        self.options = SeededOptionMarket(self.quotes)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.users: dict[str, FakeUser] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST request
        self.recorded: list[Recorded] = []
        self._ids = itertools.count(228175)
        self._numbers = itertools.count(1)
        self._release = asyncio.Event()
        self.market = FakeTradierMarket(
            PaperMarketData(self.quotes, self.options), gate=self._gate, answer=answer,
            clock=self.clock,
        )  # fmt: skip
        self.app = Starlette(
            routes=[
                Route("/v1/user/profile", self.profile, methods=["GET"]),
                Route("/v1/accounts/events/session", self.session, methods=["POST"]),
                Route("/v1/accounts/{account}/balances", self.balances, methods=["GET"]),
                Route("/v1/accounts/{account}/positions", self.positions, methods=["GET"]),
                Route("/v1/accounts/{account}/history", self.history, methods=["GET"]),
                Route("/v1/accounts/{account}/gainloss", self.gainloss, methods=["GET"]),
                Route("/v1/accounts/{account}/orders", self.orders, methods=["GET", "POST"]),
                Route(
                    "/v1/accounts/{account}/orders/{order_id}",
                    self.order,
                    methods=["GET", "PUT", "DELETE"],
                ),
                Route("/v1/markets/quotes", self.market_quotes, methods=["GET", "POST"]),
                Route("/v1/markets/options/chains", self.option_chain, methods=["GET"]),
                Route("/v1/markets/options/expirations", self.option_expirations, methods=["GET"]),
                WebSocketRoute("/v1/accounts/events", self.stream),
                # Market data (market_stream.py).
                Route("/v1/markets/events/session", self.market.session, methods=["POST"]),
                Route("/v1/markets/history", self.market.history, methods=["GET"]),
                Route("/v1/markets/timesales", self.market.timesales, methods=["GET"]),
                WebSocketRoute(MARKET_PATH, self.market.serve),
            ],
            exception_handlers={HTTPException: self._unrouted},
        )

    # --- test controls -----------------------------------------------------------------

    def add_user(
        self,
        token: str | None = None,
        cash: str = "100000",
        accounts: int = 1,
        account_type: str = "margin",
    ) -> FakeUser:
        now = self.clock()
        user = FakeUser(
            token=token or uuid.uuid4().hex[:28],
            accounts=[
                FakeAccount(
                    number=f"VA{next(self._numbers):08d}",
                    cash=Decimal(cash),
                    created_at=now,
                    account_type=account_type,
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

    def acknowledge(self) -> int:
        """The market acknowledges every ``pending`` order: it becomes ``open``."""
        count = 0
        for user in self.users.values():
            for account in user.accounts:
                for order in account.orders.values():
                    if order.status == "pending":
                        order.status, order.updated_at = "open", self._now()
                        for leg in order.legs:
                            leg.status = "open"
                        self._broadcast(user, order)
                        count += 1
        return count

    async def match(self) -> int:
        """Acknowledge pending orders, then evaluate every working order against the current
        quote; returns fills made."""
        self.acknowledge()
        fills = 0
        for user in self.users.values():
            for account in user.accounts:
                for order in list(account.orders.values()):
                    if order.status not in ("open", "partially_filled"):
                        continue
                    if order.klass == "equity":
                        fills += self._evaluate(user, account, order)
                    else:
                        fills += self._evaluate_options(user, account, order)
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
        return unauthorized_account(wanted)

    def _now(self) -> datetime:
        return self.clock()

    def _broadcast(self, user: FakeUser, order: FakeOrder) -> None:
        if self.faults.stream_silent:
            return
        for one in [*order.legs, order]:  # each leg (parent_id set), then the order
            frame = json.dumps(one.event(), default=_number)
            for queue in user.streams:
                queue.put_nowait(frame)

    def _mark(self, symbol: str) -> Decimal:
        """The value of one unit held: a share's last price, a contract's mark x 100."""
        if is_option_symbol(symbol):
            return self._option_quote(OptionContract.parse(symbol)).mark * MULTIPLIER
        return self.quotes.quote(symbol, self._now()).last

    def _positions_value(self, account: FakeAccount, *, short: bool | None = None) -> Decimal:
        """The value of the positions held: all, only the short (``True``) or long ones."""
        return sum(
            (
                p.quantity * self._mark(s)
                for s, p in account.positions.items()
                if short is None or (p.quantity < 0) == short
            ),
            ZERO,
        )

    def _reserved(self, account: FakeAccount) -> Decimal:
        reserved = ZERO
        for order in account.orders.values():
            if order.status not in WORKING:
                continue
            if order.klass == "equity" and order.side in ("buy", "buy_to_cover"):
                price = order.price or self.quotes.quote(order.symbol, self._now()).ask
                reserved += (order.quantity - order.exec_quantity) * price
            elif order.klass == "option" and order.is_buy and order.option_symbol:
                quote = self._option_quote(OptionContract.parse(order.option_symbol))
                price = order.price or quote.ask
                reserved += (order.quantity - order.exec_quantity) * price * MULTIPLIER
            elif order.klass == "multileg" and order.type == "debit" and order.price:
                reserved += (order.quantity - order.exec_quantity) * order.price * MULTIPLIER
        return reserved

    async def _unrouted(self, request: Request, exc: Exception) -> Response:
        """An unknown path (or method): the gateway's unrouted-request fault (docstring)."""
        self.requests.append((request.method, request.url.path))
        return fault(
            request,
            404,
            f"Unable to identify proxy for host: default and url: {request.url.path}",
            "messaging.adaptors.http.flow.ApplicationNotFound",
        )

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
                "type": a.account_type,
                "last_update_date": iso_ms(a.created_at),
            }
            for a in user.accounts
        ]
        accounts.extend(user.raw_accounts)
        return answer(
            request,
            {"profile": {"account": one_or_many(accounts), "id": user.id, "name": user.name}},
        )

    async def balances(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _user, account = found
        long_value = self._positions_value(account, short=False)
        buying_power = account.cash - self._reserved(account)
        pending = sum(1 for o in account.orders.values() if o.status in WORKING)
        short_value = self._positions_value(account, short=True)
        body: dict[str, Any] = {
            "option_short_value": 0,
            "total_equity": account.cash + long_value + short_value,
            "account_number": account.number,
            "account_type": account.account_type,
            "close_pl": 0,
            "current_requirement": 0,
            "equity": 0,
            "long_market_value": long_value,
            "market_value": long_value + short_value,
            "open_pl": 0,
            "option_long_value": 0,
            "option_requirement": 0,
            "pending_orders_count": pending,
            "short_market_value": short_value,
            "stock_long_value": long_value,
            "total_cash": account.cash,
            "uncleared_funds": 0,
            "pending_cash": 0,
        }
        if account.account_type == "cash":
            # https://docs.tradier.com/docs/balances: a cash account's detail is "cash".
            body["cash"] = {"cash_available": buying_power, "sweep": 0, "unsettled_funds": 0}
        else:
            body["margin"] = {
                "fed_call": 0,
                "maintenance_call": 0,
                "option_buying_power": buying_power,
                "stock_buying_power": buying_power,
                "stock_short_value": short_value,
                "sweep": 0,
            }
        return answer(request, {"balances": body})

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
        rows.extend(account.raw_positions)
        if not rows:
            return answer(request, {"positions": "null"})
        return answer(request, {"positions": {"position": one_or_many(rows)}})

    async def history(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _user, account = found
        params = request.query_params
        events = list(reversed(account.history)) + account.raw_history  # newest first
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

    async def gainloss(self, request: Request) -> Response:
        """https://documentation.tradier.com/brokerage-api/accounts/get-account-gainloss:
        closed positions, newest close first (``sortBy=closeDate``, ``sort=desc`` defaults),
        ``page``/``limit`` (25), ``symbol``; none is ``{"gainloss": "null"}``."""
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _user, account = found
        params = request.query_params
        rows = list(reversed(account.closed_positions))
        if "symbol" in params:
            rows = [r for r in rows if r["symbol"] == params["symbol"]]
        limit, page = int(params.get("limit", "25")), int(params.get("page", "1"))
        rows = rows[(page - 1) * limit : page * limit]
        if not rows:
            return answer(request, {"gainloss": "null"})
        return answer(request, {"gainloss": {"closed_position": one_or_many(rows)}})

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
        include = _truthy(params.get("includeTags"))
        rows = [o.wire(include) for o in selected]
        if page == 1:
            rows.extend(account.raw_orders)
        if not rows:
            return answer(request, {"orders": "null"})
        return answer(request, {"orders": {"order": one_or_many(rows)}})

    async def _place(self, request: Request, user: FakeUser, account: FakeAccount) -> Response:
        form: dict[str, str] = request.state.form
        if form.get("class") == "option":
            return await self._place_option(request, user, account)
        if form.get("class") == "multileg":
            return await self._place_multileg(request, user, account)
        return await self._place_equity(request, user, account)

    async def _accept(
        self, request: Request, user: FakeUser, account: FakeAccount, order: FakeOrder
    ) -> Response:
        """Book a new order, tell the streams, answer the documented acknowledgement."""
        account.orders[order.id] = order
        self._broadcast(user, order)
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return answer(
            request, {"order": {"id": order.id, "status": "ok", "partner_id": str(uuid.uuid4())}}
        )

    def _preview(
        self,
        request: Request,
        form: dict[str, str],
        *,
        quantity: Decimal,
        order_cost: Decimal,
        contracts: Decimal = ZERO,
        margin_change: Decimal = ZERO,
        strategy: str,
    ) -> Response:
        """The documented preview object (https://docs.tradier.com/docs/preview)."""
        commission = contracts * COMMISSION_PER_CONTRACT
        return answer(
            request,
            {
                "order": {
                    "status": "ok",
                    "commission": commission,
                    "cost": order_cost + commission,
                    "fees": ZERO,
                    "symbol": form["symbol"],
                    "quantity": quantity,
                    "side": form.get("side", "buy"),
                    "type": form["type"],
                    "duration": form["duration"],
                    "result": True,
                    "order_cost": order_cost,
                    "margin_change": margin_change,
                    "request_date": self._now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
                    "extended_hours": False,
                    "class": form["class"],
                    "strategy": strategy,
                    "day_trades": 0,
                }
            },
        )

    async def _place_equity(
        self, request: Request, user: FakeUser, account: FakeAccount
    ) -> Response:
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
        if duration in EXTENDED_WINDOWS:
            refused = self._extended_refusal(request, type_, duration)
            if refused is not None:
                return refused
        quote = self.quotes.quote(symbol, self._now())
        refused = self._position_refusal(request, account, symbol, side, quantity, duration)
        if refused is not None:
            return refused
        if side in ("buy", "buy_to_cover"):
            cost = quantity * (price or quote.ask)
            if cost > account.cash - self._reserved(account):
                return refusal(request, 200, BACKOFFICE, "DayTradingBuyingPowerExceeded")
        if form.get("preview") == "true":
            cost = quantity * (price or (quote.ask if side.startswith("buy") else quote.bid))
            return self._preview(
                request, form, quantity=quantity, order_cost=cost, strategy="equity"
            )
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
        return await self._accept(request, user, account, order)

    def _extended_refusal(self, request: Request, type_: str, duration: str) -> Response | None:
        """``pre``/``post``: limit orders, entered in the session's window (docstring)."""
        if type_ != "limit":
            return refusal(request, 200, "LimitOrderRequiredOutsideMarketHours")
        start, end = EXTENDED_WINDOWS[duration]
        if not start <= self._now().astimezone(EASTERN).time() < end:
            return refusal(
                request, 400, f"Invalid parameter, duration: {duration} market no longer available"
            )
        return None

    def _position_refusal(
        self,
        request: Request,
        account: FakeAccount,
        symbol: str,
        side: str,
        quantity: Decimal,
        duration: str,
    ) -> Response | None:
        """The side must fit the position (error-responses: Unexpected*Order, *CrossZero)."""
        held = account.positions.get(symbol, FakePosition(0)).quantity

        def working(*sides: str) -> Decimal:
            return sum(
                (
                    o.quantity - o.exec_quantity
                    for o in account.orders.values()
                    if o.side in sides and o.symbol == symbol and o.status in WORKING
                ),
                ZERO,
            )

        if side == "sell_short":
            if account.account_type == "cash":
                return refusal(request, 200, BACKOFFICE, "ShortStockTradingDeniedForAccount")
            if duration == "gtc":
                return refusal(request, 200, BACKOFFICE, "ShortOrderIsGtc")
            if held > 0 or working("sell") > 0:
                return refusal(request, 200, BACKOFFICE, "UnexpectedSellShortOrder")
        elif side == "buy_to_cover":
            if held >= 0:
                return refusal(request, 200, BACKOFFICE, "UnexpectedBuyToCoverOrder")
            if quantity > -held - working("buy_to_cover"):
                return refusal(request, 200, BACKOFFICE, "ShortPositionCrossZero")
        elif side == "buy":
            if held < 0:
                return refusal(request, 200, BACKOFFICE, "UnexpectedBuyOrder")
        else:  # sell
            if held <= 0:
                return refusal(request, 200, BACKOFFICE, "UnexpectedSellOrder")
            if quantity > held - working("sell"):
                return refusal(request, 200, BACKOFFICE, "LongPositionCrossZero")
        return None

    def _listed(self, raw: str) -> OptionContract | None:
        """A listed, unexpired contract of the paper option market named by ``raw``."""
        if not is_option_symbol(raw) or " " in raw:
            return None  # Tradier takes the unpadded OCC symbol
        try:
            contract = OptionContract.parse(raw)
        except InvalidOptionSymbol:
            return None
        return contract if self.options.is_listed(contract, self._now().date()) else None

    def _option_quote(self, contract: OptionContract) -> OptionModelQuote:
        return self.options.quote(contract, self._now())

    async def _place_option(
        self, request: Request, user: FakeUser, account: FakeAccount
    ) -> Response:
        """``class=option`` (https://documentation.tradier.com/brokerage-api/trading/
        place-option-order)."""
        form: dict[str, str] = request.state.form
        for name in ("symbol", "option_symbol", "side", "quantity", "type", "duration"):
            if not form.get(name):
                return refusal(request, 400, f"Invalid parameter, {name}: is required")
        side, type_, duration = form["side"], form["type"], form["duration"]
        if side not in OPTION_SIDES:
            return refusal(request, 400, f"Invalid parameter, side: {side}")
        if type_ not in TYPES:
            return refusal(request, 400, f"Invalid parameter, type: {type_}")
        if duration not in DURATIONS:
            return refusal(request, 400, f"Invalid parameter, duration: {duration}")
        if not _tag_ok(form):
            return refusal(request, 400, "Invalid parameter, tag: invalid characters or length")
        try:
            quantity = Decimal(form["quantity"])
            price = Decimal(form["price"]) if form.get("price") else None
            stop = Decimal(form["stop"]) if form.get("stop") else None
        except InvalidOperation:
            return refusal(request, 400, "Invalid parameter, quantity: not a number")
        if quantity != quantity.to_integral_value() or not 1 <= quantity <= 10_000_000:
            return refusal(request, 200, "IncorrectOrderQuantity")
        if type_ in ("limit", "stop_limit") and price is None:
            return refusal(request, 200, "LimitPriceUndefined")
        if type_ in ("stop", "stop_limit") and stop is None:
            return refusal(request, 200, "StopPriceUndefined")
        if type_ == "market" and duration == "gtc":
            return refusal(request, 200, "MarketOrderIsGtc")
        if duration in EXTENDED_WINDOWS:
            # Pre/post are for equities only (QuantConnect's live Tradier tests); the answer's
            # wording is the fake's, in the form of Tradier's parameter refusals.
            return refusal(request, 400, f"Invalid parameter, duration: {duration}")
        contract = self._listed(form["option_symbol"])
        if contract is None or contract.underlying != form["symbol"]:
            return refusal(request, 200, f"Undefined symbol: {form['option_symbol']}")
        quote = self._option_quote(contract)
        unit = price or (quote.ask if side.startswith("buy") else quote.bid)
        cost = quantity * unit * MULTIPLIER
        if side.startswith("buy") and cost > account.cash - self._reserved(account):
            return refusal(request, 200, BACKOFFICE, "DayTradingBuyingPowerExceeded")
        if form.get("preview") == "true":
            return self._preview(
                request,
                form,
                quantity=quantity,
                order_cost=cost if side.startswith("buy") else -cost,
                contracts=quantity,
                strategy="option",
            )
        now = self._now()
        order = FakeOrder(
            id=next(self._ids),
            account=account.number,
            symbol=contract.underlying,
            side=side,
            type=type_,
            duration=duration,
            quantity=quantity,
            price=price if type_ in ("limit", "stop_limit") else None,
            stop=stop if type_ in ("stop", "stop_limit") else None,
            tag=form.get("tag") or None,
            created_at=now,
            updated_at=now,
            klass="option",
            option_symbol=contract.symbol,
        )
        return await self._accept(request, user, account, order)

    async def _place_multileg(
        self, request: Request, user: FakeUser, account: FakeAccount
    ) -> Response:
        """``class=multileg`` with indexed legs (https://documentation.tradier.com/
        brokerage-api/trading/place-multileg-order): up to 4 legs, indices from 0."""
        form: dict[str, str] = request.state.form
        for name in ("symbol", "type", "duration"):
            if not form.get(name):
                return refusal(request, 400, f"Invalid parameter, {name}: is required")
        type_, duration = form["type"], form["duration"]
        if type_ not in MULTILEG_TYPES:
            return refusal(request, 400, f"Invalid parameter, type: {type_}")
        if duration not in DURATIONS:
            return refusal(request, 400, f"Invalid parameter, duration: {duration}")
        if not _tag_ok(form):
            return refusal(request, 400, "Invalid parameter, tag: invalid characters or length")
        raw_legs: list[tuple[str, str, str]] = []
        for index in itertools.count():
            if f"option_symbol[{index}]" not in form:
                break
            raw_legs.append(
                (
                    form[f"option_symbol[{index}]"],
                    form.get(f"side[{index}]", ""),
                    form.get(f"quantity[{index}]", ""),
                )
            )
        if not raw_legs:
            return refusal(request, 400, "Invalid parameter, option_symbol[0]: is required")
        if len(raw_legs) > MAX_LEGS:
            return refusal(request, 400, f"Invalid parameter, option_symbol[{MAX_LEGS}]")
        price: Decimal | None = None
        try:
            if form.get("price"):
                price = Decimal(form["price"])
            quantities = [Decimal(q) for _s, _side, q in raw_legs]
        except InvalidOperation:
            return refusal(request, 400, "Invalid parameter, quantity: not a number")
        if type_ in ("debit", "credit") and (price is None or price <= 0):
            return refusal(request, 200, "LimitPriceUndefined")
        if type_ == "market" and duration == "gtc":
            return refusal(request, 200, "MarketOrderIsGtc")
        if duration in EXTENDED_WINDOWS:
            return refusal(request, 400, f"Invalid parameter, duration: {duration}")
        contracts: list[OptionContract] = []
        for index, ((symbol, side, _q), quantity) in enumerate(
            zip(raw_legs, quantities, strict=True)
        ):
            if side not in OPTION_SIDES:
                return refusal(request, 400, f"Invalid parameter, side[{index}]: {side}")
            if quantity != quantity.to_integral_value() or not 1 <= quantity <= 10_000_000:
                return refusal(request, 200, "IncorrectOrderQuantity")
            contract = self._listed(symbol)
            if contract is None or contract.underlying != form["symbol"]:
                return refusal(request, 200, f"Undefined symbol: {symbol}")
            contracts.append(contract)
        units = Decimal(math.gcd(*(int(q) for q in quantities)))
        net = self._net_price(
            [
                (c, side, q)
                for c, (_s, side, _q), q in zip(contracts, raw_legs, quantities, strict=True)
            ],
            units,
        )
        debit = max(ZERO, price if type_ == "debit" and price is not None else net)
        cost = debit * units * MULTIPLIER
        if cost > account.cash - self._reserved(account):
            return refusal(request, 200, BACKOFFICE, "DayTradingBuyingPowerExceeded")
        if form.get("preview") == "true":
            signed = net * units * MULTIPLIER
            return self._preview(
                request,
                form,
                quantity=units,
                order_cost=signed,
                contracts=sum(quantities, ZERO),
                margin_change=self._spread_requirement(contracts, raw_legs, quantities, net, units),
                strategy=_strategy(len(raw_legs)),
            )
        now = self._now()
        parent_id = next(self._ids)
        legs = [
            FakeOrder(
                id=next(self._ids),
                account=account.number,
                symbol=contract.underlying,
                side=side,
                type=type_,
                duration=duration,
                quantity=quantity,
                price=price,
                stop=None,
                tag=None,
                created_at=now,
                updated_at=now,
                klass="option",
                option_symbol=contract.symbol,
                parent_id=parent_id,
            )
            for contract, (_s, side, _q), quantity in zip(
                contracts, raw_legs, quantities, strict=True
            )
        ]
        order = FakeOrder(
            id=parent_id,
            account=account.number,
            symbol=form["symbol"],
            side="sell" if type_ == "credit" else "buy",
            type=type_,
            duration=duration,
            quantity=units,
            price=price if type_ in ("debit", "credit") else None,
            stop=None,
            tag=form.get("tag") or None,
            created_at=now,
            updated_at=now,
            klass="multileg",
            legs=legs,
            strategy=_strategy(len(legs)),
        )
        return await self._accept(request, user, account, order)

    def _net_price(
        self, legs: list[tuple[OptionContract, str, Decimal]], units: Decimal
    ) -> Decimal:
        """Net price per strategy unit at the current quotes (positive: a debit)."""
        total = ZERO
        for contract, side, quantity in legs:
            quote = self._option_quote(contract)
            if side.startswith("buy"):
                total += quote.ask * quantity
            else:
                total -= quote.bid * quantity
        return total / units

    @staticmethod
    def _spread_requirement(
        contracts: list[OptionContract],
        raw_legs: list[tuple[str, str, str]],
        quantities: list[Decimal],
        net: Decimal,
        units: Decimal,
    ) -> Decimal:
        """The fake's margin change: the widest strike distance between a short and a long
        leg of the same right, less the credit (a defined-risk spread's maximum loss)."""
        width = ZERO
        for short, (_s, side, _q) in zip(contracts, raw_legs, strict=True):
            if not side.startswith("sell"):
                continue
            for long, (_s2, side2, _q2) in zip(contracts, raw_legs, strict=True):
                if side2.startswith("buy") and long.right is short.right:
                    width = max(width, abs(long.strike - short.strike))
        del quantities
        return max(ZERO, (width + min(net, ZERO)) * units * MULTIPLIER)

    async def order(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        user, account = found
        raw_id = request.path_params["order_id"]
        order = account.orders.get(int(raw_id)) if raw_id.isdigit() else None
        if order is None:
            return unauthorized_account(account.number)
        if request.method == "GET":
            include = _truthy(request.query_params.get("includeTags"))
            return answer(request, {"order": order.wire(include)})
        if order.status in FINAL:
            # Plain text, not the errors envelope (module docstring).
            return PlainTextResponse(f"{FINALIZED}: {order.status}", 400)
        now = self._now()
        if request.method == "DELETE":
            order.status, order.updated_at = "canceled", now
            for leg in order.legs:
                leg.status, leg.updated_at = "canceled", now
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
        allowed = CHANGE_TYPES["multileg" if order.klass == "multileg" else "single"]
        if type_ not in allowed:
            return refusal(request, 400, f"Invalid parameter, type: {type_}")
        if order.klass == "multileg" and stop is not None:
            return refusal(request, 400, "Invalid parameter, stop: not for a multileg order")
        if duration not in DURATIONS:
            return refusal(request, 400, f"Invalid parameter, duration: {duration}")
        order.type, order.duration = type_, duration
        for leg in order.legs:
            leg.type, leg.duration = type_, duration
            if price is not None:
                leg.price = price
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
        signed = qty if order.is_buy else -qty
        account.cash -= signed * price
        opening = position.quantity == 0 or (position.quantity > 0) == (signed > 0)
        if opening:  # cost basis is signed: negative for a short (as for options)
            position.cost_basis += signed * price
        else:
            self._close_lot(account, order.symbol, position, qty, price, Decimal(1), now)
            position.cost_basis -= position.cost_basis * qty / abs(position.quantity)
        position.quantity += signed
        position.date_acquired = now
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

    def _evaluate_options(self, user: FakeUser, account: FakeAccount, order: FakeOrder) -> int:
        """An option or multileg order fills whole, at once, when its net price is marketable:
        each leg at its own side of its quote (buys at the ask, sells at the bid)."""
        legs = order.legs or [order]
        contracts = [OptionContract.parse(leg.option_symbol or "") for leg in legs]
        quotes = [self._option_quote(c) for c in contracts]
        prices = [q.ask if leg.is_buy else q.bid for leg, q in zip(legs, quotes, strict=True)]
        units = order.quantity
        net = (
            sum(
                (
                    (p if leg.is_buy else -p) * leg.quantity
                    for leg, p in zip(legs, prices, strict=True)
                ),
                ZERO,
            )
            / units
        )
        limit = order.price
        marketable = {
            "market": True,
            "debit": limit is not None and net <= limit,
            "credit": limit is not None and -net >= limit,
            "even": net <= 0,
            "limit": limit is not None and (net <= limit if order.is_buy else -net >= limit),
        }.get(order.type, False)  # stop and stop_limit option orders never trigger here
        if not marketable:
            return 0
        now = self._now()
        for leg, contract, price in zip(legs, contracts, prices, strict=True):
            self._fill_leg(account, leg, contract, price, now)
        if order.legs:
            order.exec_quantity = order.quantity
            order.avg_fill_price = abs(net).quantize(Decimal("0.0001"))
            order.last_fill_price, order.last_fill_quantity = order.avg_fill_price, units
            order.status, order.updated_at = "filled", now
        self._broadcast(user, order)
        return 1

    @staticmethod
    def _close_lot(
        account: FakeAccount,
        symbol: str,
        position: FakePosition,
        qty: Decimal,
        price: Decimal,
        multiplier: Decimal,
        now: datetime,
    ) -> None:
        """A closing fill as a ``gainloss.closed_position`` (get-account-gainloss): cost and
        proceeds of the closed part, its gain and percentage, the days held as ``term``."""
        closed = min(qty, abs(position.quantity))
        share = position.cost_basis * closed / abs(position.quantity)  # negative for a short
        value = closed * price * multiplier
        cost, proceeds = (share, value) if share >= 0 else (value, -share)
        gain = proceeds - cost
        account.closed_positions.append(
            {
                "close_date": iso_ms(now.replace(hour=0, minute=0, second=0, microsecond=0)),
                "cost": cost.quantize(Decimal("0.01")),
                "gain_loss": gain.quantize(Decimal("0.01")),
                "gain_loss_percent": (gain / cost * 100).quantize(Decimal("0.0001"))
                if cost
                else ZERO,
                "open_date": iso_ms(
                    position.date_acquired.replace(hour=0, minute=0, second=0, microsecond=0)
                ),
                "proceeds": proceeds.quantize(Decimal("0.01")),
                "quantity": closed,
                "symbol": symbol,
                "term": (now - position.date_acquired).days,
            }
        )

    def _fill_leg(
        self,
        account: FakeAccount,
        leg: FakeOrder,
        contract: OptionContract,
        price: Decimal,
        now: datetime,
    ) -> None:
        qty = leg.quantity - leg.exec_quantity
        leg.exec_quantity = leg.quantity
        leg.avg_fill_price = price
        leg.last_fill_price, leg.last_fill_quantity = price, qty
        leg.status, leg.updated_at = "filled", now
        signed = qty if leg.is_buy else -qty
        value = signed * price * MULTIPLIER
        account.cash -= value
        position = account.positions.setdefault(contract.symbol, FakePosition(next(self._ids)))
        opening = position.quantity == 0 or (position.quantity > 0) == (signed > 0)
        if opening:
            position.cost_basis += value
        else:
            self._close_lot(account, contract.symbol, position, qty, price, MULTIPLIER, now)
            position.cost_basis -= (
                position.cost_basis * min(qty, abs(position.quantity)) / abs(position.quantity)
            )
        position.quantity += signed
        position.date_acquired = now
        account.history.append(
            {
                "amount": -value,
                "date": now.strftime("%Y-%m-%dT00:00:00Z"),
                "type": "trade",
                "trade": {
                    "commission": ZERO,
                    "description": f"{contract.symbol} (fake)",
                    "price": price,
                    "quantity": signed,
                    "symbol": contract.symbol,
                    "trade_type": "Option",
                },
            }
        )

    def expire_option(self, account: FakeAccount, symbol: str) -> dict[str, Any]:
        """An option position expires: it is gone, and the nightly history gains the event
        exactly as https://docs.tradier.com/docs/history documents it: ``{"amount": 0,
        "date", "type": "option", "option": {"option_type": "OPTEXP", "description":
        "Expired", "quantity"}}``, with no symbol and no id, dated the contract's expiration
        day (the documented example is dated 2018-09-21, that month's standard expiration)
        and its quantity the position's change (a long removed is negative, as the
        history's trade rows sign a sale). Returns the event."""
        position = account.positions.pop(symbol)
        expiration = OptionContract.parse(symbol).expiration
        event: dict[str, Any] = {
            "amount": 0,
            "date": f"{expiration:%Y-%m-%d}T00:00:00Z",
            "type": "option",
            "option": {
                "option_type": "OPTEXP",
                "description": "Expired",
                "quantity": -position.quantity,
            },
        }
        account.history.append(event)
        return event

    # --- market data ---------------------------------------------------------------------

    async def market_quotes(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        raw = request.state.form.get("symbols") or request.query_params.get("symbols", "")
        now = self._now()
        found, unmatched = [], []
        greeks = (request.query_params.get("greeks") or request.state.form.get("greeks")) == "true"
        for symbol in [s for s in raw.split(",") if s]:
            contract = self._listed(symbol) if is_option_symbol(symbol) else None
            if contract is not None:
                found.append(self._option_row(contract, greeks=greeks))
                continue
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

    def _option_row(self, contract: OptionContract, *, greeks: bool) -> dict[str, Any]:
        """A contract as in Tradier's chains and quotes (field set of jiak94/asynctradier's
        recorded answers); ``greeks`` as from ORATS when asked for."""
        q = self._option_quote(contract)
        stamp = epoch_ms(q.as_of)
        kind = {e.expiration: e.expiration_type.value for e in self._expirations(contract)}
        month = contract.expiration.strftime("%b %d %Y")
        row: dict[str, Any] = {
            "symbol": contract.symbol,
            "description": f"{contract.root} {month} ${contract.strike:.2f} "
            f"{contract.right.value.capitalize()}",
            "exch": "Z",
            "type": "option",
            "last": q.last,
            "change": 0,
            "volume": 0,
            "open": None,
            "high": None,
            "low": None,
            "close": None,
            "bid": q.bid,
            "ask": q.ask,
            "underlying": contract.underlying,
            "strike": contract.strike,
            "change_percentage": 0,
            "average_volume": 0,
            "last_volume": 0,
            "trade_date": stamp,
            "prevclose": q.last,
            "week_52_high": 0,
            "week_52_low": 0,
            "bidsize": 10,
            "bidexch": "Z",
            "bid_date": stamp,
            "asksize": 10,
            "askexch": "Z",
            "ask_date": stamp,
            "open_interest": 100,
            "contract_size": 100,
            "expiration_date": contract.expiration.isoformat(),
            "expiration_type": _TRADIER_EXPIRATION_TYPES[kind[contract.expiration]],
            "option_type": contract.right.value,
            "root_symbol": contract.root,
        }
        if greeks:
            g = q.greeks
            row["greeks"] = {
                "delta": g.delta,
                "gamma": g.gamma,
                "theta": g.theta,
                "vega": g.vega,
                "rho": g.rho,
                "phi": ZERO,
                "bid_iv": g.iv,
                "mid_iv": g.iv,
                "ask_iv": g.iv,
                "smv_vol": g.iv,
                "updated_at": q.as_of.strftime("%Y-%m-%d %H:%M:%S"),
            }
        return row

    def _expirations(self, contract: OptionContract) -> list[Any]:
        return self.options.expirations(contract.underlying, self._now().date())

    async def option_expirations(self, request: Request) -> Response:
        """https://documentation.tradier.com/brokerage-api/markets/get-options-expirations"""
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        symbol = request.query_params.get("symbol", "")
        if not symbol:
            return refusal(request, 400, "Invalid parameter, symbol: is required")
        if not self.options.has_options(symbol):
            return answer(request, {"expirations": None})
        listed = self.options.expirations(symbol, self._now().date())
        if request.query_params.get("expirationType") == "true":
            rows = [
                {
                    "date": e.expiration.isoformat(),
                    "contract_size": 100,
                    "expiration_type": _TRADIER_EXPIRATION_TYPES[e.expiration_type.value],
                }
                for e in listed
            ]
            return answer(request, {"expirations": {"expiration": one_or_many(rows)}})
        dates = [e.expiration.isoformat() for e in listed]
        return answer(request, {"expirations": {"date": one_or_many(dates)}})

    async def option_chain(self, request: Request) -> Response:
        """https://documentation.tradier.com/brokerage-api/markets/get-options-chains"""
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        params = request.query_params
        symbol, raw_day = params.get("symbol", ""), params.get("expiration", "")
        if not symbol or not raw_day:
            name = "symbol" if not symbol else "expiration"
            return refusal(request, 400, f"Invalid parameter, {name}: is required")
        try:
            day = date.fromisoformat(raw_day)
        except ValueError:
            return refusal(request, 400, f"Invalid parameter, expiration: {raw_day}")
        if not self.options.has_options(symbol) or day not in {
            e.expiration for e in self.options.expirations(symbol, self._now().date())
        }:
            return answer(request, {"options": None})
        greeks = params.get("greeks") == "true"
        rows = [self._option_row(c, greeks=greeks) for c in self.options.contracts(symbol, day)]
        return answer(request, {"options": {"option": one_or_many(rows)}})

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

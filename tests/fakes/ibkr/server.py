"""A fake IBKR Client Portal Gateway (Client Portal Web API v1) for tests.

It speaks the protocol of IBKR Campus' Client Portal Web API
(https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/), with bodies shaped as
the recorded answers in ``Voyz/ibind`` ``test/integration/client/ibkr_responses.py``: the
``/v1/api`` prefix; a brokerage session that must be logged in (``/iserver/auth/status``,
``/tickle``); the ``/iserver/accounts`` pre-flight before order and market-data calls and
``/portfolio/accounts`` before the portfolio endpoints; conids from
``/iserver/secdef/search``; order placement answering either an acknowledgement
(``[{"order_id", "order_status", "encrypt_message"}]``) or a question
(``[{"id", "message", "isSuppressed", "messageIds"}]``) answered at ``/iserver/reply/{id}``
(``{"confirmed": true|false}``), possibly chained; ``cOID`` echoed as ``order_ref``; the
live-order list's ``snapshot: false`` empty first answer; camelCase live orders and
snake_case order status; the status vocabulary (Submitted, Filled, Cancelled, ...);
snapshots whose first request only subscribes; and the pacing limits (10 requests per
second, one per 5 seconds on the slow endpoints, one per second on ``/tickle``) with a 429
and a penalty box for whoever breaks them.

Not documented, so chosen here (and marked where used): the ``error`` texts (the duplicate
``cOID`` one starts as ibind recognizes it), which answers are 200 ``{"error"}`` versus 4xx,
the pre-flight refusals, the execution fields kept, and ``average_price``/``stop_price``/
``avgPrice``/``auxPrice`` on order answers.

Prices come from the paper market and orders match by the paper broker's rules
(``app.paper.matching.decide``) when the test (or the fake-brokers ticker) calls ``match()``.

Options (``options.py`` has the book and its sources): the secdef walk
(``/iserver/secdef/search`` with ``opt`` and the ``OPT`` section's ``months``,
``/iserver/secdef/strikes``, ``/iserver/secdef/info``), ``/trsrv/secdef?conids=``, option
snapshots with greeks, single-leg orders by the option's conid and combos by ``conidex``
(``"{spread};;;{conid}/{signed ratio},..."``, a BUY at a signed net price: a credit is
negative, IBKR's "Notes on combination orders"), option position rows as in the spec's
example (``assetClass: OPT``, ``putOrCall``, ``strike``, ``expiry``, ``multiplier``,
``contractDesc`` with the padded OCC symbol), per-leg executions, and
``POST /iserver/account/{id}/orders/whatif``. Not documented, so chosen here: a combo is
reported by the order answers as one order with ``secType``/``sec_type`` ``BAG`` and its
``conidex``, and fills atomically in whole units, each leg at its own touch (ask for a
bought leg, bid for a sold one); options never trigger the stock price-constraint question;
a cash account may sell an option only to close, or inside a combo whose bought legs cover
it (the reserve is the spread's maximum loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from app.brokers.base import (
    AssetClass,
    OptionContract,
    OptionRight,
    OrderSide,
    OrderType,
    TimeInForce,
)
from app.paper.matching import OrderState, decide
from app.paper.quotes import UNIVERSE, SeededQuoteSource
from tests.fakes.ibkr.market_stream import HISTORY_PATH, WS_PATH, FakeIbkrMarket
from tests.fakes.ibkr.options import COMMISSION, SPREAD_CONID_USD, OptionBook

API = "/v1/api"
ZERO = Decimal(0)
OPEN = frozenset({"PreSubmitted", "Submitted", "PendingSubmit", "PendingCancel"})
TYPES = {
    "MKT": OrderType.market,
    "LMT": OrderType.limit,
    "STP": OrderType.stop,
    "STOP_LIMIT": OrderType.stop_limit,
}
LIVE_TYPES = {"MKT": "Market", "LMT": "Limit", "STP": "Stop", "STOP_LIMIT": "Stop Limit"}
STATUS_TYPES = {"MKT": "MARKET", "LMT": "LIMIT", "STP": "STOP", "STOP_LIMIT": "STOP_LIMIT"}
TIFS = {"DAY": TimeInForce.day, "GTC": TimeInForce.gtc, "IOC": TimeInForce.ioc}
# Pacing (Campus "Pacing Limitations"): one request per 5 seconds on these endpoints
# (``slow_seconds``: tests shrink the window, and pace their adapters to match), one per
# second on /tickle.
SLOW_PATHS = (
    f"{API}/iserver/account/orders",
    f"{API}/iserver/account/trades",
    f"{API}/portfolio/accounts",
)
SLOW_SECONDS = 5.0
TICKLE = (f"{API}/tickle", 1, 1.0)
GLOBAL = (10, 1.0)
PRICE_CONSTRAINT = 0.03  # the "Percentage constraint of 3%" question (o163)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def yymmdd(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%y%m%d%H%M%S")


def err(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text, "statusCode": status}, status_code=status)


def num(value: Decimal) -> float:
    return float(value)


@dataclass
class Question:
    message_id: str
    text: str


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds before every answer. ``server_errors`` / ``server_errors_method``:
    the next N requests (of that method only) answer 500. ``rate_limited``: the next N
    answer 429. ``timeout_after_accept``: the next N acknowledged orders are created, then
    their answer is held ``hang_seconds``. ``extra_questions``: asked (in order) after the
    gateway's own before any order is acknowledged. ``penalty_seconds``: how long a pacing
    breach locks the caller out. ``empty_first_orders``: the first live-order list of a
    session is the subscription's empty ``snapshot: false``. ``option_dates``: the search
    answers its ``opt`` expiration dates (the spec's example has them; False sends null).
    ``logout()`` ends the session (as a gateway restart or a competing login would).
    """

    latency: float = 0.0
    server_errors: int = 0
    server_errors_method: str | None = None
    rate_limited: int = 0
    timeout_after_accept: int = 0
    hang_seconds: float = 30.0
    extra_questions: list[Question] = field(default_factory=list)
    penalty_seconds: float = 600.0
    empty_first_orders: bool = True
    option_dates: bool = True  # the search's ``opt`` dates (False: ``null``, months only)


@dataclass
class FakeOrder:
    order_id: int
    account: str
    conid: int
    symbol: str
    side: str
    order_type: str
    tif: str
    quantity: Decimal
    price: Decimal | None
    aux_price: Decimal | None
    outside_rth: bool
    coid: str | None
    placed_at: datetime
    status: str = "Submitted"
    filled: Decimal = ZERO
    avg_price: Decimal | None = None
    updated_at: datetime | None = None
    stop_triggered: bool = False
    sec_type: str = "STK"  # STK, OPT, or BAG (a combo)
    legs: list[tuple[int, int]] = field(default_factory=list)  # (conid, signed ratio)
    conidex: str | None = None

    @property
    def limit(self) -> Decimal | None:
        return self.price if self.order_type in ("LMT", "STOP_LIMIT") else None

    @property
    def stop(self) -> Decimal | None:
        if self.order_type == "STP":
            return self.price
        return self.aux_price if self.order_type == "STOP_LIMIT" else None

    def live(self) -> dict[str, Any]:
        at = self.updated_at or self.placed_at
        body: dict[str, Any] = {
            "acct": self.account,
            "account": self.account,
            "conid": self.conid,
            "conidex": self.conidex or str(self.conid),
            "ticker": self.symbol,
            "description1": self.symbol,
            "secType": self.sec_type,
            "orderId": self.order_id,
            "orderType": LIVE_TYPES[self.order_type],
            "origOrderType": STATUS_TYPES[self.order_type],
            "side": self.side,
            "timeInForce": self.tif,
            "status": self.status,
            "order_ccp_status": self.status,
            "totalSize": num(self.quantity),
            "filledQuantity": num(self.filled),
            "remainingQuantity": num(self.quantity - self.filled),
            "sizeAndFills": f"{self.filled}/{self.quantity}",
            "outsideRTH": self.outside_rth,
            "lastExecutionTime": yymmdd(at),
            "lastExecutionTime_r": ms(at),
            "cashCcy": "USD",
            "listingExchange": "NASDAQ.NMS",
        }
        if self.price is not None:
            body["price"] = str(self.price)
        if self.aux_price is not None:
            body["auxPrice"] = str(self.aux_price)
        if self.coid is not None:
            body["order_ref"] = self.coid
        if self.avg_price is not None:
            body["avgPrice"] = str(self.avg_price)
        return body

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "account": self.account,
            "order_id": self.order_id,
            "conid": self.conid,
            "conidex": self.conidex or str(self.conid),
            "symbol": self.symbol,
            "sec_type": self.sec_type,
            "side": "B" if self.side == "BUY" else "S",
            "order_type": STATUS_TYPES[self.order_type],
            "tif": self.tif,
            "order_status": self.status,
            "order_status_description": "Order Submitted"
            if self.status == "Submitted"
            else self.status,
            "total_size": str(self.quantity),
            "size": str(self.quantity - self.filled),
            "cum_fill": str(self.filled),
            "order_time": yymmdd(self.placed_at),
            "outside_rth": self.outside_rth,
            "currency": "USD",
            "cannot_cancel_order": self.status not in OPEN,
        }
        if self.limit is not None:
            body["limit_price"] = str(self.limit)
        if self.stop is not None:
            body["stop_price"] = str(self.stop)
        if self.avg_price is not None:
            body["average_price"] = str(self.avg_price)
        return body


@dataclass
class FakeAccount:
    account_id: str
    cash: Decimal
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # qty, cost
    # A margin account may sell stock short (signed quantity, cost negative); a cash
    # account (the default) may not: "Short sales are not allowed in Cash type accounts"
    # (IBKR KB "How do I sell a stock short?", https://ibkr.info/hu/node/232).
    margin: bool = False
    executions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Pending:
    account: FakeAccount
    order: FakeOrder
    questions: list[Question]
    modify_of: FakeOrder | None = None


class FakeIbkrGateway:
    """One user's gateway: its login, accounts, orders, pacing and fault switches."""

    def __init__(
        self,
        *,
        seed: int = 20260522,
        clock: Callable[[], datetime] | None = None,
        paper: bool = True,
        slow_seconds: float = SLOW_SECONDS,
    ) -> None:
        self.quotes = SeededQuoteSource(seed)
        # Requests allowed per window, per endpoint path.
        self.slow: dict[str, tuple[int, float]] = dict.fromkeys(SLOW_PATHS, (1, slow_seconds))
        self.slow[TICKLE[0]] = TICKLE[1:]
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.paper = paper
        self.authenticated = True
        self.competing = False
        self.accounts: dict[str, FakeAccount] = {}
        self.orders: dict[int, FakeOrder] = {}
        self.requests: list[tuple[str, str]] = []
        self.conids = {s: 265598 + i for i, s in enumerate(sorted(UNIVERSE))}
        self.options = OptionBook(self.quotes)
        # Market data over the gateway WebSocket (market_stream.py).
        self.ws_sessions: set[str] = set()
        self.market = FakeIbkrMarket(
            self.quotes,
            self.options,
            self.conids,
            sessions=self.ws_sessions,
            authenticated=lambda: self.authenticated,
            gate=lambda request: self._gate(request, preflight=True),
            clock=self.clock,
        )
        self._ids = itertools.count(1210386700)
        self._preflight = False
        self._portfolio_preflight = False
        self._orders_listed = False
        self._subscribed: set[int] = set()
        self._pending: dict[str, Pending] = {}
        self._seen: dict[str, deque[float]] = {}
        self._penalty_until = 0.0
        self.penalties = 0
        self.too_many = 0  # 429s answered for pacing (breaches and the penalty box)
        self._release = asyncio.Event()
        get, post = ["GET"], ["POST"]
        self.app = Starlette(
            routes=[
                Route(f"{API}/iserver/auth/status", self.auth_status, methods=["GET", "POST"]),
                Route(f"{API}/tickle", self.tickle, methods=post),
                WebSocketRoute(f"{API}{WS_PATH}", self.market.serve),
                Route(f"{API}{HISTORY_PATH}", self.market.history, methods=get),
                Route(f"{API}/iserver/accounts", self.iserver_accounts, methods=get),
                Route(f"{API}/portfolio/accounts", self.portfolio_accounts, methods=get),
                Route(f"{API}/portfolio/{{acct}}/summary", self.summary, methods=get),
                Route(
                    f"{API}/portfolio/{{acct}}/positions/{{page:int}}", self.positions, methods=get
                ),
                Route(f"{API}/iserver/secdef/search", self.secdef_search, methods=get),
                Route(f"{API}/iserver/secdef/strikes", self.secdef_strikes, methods=get),
                Route(f"{API}/iserver/secdef/info", self.secdef_info, methods=get),
                Route(f"{API}/trsrv/secdef", self.trsrv_secdef, methods=get),
                Route(f"{API}/iserver/account/{{acct}}/orders/whatif", self.whatif, methods=post),
                Route(f"{API}/iserver/account/{{acct}}/orders", self.place, methods=post),
                Route(f"{API}/iserver/reply/{{reply_id}}", self.reply, methods=post),
                Route(
                    f"{API}/iserver/account/{{acct}}/order/{{order_id}}",
                    self.order_action,
                    methods=["POST", "DELETE"],
                ),
                Route(
                    f"{API}/iserver/account/order/status/{{order_id}}",
                    self.order_status,
                    methods=get,
                ),
                Route(f"{API}/iserver/account/orders", self.live_orders, methods=get),
                Route(f"{API}/iserver/account/trades", self.trades, methods=get),
                Route(f"{API}/iserver/marketdata/snapshot", self.snapshot, methods=get),
                Route(f"{API}/iserver/account/{{acct}}/summary", self.iserver_summary, methods=get),
            ],
            # Unknown paths and methods answer the gateway's JSON error body (the
            # ``{"error", "statusCode"}`` shape of its other refusals; the exact text for a
            # path it does not serve is not documented), never plain text.
            exception_handlers={404: self._no_route, 405: self._no_route},
        )

    # --- test controls -----------------------------------------------------------------

    def add_account(self, cash: str = "100000", *, margin: bool = False) -> FakeAccount:
        prefix = "DU" if self.paper else "U"
        account = FakeAccount(
            account_id=f"{prefix}{len(self.accounts) + 1234567}",
            cash=Decimal(cash),
            margin=margin,
        )
        self.accounts[account.account_id] = account
        return account

    def logout(self) -> None:
        """The brokerage session ends; pre-flight state goes with it."""
        self.authenticated = False
        self._preflight = self._portfolio_preflight = self._orders_listed = False

    def login(self) -> None:
        self.authenticated = True

    def release_hung(self) -> None:
        self._release.set()

    def set_status(self, order_id: int, status: str) -> None:
        self.orders[order_id].status = status

    def order_count(self) -> int:
        return len(self.orders)

    async def match(self) -> int:
        fills = 0
        for order in list(self.orders.values()):
            if order.status in OPEN:
                fills += self._evaluate(order)
        return fills

    # --- plumbing ------------------------------------------------------------------------

    def _paced(self, path: str) -> bool:
        """Records the request; False when it breaks a pacing limit (penalty box)."""
        now = time.monotonic()
        if now < self._penalty_until:
            return False
        checks = [("*", *GLOBAL)]
        if path in self.slow:
            checks.append((path, *self.slow[path]))
        for key, limit, window in checks:
            seen = self._seen.setdefault(key, deque())
            while seen and seen[0] <= now - window:
                seen.popleft()
            if len(seen) >= limit:
                self._penalty_until = now + self.faults.penalty_seconds
                self.penalties += 1
                return False
        for key, _limit, _window in checks:
            self._seen[key].append(now)
        return True

    async def _gate(
        self, request: Request, *, session: bool = True, preflight: bool = False
    ) -> Response | None:
        await request.body()
        self.requests.append((request.method, request.url.path))
        if self.faults.latency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.latency)
        if not self._paced(request.url.path):
            self.too_many += 1
            return Response("Too Many Requests", status_code=429)
        if self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            return Response("Too Many Requests", status_code=429)
        if self.faults.server_errors > 0 and self.faults.server_errors_method in (
            None,
            request.method,
        ):
            self.faults.server_errors -= 1
            return err(500, "internal error")
        if session and not self.authenticated:
            return err(401, "not authenticated")
        if preflight and not self._preflight:
            return err(400, "Please query /iserver/accounts first")  # wording not documented
        return None

    def _auth_body(self) -> dict[str, Any]:
        return {
            "authenticated": self.authenticated,
            "competing": self.competing,
            "connected": True,
            "message": "",
            "MAC": "F4:03:43:CD:BD:C0",
            "fail": "",
            "serverInfo": {"serverName": "FakeGw1", "serverVersion": "Build 10.25.0m (fake)"},
        }

    def _account(self, acct: str) -> FakeAccount | Response:
        account = self.accounts.get(acct)
        if account is None:
            return err(400, f"Account {acct} is not a valid account")
        return account

    def _quote(self, symbol: str) -> Any:
        return self.quotes.quote(symbol, self.clock())

    def _reserved(self, account: FakeAccount) -> Decimal:
        total = ZERO
        for order in self.orders.values():
            if order.account == account.account_id and order.side == "BUY" and order.status in OPEN:
                if order.sec_type != "STK":
                    total += (order.quantity - order.filled) * self._max_loss(order)
                    continue
                price = order.limit or self._quote(order.symbol).ask
                total += (order.quantity - order.filled) * price
        return total

    async def _json(self, request: Request) -> Any:
        try:
            return json.loads(await request.body() or b"null")
        except ValueError:
            return None

    # --- session -------------------------------------------------------------------------

    async def auth_status(self, request: Request) -> Response:
        gated = await self._gate(request, session=False)
        return gated or JSONResponse(self._auth_body())

    def _ws_session(self) -> str:
        session = uuid.uuid4().hex
        self.ws_sessions.add(session)
        return session

    async def tickle(self, request: Request) -> Response:
        gated = await self._gate(request, session=False)
        if gated is not None:
            return gated
        body: dict[str, Any] = {
            "session": self._ws_session(),
            "ssoExpires": 585695,
            "collission": False,
            "userId": 99996016,
            "hmds": {"error": "no bridge"},
        }
        if self.authenticated:
            body["iserver"] = {"authStatus": self._auth_body()}
        else:
            body["iserver"] = {"authStatus": {**self._auth_body(), "authenticated": False}}
        return JSONResponse(body)

    async def iserver_accounts(self, request: Request) -> Response:
        gated = await self._gate(request)
        if gated is not None:
            return gated
        self._preflight = True
        ids = list(self.accounts)
        return JSONResponse(
            {
                "accounts": ids,
                "acctProps": {a: {"hasChildAccounts": False, "supportsCashQty": True} for a in ids},
                "aliases": {a: a for a in ids},
                "allowFeatures": {"showGFIS": True},
                "groups": [],
                "profiles": [],
                "selectedAccount": ids[0] if ids else "",
                "serverInfo": self._auth_body()["serverInfo"],
                "sessionId": uuid.uuid4().hex[:12],
                "isFt": False,
                "isPaper": self.paper,
            }
        )

    async def portfolio_accounts(self, request: Request) -> Response:
        gated = await self._gate(request)
        if gated is not None:
            return gated
        self._portfolio_preflight = True
        return JSONResponse(
            [
                {
                    "id": a,
                    "accountId": a,
                    "accountVan": a,
                    "accountTitle": "Fake Trader",
                    "displayName": "Fake Trader",
                    "currency": "USD",
                    "type": "DEMO" if self.paper else "INDIVIDUAL",
                    "tradingType": "STKNOPT",
                    "faclient": False,
                    "covestor": False,
                    "parent": {"mmc": [], "accountId": "", "isMParent": False},
                    "desc": a,
                }
                for a in self.accounts
            ]
        )

    def _portfolio_gate(self) -> Response | None:
        if not self._portfolio_preflight:
            return err(400, "Please call /portfolio/accounts first")  # wording not documented
        return None

    def _mark(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(price per share, multiplier) of a held stock or option."""
        conid = self.options.by_symbol.get(symbol)
        if conid is not None:
            contract = self._contract_of(conid)
            return self.options.quote(contract, self.clock()).mark, contract.multiplier
        return self._quote(symbol).last, Decimal(1)

    def _contract_of(self, conid: int) -> OptionContract:
        found = self.options.contract(conid)
        assert found is not None
        return found

    def _market_value(self, account: FakeAccount) -> Decimal:
        total = ZERO
        for symbol, (qty, _cost) in account.positions.items():
            price, multiplier = self._mark(symbol)
            total += qty * price * multiplier
        return total

    async def summary(self, request: Request) -> Response:
        gated = await self._gate(request) or self._portfolio_gate()
        if gated is not None:
            return gated
        account = self._account(request.path_params["acct"])
        if isinstance(account, Response):
            return account
        stamp = ms(self.clock())

        def entry(value: Decimal) -> dict[str, Any]:
            return {
                "amount": num(value),
                "currency": "USD",
                "isNull": False,
                "timestamp": stamp,
                "value": None,
                "severity": 0,
            }

        buying_power = account.cash - self._reserved(account)  # a cash account
        net = account.cash + self._market_value(account)
        return JSONResponse(
            {
                "accounttype": {"amount": 0.0, "currency": None, "isNull": False, "value": "CASH"},
                "totalcashvalue": entry(account.cash),
                "settledcash": entry(account.cash),
                "netliquidation": entry(net),
                "equitywithloanvalue": entry(net),
                "buyingpower": entry(buying_power),
                "availablefunds": entry(buying_power),
                "grosspositionvalue": entry(self._market_value(account)),
            }
        )

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        return err(404, "Not Found")

    async def iserver_summary(self, request: Request) -> Response:
        """``GET /iserver/account/{accountId}/summary``: at-a-glance balances as plain
        numbers (``AccountSummaryResponse`` of the Web API spec:
        https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/#account-summary)."""
        gated = await self._gate(request)
        if gated is not None:
            return gated
        account = self._account(request.path_params["acct"])
        if isinstance(account, Response):
            return account
        value = self._market_value(account)
        net = account.cash + value
        available = account.cash - self._reserved(account)  # a cash account
        return JSONResponse(
            {
                "accountType": "",  # "For standard individual accounts, an empty string"
                "status": "",
                "balance": num(account.cash),
                "SMA": 0.0,
                "buyingPower": num(available),
                "availableFunds": num(available),
                "excessLiquidity": num(available),
                "netLiquidationValue": num(net),
                "equityWithLoanValue": num(net),
                "regTLoan": 0.0,
                "securitiesGVP": num(value),
                "totalCashValue": num(account.cash),
                "accruedInterest": 0.0,
                "regTMargin": 0.0,
                "initialMargin": 0.0,
                "maintenanceMargin": 0.0,
                "cashBalances": [
                    {
                        "currency": "USD",
                        "balance": num(account.cash),
                        "settledCash": num(account.cash),
                    }
                ],
            }
        )

    async def positions(self, request: Request) -> Response:
        gated = await self._gate(request) or self._portfolio_gate()
        if gated is not None:
            return gated
        account = self._account(request.path_params["acct"])
        if isinstance(account, Response):
            return account
        items = []
        for symbol, (qty, cost) in sorted(account.positions.items()):
            if not qty:
                continue
            if symbol in self.options.by_symbol:
                items.append(self._option_row(account, symbol, qty, cost))
                continue
            last = self._quote(symbol).last
            avg = (cost / qty).quantize(Decimal("0.0001"))
            items.append(
                {
                    "acctId": account.account_id,
                    "conid": self.conids[symbol],
                    "contractDesc": symbol,
                    "ticker": symbol,
                    "assetClass": "STK",
                    "position": num(qty),
                    "mktPrice": num(last),
                    "mktValue": num(qty * last),
                    "currency": "USD",
                    "avgCost": num(avg),
                    "avgPrice": num(avg),
                    "realizedPnl": 0.0,
                    "unrealizedPnl": num(qty * last - cost),
                    "listingExchange": "NASDAQ",
                    "pageSize": 100,
                }
            )
        page = request.path_params["page"]
        return JSONResponse(items[page * 100 : (page + 1) * 100])

    def _option_row(
        self, account: FakeAccount, symbol: str, qty: Decimal, cost: Decimal
    ) -> dict[str, Any]:
        """An option position as the spec's example row (``assetClass`` OPT; ``avgCost`` per
        contract, ``avgPrice`` and ``mktPrice`` per share, ``mktValue`` with the multiplier)."""
        conid = self.options.by_symbol[symbol]
        contract = self._contract_of(conid)
        price, multiplier = self._mark(symbol)
        avg_cost = (cost / qty).quantize(Decimal("0.0001"))
        return {
            "acctId": account.account_id,
            "conid": conid,
            "contractDesc": self.options.description(contract),
            "position": num(qty),
            "mktPrice": num(price),
            "mktValue": num(qty * price * multiplier),
            "currency": "USD",
            "avgCost": num(avg_cost),
            "avgPrice": num((avg_cost / multiplier).quantize(Decimal("0.000001"))),
            "realizedPnl": 0.0,
            "unrealizedPnl": num(qty * price * multiplier - cost),
            "exchs": None,
            "expiry": f"{contract.expiration:%Y%m%d}",
            "putOrCall": "C" if contract.right is OptionRight.call else "P",
            "multiplier": num(multiplier),
            "strike": str(contract.strike),
            "exerciseStyle": None,
            "conExchMap": [],
            "assetClass": "OPT",
            "undConid": self.conids[contract.underlying],
            "model": "",
            "listingExchange": "AMEX",
            "ticker": contract.underlying,
            "undSym": contract.underlying,
            "fullName": self.options.full_name(contract),
            "pageSize": 100,
        }

    async def secdef_search(self, request: Request) -> Response:
        gated = await self._gate(request)
        if gated is not None:
            return gated
        symbol = request.query_params.get("symbol", "")
        instrument = UNIVERSE.get(symbol)
        if instrument is None or instrument.asset_class is not AssetClass.equity:
            return JSONResponse([])
        dates, section = self.options.search_section(symbol, self.clock().date())
        return JSONResponse(
            [
                {
                    "conid": str(self.conids[symbol]),
                    "companyHeader": f"{symbol} (fake) - NASDAQ",
                    "companyName": f"{symbol} (fake)",
                    "symbol": symbol,
                    "description": "NASDAQ",
                    "restricted": None,
                    "fop": None,
                    "opt": dates if self.faults.option_dates else None,
                    "war": None,
                    "sections": [{"secType": "STK"}, section],
                }
            ]
        )

    def _underlying_of(self, raw: object) -> str | None:
        try:
            conid = int(str(raw))
        except ValueError:
            return None
        symbol = next((s for s, c in self.conids.items() if c == conid), None)
        if symbol is None or not self.options.market.has_options(symbol):
            return None
        return symbol

    async def secdef_strikes(self, request: Request) -> Response:
        gated = await self._gate(request)
        if gated is not None:
            return gated
        params = request.query_params
        underlying = self._underlying_of(params.get("conid"))
        if underlying is None or params.get("sectype") != "OPT":
            return err(400, "invalid conid or sectype")  # wording not documented
        strikes = self.options.strikes(underlying, params.get("month", ""), self.clock().date())
        if strikes is None:
            return err(400, f"no contracts for month {params.get('month')}")  # not documented
        listed = [float(s) for s in strikes]
        return JSONResponse({"call": listed, "put": listed})

    async def secdef_info(self, request: Request) -> Response:
        gated = await self._gate(request)
        if gated is not None:
            return gated
        params = request.query_params
        underlying = self._underlying_of(params.get("conid"))
        right = {"C": OptionRight.call, "P": OptionRight.put}.get(params.get("right", ""))
        try:
            strike = Decimal(params.get("strike", ""))
        except InvalidOperation:
            strike = None
        if underlying is None or params.get("sectype") != "OPT" or right is None or not strike:
            return err(400, "conid, sectype=OPT, month, strike and right are required")
        rows = self.options.info(
            underlying, params.get("month", ""), strike.normalize(), right, self.clock().date()
        )
        return JSONResponse(rows)

    async def trsrv_secdef(self, request: Request) -> Response:
        gated = await self._gate(request)
        if gated is not None:
            return gated
        found = []
        for raw in request.query_params.get("conids", "").split(","):
            if not raw.isdigit():
                continue
            contract = self.options.contract(int(raw))
            if contract is not None:
                row = self.options.secdef(int(raw), self.conids[contract.underlying])
                if row is not None:
                    found.append(row)
        return JSONResponse({"secdef": found})

    # --- orders --------------------------------------------------------------------------

    def _parse(
        self, account: FakeAccount, raw: object, coid_required: bool
    ) -> FakeOrder | Response:
        if not isinstance(raw, dict):
            return err(400, "invalid order")
        instrument = self._instrument(raw)
        if isinstance(instrument, Response):
            return instrument
        conid, symbol, sec_type, legs = instrument
        order_type, side, tif = raw.get("orderType"), raw.get("side"), raw.get("tif")
        if order_type not in TYPES or side not in ("BUY", "SELL") or tif not in TIFS:
            return err(400, "invalid orderType, side or tif")
        try:
            quantity = Decimal(str(raw.get("quantity")))
            price = None if raw.get("price") is None else Decimal(str(raw["price"]))
            aux = None if raw.get("auxPrice") is None else Decimal(str(raw["auxPrice"]))
        except InvalidOperation:
            return err(400, "quantity and prices must be numbers")
        if not quantity.is_finite() or quantity <= 0:
            return err(400, "quantity must be positive")
        if sec_type != "STK" and quantity != quantity.to_integral_value():
            return err(400, "option quantities are whole contracts")  # wording not documented
        if sec_type == "BAG" and order_type not in ("MKT", "LMT"):
            return err(400, "combo orders here are MKT or LMT")  # not modelled further
        if (order_type != "MKT" and price is None) or (order_type == "STOP_LIMIT" and aux is None):
            return err(400, "price is required for this order type")
        coid = raw.get("cOID")
        if coid_required and coid is not None and not isinstance(coid, str):
            return err(400, "cOID must be a string")
        return FakeOrder(
            order_id=next(self._ids),
            account=account.account_id,
            conid=int(str(conid)),
            symbol=symbol,
            side=str(side),
            order_type=str(order_type),
            tif=str(tif),
            quantity=quantity,
            price=price,
            aux_price=aux,
            outside_rth=bool(raw.get("outsideRTH", False)),
            coid=coid if isinstance(coid, str) else None,
            placed_at=self.clock(),
            sec_type=sec_type,
            legs=legs,
            conidex=raw.get("conidex") if sec_type == "BAG" else None,
        )

    def _instrument(
        self, raw: dict[str, Any]
    ) -> tuple[int, str, str, list[tuple[int, int]]] | Response:
        """(conid, symbol, secType, combo legs) of an order entry: a stock or option
        ``conid``, or a combo ``conidex`` (ibind: ``conid`` must then be absent)."""
        if raw.get("conidex") is not None:
            if raw.get("conid") is not None:
                return err(400, "conid and conidex are exclusive")  # ibind parse_order_request
            text = str(raw["conidex"])
            head, sep, tail = text.partition(";;;")
            if not sep or not head.isdigit() or int(head) != SPREAD_CONID_USD:
                return JSONResponse({"error": f"Contract {text} is not valid"})
            legs: list[tuple[int, int]] = []
            try:
                for part in tail.split(","):
                    leg_conid, ratio = part.split("/")
                    legs.append((int(leg_conid), int(ratio)))
            except ValueError:
                return JSONResponse({"error": f"Contract {text} is not valid"})
            contracts = [self.options.contract(c) for c, _ in legs]
            if any(c is None for c in contracts) or any(r == 0 for _, r in legs):
                return JSONResponse({"error": f"Contract {text} is not valid"})
            if len({c.underlying for c in contracts if c is not None}) != 1:
                return JSONResponse({"error": "combo legs must share an underlying"})
            underlying = next(c.underlying for c in contracts if c is not None)
            return SPREAD_CONID_USD, underlying, "BAG", legs
        conid = raw.get("conid")
        symbol = next((s for s, c in self.conids.items() if c == conid), None)
        if symbol is not None and UNIVERSE[symbol].asset_class is AssetClass.equity:
            return int(str(conid)), symbol, "STK", []
        contract = self.options.contract(conid) if isinstance(conid, int) else None
        if contract is not None and isinstance(conid, int):
            return conid, contract.symbol, "OPT", []
        return JSONResponse({"error": f"Contract {conid} is not valid"})

    def _contract(self, order: FakeOrder) -> OptionContract:
        found = self.options.contract(order.conid)
        assert found is not None
        return found

    def _leg_quotes(self, order: FakeOrder) -> list[tuple[OptionContract, int, Any]]:
        """(contract, signed ratio, model quote) per leg; one leg of ratio 1 for an option."""
        now = self.clock()
        if order.sec_type == "OPT":
            contract = self._contract(order)
            return [(contract, 1, self.options.quote(contract, now))]
        result = []
        for conid, ratio in order.legs:
            leg = self._contract_of(conid)
            result.append((leg, ratio, self.options.quote(leg, now)))
        return result

    def _net(self, order: FakeOrder) -> tuple[Decimal, Decimal]:
        """(net bid, net ask) per unit of a BUY: what selling and buying it would fetch/cost."""
        bid = ask = ZERO
        for _contract, ratio, q in self._leg_quotes(order):
            if ratio > 0:
                ask += ratio * q.ask
                bid += ratio * q.bid
            else:
                ask += ratio * q.bid
                bid += ratio * q.ask
        return bid, ask

    def _max_loss(self, order: FakeOrder) -> Decimal:
        """Per unit, in dollars: what a BUY of the combo (or option) can lose at most: the
        debit paid, plus for sold legs not covered by bought ones of the same right their
        strike spread (a put credit spread loses its width less the credit)."""
        legs = self._leg_quotes(order)
        _bid, ask = self._net(order)
        price = order.limit if order.limit is not None else ask
        worst = max(price, ZERO)
        for right in (OptionRight.call, OptionRight.put):
            sold = [(c, -r) for c, r, _q in legs if r < 0 and c.right is right]
            bought = [(c, r) for c, r, _q in legs if r > 0 and c.right is right]
            if not sold:
                continue
            if sum(r for _c, r in bought) < sum(r for _c, r in sold):
                return Decimal("Infinity")  # naked: not in a cash account
            # A sold call loses up to the distance to a bought call above it; a sold put,
            # to a bought put below it (zero when the bought leg is nearer the money).
            width = max(
                max(ZERO, b.strike - s.strike if right is OptionRight.call else s.strike - b.strike)
                for s, _ in sold
                for b, _ in bought
            )
            worst = max(worst, width * max(r for _c, r in sold) + min(price, ZERO))
        return worst * 100

    def _questions(self, order: FakeOrder) -> list[Question]:
        asked: list[Question] = []
        if order.sec_type != "STK":
            return asked + list(self.faults.extra_questions)
        last = self._quote(order.symbol).last
        if order.limit is not None and abs(order.limit - last) / last > Decimal(
            str(PRICE_CONSTRAINT)
        ):
            asked.append(
                Question(
                    "o163",
                    f'The following order "{order.side} {order.quantity} {order.symbol} '
                    f'@ {order.limit}" price exceeds the Percentage constraint of 3%. '
                    "Are you sure you want to submit this order?",
                )
            )
        return asked + list(self.faults.extra_questions)

    def _ask(self, pending: Pending) -> Response:
        question = pending.questions.pop(0)
        reply_id = str(uuid.uuid4())
        self._pending[reply_id] = pending
        return JSONResponse(
            [
                {
                    "id": reply_id,
                    "message": [question.text],
                    "isSuppressed": False,
                    "messageIds": [question.message_id],
                }
            ]
        )

    async def place(self, request: Request) -> Response:
        gated = await self._gate(request, preflight=True)
        if gated is not None:
            return gated
        account = self._account(request.path_params["acct"])
        if isinstance(account, Response):
            return account
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("orders"), list):
            return err(400, "orders is required")
        if len(body["orders"]) != 1:
            return err(400, "one order at a time (brackets are not modelled)")
        order = self._parse(account, body["orders"][0], coid_required=True)
        if isinstance(order, Response):
            return order
        if order.coid is not None and any(o.coid == order.coid for o in self.orders.values()):
            return JSONResponse(
                {
                    "error": f"Order couldn't be submitted: Local order ID={order.coid} "
                    "is already registered."
                }
            )
        refused = self._refusal(account, order)
        if refused is not None:
            return refused
        pending = Pending(account=account, order=order, questions=self._questions(order))
        if pending.questions:
            return self._ask(pending)
        return await self._acknowledge(pending)

    def _refusal(self, account: FakeAccount, order: FakeOrder) -> Response | None:
        if order.sec_type != "STK":
            return self._option_refusal(account, order)
        quote = self._quote(order.symbol)
        if order.side == "BUY":
            cost = order.quantity * (order.limit or quote.ask)
            if cost > account.cash - self._reserved(account):
                return JSONResponse(
                    {"error": "Order rejected: insufficient buying power for this order."}
                )
        elif not account.margin:
            # A SELL beyond the long position would open a short: refused in a cash account.
            # IBKR's wording is not documented; this text is assumed (an ``error`` answer,
            # as IBKR's other order rejections).
            held = account.positions.get(order.symbol, (ZERO, ZERO))[0]
            if order.quantity > held:
                return JSONResponse({"error": "Order rejected: short selling is not allowed."})
        return None

    async def whatif(self, request: Request) -> Response:
        """``POST /iserver/account/{id}/orders/whatif``: the order is checked, not placed.
        Figures as the spec's example formats them (``"1,977.60 USD (10 Shares)"``); for an
        option the parenthesis says contracts (chosen). A refusal is the ``error`` text."""
        gated = await self._gate(request, preflight=True)
        if gated is not None:
            return gated
        account = self._account(request.path_params["acct"])
        if isinstance(account, Response):
            return account
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("orders"), list):
            return err(400, "orders is required")
        if len(body["orders"]) != 1:
            return err(400, "one order at a time (brackets are not modelled)")
        order = self._parse(account, body["orders"][0], coid_required=False)
        if isinstance(order, Response):
            return order
        refused = self._refusal(account, order)
        if order.sec_type == "STK":
            price = order.limit or self._quote(order.symbol).ask
            amount, units, contracts = order.quantity * price, "Shares", ZERO
            initial = amount if order.side == "BUY" else ZERO
        else:
            bid, ask = self._net(order)
            touch = ask if order.side == "BUY" else bid
            price = order.limit if order.limit is not None else touch
            amount = abs(price) * order.quantity * 100
            units = "Contracts"
            contracts = sum(
                (abs(r) * order.quantity for _c, r, _q in self._leg_quotes(order)), ZERO
            )
            initial = self._max_loss(order) * order.quantity if order.side == "BUY" else ZERO
        fees = COMMISSION * contracts if contracts else Decimal(1)
        equity = account.cash + self._market_value(account)
        error = None
        if refused is not None:
            error = json.loads(bytes(refused.body)).get("error")
        return JSONResponse(
            {
                "amount": {
                    "amount": f"{amount:,.2f} USD ({order.quantity} {units})",
                    "commission": f"{fees} USD",
                    "total": f"{amount + fees:,.2f} USD",
                },
                "equity": {
                    "current": f"{equity:,.0f}",
                    "change": f"{-fees:,.0f}",
                    "after": f"{equity - fees:,.0f}",
                },
                "initial": {
                    "current": "0",
                    "change": f"{initial:,.0f}",
                    "after": f"{initial:,.0f}",
                },
                "maintenance": {
                    "current": "0",
                    "change": f"{initial:,.0f}",
                    "after": f"{initial:,.0f}",
                },
                "position": {"current": "0", "change": str(order.quantity), "after": "0"},
                "warn": None,
                "error": error,
            }
        )

    def _option_refusal(self, account: FakeAccount, order: FakeOrder) -> Response | None:
        if order.side == "SELL" and order.sec_type == "OPT":
            held = account.positions.get(order.symbol, (ZERO, ZERO))[0]
            if order.quantity > held:
                return JSONResponse(
                    {"error": "Order rejected: a cash account cannot sell options uncovered."}
                )
            return None
        if order.side == "SELL":
            return err(400, "combos are sent as BUY here")  # not modelled further
        need = self._max_loss(order) * order.quantity
        if need > account.cash - self._reserved(account):
            return JSONResponse(
                {"error": "Order rejected: insufficient buying power for this order."}
            )
        return None

    async def _acknowledge(self, pending: Pending) -> Response:
        if pending.modify_of is not None:
            old = pending.modify_of
            old.quantity, old.price, old.aux_price, old.tif = (
                pending.order.quantity,
                pending.order.price,
                pending.order.aux_price,
                pending.order.tif,
            )
            old.updated_at = self.clock()
            order = old
        else:
            order = pending.order
            self.orders[order.order_id] = order
        answer = [
            {"order_id": str(order.order_id), "order_status": order.status, "encrypt_message": "1"}
        ]
        if order.coid is not None and pending.modify_of is None:
            answer[0]["local_order_id"] = order.coid
        if self.faults.timeout_after_accept > 0 and pending.modify_of is None:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return JSONResponse(answer)

    async def reply(self, request: Request) -> Response:
        gated = await self._gate(request, preflight=True)
        if gated is not None:
            return gated
        pending = self._pending.pop(request.path_params["reply_id"], None)
        if pending is None:
            return err(400, "reply id is not valid or has expired")  # wording not documented
        body = await self._json(request)
        if not isinstance(body, dict) or body.get("confirmed") is not True:
            return JSONResponse({"msg": "The order was not submitted."})  # not documented
        if pending.questions:
            return self._ask(pending)
        return await self._acknowledge(pending)

    async def order_action(self, request: Request) -> Response:
        gated = await self._gate(request, preflight=True)
        if gated is not None:
            return gated
        account = self._account(request.path_params["acct"])
        if isinstance(account, Response):
            return account
        try:
            order = self.orders.get(int(request.path_params["order_id"]))
        except ValueError:
            order = None
        if order is None or order.account != account.account_id:
            return err(404, f"OrderID {request.path_params['order_id']} doesn't exist")
        if request.method == "DELETE":
            if order.status not in OPEN:
                return err(400, f"OrderID {order.order_id} cannot be cancelled: {order.status}")
            order.status, order.updated_at = "Cancelled", self.clock()
            return JSONResponse(
                {
                    "msg": "Request was submitted",
                    "order_id": order.order_id,
                    "conid": order.conid,
                    "account": order.account,
                }
            )
        if order.status not in OPEN:
            return err(400, f"OrderID {order.order_id} cannot be modified: {order.status}")
        changed = self._parse(account, await self._json(request), coid_required=False)
        if isinstance(changed, Response):
            return changed
        if changed.conid != order.conid or changed.side != order.side or changed.legs != order.legs:
            return err(400, "the contract and side of an order cannot change")
        if changed.order_type != order.order_type:
            return err(400, "the order type cannot change here")  # not modelled further
        if changed.quantity <= order.filled:
            return err(400, "quantity must exceed the filled quantity")
        pending = Pending(
            account=account,
            order=changed,
            questions=self._questions(changed),
            modify_of=order,
        )
        if pending.questions:
            return self._ask(pending)
        return await self._acknowledge(pending)

    async def order_status(self, request: Request) -> Response:
        gated = await self._gate(request, preflight=True)
        if gated is not None:
            return gated
        try:
            order = self.orders.get(int(request.path_params["order_id"]))
        except ValueError:
            order = None
        if order is None:
            return err(404, f"OrderID {request.path_params['order_id']} doesn't exist")
        return JSONResponse(order.status_body())

    async def live_orders(self, request: Request) -> Response:
        gated = await self._gate(request, preflight=True)
        if gated is not None:
            return gated
        if self.faults.empty_first_orders and not self._orders_listed:
            self._orders_listed = True
            return JSONResponse({"orders": [], "snapshot": False})
        self._orders_listed = True
        wanted = request.query_params.get("accountId")
        orders = [
            o.live()
            for o in sorted(self.orders.values(), key=lambda o: o.placed_at, reverse=True)
            if wanted is None or o.account == wanted
        ]
        return JSONResponse({"orders": orders, "snapshot": True})

    async def trades(self, request: Request) -> Response:
        gated = await self._gate(request, preflight=True)
        if gated is not None:
            return gated
        wanted = request.query_params.get("accountId")
        items = [
            e
            for a in self.accounts.values()
            if wanted is None or a.account_id == wanted
            for e in a.executions
        ]
        return JSONResponse(items)

    async def snapshot(self, request: Request) -> Response:
        gated = await self._gate(request, preflight=True)
        if gated is not None:
            return gated
        items = []
        for raw in request.query_params.get("conids", "").split(","):
            try:
                conid = int(raw)
            except ValueError:
                continue
            option = self.options.contract(conid)
            symbol = next((s for s, c in self.conids.items() if c == conid), None)
            if symbol is None and option is None:
                continue
            item: dict[str, Any] = {"conid": conid, "conidEx": str(conid), "server_id": "q0"}
            if option is not None:
                if conid in self._subscribed:
                    item.update(self.options.snapshot_fields(option, self.clock()))
                    item["_updated"] = ms(self.clock())
                else:
                    self._subscribed.add(conid)  # the first request only subscribes
                items.append(item)
                continue
            assert symbol is not None
            if conid in self._subscribed:
                q = self._quote(symbol)
                item.update(
                    {"31": str(q.last), "84": str(q.bid), "86": str(q.ask), "_updated": ms(q.as_of)}
                )
            else:
                self._subscribed.add(conid)  # the first request only subscribes
            items.append(item)
        return JSONResponse(items)

    def _evaluate_option(self, order: FakeOrder) -> int:
        """All or nothing at the touch: a bought leg at its ask, a sold one at its bid; a
        combo (or option) BUY fills when its net ask is at or under the limit, a SELL (an
        option to close) when the bid is at or over it."""
        now = self.clock()
        account = self.accounts[order.account]
        bid, ask = self._net(order)
        if order.order_type == "LMT" and order.limit is not None:
            if (order.side == "BUY" and ask > order.limit) or (
                order.side == "SELL" and bid < order.limit
            ):
                if order.tif == "IOC":
                    order.status = "Cancelled"
                return 0
        units = order.quantity - order.filled
        sign = 1 if order.side == "BUY" else -1
        net = ZERO
        for contract, ratio, q in self._leg_quotes(order):
            bought = ratio * sign > 0
            price = q.ask if bought else q.bid
            net += ratio * price
            size = abs(ratio) * units
            signed = size if bought else -size
            held, cost = account.positions.get(contract.symbol, (ZERO, ZERO))
            after = held + signed
            account.cash -= signed * price * contract.multiplier + COMMISSION * size
            if held == 0 or (held > 0) == (signed > 0):
                cost += signed * price * contract.multiplier
            elif abs(signed) <= abs(held):
                cost -= cost * abs(signed) / abs(held)
            else:
                cost = after * price * contract.multiplier
            account.positions[contract.symbol] = (after, cost if after else ZERO)
            account.executions.append(
                {
                    "execution_id": f"{uuid.uuid4().hex[:8]}.{order.order_id}.01.01",
                    "symbol": contract.underlying,
                    "supports_tax_opt": "1",
                    "side": "B" if bought else "S",
                    "order_description": f"{'Bot' if bought else 'Sold'} {size} @ {price} on CBOE",
                    "trade_time": now.strftime("%Y%m%d-%H:%M:%S"),
                    "trade_time_r": ms(now),
                    "size": num(size),
                    "price": str(price),
                    "order_ref": order.coid,
                    "exchange": "CBOE",
                    "commission": str(COMMISSION * size),
                    "net_amount": num(size * price * contract.multiplier),
                    "account": account.account_id,
                    "accountCode": account.account_id,
                    "company_name": self.options.full_name(contract),
                    "contract_description_1": self.options.full_name(contract),
                    "sec_type": "OPT",
                    "listing_exchange": "CBOE",
                    "conid": self.options.conid(contract),
                    "conidEx": str(self.options.conid(contract)),
                    "clearing_id": "IB",
                    "clearing_name": "IB",
                    "liquidation_trade": "0",
                    "is_event_trading": "0",
                }
            )
        net *= sign
        previous = order.filled * (order.avg_price or ZERO)
        order.filled += units
        order.avg_price = ((previous + units * net) / order.filled).quantize(Decimal("0.0001"))
        order.updated_at = now
        order.status = "Filled"
        return 1

    def _evaluate(self, order: FakeOrder) -> int:
        if order.sec_type != "STK":
            return self._evaluate_option(order)
        now = self.clock()
        account = self.accounts[order.account]
        decision = decide(
            OrderState(
                side=OrderSide.buy if order.side == "BUY" else OrderSide.sell,
                order_type=TYPES[order.order_type],
                time_in_force=TIFS[order.tif],
                remaining=order.quantity - order.filled,
                limit_price=order.limit,
                stop_price=order.stop,
                stop_triggered=order.stop_triggered,
            ),
            self._quote(order.symbol),
        )
        order.stop_triggered = decision.stop_triggered
        filled = 0
        if decision.fills and decision.fill_price is not None:
            filled = 1
            qty, price = decision.fill_quantity, decision.fill_price
            previous = order.filled * (order.avg_price or ZERO)
            order.filled += qty
            order.avg_price = ((previous + qty * price) / order.filled).quantize(Decimal("0.0001"))
            order.updated_at = now
            held, cost = account.positions.get(order.symbol, (ZERO, ZERO))
            signed = qty if order.side == "BUY" else -qty
            account.cash -= signed * price  # a short sale's proceeds are credited
            account.positions[order.symbol] = _traded(held, cost, signed, price)
            account.executions.append(
                {
                    "execution_id": f"{uuid.uuid4().hex[:8]}.{order.order_id}.01.01",
                    "symbol": order.symbol,
                    "side": "B" if order.side == "BUY" else "S",
                    "order_description": f"{'Bot' if order.side == 'BUY' else 'Sold'} {qty} "
                    f"@ {price} on NASDAQ",
                    "trade_time": now.strftime("%Y%m%d-%H:%M:%S"),
                    "trade_time_r": ms(now),
                    "size": num(qty),
                    "price": str(price),
                    "order_ref": order.coid,
                    "exchange": "NASDAQ",
                    "commission": "0.00",
                    "net_amount": num(qty * price),
                    "account": account.account_id,
                    "conid": order.conid,
                    "sec_type": "STK",
                }
            )
            order.status = "Filled" if order.filled >= order.quantity else "Submitted"
        if decision.cancel_remainder and order.status in OPEN:
            order.status = "Cancelled"
        return filled


def _traded(
    held: Decimal, cost: Decimal, signed: Decimal, price: Decimal
) -> tuple[Decimal, Decimal]:
    """(quantity, signed cost) after trading ``signed`` shares at ``price``: a trade that
    reduces the position keeps its average cost; one that adds (or flips) costs ``price``."""
    after = held + signed
    if held == 0 or (held > 0) == (signed > 0):
        return after, cost + signed * price
    if after == 0:
        return ZERO, ZERO
    if (after > 0) == (held > 0):
        return after, cost * after / held
    return after, after * price  # flipped through zero

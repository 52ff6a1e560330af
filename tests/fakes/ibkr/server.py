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
from starlette.routing import Route

from app.brokers.base import AssetClass, OrderSide, OrderType, TimeInForce
from app.paper.matching import OrderState, decide
from app.paper.quotes import UNIVERSE, SeededQuoteSource

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
    session is the subscription's empty ``snapshot: false``. ``logout()`` ends the
    session (as a gateway restart or a competing login would).
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
            "conidex": str(self.conid),
            "ticker": self.symbol,
            "description1": self.symbol,
            "secType": "STK",
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
            "conidex": str(self.conid),
            "symbol": self.symbol,
            "sec_type": "STK",
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
        self._ids = itertools.count(1210386700)
        self._preflight = False
        self._portfolio_preflight = False
        self._orders_listed = False
        self._subscribed: set[int] = set()
        self._pending: dict[str, Pending] = {}
        self._seen: dict[str, deque[float]] = {}
        self._penalty_until = 0.0
        self.penalties = 0
        self._release = asyncio.Event()
        get, post = ["GET"], ["POST"]
        self.app = Starlette(
            routes=[
                Route(f"{API}/iserver/auth/status", self.auth_status, methods=["GET", "POST"]),
                Route(f"{API}/tickle", self.tickle, methods=post),
                Route(f"{API}/iserver/accounts", self.iserver_accounts, methods=get),
                Route(f"{API}/portfolio/accounts", self.portfolio_accounts, methods=get),
                Route(f"{API}/portfolio/{{acct}}/summary", self.summary, methods=get),
                Route(
                    f"{API}/portfolio/{{acct}}/positions/{{page:int}}", self.positions, methods=get
                ),
                Route(f"{API}/iserver/secdef/search", self.secdef_search, methods=get),
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
            ]
        )

    # --- test controls -----------------------------------------------------------------

    def add_account(self, cash: str = "100000") -> FakeAccount:
        prefix = "DU" if self.paper else "U"
        account = FakeAccount(
            account_id=f"{prefix}{len(self.accounts) + 1234567}", cash=Decimal(cash)
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

    async def tickle(self, request: Request) -> Response:
        gated = await self._gate(request, session=False)
        if gated is not None:
            return gated
        body: dict[str, Any] = {
            "session": uuid.uuid4().hex,
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

    def _market_value(self, account: FakeAccount) -> Decimal:
        return sum((q * self._quote(s).last for s, (q, _) in account.positions.items()), ZERO)

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

    async def secdef_search(self, request: Request) -> Response:
        gated = await self._gate(request)
        if gated is not None:
            return gated
        symbol = request.query_params.get("symbol", "")
        instrument = UNIVERSE.get(symbol)
        if instrument is None or instrument.asset_class is not AssetClass.equity:
            return JSONResponse([])
        return JSONResponse(
            [
                {
                    "conid": str(self.conids[symbol]),
                    "companyHeader": f"{symbol} (fake) - NASDAQ",
                    "companyName": f"{symbol} (fake)",
                    "symbol": symbol,
                    "description": "NASDAQ",
                    "restricted": None,
                    "sections": [{"secType": "STK"}, {"secType": "OPT", "months": "JAN27"}],
                }
            ]
        )

    # --- orders --------------------------------------------------------------------------

    def _parse(
        self, account: FakeAccount, raw: object, coid_required: bool
    ) -> FakeOrder | Response:
        if not isinstance(raw, dict):
            return err(400, "invalid order")
        conid = raw.get("conid")
        symbol = next((s for s, c in self.conids.items() if c == conid), None)
        if symbol is None or UNIVERSE[symbol].asset_class is not AssetClass.equity:
            return JSONResponse({"error": f"Contract {conid} is not valid"})
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
        )

    def _questions(self, order: FakeOrder) -> list[Question]:
        asked: list[Question] = []
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
        quote = self._quote(order.symbol)
        if order.side == "BUY":
            cost = order.quantity * (order.limit or quote.ask)
            if cost > account.cash - self._reserved(account):
                return JSONResponse(
                    {"error": "Order rejected: insufficient buying power for this order."}
                )
        else:
            held = account.positions.get(order.symbol, (ZERO, ZERO))[0]
            if order.quantity > held:
                return JSONResponse({"error": "Order rejected: short selling is not allowed."})
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
        if changed.conid != order.conid or changed.side != order.side:
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
            symbol = next((s for s, c in self.conids.items() if c == conid), None)
            if symbol is None:
                continue
            item: dict[str, Any] = {"conid": conid, "conidEx": str(conid), "server_id": "q0"}
            if conid in self._subscribed:
                q = self._quote(symbol)
                item.update(
                    {"31": str(q.last), "84": str(q.bid), "86": str(q.ask), "_updated": ms(q.as_of)}
                )
            else:
                self._subscribed.add(conid)  # the first request only subscribes
            items.append(item)
        return JSONResponse(items)

    def _evaluate(self, order: FakeOrder) -> int:
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
            if order.side == "BUY":
                account.cash -= qty * price
                account.positions[order.symbol] = (held + qty, cost + qty * price)
            else:
                account.cash += qty * price
                account.positions[order.symbol] = (
                    held - qty,
                    cost - cost * qty / held if held else ZERO,
                )
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

"""A fake tastytrade (REST API, OAuth token endpoint, account streamer) for tests.

It speaks the real protocol, from the official docs (developer.tastytrade.com), the orders
swagger (``Order``, ``postAccountsAccountNumberOrders``, ``putAccountsAccountNumberOrdersId``),
the official JS SDK (tastytrade/tastytrade-api-js ``account-streamer.ts``), tastyware/tastytrade
and answers recorded against the sandbox (QuantConnect/Lean.Brokerages.Tastytrade TestData):

* ``POST /oauth/token`` (JSON ``grant_type=refresh_token``, ``refresh_token``,
  ``client_secret``) answers ``{"access_token", "token_type": "Bearer", "expires_in": 900}``;
  everything else needs ``Authorization: Bearer <access token>`` and a ``User-Agent`` of the
  form ``product/version`` (401 without it, as documented).
* Dasherized keys, the ``{"data": ..., "context": ...}`` wrapper, lists in ``data.items`` with
  ``pagination``, decimal strings, integer order ids, ``updated-at`` in epoch milliseconds and
  ``received-at`` as ``2025-05-28T13:38:47.851+00:00`` (the recorded submit answer).
* Errors in the ``{"error": {"code", "message", "errors": [...]}}`` envelope. Codes taken from
  recorded answers and docs: ``preflight_check_failure`` with ``margin_check_failed`` ("Account
  does not have sufficient buying power available for this order."),
  ``gtc_market_orders_not_supported``, ``cant_buy_for_credit``, ``cannot_update_order``,
  ``not_permitted`` ("User not permitted access"), ``unauthorized``. Not documented, so chosen
  here: the 401 body of the token endpoint (``invalid_grant``), the 404 body
  (``not_found``), the unknown-symbol preflight cause (``instrument_validation_failed``) and
  every message text not quoted above.
* The order lifecycle of https://developer.tastytrade.com/order-flow: a new order answers
  ``Routed`` and goes ``Live`` at once; a cancel answers ``Cancel Requested`` and becomes
  ``Cancelled``; a cancel-replace (``PUT``) answers the replacement ``Contingent``, the original
  goes ``Replace Requested`` then ``Cancelled`` with ``replacing-order-id``, the replacement
  ``Live``. ``external-identifier`` is echoed and never deduplicated.
* The account streamer on a real WebSocket at ``/``: ``connect`` / ``heartbeat`` actions
  carrying ``auth-token``, answered ``{"status": "ok", "action": ..., "web-socket-session-id",
  "request-id"}`` (connect also echoes ``value``) or ``{"status": "error", ...,
  "message": "failed"}``; notifications ``{"type": "Order", "data": {...}, "timestamp": ms}``
  and ``AccountBalance``.

* Options: ``GET /option-chains/{symbol}/nested`` (SDK ``NestedOptionChain``: ``expirations[]``
  of ``{expiration-type, expiration-date, days-to-expiration, settlement-type, strikes[{
  strike-price, call, put, call-streamer-symbol, put-streamer-symbol}]}``), the flat
  ``GET /option-chains/{symbol}`` and ``GET /instruments/equity-options/{occ}`` (SDK ``Option``),
  quotes by ``GET /market-data/by-type?equity-option=`` (no greeks over REST), orders of one
  ``Equity Option`` leg or spreads of up to 4 (padded OCC ``symbol``, ``action`` "Buy to Open"
  ..., per-leg ``quantity``, one ``price`` + ``price-effect``), filled whole and atomically
  with ``fills[]`` per leg; option positions (``instrument-type: Equity Option``,
  ``multiplier`` 100, ``quantity-direction``); ``POST /accounts/{n}/orders/dry-run`` answering
  ``order`` (no id), ``buying-power-effect``, ``fee-calculation`` and ``warnings`` like the
  placement answer does. The contracts, expirations and model prices are the paper market's
  (``app.paper.options_market.SeededOptionMarket``), so the fake's chain is the paper broker's.
  Not documented, so chosen here: the preflight codes ``duplicate_legs``,
  ``mixed_underlyings`` and ``too_many_legs``, the refusal of a zero ``price`` (a negative one
  is recorded: 400 ``validation_error`` with ``{"domain": "price", "reason": "does not have a
  valid value"}``) and the fee amounts (the field names are real).

Prices come from the paper market (``SeededQuoteSource``) and orders match by the paper
broker's rules (``app.paper.matching.decide``; options at their natural prices) when the test
(or the fake-brokers ticker) calls ``match()``: nothing moves on its own. Fault switches are
in ``Faults``; tokens can be expired (``expire_tokens``) and grants revoked (``revoke``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers.base import (
    AssetClass,
    ExpirationType,
    InvalidOptionSymbol,
    OptionContract,
    OptionRight,
    OrderSide,
    OrderType,
    TimeInForce,
)
from app.paper.market_data import PaperMarketData
from app.paper.matching import OrderState, decide
from app.paper.options_market import EXPIRY_TIME_UTC, OptionModelQuote, SeededOptionMarket
from app.paper.quotes import UNIVERSE, SeededQuoteSource
from tests.fakes.tastytrade.dxlink import DXLINK_PATH, FakeDXLink

ZERO = Decimal(0)
TOKEN_SECONDS = 900
WORKING = frozenset(
    {
        "Received",
        "Routed",
        "In Flight",
        "Live",
        "Contingent",
        "Cancel Requested",
        "Replace Requested",
    }
)
TERMINAL = frozenset({"Filled", "Cancelled", "Expired", "Rejected", "Removed", "Partially Removed"})
ORDER_TYPES = {
    "Market": OrderType.market,
    "Limit": OrderType.limit,
    "Stop": OrderType.stop,
    "Stop Limit": OrderType.stop_limit,
}
# The swagger's time-in-force enum; the fake matches the ones the paper rules know.
TIF_ENUM = frozenset(
    {"Day", "Ext", "Ext Overnight", "GTC", "GTC Ext", "GTC Ext Overnight", "GTD", "IOC"}
)
TIF_MATCHING = {
    "Day": TimeInForce.day,
    "Ext": TimeInForce.day,
    "GTC": TimeInForce.gtc,
    "GTC Ext": TimeInForce.gtc,
    "IOC": TimeInForce.ioc,
}
ACTIONS = {
    "Buy to Open": "buy",
    "Buy to Close": "buy",
    "Buy": "buy",
    "Sell to Open": "sell",
    "Sell to Close": "sell",
    "Sell": "sell",
}
USER_AGENT = re.compile(r"^[^\s/]+/\S+")
OPTION_MULTIPLIER = Decimal(100)
# "Equity Option and Future Option orders can have up to 4 legs. (Equity, Future, and
# Cryptocurrency orders are limited to 1 leg.)"
# https://developer.tastytrade.com/docs/guides/multi-leg-spreads/
MAX_OPTION_LEGS = 4
# nested-chain ``expiration-type`` (tastytrade Rust crate ``types::wire::ExpirationType``).
EXPIRATION_TYPES = {
    ExpirationType.standard: "Regular",
    ExpirationType.weekly: "Weekly",
    ExpirationType.quarterly: "Quarterly",
    ExpirationType.end_of_month: "End-Of-Month",
}


def is_option(symbol: str) -> bool:
    """A padded OCC symbol (``AAPL  261218C00150000``): how tastytrade names options."""
    return len(symbol) == 21 and symbol[6:12].isdigit() and symbol[12] in "CP"


def streamer_symbol(contract: OptionContract) -> str:
    """``.AAPL261218C150`` (tastyware/tastytrade ``Option.occ_to_streamer_symbol``)."""
    right = "C" if contract.right is OptionRight.call else "P"
    return f".{contract.root}{contract.expiration:%y%m%d}{right}{contract.strike.normalize():f}"


def iso(at: datetime) -> str:
    """``2025-05-28T13:38:47.851+00:00``: milliseconds and an explicit offset."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def wrap(data: Any, context: str, **extra: Any) -> dict[str, Any]:
    return {"data": data, "context": context, **extra}


def error(
    status: int,
    code: str,
    message: str,
    causes: list[tuple[str, str]] | None = None,
    **headers: str,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if causes:
        body["errors"] = [{"code": c, "message": m} for c, m in causes]
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def validation_error(domain: str, reason: str) -> JSONResponse:
    """A malformed field: 400 ``validation_error`` with ``{"domain", "reason"}`` causes (as
    recorded: QuantConnect/Lean.Brokerages.Tastytrade PR #16, a negative ``price``)."""
    return JSONResponse(
        {
            "error": {
                "code": "validation_error",
                "message": "Request validation failed",
                "errors": [{"domain": domain, "reason": reason}],
            }
        },
        status_code=400,
    )


def preflight(code: str, message: str) -> JSONResponse:
    """A refused order: 422 ``preflight_check_failure`` with the cause in ``errors``."""
    return error(
        422, "preflight_check_failure", "One or more preflight checks failed", [(code, message)]
    )


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds before every REST answer (the token endpoint included).
    ``server_errors`` / ``server_error_status`` / ``server_errors_method``: the next N REST
    requests (of that method only, when set) answer 5xx. ``rate_limited``: the next N answer
    429; tastytrade documents its 429 without rate-limit headers, so ``retry_after`` None
    sends none, a number sends ``Retry-After``. ``timeout_after_accept``: the next N order
    placements create the order, then hold the answer ``hang_seconds``. ``forbidden``: the next
    N authenticated requests answer 403 ``not_permitted`` (a grant whose scope or authority no
    longer covers the call). ``cancel_pending``: cancels stay ``Cancel Requested`` until
    ``match()``. ``stream_silent``: streamer
    connections stay open and answer nothing (no acks, no heartbeats, no notifications).
    """

    latency: float = 0.0
    server_errors: int = 0
    server_error_status: int = 500
    server_errors_method: str | None = None
    rate_limited: int = 0
    rate_limited_method: str | None = None  # only requests with this method answer 429
    retry_after: int | None = 7
    timeout_after_accept: int = 0
    hang_seconds: float = 30.0
    forbidden: int = 0
    cancel_pending: bool = False
    stream_silent: bool = False


@dataclass
class FakeLeg:
    """One leg of an order: ``symbol`` as on the wire (a ticker, or the padded OCC symbol)."""

    symbol: str
    instrument_type: str  # "Equity" | "Equity Option"
    action: str
    quantity: Decimal
    remaining: Decimal
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def side(self) -> str:
        return ACTIONS[self.action]

    def wire(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "instrument-type": self.instrument_type,
            "quantity": _number(self.quantity),
            "remaining-quantity": _number(self.remaining),
            "symbol": self.symbol,
            "fills": list(self.fills),
        }


@dataclass
class FakeOrder:
    id: int
    account_number: str
    legs: list[FakeLeg]
    underlying: str
    order_type: str
    time_in_force: str
    price: Decimal | None
    price_effect: str | None
    stop_trigger: Decimal | None
    external_identifier: str | None
    source: str | None
    received_at: datetime
    updated_at: datetime
    status: str = "Routed"
    live_at: datetime | None = None
    terminal_at: datetime | None = None
    cancelled_at: datetime | None = None
    replaces_order_id: int | None = None
    replacing_order_id: int | None = None
    reject_reason: str | None = None
    stop_triggered: bool = False

    # The single-leg view the equity paths use.
    @property
    def symbol(self) -> str:
        return self.legs[0].symbol

    @property
    def action(self) -> str:
        return self.legs[0].action

    @property
    def quantity(self) -> Decimal:
        return self.legs[0].quantity

    @property
    def remaining(self) -> Decimal:
        return self.legs[0].remaining

    @remaining.setter
    def remaining(self, value: Decimal) -> None:
        self.legs[0].remaining = value

    @property
    def fills(self) -> list[dict[str, Any]]:
        return self.legs[0].fills

    @property
    def side(self) -> str:
        return ACTIONS[self.action]

    @property
    def is_option(self) -> bool:
        return self.legs[0].instrument_type == "Equity Option"

    @property
    def size(self) -> Decimal:
        """Strategy units: the legs' quantities' greatest common divisor (one leg: its
        quantity)."""
        if len(self.legs) == 1:
            return self.legs[0].quantity
        return Decimal(math.gcd(*(int(leg.quantity) for leg in self.legs)))

    def wire(self, *, dry_run: bool = False) -> dict[str, Any]:
        """The swagger ``Order`` with the value shapes of the recorded answers (a dry run's
        order has no id: tastyware/tastytrade ``PlacedOrder.id`` "test orders placed with
        dry_run don't have an ID")."""
        body: dict[str, Any] = {
            "id": self.id,
            "account-number": self.account_number,
            "cancellable": self.status in WORKING and self.status != "Cancel Requested",
            "editable": self.status == "Live",
            "edited": self.replaces_order_id is not None,
            "global-request-id": uuid.uuid5(uuid.NAMESPACE_OID, str(self.id)).hex,
            "order-type": self.order_type,
            "received-at": iso(self.received_at),
            "size": _number(self.size),
            "status": self.status,
            "time-in-force": self.time_in_force,
            "underlying-instrument-type": "Equity",
            "underlying-symbol": self.underlying,
            "updated-at": epoch_ms(self.updated_at),
            "legs": [leg.wire() for leg in self.legs],
        }
        if dry_run:
            del body["id"], body["global-request-id"]
        optional: dict[str, Any] = {
            "price": None if self.price is None else str(self.price),
            "price-effect": self.price_effect,
            "stop-trigger": None if self.stop_trigger is None else str(self.stop_trigger),
            "external-identifier": self.external_identifier,
            "source": self.source,
            "live-at": None if self.live_at is None else iso(self.live_at),
            "terminal-at": None if self.terminal_at is None else iso(self.terminal_at),
            "cancelled-at": None if self.cancelled_at is None else iso(self.cancelled_at),
            "replaces-order-id": self.replaces_order_id,
            "replacing-order-id": self.replacing_order_id,
            "reject-reason": self.reject_reason,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


def _number(value: Decimal) -> int | str:
    """Leg quantities: JSON integers when whole (as recorded), decimal strings otherwise."""
    return int(value) if value == value.to_integral() else str(value)


@dataclass
class FakePosition:
    quantity: Decimal = ZERO  # signed: negative is short
    cost: Decimal = ZERO  # signed total cost of the open quantity
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class FakeAccount:
    number: str
    cash: Decimal
    nickname: str = "Individual"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    closed: bool = False
    orders: dict[int, FakeOrder] = field(default_factory=dict)
    positions: dict[str, FakePosition] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeCustomer:
    client_secret: str
    refresh_token: str
    accounts: list[FakeAccount] = field(default_factory=list)
    revoked: bool = False


@dataclass(eq=False)
class _Stream:
    session_id: str
    queue: asyncio.Queue[str | None]
    accounts: set[str] = field(default_factory=set)


class FakeTastytrade:
    """The fake's state, its fault switches and its ASGI ``app``."""

    def __init__(
        self, *, seed: int = 20260522, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.quotes = SeededQuoteSource(seed)
        # The paper market's listed options (the same chain the paper broker trades).
        self.options = SeededOptionMarket(self.quotes)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.customers: list[FakeCustomer] = []
        self.tokens: dict[str, tuple[FakeCustomer, datetime]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST request
        self.bodies: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of writes
        self.token_requests = 0
        self.dry_runs = 0
        self.stream_messages: list[dict[str, Any]] = []  # every message a client sent
        self._ids = itertools.count(270561)
        self._numbers = itertools.count(1)
        self._transaction_ids = itertools.count(41000001)
        self._release = asyncio.Event()
        self._streams: set[_Stream] = set()
        # Market data: quote tokens and the DXLink feed (``dxlink.py``), the paper market's.
        self.dxlink = FakeDXLink(PaperMarketData(self.quotes, self.options), clock=self.clock)
        self.app = Starlette(
            routes=[
                Route("/oauth/token", self.oauth_token, methods=["POST"]),
                Route("/customers/me/accounts", self.list_accounts, methods=["GET"]),
                Route("/accounts/{account}/balances", self.balances, methods=["GET"]),
                Route("/accounts/{account}/positions", self.positions, methods=["GET"]),
                Route("/accounts/{account}/transactions", self.transactions, methods=["GET"]),
                Route("/accounts/{account}/orders/live", self.live_orders, methods=["GET"]),
                Route("/accounts/{account}/orders/dry-run", self.dry_run, methods=["POST"]),
                Route("/accounts/{account}/orders", self.orders, methods=["GET", "POST"]),
                Route(
                    "/accounts/{account}/orders/{order_id}",
                    self.order,
                    methods=["GET", "PUT", "DELETE"],
                ),
                Route("/instruments/equities/{symbol:path}", self.equity, methods=["GET"]),
                Route(
                    "/instruments/equity-options/{symbol:path}",
                    self.equity_option,
                    methods=["GET"],
                ),
                Route("/option-chains/{symbol}/nested", self.nested_chain, methods=["GET"]),
                Route("/option-chains/{symbol}", self.flat_chain, methods=["GET"]),
                Route("/market-data/by-type", self.market_data, methods=["GET"]),
                WebSocketRoute("/", self.streamer),
                Route("/api-quote-tokens", self.quote_token, methods=["GET"]),
                WebSocketRoute(DXLINK_PATH, self.dxlink.serve),
            ]
        )

    # --- test controls -----------------------------------------------------------------

    def add_customer(
        self,
        cash: str = "100000",
        *,
        client_secret: str | None = None,
        refresh_token: str | None = None,
    ) -> FakeCustomer:
        """A user with an OAuth grant (client secret + refresh token) and one funded account."""
        customer = FakeCustomer(
            client_secret=client_secret or uuid.uuid4().hex + uuid.uuid4().hex[:8],
            refresh_token=refresh_token or "eyJ" + uuid.uuid4().hex + uuid.uuid4().hex,
        )
        self.customers.append(customer)
        self.add_account(customer, cash)
        return customer

    def add_account(self, customer: FakeCustomer, cash: str = "100000") -> FakeAccount:
        now = self.clock()
        account = FakeAccount(
            number=f"5WT{next(self._numbers):05d}", cash=Decimal(cash), created_at=now
        )
        customer.accounts.append(account)
        self._transaction(
            account,
            {
                "transaction-type": "Money Movement",
                "transaction-sub-type": "Deposit",
                "description": "ACH DEPOSIT",
                "value": money(account.cash),
                "value-effect": "Credit",
                "net-value": money(account.cash),
                "net-value-effect": "Credit",
            },
        )
        return account

    def revoke(self, customer: FakeCustomer) -> None:
        """The user revoked the grant: the refresh token and every access token stop working."""
        customer.revoked = True
        for token, (owner, _) in list(self.tokens.items()):
            if owner is customer:
                del self.tokens[token]

    def expire_tokens(self) -> None:
        """Every access token issued so far expires now (the 15 minutes are up)."""
        self.tokens.clear()

    def drop_streams(self) -> None:
        """Close every streamer connection at once (as a network drop would)."""
        for stream in self._streams:
            stream.queue.put_nowait(None)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def release_hung(self) -> None:
        self._release.set()

    def account(self, number: str) -> FakeAccount:
        for customer in self.customers:
            for account in customer.accounts:
                if account.number == number:
                    return account
        raise KeyError(number)

    def set_status(self, order_id: int | str, status: str) -> None:
        """Force a status, even one outside tastytrade's vocabulary (for mapping tests)."""
        for customer in self.customers:
            for account in customer.accounts:
                found = account.orders.get(int(order_id))
                if found is not None:
                    found.status = status
                    return
        raise KeyError(order_id)

    def order_count(self, number: str) -> int:
        return len(self.account(number).orders)

    async def match(self) -> int:
        """Evaluate every working order against the current quote; returns fills made."""
        fills = 0
        for customer in self.customers:
            for account in customer.accounts:
                for order in list(account.orders.values()):
                    if order.status == "Cancel Requested":
                        self._cancelled(account, order)
                    elif order.status == "Live" and order.is_option:
                        fills += self._evaluate_option(account, order)
                    elif order.status == "Live":
                        fills += self._evaluate(account, order)
        return fills

    # --- plumbing ------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock()

    async def _faults(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path))
        raw = await request.body()  # received in full before any delay, as a server would
        if request.method in ("POST", "PUT", "PATCH"):
            with contextlib.suppress(ValueError):
                self.bodies.append((request.method, request.url.path, json.loads(raw or b"null")))
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if self.faults.server_errors > 0 and self.faults.server_errors_method in (
            None,
            request.method,
        ):
            self.faults.server_errors -= 1
            status = self.faults.server_error_status
            return error(status, "internal_error", "Internal server error")
        if self.faults.rate_limited > 0 and self.faults.rate_limited_method in (
            None,
            request.method,
        ):
            self.faults.rate_limited -= 1
            headers = {}
            if self.faults.retry_after is not None:
                headers["Retry-After"] = str(self.faults.retry_after)
            return error(429, "rate_limit_exceeded", "Too many requests", **headers)
        if not USER_AGENT.match(request.headers.get("User-Agent", "")):
            return error(
                401, "unauthorized", "A User-Agent of the form product/version is required"
            )
        return None

    def _bearer(self, value: str | None) -> FakeCustomer | None:
        if not value or not value.startswith("Bearer "):
            return None
        found = self.tokens.get(value[len("Bearer ") :])
        if found is None:
            return None
        customer, expires = found
        if expires <= self._now() or customer.revoked:
            return None
        return customer

    async def _gate(self, request: Request) -> FakeCustomer | Response:
        refused = await self._faults(request)
        if refused is not None:
            return refused
        customer = self._bearer(request.headers.get("Authorization"))
        if customer is None:
            return error(401, "unauthorized", "Token is invalid or expired")
        if self.faults.forbidden > 0:
            self.faults.forbidden -= 1
            return error(403, "not_permitted", "User not permitted access")
        return customer

    async def _account_gate(self, request: Request) -> tuple[FakeCustomer, FakeAccount] | Response:
        customer = await self._gate(request)
        if isinstance(customer, Response):
            return customer
        number = request.path_params["account"]
        for account in customer.accounts:
            if account.number == number:
                return customer, account
        return error(403, "not_permitted", "User not permitted access")

    def settle_option(self, account_number: str, symbol: str, sub_type: str) -> None:
        """Test hook: end an option position's life as tastytrade reports it. The contract
        leaves the account with a ``Receive Deliver`` of sub-type ``Expiration``,
        ``Assignment`` or ``Exercise`` (unsigned ``quantity``, no action, no order id, zero
        value); an assignment or exercise delivers the underlying at the strike as a second
        ``Receive Deliver`` (``Buy to Open 4000 RIVN @ 14.00``), the shape of tastytrade's
        answer (https://developer.tastytrade.com/open-api-spec/transactions/)."""
        account = next(a for c in self.customers for a in c.accounts if a.number == account_number)
        contract = OptionContract.parse(symbol)
        wire = contract.occ_padded
        position = account.positions.pop(wire)
        descriptions = {
            "Expiration": "Removal of option due to expiration",
            "Assignment": "Removal of option due to assignment",
            "Exercise": "Removal of option due to exercise",
        }
        self._transaction(
            account,
            {
                "symbol": wire,
                "instrument-type": "Equity Option",
                "underlying-symbol": contract.underlying,
                "transaction-type": "Receive Deliver",
                "transaction-sub-type": sub_type,
                "description": descriptions[sub_type],
                "quantity": str(position.quantity.copy_abs()),
                "value": "0.0",
                "value-effect": "None",
                "net-value": "0.0",
                "net-value-effect": "None",
            },
        )
        if sub_type == "Expiration":
            return
        shares = position.quantity * OPTION_MULTIPLIER
        if contract.right is OptionRight.put:
            shares = -shares  # a long put sells the underlying, a short put buys it
        action = "Buy to Open" if shares > 0 else "Sell to Open"
        value = shares.copy_abs() * contract.strike
        account.cash -= shares * contract.strike
        underlying = account.positions.setdefault(contract.underlying, FakePosition())
        underlying.quantity += shares
        underlying.cost += shares * contract.strike
        self._transaction(
            account,
            {
                "symbol": contract.underlying,
                "instrument-type": "Equity",
                "underlying-symbol": contract.underlying,
                "transaction-type": "Receive Deliver",
                "transaction-sub-type": action,
                "description": f"{action} {shares.copy_abs()} {contract.underlying} @ "
                f"{contract.strike}",
                "action": action,
                "quantity": str(shares.copy_abs()),
                "price": str(contract.strike),
                "value": money(value),
                "value-effect": "Debit" if shares > 0 else "Credit",
                "net-value": money(value),
                "net-value-effect": "Debit" if shares > 0 else "Credit",
            },
        )

    def _transaction(self, account: FakeAccount, fields: dict[str, Any]) -> None:
        now = self._now()
        account.transactions.append(
            {
                "id": next(self._transaction_ids),
                "account-number": account.number,
                "executed-at": iso(now),
                "transaction-date": now.date().isoformat(),
                "is-estimated-fee": True,
                **fields,
            }
        )

    # --- OAuth -----------------------------------------------------------------------------

    async def oauth_token(self, request: Request) -> Response:
        refused = await self._faults(request)
        if refused is not None:
            return refused
        self.token_requests += 1
        try:
            body = await request.json()
        except ValueError:
            return error(400, "invalid_request", "The request body must be JSON")
        if not isinstance(body, dict) or body.get("grant_type") != "refresh_token":
            return error(400, "unsupported_grant_type", "grant_type must be refresh_token")
        for customer in self.customers:
            if (
                customer.refresh_token == body.get("refresh_token")
                and customer.client_secret == body.get("client_secret")
                and not customer.revoked
            ):
                token = uuid.uuid4().hex + uuid.uuid4().hex
                self.tokens[token] = (customer, self._now() + timedelta(seconds=TOKEN_SECONDS))
                return JSONResponse(
                    {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_SECONDS}
                )
        return error(401, "invalid_grant", "Invalid refresh token or client secret")

    # --- accounts, balances, positions, transactions ---------------------------------------

    async def list_accounts(self, request: Request) -> Response:
        customer = await self._gate(request)
        if isinstance(customer, Response):
            return customer
        items = [
            {
                "account": {
                    "account-number": a.number,
                    "external-id": "A" + a.number[3:].rjust(10, "0"),
                    "opened-at": iso(a.created_at),
                    "nickname": a.nickname,
                    "account-type-name": "Individual",
                    "day-trader-status": False,
                    "is-closed": a.closed,
                    "is-firm-error": False,
                    "is-firm-proprietary": False,
                    "is-futures-approved": False,
                    "is-test-drive": False,
                    "margin-or-cash": "Margin",
                    "is-foreign": False,
                    "funding-date": a.created_at.date().isoformat(),
                    "investment-objective": "SPECULATION",
                    "suitable-options-level": "No Restrictions",
                    "created-at": iso(a.created_at),
                },
                "authority-level": "owner",
            }
            for a in customer.accounts
        ]
        return JSONResponse(wrap({"items": items}, "/customers/me/accounts"))

    def _last(self, symbol: str) -> Decimal:
        return self.quotes.quote(symbol, self._now()).last

    def _contract(self, symbol: str) -> OptionContract:
        return OptionContract.parse(symbol)

    def _option_quote_at(self, symbol: str, at: datetime) -> OptionModelQuote:
        return self.options.quote(self._contract(symbol), at)

    def _unit_value(self, symbol: str) -> Decimal:
        """What one unit of a position is worth now: a share's last, a contract's mark x
        100 (the paper market's options are standard, 100 shares a contract)."""
        if is_option(symbol):
            return self._option_quote_at(symbol, self._now()).mark * OPTION_MULTIPLIER
        return self._last(symbol)

    def _reserved(self, account: FakeAccount) -> Decimal:
        reserved = ZERO
        for order in account.orders.values():
            if order.status not in WORKING:
                continue
            if order.is_option:
                if order.price_effect == "Debit" and order.price is not None:
                    reserved += order.price * order.size * OPTION_MULTIPLIER
            elif order.side == "buy":
                price = order.price or self.quotes.quote(order.symbol, self._now()).ask
                reserved += order.remaining * price
        return reserved

    def _balance_wire(self, account: FakeAccount) -> dict[str, Any]:
        now = self._now()
        long_value = sum(
            (
                p.quantity * self._unit_value(s)
                for s, p in account.positions.items()
                if p.quantity > 0
            ),
            ZERO,
        )
        short_value = sum(
            (
                -p.quantity * self._unit_value(s)
                for s, p in account.positions.items()
                if p.quantity < 0
            ),
            ZERO,
        )
        buying_power = account.cash - self._reserved(account)
        net_liq = account.cash + long_value - short_value
        zero = "0.0"
        return {
            "account-number": account.number,
            "available-trading-funds": money(buying_power),
            "cash-available-to-withdraw": money(account.cash),
            "cash-balance": money(account.cash),
            "cash-settle-balance": money(account.cash),
            "currency": "USD",
            "day-trading-buying-power": zero,
            "derivative-buying-power": money(buying_power),
            "equity-buying-power": money(buying_power),
            "long-equity-value": money(long_value),
            "long-margineable-value": money(long_value),
            "maintenance-requirement": zero,
            "margin-equity": money(net_liq),
            "net-liquidating-value": money(net_liq),
            "pending-cash": zero,
            "pending-cash-effect": "None",
            "short-equity-value": money(short_value),
            "short-margineable-value": money(short_value),
            "snapshot-date": now.date().isoformat(),
            "updated-at": iso(now),
        }

    async def balances(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _, account = found
        return JSONResponse(
            wrap(self._balance_wire(account), f"/accounts/{account.number}/balances")
        )

    def _position_wire(
        self, account: FakeAccount, symbol: str, position: FakePosition, marks: bool
    ) -> dict[str, Any]:
        """tastyware/tastytrade ``CurrentPosition``: unsigned ``quantity`` with
        ``quantity-direction``; an option carries its padded OCC ``symbol``, the
        ``underlying-symbol``, ``instrument-type: Equity Option`` and ``multiplier`` 100, its
        prices per share as quoted."""
        now = self._now()
        quantity = position.quantity.copy_abs()
        average = (position.cost / position.quantity).quantize(Decimal("0.0001"))
        option = is_option(symbol)
        if option:
            contract = self._contract(symbol)
            underlying, multiplier = contract.underlying, 100
            close = self._option_quote_at(symbol, now - timedelta(days=1)).mark
            mark = self._option_quote_at(symbol, now).mark
        else:
            underlying, multiplier = symbol, 1
            close = self.quotes.quote(symbol, now - timedelta(days=1)).last
            mark = self.quotes.quote(symbol, now).mid
        body: dict[str, Any] = {
            "account-number": account.number,
            "symbol": symbol,
            "instrument-type": "Equity Option" if option else "Equity",
            "underlying-symbol": underlying,
            "quantity": str(quantity),
            "quantity-direction": "Long" if position.quantity > 0 else "Short",
            "close-price": str(close),
            "average-open-price": str(average),
            "multiplier": multiplier,
            "cost-effect": "Debit" if position.quantity > 0 else "Credit",
            "is-suppressed": False,
            "is-frozen": False,
            "restricted-quantity": "0.0",
            "realized-day-gain": "0.0",
            "realized-day-gain-effect": "None",
            "realized-today": "0.0",
            "realized-today-effect": "None",
            "created-at": iso(position.created_at or now),
            "updated-at": iso(position.updated_at or now),
        }
        if option:
            expires = datetime.combine(self._contract(symbol).expiration, EXPIRY_TIME_UTC)
            body["expires-at"] = iso(expires)
        if marks:
            body["mark"] = str(mark)
            body["mark-price"] = str(mark)
        return body

    async def positions(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _, account = found
        marks = request.query_params.get("include-marks") == "true"
        wanted = request.query_params.get("symbol")
        items = [
            self._position_wire(account, symbol, position, marks)
            for symbol, position in account.positions.items()
            if position.quantity != 0 and wanted in (None, symbol)
        ]
        return JSONResponse(wrap({"items": items}, f"/accounts/{account.number}/positions"))

    async def transactions(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _, account = found
        params = request.query_params
        selected = list(account.transactions)
        bounds = _bounds(params)
        if isinstance(bounds, Response):
            return bounds
        start, end = bounds
        selected = [
            t
            for t in selected
            if (start is None or _parse_iso(t["executed-at"]) >= start)
            and (end is None or _parse_iso(t["executed-at"]) <= end)
        ]
        if params.get("sort", "Desc") == "Desc":
            selected.reverse()
        return _paginated(selected, params, f"/accounts/{account.number}/transactions", 250, 250)

    # --- instruments and market data -------------------------------------------------------

    async def equity(self, request: Request) -> Response:
        customer = await self._gate(request)
        if isinstance(customer, Response):
            return customer
        symbol = request.path_params["symbol"]
        instrument = UNIVERSE.get(symbol)
        if instrument is None or instrument.asset_class is not AssetClass.equity:
            return error(404, "not_found", f"Equity {symbol} not found")
        return JSONResponse(
            wrap(
                {
                    "id": 700 + list(UNIVERSE).index(symbol),
                    "symbol": symbol,
                    "instrument-type": "Equity",
                    "short-description": f"{symbol} (fake)",
                    "description": f"{symbol} fake equity",
                    "is-index": False,
                    "listed-market": "XNAS",
                    "lendability": "Easy To Borrow",
                    "market-time-instrument-collection": "Equity",
                    "is-closing-only": False,
                    "is-options-closing-only": False,
                    "active": True,
                    "is-fractional-quantity-eligible": True,
                    "is-illiquid": False,
                    "is-etf": False,
                    "streamer-symbol": symbol,
                    "tick-sizes": [{"value": "0.0001", "threshold": "1.0"}, {"value": "0.01"}],
                },
                f"/instruments/equities/{symbol}",
            )
        )

    def _option_instrument(self, contract: OptionContract) -> dict[str, Any]:
        """tastyware/tastytrade ``Option`` (``/instruments/equity-options/{symbol}`` and the
        flat chain's items)."""
        now = self._now()
        expires = datetime.combine(contract.expiration, EXPIRY_TIME_UTC)
        kind = next(
            (
                e.expiration_type
                for e in self.options.expirations(contract.underlying, now.date())
                if e.expiration == contract.expiration
            ),
            ExpirationType.standard,
        )
        return {
            "symbol": contract.occ_padded,
            "instrument-type": "Equity Option",
            "active": True,
            "strike-price": str(contract.strike),
            "root-symbol": contract.root,
            "underlying-symbol": contract.underlying,
            "expiration-date": contract.expiration.isoformat(),
            "exercise-style": "American",
            "shares-per-contract": 100,
            "option-type": "C" if contract.right is OptionRight.call else "P",
            "option-chain-type": "Standard",
            "expiration-type": EXPIRATION_TYPES[kind],
            "settlement-type": "PM",
            "stops-trading-at": iso(expires),
            "market-time-instrument-collection": "Equity Option",
            "days-to-expiration": (contract.expiration - now.date()).days,
            "expires-at": iso(expires),
            "is-closing-only": False,
            "streamer-symbol": streamer_symbol(contract),
        }

    def _listed(self, symbol: str) -> OptionContract | None:
        if not is_option(symbol):
            return None
        try:
            contract = OptionContract.parse(symbol)
        except InvalidOptionSymbol:
            return None
        return contract if self.options.is_listed(contract, self._now().date()) else None

    async def equity_option(self, request: Request) -> Response:
        customer = await self._gate(request)
        if isinstance(customer, Response):
            return customer
        symbol = request.path_params["symbol"]
        contract = self._listed(symbol)
        if contract is None:
            return error(404, "not_found", f"Equity option {symbol} not found")
        return JSONResponse(
            wrap(self._option_instrument(contract), f"/instruments/equity-options/{symbol}")
        )

    async def nested_chain(self, request: Request) -> Response:
        """``GET /option-chains/{symbol}/nested`` (SDK ``NestedOptionChain``): an underlying
        without options answers an empty list."""
        customer = await self._gate(request)
        if isinstance(customer, Response):
            return customer
        underlying = request.path_params["symbol"]
        context = f"/option-chains/{underlying}/nested"
        if not self.options.has_options(underlying):
            return JSONResponse(wrap({"items": []}, context))
        today = self._now().date()
        expirations = []
        for listed in self.options.expirations(underlying, today):
            strikes = []
            for strike in self.options.strikes(underlying):
                call, put = (
                    OptionContract(underlying, underlying, listed.expiration, right, strike)
                    for right in (OptionRight.call, OptionRight.put)
                )
                strikes.append(
                    {
                        "strike-price": str(strike),
                        "call": call.occ_padded,
                        "call-streamer-symbol": streamer_symbol(call),
                        "put": put.occ_padded,
                        "put-streamer-symbol": streamer_symbol(put),
                    }
                )
            expirations.append(
                {
                    "expiration-type": EXPIRATION_TYPES[listed.expiration_type],
                    "expiration-date": listed.expiration.isoformat(),
                    "days-to-expiration": (listed.expiration - today).days,
                    "settlement-type": "PM",
                    "strikes": strikes,
                }
            )
        item = {
            "underlying-symbol": underlying,
            "root-symbol": underlying,
            "option-chain-type": "Standard",
            "shares-per-contract": 100,
            "tick-sizes": [{"value": "0.01", "threshold": "3.0"}, {"value": "0.05"}],
            "deliverables": [
                {
                    "id": 1,
                    "root-symbol": underlying,
                    "deliverable-type": "Shares",
                    "description": f"100 shares of {underlying}",
                    "amount": "100.0",
                    "symbol": underlying,
                    "instrument-type": "Equity",
                    "percent": "100",
                }
            ],
            "expirations": expirations,
        }
        return JSONResponse(wrap({"items": [item]}, context))

    async def flat_chain(self, request: Request) -> Response:
        """``GET /option-chains/{symbol}``: every contract as a full ``Option``."""
        customer = await self._gate(request)
        if isinstance(customer, Response):
            return customer
        underlying = request.path_params["symbol"]
        items = []
        if self.options.has_options(underlying):
            for listed in self.options.expirations(underlying, self._now().date()):
                for contract in self.options.contracts(underlying, listed.expiration):
                    items.append(self._option_instrument(contract))
        return JSONResponse(wrap({"items": items}, f"/option-chains/{underlying}"))

    async def market_data(self, request: Request) -> Response:
        """``GET /market-data/by-type``: each instrument type a parameter whose value lists
        symbols, comma-delimited (https://developer.tastytrade.com/docs/concepts/market-data/)
        or repeated (tastyware/tastytrade sends a list); at most 100 in all."""
        customer = await self._gate(request)
        if isinstance(customer, Response):
            return customer

        def listed(kind: str) -> list[str]:
            return [
                one
                for value in request.query_params.getlist(kind)
                for one in value.split(",")
                if one
            ]

        equities = [*listed("equity"), *listed("cryptocurrency")]
        options = listed("equity-option")
        if len(equities) + len(options) > 100:
            return error(400, "invalid_request", "Combined limit across all types is 100")
        now = self._now()
        items = []
        for symbol in equities:
            key = symbol.replace("/", "-")
            if key not in UNIVERSE:
                continue
            q = self.quotes.quote(key, now)
            crypto = UNIVERSE[key].asset_class is AssetClass.crypto
            items.append(
                {
                    "symbol": symbol,
                    "instrument-type": "Cryptocurrency" if crypto else "Equity",
                    "updated-at": iso(q.as_of),
                    "bid": str(q.bid),
                    "bid-size": str(q.bid_size),
                    "ask": str(q.ask),
                    "ask-size": str(q.ask_size),
                    "mid": str(q.mid),
                    "mark": str(q.mid),
                    "last": str(q.last),
                    "close-price-type": "Regular",
                    "summary-date": now.date().isoformat(),
                    "prev-close-date": (now - timedelta(days=1)).date().isoformat(),
                    "prev-close-price-type": "Regular",
                    "halt-start-time": -1,
                    "halt-end-time": -1,
                }
            )
        for symbol in options:
            contract = self._listed(symbol)
            if contract is None:
                continue
            oq = self.options.quote(contract, now)
            # The fields of a recorded option quote (tastyware/tastytrade docs/market-data.rst,
            # ``SPLG  250516P00054000``): no greeks over REST.
            items.append(
                {
                    "symbol": symbol,
                    "instrument-type": "Equity Option",
                    "updated-at": iso(oq.as_of),
                    "bid": str(oq.bid),
                    "bid-size": "10.0",
                    "ask": str(oq.ask),
                    "ask-size": "10.0",
                    "mid": str(oq.mark),
                    "mark": str(oq.mark),
                    "last": str(oq.last),
                    "close-price-type": "Regular",
                    "summary-date": now.date().isoformat(),
                    "prev-close-date": (now - timedelta(days=1)).date().isoformat(),
                    "prev-close-price-type": "Regular",
                    "halt-start-time": -1,
                    "halt-end-time": -1,
                }
            )
        return JSONResponse(wrap({"items": items}, "/market-data/by-type"))

    # --- orders ----------------------------------------------------------------------------

    def _broadcast(self, account: FakeAccount, order: FakeOrder) -> None:
        if self.faults.stream_silent:
            return
        frame = json.dumps(
            {"type": "Order", "data": order.wire(), "timestamp": epoch_ms(self._now())}
        )
        for stream in self._streams:
            if account.number in stream.accounts:
                stream.queue.put_nowait(frame)

    def _broadcast_balance(self, account: FakeAccount) -> None:
        if self.faults.stream_silent:
            return
        frame = json.dumps(
            {
                "type": "AccountBalance",
                "data": self._balance_wire(account),
                "timestamp": epoch_ms(self._now()),
            }
        )
        for stream in self._streams:
            if account.number in stream.accounts:
                stream.queue.put_nowait(frame)

    def _move(self, account: FakeAccount, order: FakeOrder, status: str) -> None:
        now = self._now()
        order.status = status
        order.updated_at = now
        if status == "Live" and order.live_at is None:
            order.live_at = now
        if status in TERMINAL:
            order.terminal_at = now
        self._broadcast(account, order)

    def _cancelled(self, account: FakeAccount, order: FakeOrder) -> None:
        order.cancelled_at = self._now()
        self._move(account, order, "Cancelled")

    async def live_orders(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _, account = found
        today = self._now().date()
        items = [
            o.wire()
            for o in sorted(account.orders.values(), key=lambda o: o.id, reverse=True)
            if o.status in WORKING or o.updated_at.date() == today
        ]
        return JSONResponse(wrap({"items": items}, f"/accounts/{account.number}/orders/live"))

    async def orders(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _, account = found
        if request.method == "POST":
            return await self._place(request, account)
        params = request.query_params
        selected = list(account.orders.values())
        statuses = params.getlist("status[]")
        if statuses:
            selected = [o for o in selected if o.status in statuses]
        bounds = _bounds(params)
        if isinstance(bounds, Response):
            return bounds
        start, end = bounds
        if start is not None:
            selected = [o for o in selected if o.received_at >= start]
        if end is not None:
            selected = [o for o in selected if o.received_at <= end]
        if "underlying-symbol" in params:
            selected = [o for o in selected if o.underlying == params["underlying-symbol"]]
        selected.sort(key=lambda o: o.id, reverse=params.get("sort", "Desc") == "Desc")
        # per-page: default 100, at most 200 (orders swagger, getAccountsAccountNumberOrders).
        return _paginated(
            [o.wire() for o in selected], params, f"/accounts/{account.number}/orders", 100, 200
        )

    def _parse_terms(
        self, body: dict[str, Any], side: str | None
    ) -> tuple[str, str, Decimal | None, str | None, Decimal | None] | Response:
        """order-type, time-in-force, price, price-effect, stop-trigger, checked. ``side``
        None: a spread (its direction is its price-effect, not a side)."""
        order_type = body.get("order-type")
        tif = body.get("time-in-force")
        if order_type not in ORDER_TYPES:
            return error(400, "invalid_request", f"order-type {order_type!r} is not supported")
        if tif not in TIF_ENUM:
            return error(400, "invalid_request", f"time-in-force {tif!r} is invalid")
        if tif not in TIF_MATCHING:
            return error(400, "invalid_request", f"time-in-force {tif} is not modelled by the fake")
        try:
            price = _opt_decimal(body.get("price"))
            stop = _opt_decimal(body.get("stop-trigger"))
        except InvalidOperation:
            return error(400, "invalid_request", "price and stop-trigger must be decimals")
        if price is not None and price <= 0:
            # Recorded for a negative price (QuantConnect/Lean.Brokerages.Tastytrade PR #16);
            # a zero price is answered the same way here (not documented).
            return validation_error("price", "does not have a valid value")
        effect = body.get("price-effect")
        if order_type in ("Limit", "Stop Limit"):
            if price is None or effect not in ("Debit", "Credit"):
                return preflight("price_required", "A limit order requires price and price-effect")
            if side == "buy" and effect == "Credit":
                return preflight("cant_buy_for_credit", "You cannot buy for a credit.")
        elif price is not None:
            return preflight("order_must_omit_price", "This order type must not include a price")
        if order_type in ("Stop", "Stop Limit") and stop is None:
            return preflight("stop_trigger_required", "A stop order requires a stop-trigger")
        if order_type == "Market" and tif in ("GTC", "GTC Ext"):
            return preflight(
                "gtc_market_orders_not_supported", "GTC/GTD Market orders are not supported."
            )
        return str(order_type), str(tif), price, effect if price is not None else None, stop

    def _parse_legs(self, raw: object) -> list[FakeLeg] | Response:
        """1 Equity leg, or 1 to 4 Equity Option legs on distinct listed contracts of one
        underlying, whole positive quantities."""
        if not isinstance(raw, list) or not raw or not all(isinstance(x, dict) for x in raw):
            return error(400, "invalid_request", "legs must be a non-empty list of objects")
        kinds = {leg.get("instrument-type") for leg in raw}
        if kinds not in ({"Equity"}, {"Equity Option"}):
            return error(400, "invalid_request", "The fake takes Equity or Equity Option legs")
        limit = 1 if kinds == {"Equity"} else MAX_OPTION_LEGS
        if len(raw) > limit:
            return preflight("too_many_legs", f"This order can have at most {limit} legs")
        legs: list[FakeLeg] = []
        for leg in raw:
            action, symbol = leg.get("action"), leg.get("symbol")
            if action not in ACTIONS or action in ("Buy", "Sell"):
                return error(400, "invalid_request", f"action {action!r} is invalid")
            try:
                quantity = Decimal(str(leg.get("quantity")))
            except InvalidOperation:
                return error(400, "invalid_request", "quantity must be a decimal")
            if not quantity.is_finite() or quantity <= 0:
                return error(400, "invalid_request", "quantity must be positive")
            symbol = str(symbol)
            if kinds == {"Equity"}:
                instrument = UNIVERSE.get(symbol)
                if instrument is None or instrument.asset_class is not AssetClass.equity:
                    return preflight(
                        "instrument_validation_failed", f"{symbol} is not a tradeable equity"
                    )
            else:
                if self._listed(symbol) is None:
                    return preflight(
                        "instrument_validation_failed", f"{symbol} is not a listed equity option"
                    )
                if quantity != quantity.to_integral():
                    return validation_error("quantity", "does not have a valid value")
            legs.append(
                FakeLeg(symbol, str(leg.get("instrument-type")), str(action), quantity, quantity)
            )
        if len({leg.symbol for leg in legs}) != len(legs):
            # "Each leg must use a distinct symbol — an order with two legs sharing one symbol
            # is rejected" (multi-leg spreads guide); the answer's code is not documented.
            return preflight("duplicate_legs", "Each leg must use a distinct symbol")
        if (
            len({self._contract(leg.symbol).underlying for leg in legs if is_option(leg.symbol)})
            > 1
        ):
            return preflight("mixed_underlyings", "All legs must share one underlying")
        return legs

    def _natural_debit(self, legs: list[FakeLeg], units: Decimal) -> Decimal:
        """Per strategy unit: what buying at the asks and selling at the bids costs (negative:
        a credit)."""
        now = self._now()
        total = ZERO
        for leg in legs:
            q = self._option_quote_at(leg.symbol, now)
            ratio = leg.quantity / units
            total += ratio * (q.ask if leg.side == "buy" else -q.bid)
        return total

    def _max_loss(self, legs: list[FakeLeg], units: Decimal, debit: Decimal) -> Decimal:
        """Per strategy unit, the worst outcome at expiry (premium included): the payoff of
        the legs at every strike and beyond them."""
        contracts = [(self._contract(leg.symbol), leg.quantity / units, leg.side) for leg in legs]
        strikes = sorted({c.strike for c, _, _ in contracts})
        worst = None
        for spot in [ZERO, *strikes, strikes[-1] * 2]:
            value = ZERO
            for contract, ratio, side in contracts:
                intrinsic = (
                    max(ZERO, spot - contract.strike)
                    if contract.right is OptionRight.call
                    else max(ZERO, contract.strike - spot)
                )
                value += ratio * intrinsic * (1 if side == "buy" else -1)
            outcome = value - debit
            worst = outcome if worst is None else min(worst, outcome)
        return max(ZERO, -(worst or ZERO))

    def _option_fees(self, legs: list[FakeLeg]) -> dict[str, Any]:
        """``fee-calculation``: the field names of the real answer (SDK ``FeeCalculation``);
        the amounts are this fake's own ($1 a contract to open, capped at $10 a leg; $0.10 a
        contract clearing; $0.02 a contract regulatory)."""
        commission = sum(
            (min(Decimal(10), leg.quantity) for leg in legs if leg.action.endswith("to Open")),
            ZERO,
        )
        contracts = sum((leg.quantity for leg in legs), ZERO)
        clearing = contracts * Decimal("0.10")
        regulatory = contracts * Decimal("0.02")
        total = commission + clearing + regulatory
        return {
            "regulatory-fees": money(regulatory),
            "regulatory-fees-effect": "Debit",
            "clearing-fees": money(clearing),
            "clearing-fees-effect": "Debit",
            "commission": money(commission),
            "commission-effect": "Debit" if commission else "None",
            "proprietary-index-option-fees": "0.0",
            "proprietary-index-option-fees-effect": "None",
            "total-fees": money(total),
            "total-fees-effect": "Debit",
        }

    async def _build(
        self, request: Request, account: FakeAccount
    ) -> tuple[FakeOrder, dict[str, Any]] | Response:
        """The order a POST body describes and the answer's other members, or a refusal (the
        preflight checks a dry run also runs)."""
        try:
            body = await request.json()
        except ValueError:
            return error(400, "invalid_request", "The request body must be JSON")
        if not isinstance(body, dict):
            return error(400, "invalid_request", "The request body must be an object")
        legs = self._parse_legs(body.get("legs"))
        if isinstance(legs, Response):
            return legs
        option = legs[0].instrument_type == "Equity Option"
        side = legs[0].side if len(legs) == 1 else None
        terms = self._parse_terms(body, side)
        if isinstance(terms, Response):
            return terms
        order_type, tif, price, effect, stop = terms
        now = self._now()
        external = body.get("external-identifier")
        order = FakeOrder(
            id=0,
            account_number=account.number,
            legs=legs,
            underlying=self._contract(legs[0].symbol).underlying if option else legs[0].symbol,
            order_type=order_type,
            time_in_force=tif,
            price=price,
            price_effect=effect,
            stop_trigger=stop,
            external_identifier=str(external) if external is not None else None,
            source=str(body["source"]) if body.get("source") else None,
            received_at=now,
            updated_at=now,
            status="Received",
        )
        available = account.cash - self._reserved(account)
        if option:
            units = order.size
            natural = self._natural_debit(legs, units)
            debit = natural if price is None else (price if effect == "Debit" else -price)
            requirement = max(debit, self._max_loss(legs, units, debit)) * units
            change = requirement * OPTION_MULTIPLIER
            fees = self._option_fees(legs)
            is_spread = len(legs) > 1
        else:
            quote = self.quotes.quote(legs[0].symbol, now)
            change = (
                order.quantity * (price or quote.ask)
                if side == "buy"
                else order.quantity * (price or quote.bid)
            )
            fees = {"total-fees": "0.0", "total-fees-effect": "None"}
            is_spread = False
        debits = option or side == "buy"
        if debits and change > available:
            return preflight(
                "margin_check_failed",
                "Account does not have sufficient buying power available for this order.",
            )
        new_bp = available - change if debits else available + change
        extra = {
            "buying-power-effect": {
                "change-in-margin-requirement": money(change if option else ZERO),
                "change-in-margin-requirement-effect": "Debit" if option else "None",
                "change-in-buying-power": money(change),
                "change-in-buying-power-effect": "Debit" if debits else "Credit",
                "current-buying-power": money(available),
                "current-buying-power-effect": "Credit",
                "new-buying-power": money(new_bp),
                "new-buying-power-effect": "Credit" if new_bp >= 0 else "Debit",
                "isolated-order-margin-requirement": money(change if option else ZERO),
                "isolated-order-margin-requirement-effect": "Debit" if option else "None",
                "is-spread": is_spread,
                "impact": money(change),
                "effect": "Debit" if debits else "Credit",
            },
            "fee-calculation": fees,
            "warnings": [],
        }
        return order, extra

    async def dry_run(self, request: Request) -> Response:
        """``POST /accounts/{n}/orders/dry-run``: the placement's preflight checks and
        answer (``order`` without an id, ``buying-power-effect``, ``fee-calculation``,
        ``warnings``), nothing placed."""
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _, account = found
        built = await self._build(request, account)
        if isinstance(built, Response):
            return built
        order, extra = built
        self.dry_runs += 1
        return JSONResponse(
            wrap(
                {"order": order.wire(dry_run=True), **extra},
                f"/accounts/{account.number}/orders/dry-run",
            ),
            status_code=201,
        )

    async def _place(self, request: Request, account: FakeAccount) -> Response:
        built = await self._build(request, account)
        if isinstance(built, Response):
            return built
        order, extra = built
        order.id = next(self._ids)
        order.status = "Routed"
        account.orders[order.id] = order
        self._broadcast(account, order)
        answer = wrap({"order": order.wire(), **extra}, f"/accounts/{account.number}/orders")
        self._move(account, order, "Live")
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return JSONResponse(answer, status_code=201)

    async def order(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _, account = found
        raw_id = request.path_params["order_id"]
        order = account.orders.get(int(raw_id)) if raw_id.isdigit() else None
        if order is None:
            return error(404, "not_found", f"Order {raw_id} not found")
        context = f"/accounts/{account.number}/orders/{order.id}"
        if request.method == "GET":
            return JSONResponse(wrap(order.wire(), context))
        if request.method == "DELETE":
            if order.status not in WORKING or order.status == "Cancel Requested":
                return error(422, "cannot_update_order", f"Order is {order.status}")
            self._move(account, order, "Cancel Requested")
            answer = wrap(order.wire(), context)
            if not self.faults.cancel_pending:
                self._cancelled(account, order)
            return JSONResponse(answer)
        return await self._replace(request, account, order, context)

    async def _replace(
        self, request: Request, account: FakeAccount, old: FakeOrder, context: str
    ) -> Response:
        """Cancel-replace: the body's terms, the original legs (a body may repeat them, never
        change them), the remaining quantities (https://developer.tastytrade.com/order-management/)."""
        if old.status != "Live":
            return error(422, "cannot_update_order", f"Order is {old.status}")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "invalid_request", "The request body must be JSON")
        if not isinstance(body, dict):
            return error(400, "invalid_request", "The request body must be an object")
        if "legs" in body:
            legs = body["legs"]
            same = (
                isinstance(legs, list)
                and len(legs) == len(old.legs)
                and all(
                    isinstance(new, dict)
                    and new.get("symbol") == leg.symbol
                    and new.get("action") == leg.action
                    for new, leg in zip(legs, old.legs, strict=False)
                )
            )
            if not same:
                return error(400, "invalid_request", "A replacement keeps the original legs")
        terms = self._parse_terms(body, old.side if len(old.legs) == 1 else None)
        if isinstance(terms, Response):
            return terms
        order_type, tif, price, effect, stop = terms
        now = self._now()
        external = body.get("external-identifier")
        new = FakeOrder(
            id=next(self._ids),
            account_number=account.number,
            legs=[
                FakeLeg(leg.symbol, leg.instrument_type, leg.action, leg.remaining, leg.remaining)
                for leg in old.legs
            ],
            underlying=old.underlying,
            order_type=order_type,
            time_in_force=tif,
            price=price,
            price_effect=effect,
            stop_trigger=stop,
            external_identifier=str(external) if external is not None else None,
            source=str(body["source"]) if body.get("source") else old.source,
            received_at=now,
            updated_at=now,
            status="Contingent",
            replaces_order_id=old.id,
        )
        account.orders[new.id] = new
        self._move(account, old, "Replace Requested")
        self._broadcast(account, new)
        answer = wrap(new.wire(), context)
        old.replacing_order_id = new.id
        self._cancelled(account, old)
        self._move(account, new, "Live")
        return JSONResponse(answer)

    def _evaluate(self, account: FakeAccount, order: FakeOrder) -> int:
        now = self._now()
        quote = self.quotes.quote(order.symbol, now)
        decision = decide(
            OrderState(
                side=OrderSide(order.side),
                order_type=ORDER_TYPES[order.order_type],
                time_in_force=TIF_MATCHING[order.time_in_force],
                remaining=order.remaining,
                limit_price=order.price,
                stop_price=order.stop_trigger,
                stop_triggered=order.stop_triggered,
            ),
            quote,
        )
        order.stop_triggered = decision.stop_triggered
        filled = 0
        if decision.fills and decision.fill_price is not None:
            filled = 1
            qty, price = decision.fill_quantity, decision.fill_price
            order.fills.append(
                {
                    "destination-venue": "FAKE_A",
                    "ext-exec-id": str(len(order.fills) + 1),
                    "ext-group-fill-id": "0",
                    "fill-id": f"2_TW::FAKE_A1::{now:%Y%m%d}.{order.id}-{len(order.fills) + 1}",
                    "fill-price": str(price),
                    "filled-at": iso(now),
                    "quantity": _number(qty),
                }
            )
            order.remaining -= qty
            self._book(account, order, qty, price, now)
            self._move(account, order, "Filled" if order.remaining == 0 else "Live")
            self._broadcast_balance(account)
        if decision.cancel_remainder and order.status not in TERMINAL:
            self._cancelled(account, order)
        return filled

    def _evaluate_option(self, account: FakeAccount, order: FakeOrder) -> int:
        """An option order (one leg or a spread) fills whole and atomically, every leg at its
        natural price (buys at the ask, sells at the bid), when the net is within its limit;
        a market order fills at once. IOC cancels when it cannot fill."""
        now = self._now()
        units = order.size
        natural = self._natural_debit(order.legs, units)
        if order.order_type == "Market":
            fills = True
        elif order.order_type == "Limit" and order.price is not None:
            fills = (
                natural <= order.price if order.price_effect == "Debit" else -natural >= order.price
            )
        else:
            fills = False  # option stop orders are not modelled by the fake
        if not fills:
            if order.time_in_force == "IOC":
                self._cancelled(account, order)
            return 0
        group = str(next(self._ids))
        for index, leg in enumerate(order.legs, start=1):
            q = self._option_quote_at(leg.symbol, now)
            price = q.ask if leg.side == "buy" else q.bid
            qty = leg.remaining
            leg.fills.append(
                {
                    "destination-venue": "FAKE_A",
                    "ext-exec-id": f"{order.id}-{index}",
                    "ext-group-fill-id": group,
                    "fill-id": f"2_TW::FAKE_A1::{now:%Y%m%d}.{order.id}-{index}",
                    "fill-price": str(price),
                    "filled-at": iso(now),
                    "quantity": _number(qty),
                }
            )
            leg.remaining = ZERO
            self._book_leg(account, order.id, leg, qty, price, now)
        fees = self._option_fees(order.legs)
        account.cash -= Decimal(fees["total-fees"])
        self._move(account, order, "Filled")
        self._broadcast_balance(account)
        return 1

    def _book(
        self, account: FakeAccount, order: FakeOrder, qty: Decimal, price: Decimal, now: datetime
    ) -> None:
        self._book_leg(account, order.id, order.legs[0], qty, price, now)

    def _book_leg(
        self,
        account: FakeAccount,
        order_id: int,
        leg: FakeLeg,
        qty: Decimal,
        price: Decimal,
        now: datetime,
    ) -> None:
        """A fill into the position (keyed by the wire symbol), the cash and a ``Trade``
        transaction; option amounts are price x quantity x 100."""
        position = account.positions.setdefault(leg.symbol, FakePosition(created_at=now))
        position.updated_at = now
        signed = qty if leg.side == "buy" else -qty
        if position.quantity == 0 or (position.quantity > 0) == (signed > 0):
            position.cost += signed * price
        else:  # reducing: the remaining quantity keeps its average cost
            position.cost -= (
                position.cost
                * min(qty, position.quantity.copy_abs())
                / (position.quantity.copy_abs())
            )
        position.quantity += signed
        if position.quantity == 0:
            position.cost = ZERO
            del account.positions[leg.symbol]
        option = leg.instrument_type == "Equity Option"
        multiplier = OPTION_MULTIPLIER if option else Decimal(1)
        value = qty * price * multiplier
        account.cash += -value if leg.side == "buy" else value
        underlying = self._contract(leg.symbol).underlying if option else leg.symbol
        self._transaction(
            account,
            {
                "transaction-type": "Trade",
                "transaction-sub-type": leg.action,
                "description": f"{'Bought' if leg.side == 'buy' else 'Sold'} {qty} "
                f"{leg.symbol} @ {price}",
                "symbol": leg.symbol,
                "instrument-type": leg.instrument_type,
                "underlying-symbol": underlying,
                "action": leg.action,
                "quantity": str(qty),
                "price": str(price),
                "value": money(value),
                "value-effect": "Debit" if leg.side == "buy" else "Credit",
                "net-value": money(value),
                "net-value-effect": "Debit" if leg.side == "buy" else "Credit",
                "commission": "0.0",
                "commission-effect": "None",
                "clearing-fees": "0.0",
                "clearing-fees-effect": "None",
                "regulatory-fees": "0.0",
                "regulatory-fees-effect": "None",
                "order-id": order_id,
            },
        )

    async def quote_token(self, request: Request) -> Response:
        """``GET /api-quote-tokens`` (the DXLink token and URL, ``dxlink.py``)."""
        customer = await self._gate(request)
        if isinstance(customer, Response):
            return customer
        return self.dxlink.quote_token(request)

    # --- account streamer ------------------------------------------------------------------

    async def streamer(self, websocket: WebSocket) -> None:
        await websocket.accept()
        stream = _Stream(session_id=uuid.uuid4().hex[:8], queue=asyncio.Queue())
        self._streams.add(stream)

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    raw = message.get("text") or (message.get("bytes") or b"").decode()
                    with contextlib.suppress(ValueError):
                        parsed = json.loads(raw)
                        if isinstance(parsed, dict):
                            self._on_stream_message(stream, parsed)
            stream.queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                frame = await stream.queue.get()
                if frame is None:
                    break
                await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._streams.discard(stream)
            reader.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1011)

    def _on_stream_message(self, stream: _Stream, message: dict[str, Any]) -> None:
        self.stream_messages.append(message)
        if self.faults.stream_silent:
            return
        action = message.get("action")
        customer = self._bearer(message.get("auth-token"))
        answer: dict[str, Any] = {"action": action, "web-socket-session-id": stream.session_id}
        if action == "connect":
            value = message.get("value")
            numbers = [value] if isinstance(value, str) else value
            owned = {a.number for a in customer.accounts} if customer is not None else set()
            if not isinstance(numbers, list) or not numbers or not set(numbers) <= owned:
                answer.update(status="error", message="failed")
            else:
                stream.accounts.update(numbers)
                answer.update(
                    status="ok", value=numbers, **{"request-id": message.get("request-id")}
                )
        elif action == "heartbeat":
            if customer is None:
                answer.update(status="error", message="failed")
            else:
                answer.update(status="ok", **{"request-id": message.get("request-id")})
        else:
            answer.update(status="error", message=f"unknown action {action}")
        stream.queue.put_nowait(json.dumps({"status": answer.pop("status"), **answer}))


def _opt_decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    result = Decimal(str(value))
    if not result.is_finite():
        raise InvalidOperation
    return result


def _parse_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _bounds(params: Any) -> tuple[datetime | None, datetime | None] | Response:
    try:
        start = _parse_iso(params["start-at"]) if "start-at" in params else None
        end = _parse_iso(params["end-at"]) if "end-at" in params else None
    except ValueError:
        return error(400, "invalid_request", "start-at and end-at must be date-times")
    return start, end


def _paginated(
    items: list[Any], params: Any, context: str, default_per_page: int, max_per_page: int
) -> Response:
    """``data.items`` plus the ``pagination`` object of tastytrade's paginated answers."""
    try:
        per_page = int(params.get("per-page", default_per_page))
        offset = int(params.get("page-offset", 0))
    except ValueError:
        return error(400, "invalid_request", "per-page and page-offset must be integers")
    if not 1 <= per_page <= max_per_page or offset < 0:
        return error(
            400, "invalid_request", f"per-page must be 1..{max_per_page}, page-offset >= 0"
        )
    total_pages = max(1, -(-len(items) // per_page))
    page = items[offset * per_page : (offset + 1) * per_page]
    return JSONResponse(
        wrap(
            {"items": page},
            context,
            pagination={
                "per-page": per_page,
                "page-offset": offset,
                "item-offset": offset * per_page,
                "total-items": len(items),
                "total-pages": total_pages,
                "current-item-count": len(page),
                "previous-link": None,
                "next-link": None,
                "paging-link-template": None,
            },
        )
    )

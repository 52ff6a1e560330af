"""A fake Charles Schwab (OAuth, Trader API v1, market data quotes, Streamer) for tests.

It speaks the real protocol, from the official Trader API spec (schemas ``Order``,
``OrderRequest``, ``SecuritiesAccount``, ``Position``, ``Transaction``, ``UserPreference``,
``ServiceError``) and the community SDKs that talk to Schwab every day (alexgolec/schwab-py,
QuantConnect/Lean.Brokerages.CharlesSchwab):

* OAuth: ``GET /v1/oauth/authorize`` redirects (302) to the registered callback with
  ``?code=...&session=...&state=...``; ``POST /v1/oauth/token`` takes HTTP Basic app
  credentials and a form body, answers ``{"expires_in": 1800, "token_type": "Bearer",
  "scope": "api", "refresh_token", "access_token", "id_token"}``. The access token lives 30
  minutes and the refresh token 7 days, both on this fake's clock (the app's manual clock
  when one is given, plus ``advance()``); ``token_requests`` records each token answer. A dead
  refresh token answers ``{"error": "invalid_client", "error_description": "refresh token
  invalid"}`` (expired, schwab-py docs/auth.rst) or ``unsupported_token_type`` wrapping
  ``refresh_token_authentication_error`` (revoked, Schwabdev issue #40); a wrong app key or
  secret answers 401 ``{"error": "invalid_client", "error_description": "Unauthorized"}``.
  A bad or reused code answers RFC 6749's ``invalid_grant`` (Schwab's exact body for that
  case is not documented).
* REST: ``Authorization: Bearer``; account paths take the ``hashValue`` from
  ``/accounts/accountNumbers``; ``POST .../orders`` answers 201 with an empty body and the id
  in ``Location``; ``PUT`` replaces (new id in ``Location``); ``DELETE`` answers 200 empty;
  order lists require ``fromEnteredTime``/``toEnteredTime``; numbers are JSON numbers and
  times ``2026-11-23T14:30:00+0000``. Errors use the spec's ``ServiceError`` shape
  ``{"message", "errors": [...]}``; Schwab documents the shape, not the wording, so the
  messages here are placeholders in that shape (the oversold/overbought refusal is Schwab's
  own wording). Throttling answers 429 (schwab-py docs); its body and any ``Retry-After``
  are not documented, so the fake sends a ``ServiceError`` and a ``Retry-After`` to exercise
  the gateway's handling of both.
* Streamer (``streamerInfo`` from ``/userPreference``, a real WebSocket): ``ADMIN``/``LOGIN``
  with the access token (code 0, or 3 "Login denied"), ``ACCT_ACTIVITY``/``SUBS``, a
  ``SUBSCRIBED`` message, then one ``ACCT_ACTIVITY`` message per order change with
  ``{"SchwabOrderID", "AccountNumber", "BaseEvent": {"EventType"}}`` data, and ``notify``
  heartbeats.

Orders match by the paper broker's rules (``app.paper.matching.decide``) against the paper
market (``SeededQuoteSource``), when the test calls ``match()``. Fault switches: ``faults``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import itertools
import json
import secrets
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
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
from app.paper.matching import OrderState, decide
from app.paper.options_market import (
    EXPIRY_TIME_UTC,
    RISK_FREE_RATE,
    OptionModelQuote,
    SeededOptionMarket,
    intrinsic_value,
)
from app.paper.quotes import CENT, UNIVERSE, SeededQuoteSource
from tests.fakes.schwab.market_stream import SchwabMarketStream

ZERO = Decimal(0)
ACCESS_LIFETIME = timedelta(minutes=30)
REFRESH_LIFETIME = timedelta(days=7)
CODE_LIFETIME = timedelta(seconds=30)  # community reports: the code must be used at once
EQUITIES = {s for s, i in UNIVERSE.items() if i.asset_class is AssetClass.equity}

OPEN_STATUSES = frozenset(
    {
        "AWAITING_PARENT_ORDER",
        "AWAITING_CONDITION",
        "AWAITING_STOP_CONDITION",
        "AWAITING_MANUAL_REVIEW",
        "ACCEPTED",
        "AWAITING_UR_OUT",
        "PENDING_ACTIVATION",
        "QUEUED",
        "WORKING",
        "PENDING_CANCEL",
        "PENDING_REPLACE",
        "NEW",
        "AWAITING_RELEASE_TIME",
        "PENDING_ACKNOWLEDGEMENT",
        "PENDING_RECALL",
    }
)
CHANGEABLE = frozenset({"WORKING", "QUEUED", "ACCEPTED", "PENDING_ACTIVATION", "NEW"})
DURATIONS = {
    "DAY": TimeInForce.day,
    "GOOD_TILL_CANCEL": TimeInForce.gtc,
    "FILL_OR_KILL": TimeInForce.fok,
    "IMMEDIATE_OR_CANCEL": TimeInForce.ioc,
}
ORDER_TYPES = {
    "MARKET": OrderType.market,
    "LIMIT": OrderType.limit,
    "STOP": OrderType.stop,
    "STOP_LIMIT": OrderType.stop_limit,
}
# Options (schwab-py ``orders/common.py``: OptionInstruction, OrderType NET_*,
# ComplexOrderStrategyType; https://github.com/alexgolec/schwab-py).
OPTION_INSTRUCTIONS = frozenset({"BUY_TO_OPEN", "SELL_TO_OPEN", "BUY_TO_CLOSE", "SELL_TO_CLOSE"})
COMBO_ORDER_TYPES = ("MARKET", "NET_DEBIT", "NET_CREDIT", "NET_ZERO")
COMPLEX_TYPES = frozenset(
    {
        "NONE",
        "COVERED",
        "VERTICAL",
        "BACK_RATIO",
        "CALENDAR",
        "DIAGONAL",
        "STRADDLE",
        "STRANGLE",
        "COLLAR_SYNTHETIC",
        "BUTTERFLY",
        "CONDOR",
        "IRON_CONDOR",
        "VERTICAL_ROLL",
        "COLLAR_WITH_STOCK",
        "DOUBLE_DIAGONAL",
        "UNBALANCED_BUTTERFLY",
        "UNBALANCED_CONDOR",
        "UNBALANCED_IRON_CONDOR",
        "UNBALANCED_VERTICAL_ROLL",
        "MUTUAL_FUND_SWAP",
        "CUSTOM",
    }
)
# Schwab publishes no leg limit; the fake takes the gateway's assumption (4, the largest
# ComplexOrderStrategyType shape) and refuses more.
MAX_LEGS = 4
# The fake's fee schedule for previews: $0.65 per option contract (Schwab's published
# commission, https://www.schwab.com/pricing) and a small regulatory fee per contract.
OPTION_COMMISSION = Decimal("0.65")
OPTION_REG_FEE = Decimal("0.02")
_EXPIRATION_CODES = {
    ExpirationType.standard: "S",
    ExpirationType.weekly: "W",
    ExpirationType.quarterly: "Q",
    ExpirationType.end_of_month: "M",
    ExpirationType.other: "S",
}


SCHWAB_API = "https://api.schwabapi.com"
BUYS = ("BUY", "BUY_TO_COVER")


def wire_time(at: datetime) -> str:
    """Schwab's order timestamps: ``2026-11-23T14:30:00+0000``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def num(value: Decimal) -> float | int:
    """A JSON number, as Schwab sends them."""
    return int(value) if value == value.to_integral_value() else float(value)


def service_error(status: int, message: str, *details: str, **headers: str) -> JSONResponse:
    """The spec's ``ServiceError``: ``{"message": string, "errors": [string]}``."""
    return JSONResponse(
        {"message": message, "errors": list(details)}, status_code=status, headers=headers
    )


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds before every REST answer. ``server_errors`` (of
    ``server_errors_method`` only, when set): the next N REST requests answer
    ``server_error_status``. ``rate_limited``: the next N answer 429 with ``Retry-After:
    retry_after``. ``timeout_after_accept``: the next N order placements or replaces create
    the order and then hold the answer ``hang_seconds``. ``stream_silent``: streamer
    connections stay open and say nothing, heartbeats included. ``heartbeat_seconds``:
    ``notify`` heartbeats that often (none when unset). ``login_denied``: the streamer
    refuses LOGIN (code 3). ``drop_streams()``, ``revoke()``, ``expire_access_tokens()`` and
    ``advance()`` on ``FakeSchwab`` cover dropped streams and expired or revoked tokens.
    """

    latency: float = 0.0
    server_errors: int = 0
    server_error_status: int = 500
    server_errors_method: str | None = None
    rate_limited: int = 0
    retry_after: int = 7
    timeout_after_accept: int = 0
    hang_seconds: float = 30.0
    stream_silent: bool = False
    heartbeat_seconds: float | None = None
    login_denied: bool = False  # the streamer answers LOGIN with code 3
    omit_location: int = 0  # the next N 201s carry no Location (the order exists, unnamed)


@dataclass
class FakeLeg:
    """One ``orderLegCollection`` leg: an option (padded OCC symbol) or shares."""

    leg_id: int
    symbol: str
    asset_type: str  # OPTION | EQUITY
    instruction: str
    quantity: Decimal

    @property
    def multiplier(self) -> Decimal:
        return Decimal(100) if self.asset_type == "OPTION" else Decimal(1)

    def wire(self) -> dict[str, Any]:
        """As Schwab reads a leg back (z-Wind/schwab_api ``Order_real2.json``)."""
        instrument: dict[str, Any] = {
            "assetType": self.asset_type,
            "cusip": f"{_ident(self.symbol) % 10**9:09d}",
            "symbol": self.symbol,
            "instrumentId": _ident(self.symbol),
        }
        if self.asset_type == "OPTION":
            contract = OptionContract.parse(self.symbol)
            right = "CALL" if contract.right is OptionRight.call else "PUT"
            instrument |= {
                "description": f"{contract.underlying} {contract.expiration:%m/%d/%Y} "
                f"${contract.strike} {right.title()}",
                "type": "VANILLA",
                "putCall": right,
                "underlyingSymbol": contract.underlying,
                "optionDeliverables": [{"symbol": contract.underlying, "deliverableUnits": 100}],
            }
        closing = self.instruction.endswith("CLOSE") or self.instruction == "SELL"
        return {
            "orderLegType": self.asset_type,
            "legId": self.leg_id,
            "instrument": instrument,
            "instruction": self.instruction,
            "positionEffect": "CLOSING" if closing else "OPENING",
            "quantity": num(self.quantity),
        }


@dataclass
class FakeOrder:
    id: int
    account_number: str
    symbol: str
    instruction: str
    order_type: str
    duration: str
    session: str
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    entered: datetime
    status: str = "WORKING"
    filled: Decimal = ZERO
    executions: list[tuple[Decimal, Decimal, datetime]] = field(default_factory=list)
    closed: datetime | None = None
    replaced_by: int | None = None
    stop_triggered: bool = False
    description: str | None = None
    # Option orders (one leg or a combo): their legs, the complexOrderStrategyType sent, and
    # each fill as (time, strategy units, [(legId, quantity, price)]).
    legs: list[FakeLeg] = field(default_factory=list)
    complex_type: str = "NONE"
    combo_fills: list[tuple[datetime, Decimal, list[tuple[int, Decimal, Decimal]]]] = field(
        default_factory=list
    )

    def key(self) -> tuple[tuple[str, str], ...]:
        """What a replacement must keep: each leg's instrument and instruction."""
        if self.legs:
            return tuple((leg.symbol, leg.instruction) for leg in self.legs)
        return ((self.symbol, self.instruction),)

    def wire(self) -> dict[str, Any]:
        """An ``Order`` as the spec and schwab-py's fixtures show it."""
        body: dict[str, Any] = {
            "session": self.session,
            "duration": self.duration,
            "orderType": self.order_type,
            "complexOrderStrategyType": self.complex_type,
            "quantity": num(self.quantity),
            "filledQuantity": num(self.filled),
            "remainingQuantity": num(self.quantity - self.filled),
            "requestedDestination": "AUTO",
            "destinationLinkName": "AutoRoute",
            "orderLegCollection": [
                {
                    "orderLegType": "EQUITY",
                    "legId": 1,
                    "instrument": {
                        "assetType": "EQUITY",
                        "cusip": f"{_ident(self.symbol) % 10**9:09d}",
                        "symbol": self.symbol,
                        "instrumentId": _ident(self.symbol),
                    },
                    "instruction": self.instruction,
                    "positionEffect": (
                        "OPENING" if self.instruction in ("BUY", "SELL_SHORT") else "CLOSING"
                    ),
                    "quantity": num(self.quantity),
                }
            ],
            "orderStrategyType": "SINGLE",
            "orderId": self.id,
            "cancelable": self.status in OPEN_STATUSES,
            "editable": self.status in CHANGEABLE,
            "status": self.status,
            "enteredTime": wire_time(self.entered),
            "tag": "API_TOS:fake",
            "accountNumber": int(self.account_number),
        }
        if self.price is not None:
            body["price"] = num(self.price)
        if self.stop_price is not None:
            body["stopPrice"] = num(self.stop_price)
        if self.closed is not None:
            body["closeTime"] = wire_time(self.closed)
        if self.description:
            body["statusDescription"] = self.description
        if self.executions:
            body["orderActivityCollection"] = [
                {
                    "activityType": "EXECUTION",
                    "activityId": self.id * 100 + n,
                    "executionType": "FILL",
                    "quantity": num(qty),
                    "orderRemainingQuantity": num(self.quantity - done),
                    "executionLegs": [
                        {
                            "legId": 1,
                            "quantity": num(qty),
                            "mismarkedQuantity": 0,
                            "price": num(price),
                            "time": wire_time(at),
                        }
                    ],
                }
                for n, (qty, price, at, done) in enumerate(self._cumulative(), start=1)
            ]
        if self.legs:
            body["orderLegCollection"] = [leg.wire() for leg in self.legs]
            done = ZERO
            activities = []
            for n, (at, units, executed) in enumerate(self.combo_fills, start=1):
                done += units
                activities.append(
                    {
                        "activityType": "EXECUTION",
                        "activityId": self.id * 100 + n,
                        "executionType": "FILL",
                        "quantity": num(units),
                        "orderRemainingQuantity": num(self.quantity - done),
                        "executionLegs": [
                            {
                                "legId": leg_id,
                                "quantity": num(qty),
                                "mismarkedQuantity": 0,
                                "price": num(price),
                                "time": wire_time(at),
                            }
                            for leg_id, qty, price in executed
                        ],
                    }
                )
            if activities:
                body["orderActivityCollection"] = activities
        if self.replaced_by is not None:
            body["replacingOrderCollection"] = [{"orderId": self.replaced_by}]
        return body

    def _cumulative(self) -> list[tuple[Decimal, Decimal, datetime, Decimal]]:
        done, rows = ZERO, []
        for qty, price, at in self.executions:
            done += qty
            rows.append((qty, price, at, done))
        return rows


@dataclass
class FakePosition:
    qty: Decimal = ZERO  # signed for options (negative: short)
    cost_basis: Decimal = ZERO  # dollars, signed like qty
    option: bool = False


def _apply(position: FakePosition, signed_qty: Decimal, unit_cost: Decimal) -> None:
    """Add ``signed_qty`` at ``unit_cost`` dollars each: a reduction releases cost pro rata,
    whatever crosses zero opens at the new cost."""
    if position.qty and (position.qty > 0) != (signed_qty > 0):
        closing = min(abs(signed_qty), abs(position.qty))
        position.cost_basis -= position.cost_basis * closing / abs(position.qty)
        position.qty += closing if signed_qty > 0 else -closing
        signed_qty += -closing if signed_qty > 0 else closing
    position.qty += signed_qty
    position.cost_basis += signed_qty * unit_cost


@dataclass
class FakeAccount:
    number: str
    hash_value: str
    cash: Decimal
    type: str = "CASH"
    orders: dict[int, FakeOrder] = field(default_factory=dict)
    positions: dict[str, FakePosition] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeLogin:
    """One Schwab customer (the person who authorizes our app) and their accounts."""

    customer_id: str
    correl_id: str
    accounts: list[FakeAccount] = field(default_factory=list)
    streams: set[asyncio.Queue[str | None]] = field(default_factory=set)


@dataclass
class Grant:
    login: FakeLogin
    refresh_token: str
    created: datetime
    revoked: bool = False


@dataclass
class AccessToken:
    grant: Grant
    expires: datetime


class FakeSchwab:
    """The fake's state, its fault switches and its ASGI ``app``."""

    def __init__(
        self, *, seed: int = 20260522, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.quotes = SeededQuoteSource(seed)
        self.options = SeededOptionMarket(self.quotes)  # the paper broker's option market
        # ``clock``: share the app's manual clock (token lifetimes, order times); ``advance``
        # moves this fake ahead of it (Schwab's clock running ahead of ours).
        self._clock = clock or (lambda: datetime.now(UTC))
        self.offset = timedelta(0)
        self.faults = Faults()
        self.apps: dict[str, tuple[str, set[str]]] = {}  # client id -> (secret, redirect URIs)
        self.logins: list[FakeLogin] = []
        self.login_as: FakeLogin | None = None  # who signs in at the authorize page
        # With passwords set (``add_password``), the authorize page is a sign-in form the
        # browser must fill in (Schwab's Login Micro Site stands behind the real authorize
        # URL, https://developer.schwab.com/user-guides/get-started/authenticate-with-oauth);
        # without, the customer ``login_as`` is signed in at once.
        self.passwords: dict[str, tuple[str, FakeLogin]] = {}
        self.grants: dict[str, Grant] = {}
        self.access: dict[str, AccessToken] = {}
        self.codes: dict[str, tuple[FakeLogin, str, str, datetime]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST request
        self.locations: list[str] = []  # every Location header answered
        # symbol -> assetType shown for that position (a kind the gateway does not model)
        self.position_asset_types: dict[str, str] = {}
        # (method, path, query, body) of every REST request, for request fixtures
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        # Every token request that passed the fault switches and client authentication:
        # {"grant_type", "status", "error"} (error "" on success).
        self.token_requests: list[dict[str, str]] = []
        self._ids = itertools.count(1000000001)
        self._numbers = itertools.count(12345670)
        self._seq = itertools.count(1)
        self._release = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/v1/oauth/authorize", self.authorize, methods=["GET", "POST"]),
                Route("/v1/oauth/token", self.token, methods=["POST"]),
                Route("/trader/v1/accounts/accountNumbers", self.account_numbers),
                Route("/trader/v1/accounts", self.get_accounts),
                Route("/trader/v1/accounts/{hash}", self.get_account),
                Route("/trader/v1/accounts/{hash}/orders", self.orders, methods=["GET", "POST"]),
                Route(
                    "/trader/v1/accounts/{hash}/orders/{order_id}",
                    self.order,
                    methods=["GET", "PUT", "DELETE"],
                ),
                Route("/trader/v1/orders", self.all_orders),
                Route("/trader/v1/accounts/{hash}/transactions", self.transactions),
                Route("/trader/v1/accounts/{hash}/previewOrder", self.preview, methods=["POST"]),
                Route("/marketdata/v1/chains", self.chains),
                Route("/marketdata/v1/expirationchain", self.expiration_chain),
                Route("/trader/v1/userPreference", self.user_preference),
                Route("/marketdata/v1/quotes", self.get_quotes),
                WebSocketRoute("/ws", self.streamer),
            ]
        )
        self.market = SchwabMarketStream(self)  # streamer market data, price history
        self.app.router.routes.extend(self.market.routes())

    # --- test controls -----------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock() + self.offset

    def advance(self, delta: timedelta) -> None:
        """Move this fake's clock (token lifetimes); order times move with it."""
        self.offset += delta

    def add_app(self, client_id: str, secret: str, redirect_uri: str) -> None:
        self.apps[client_id] = (secret, {redirect_uri})

    def add_login(self, cash: str = "100000", account_type: str = "CASH") -> FakeLogin:
        login = FakeLogin(customer_id=uuid.uuid4().hex, correl_id=str(uuid.uuid4()))
        self.logins.append(login)
        self.add_account(login, cash, account_type)
        if self.login_as is None:
            self.login_as = login
        return login

    def add_account(
        self, login: FakeLogin, cash: str = "100000", account_type: str = "CASH"
    ) -> FakeAccount:
        account = FakeAccount(
            number=str(next(self._numbers)),
            hash_value=secrets.token_hex(32).upper(),
            cash=Decimal(cash),
            type=account_type,
        )
        login.accounts.append(account)
        account.transactions.append(
            {
                "activityId": next(self._seq),
                "time": wire_time(self.now()),
                "description": "ACH DEPOSIT",
                "accountNumber": account.number,
                "type": "ACH_RECEIPT",
                "status": "VALID",
                "subAccount": "CASH",
                "tradeDate": wire_time(self.now()),
                "netAmount": num(account.cash),
                "transferItems": [
                    {
                        "instrument": {"assetType": "CURRENCY", "symbol": "CURRENCY_USD"},
                        "amount": num(account.cash),
                        "cost": num(account.cash),
                    }
                ],
            }
        )
        return account

    def issue_tokens(self, login: FakeLogin) -> tuple[str, str]:
        """(access token, refresh token) of a fresh grant, as a completed browser flow has."""
        grant = Grant(login=login, refresh_token=self._token(), created=self.now())
        self.grants[grant.refresh_token] = grant
        return self._access_for(grant), grant.refresh_token

    def revoke(self, login: FakeLogin) -> None:
        """The customer removed our app's access: every token of every grant dies."""
        for grant in self.grants.values():
            if grant.login is login:
                grant.revoked = True

    def expire_access_tokens(self) -> None:
        for token in self.access.values():
            token.expires = self.now() - timedelta(seconds=1)

    def drop_streams(self) -> None:
        for login in self.logins:
            for queue in login.streams:
                queue.put_nowait(None)

    def release_hung(self) -> None:
        self._release.set()

    def set_status(self, order_id: int, status: str) -> None:
        """Force a status, even one outside Schwab's vocabulary (for mapping tests)."""
        self._order_by_id(order_id).status = status

    def order_count(self, account: FakeAccount) -> int:
        return len(account.orders)

    def streaming(self, login: FakeLogin) -> bool:
        return bool(login.streams)

    async def match(self) -> int:
        """Evaluate every working order against the current quote; returns fills made."""
        fills = 0
        for login in self.logins:
            for account in login.accounts:
                for order in list(account.orders.values()):
                    if order.status == "WORKING":
                        fills += self._evaluate(login, account, order)
        return fills

    # --- plumbing ------------------------------------------------------------------------

    def _token(self) -> str:
        return secrets.token_urlsafe(24)

    def _access_for(self, grant: Grant) -> str:
        token = "I0." + self._token() + "@"
        self.access[token] = AccessToken(grant=grant, expires=self.now() + ACCESS_LIFETIME)
        return token

    def _order_by_id(self, order_id: int) -> FakeOrder:
        for login in self.logins:
            for account in login.accounts:
                if order_id in account.orders:
                    return account.orders[order_id]
        raise KeyError(order_id)

    async def _faulted(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path))
        body = await request.body()  # received in full before any delay, as a real server would
        self.calls.append((request.method, request.url.path, dict(request.query_params), body))
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        method_matches = self.faults.server_errors_method in (None, request.method)
        if self.faults.server_errors > 0 and method_matches:
            self.faults.server_errors -= 1
            return service_error(self.faults.server_error_status, "Internal Server Error")
        if self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            return service_error(
                429,
                "Too Many Requests",
                "The request rate limit was exceeded",
                **{"Retry-After": str(self.faults.retry_after)},
            )
        return None

    def _bearer(self, request: Request) -> FakeLogin | Response:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        found = self.access.get(token) if scheme.lower() == "bearer" else None
        if found is None or found.grant.revoked or found.expires <= self.now():
            return service_error(
                401,
                "Client not authorized",
                "The caller must pass a valid AuthToken in the HTTP authorization request header",
            )
        return found.grant.login

    async def _gate(self, request: Request) -> FakeLogin | Response:
        faulted = await self._faulted(request)
        if faulted is not None:
            return faulted
        return self._bearer(request)

    async def _account_gate(self, request: Request) -> tuple[FakeLogin, FakeAccount] | Response:
        login = await self._gate(request)
        if isinstance(login, Response):
            return login
        for account in login.accounts:
            if account.hash_value == request.path_params["hash"]:
                return login, account
        # Plain numbers and other logins' hashes are not account identifiers here.
        return service_error(404, "Account not found")

    def _instrument_price(self, symbol: str) -> Any:
        return self.quotes.quote(symbol, self.now())

    def _publish(self, login: FakeLogin, account: FakeAccount, order: FakeOrder, kind: str) -> None:
        """One ``ACCT_ACTIVITY`` data message to every streamer session of the login."""
        if self.faults.stream_silent:
            return
        now = self.now()
        data = {
            "SchwabOrderID": str(order.id),
            "AccountNumber": account.number,
            "BaseEvent": {"EventType": kind},
        }
        frame = json.dumps(
            {
                "data": [
                    {
                        "service": "ACCT_ACTIVITY",
                        "timestamp": epoch_ms(now),
                        "command": "SUBS",
                        "content": [
                            {
                                "seq": next(self._seq),
                                "key": login.correl_id,
                                "1": account.number,
                                "2": kind,
                                "3": json.dumps(data),
                            }
                        ],
                    }
                ]
            }
        )
        for queue in login.streams:
            queue.put_nowait(frame)

    # --- OAuth ---------------------------------------------------------------------------

    def add_password(self, login: FakeLogin, login_id: str, password: str) -> None:
        """Make the authorize page a sign-in form; ``login_id``/``password`` sign ``login`` in."""
        self.passwords[login_id] = (password, login)

    def _sign_in_page(self, request: Request, problem: str = "") -> Response:
        note = f'<p id="problem" role="alert">{html.escape(problem)}</p>' if problem else ""
        return HTMLResponse(
            "<!doctype html><title>Charles Schwab - Log in</title>"
            "<h1>Log in to authorize a third-party app</h1>"
            f'{note}<form method="post" action="{html.escape(str(request.url))}">'
            '<label>Login ID <input name="login_id" id="login_id" autocomplete="username">'
            '</label><label>Password <input name="password" id="password" type="password">'
            '</label><button type="submit" id="log-in">Log in</button></form>',
            status_code=400 if problem else 200,
        )

    async def authorize(self, request: Request) -> Response:
        params = request.query_params
        client_id = params.get("client_id", "")
        registered = self.apps.get(client_id)
        if registered is None:
            return oauth_error(400, "invalid_client", "Unauthorized")
        redirect_uri = params.get("redirect_uri", "")
        if params.get("response_type") != "code" or redirect_uri not in registered[1]:
            return oauth_error(400, "invalid_request", "Invalid request")
        signed_in = self.login_as
        if self.passwords:
            if request.method == "GET":
                return self._sign_in_page(request)
            form = parse_qs((await request.body()).decode())
            found = self.passwords.get(form.get("login_id", [""])[0])
            given = form.get("password", [""])[0]
            if found is None or not secrets.compare_digest(found[0], given):
                return self._sign_in_page(request, "The login ID or password is incorrect.")
            signed_in = found[1]
        elif request.method != "GET":
            return oauth_error(400, "invalid_request", "Invalid request")
        if signed_in is None:
            return oauth_error(400, "access_denied", "No customer signed in")
        code = "C0." + base64.urlsafe_b64encode(b"oauth2.bdc.schwab.com").decode().rstrip("=")
        code += "." + self._token() + "@"
        self.codes[code] = (signed_in, client_id, redirect_uri, self.now())
        query = {"code": code, "session": str(uuid.uuid4())}
        if "state" in params:
            query["state"] = params["state"]
        return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)

    def _client(self, request: Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        registered = self.apps.get(client_id)
        return client_id if registered is not None and registered[0] == secret else None

    async def token(self, request: Request) -> Response:
        faulted = await self._faulted(request)
        if faulted is not None:
            return faulted
        client_id = self._client(request)
        if client_id is None:
            return oauth_error(401, "invalid_client", "Unauthorized")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return oauth_error(400, "invalid_request", "Invalid request")
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        answer = self._token_answer(client_id, form)
        error = json.loads(answer.body).get("error", "") if answer.status_code != 200 else ""
        self.token_requests.append(
            {
                "grant_type": form.get("grant_type", ""),
                "status": str(answer.status_code),
                "error": error,
            }
        )
        return answer

    def _token_answer(self, client_id: str, form: dict[str, str]) -> JSONResponse:
        grant_type = form.get("grant_type")
        now = self.now()
        if grant_type == "authorization_code":
            found = self.codes.pop(form.get("code", ""), None)
            if found is None or found[1] != client_id or found[3] + CODE_LIFETIME < now:
                return oauth_error(400, "invalid_grant", "Bad authorization code")
            if form.get("redirect_uri") != found[2]:
                return oauth_error(400, "invalid_grant", "redirect_uri mismatch")
            grant = Grant(login=found[0], refresh_token=self._token(), created=now)
            self.grants[grant.refresh_token] = grant
        elif grant_type == "refresh_token":
            found_grant = self.grants.get(form.get("refresh_token", ""))
            if found_grant is None or found_grant.revoked:
                return oauth_error(
                    400,
                    "unsupported_token_type",
                    '400 Bad Request: "{"error_description":"Exception while authenticating '
                    'refresh token","error":"refresh_token_authentication_error"}"',
                )
            if found_grant.created + REFRESH_LIFETIME <= now:
                return oauth_error(400, "invalid_client", "refresh token invalid")
            grant = found_grant
        else:
            return oauth_error(400, "unsupported_grant_type", "Unsupported grant type")
        return JSONResponse(
            {
                "expires_in": int(ACCESS_LIFETIME.total_seconds()),
                "token_type": "Bearer",
                "scope": "api",
                "refresh_token": grant.refresh_token,
                "access_token": self._access_for(grant),
                "id_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.fake.fake",
            }
        )

    # --- accounts ------------------------------------------------------------------------

    async def account_numbers(self, request: Request) -> Response:
        login = await self._gate(request)
        if isinstance(login, Response):
            return login
        return JSONResponse(
            [{"accountNumber": a.number, "hashValue": a.hash_value} for a in login.accounts]
        )

    def _account_wire(self, account: FakeAccount, positions: bool) -> dict[str, Any]:
        long_value = sum(
            (
                p.qty * self._instrument_price(s).last
                for s, p in account.positions.items()
                if not p.option
            ),
            ZERO,
        )
        option_value = sum(
            (
                p.qty * self._option_quote(OptionContract.parse(s)).mark * 100
                for s, p in account.positions.items()
                if p.option and p.qty
            ),
            ZERO,
        )
        reserved = self._reserved(account)
        liquidation = account.cash + long_value + option_value
        current: dict[str, Any] = {
            "accruedInterest": 0,
            "cashBalance": num(account.cash),
            "cashReceipts": 0,
            "longOptionMarketValue": num(max(option_value, ZERO).quantize(CENT)),
            "liquidationValue": num(liquidation),
            "longMarketValue": num(long_value),
            "moneyMarketFund": 0,
            "savings": 0,
            "shortMarketValue": 0,
            "pendingDeposits": 0,
            "mutualFundValue": 0,
            "bondValue": 0,
            "shortOptionMarketValue": 0,
            "unsettledCash": 0,
            "cashDebitCallValue": 0,
        }
        if account.type == "MARGIN":
            current |= {
                "availableFunds": num(account.cash - reserved),
                "availableFundsNonMarginableTrade": num(account.cash - reserved),
                "buyingPower": num(account.cash - reserved),
                "buyingPowerNonMarginableTrade": num(account.cash - reserved),
                "dayTradingBuyingPower": 0,
                "equity": num(liquidation),
                "equityPercentage": 100,
                "longMarginValue": num(long_value),
                "maintenanceCall": 0,
                "maintenanceRequirement": 0,
                "marginBalance": 0,
                "regTCall": 0,
                "shortBalance": 0,
                "shortMarginValue": 0,
                "sma": 0,
            }
        else:
            current |= {
                "cashAvailableForTrading": num(account.cash - reserved),
                "cashAvailableForWithdrawal": num(account.cash - reserved),
                "cashCall": 0,
                "longNonMarginableMarketValue": num(long_value),
                "totalCash": num(account.cash),
            }
        body: dict[str, Any] = {
            "type": account.type,
            "accountNumber": account.number,
            "roundTrips": 0,
            "isDayTrader": False,
            "isClosingOnlyRestricted": False,
            "pfcbFlag": False,
            "initialBalances": {"cashBalance": num(account.cash), "accountValue": num(liquidation)},
            "currentBalances": current,
            "projectedBalances": {k: current[k] for k in list(current)[:5]},
        }
        if positions:
            body["positions"] = [
                self._option_position_wire(s, p) if p.option else self._position_wire(s, p)
                for s, p in account.positions.items()
                if p.qty
            ]
        return {
            "securitiesAccount": body,
            "aggregatedBalance": {
                "currentLiquidationValue": num(liquidation),
                "liquidationValue": num(liquidation),
            },
        }

    def _position_wire(self, symbol: str, position: FakePosition) -> dict[str, Any]:
        last = self._instrument_price(symbol).last
        market_value = position.qty * last
        avg = (position.cost_basis / position.qty).quantize(Decimal("0.0001"))
        long_qty, short_qty = max(position.qty, ZERO), max(-position.qty, ZERO)
        pl = num((market_value - position.cost_basis).quantize(Decimal("0.01")))
        sides: dict[str, Any] = (
            {"averageShortPrice": num(avg), "shortOpenProfitLoss": pl}
            if short_qty
            else {
                "averageLongPrice": num(avg),
                "taxLotAverageLongPrice": num(avg),
                "longOpenProfitLoss": pl,
            }
        )
        return {
            "shortQuantity": num(short_qty),
            "averagePrice": num(avg),
            "currentDayProfitLoss": 0,
            "currentDayProfitLossPercentage": 0,
            "longQuantity": num(long_qty),
            "settledLongQuantity": num(long_qty),
            "settledShortQuantity": num(short_qty),
            "instrument": {
                "assetType": self.position_asset_types.get(symbol, "EQUITY"),
                "cusip": f"{_ident(symbol) % 10**9:09d}",
                "symbol": symbol,
                "netChange": 0,
            },
            "marketValue": num(market_value.quantize(Decimal("0.01"))),
            "maintenanceRequirement": 0,
            **sides,
            "previousSessionLongQuantity": 0,
            "currentDayCost": num(position.cost_basis.quantize(Decimal("0.01"))),
        }

    def _reserved(self, account: FakeAccount) -> Decimal:
        reserved = ZERO
        for order in account.orders.values():
            if order.status not in OPEN_STATUSES:
                continue
            if order.legs:
                if order.order_type in ("NET_DEBIT", "LIMIT") and order.price is not None:
                    buying = order.legs[0].instruction.startswith("BUY")
                    if order.order_type == "NET_DEBIT" or buying:
                        reserved += (order.quantity - order.filled) * order.price * 100
            elif order.instruction in BUYS:
                price = order.price or self._instrument_price(order.symbol).ask
                reserved += (order.quantity - order.filled) * price
        return reserved

    async def get_accounts(self, request: Request) -> Response:
        login = await self._gate(request)
        if isinstance(login, Response):
            return login
        positions = "positions" in request.query_params.get("fields", "")
        return JSONResponse([self._account_wire(a, positions) for a in login.accounts])

    async def get_account(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        positions = "positions" in request.query_params.get("fields", "")
        return JSONResponse(self._account_wire(found[1], positions))

    async def user_preference(self, request: Request) -> Response:
        login = await self._gate(request)
        if isinstance(login, Response):
            return login
        # Schwab advertises a ``wss://`` socket (streamer-api.schwab.com); the fake names its
        # own host with that scheme. Clients reach the fake's plain socket through an
        # override (``BROKERAGE_SCHWAB_STREAMER_URL``).
        ws_base = "wss://" + request.url.netloc
        return JSONResponse(
            {
                "accounts": [
                    {
                        "accountNumber": a.number,
                        "primaryAccount": n == 0,
                        "type": "BROKERAGE",
                        "nickName": "Individual",
                        "displayAcctId": "..." + a.number[-3:],
                        "autoPositionEffect": False,
                        "accountColor": "Green",
                    }
                    for n, a in enumerate(login.accounts)
                ],
                "streamerInfo": [
                    {
                        "streamerSocketUrl": f"{ws_base}/ws",
                        "schwabClientCustomerId": login.customer_id,
                        "schwabClientCorrelId": login.correl_id,
                        "schwabClientChannel": "N9",
                        "schwabClientFunctionId": "APIAPP",
                    }
                ],
                "offers": [{"level2Permissions": True, "mktDataPermission": "NP"}],
            }
        )

    async def transactions(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        params = request.query_params
        if not all(params.get(k) for k in ("startDate", "endDate", "types")):
            return service_error(400, "Bad Request", "startDate, endDate and types are required")
        types = set(params["types"].split(","))
        return JSONResponse([t for t in found[1].transactions if t["type"] in types])

    # --- market data ---------------------------------------------------------------------

    async def get_quotes(self, request: Request) -> Response:
        login = await self._gate(request)
        if isinstance(login, Response):
            return login
        now = self.now()
        body: dict[str, Any] = {}
        invalid = []
        for symbol in filter(None, request.query_params.get("symbols", "").split(",")):
            contract = self._listed_contract(symbol)
            if contract is not None:
                oq = self._option_quote(contract)
                body[symbol] = {
                    "assetMainType": "OPTION",
                    "realtime": True,
                    "ssid": _ident(symbol),
                    "symbol": symbol,
                    "quote": {
                        "askPrice": num(oq.ask),
                        "askSize": 10,
                        "bidPrice": num(oq.bid),
                        "bidSize": 10,
                        "lastPrice": num(oq.last),
                        "mark": num(oq.mark),
                        "quoteTime": epoch_ms(oq.as_of),
                        "tradeTime": epoch_ms(oq.as_of),
                        "delta": num(oq.greeks.delta or ZERO),
                        "volatility": num((oq.greeks.iv or ZERO) * 100),
                    },
                }
                continue
            if symbol not in EQUITIES:
                invalid.append(symbol)
                continue
            q = self.quotes.quote(symbol, now)
            body[symbol] = {
                "assetMainType": "EQUITY",
                "assetSubType": "COE",
                "quoteType": "NBBO",
                "realtime": True,
                "ssid": _ident(symbol),
                "symbol": symbol,
                "quote": {
                    "askMICId": "MEMX",
                    "askPrice": num(q.ask),
                    "askSize": num(q.ask_size),
                    "askTime": epoch_ms(q.as_of),
                    "bidMICId": "MEMX",
                    "bidPrice": num(q.bid),
                    "bidSize": num(q.bid_size),
                    "bidTime": epoch_ms(q.as_of),
                    "lastMICId": "XADF",
                    "lastPrice": num(q.last),
                    "lastSize": 100,
                    "mark": num(q.last),
                    "quoteTime": epoch_ms(q.as_of),
                    "securityStatus": "Normal",
                    "totalVolume": 1000000,
                    "tradeTime": epoch_ms(q.as_of),
                },
            }
        if invalid:
            body["errors"] = {"invalidSymbols": invalid}
        return JSONResponse(body)

    # --- orders --------------------------------------------------------------------------

    def _parse_order(self, body: object) -> dict[str, Any] | Response:
        """An ``OrderRequest`` for one equity leg, or a 400 ``ServiceError``."""

        def bad(detail: str) -> Response:
            return service_error(
                400, "A validation error occurred while processing the request.", detail
            )

        if not isinstance(body, dict):
            return bad("the request body is not an order")
        if body.get("orderStrategyType", "SINGLE") != "SINGLE":
            return bad("only SINGLE orders are supported by this fake")
        order_type, duration = body.get("orderType"), body.get("duration")
        session = body.get("session")
        if duration not in DURATIONS:
            return bad(f"duration {duration} is not supported")
        if session not in ("NORMAL", "AM", "PM", "SEAMLESS"):
            return bad(f"session {session} is not valid")
        legs = body.get("orderLegCollection")
        if not isinstance(legs, list) or not legs or not all(isinstance(x, dict) for x in legs):
            return bad("orderLegCollection is required")
        if len(legs) > 1 or (legs[0].get("instrument") or {}).get("assetType") == "OPTION":
            return self._parse_option_order(body)
        if order_type not in ORDER_TYPES:
            return bad(f"orderType {order_type} is not supported")
        leg = legs[0]
        instrument = leg.get("instrument") or {}
        symbol = instrument.get("symbol") if isinstance(instrument, dict) else None
        if not isinstance(symbol, str) or instrument.get("assetType") != "EQUITY":
            return bad("an EQUITY instrument with a symbol is required")
        if symbol not in EQUITIES:
            return bad(f"Symbol {symbol} is invalid")
        # Equity instructions (Trader API spec ``instruction``; schwab-py EquityInstruction).
        if leg.get("instruction") not in ("BUY", "SELL", "SELL_SHORT", "BUY_TO_COVER"):
            return bad(f"instruction {leg.get('instruction')} is not supported by this fake")
        try:
            quantity = Decimal(str(leg.get("quantity")))
            price = _opt_decimal(body.get("price"))
            stop_price = _opt_decimal(body.get("stopPrice"))
        except InvalidOperation:
            return bad("quantity, price and stopPrice must be numbers")
        if not quantity.is_finite() or quantity <= 0 or quantity != quantity.to_integral_value():
            return bad("quantity must be a positive whole number")
        if order_type in ("LIMIT", "STOP_LIMIT") and price is None:
            return bad("price is required for LIMIT orders")
        if order_type in ("STOP", "STOP_LIMIT") and stop_price is None:
            return bad("stopPrice is required for STOP orders")
        return {
            "symbol": symbol,
            "instruction": leg["instruction"],
            "order_type": order_type,
            "duration": duration,
            "session": session,
            "quantity": quantity,
            "price": price,
            "stop_price": stop_price,
        }

    def _check_funds(self, account: FakeAccount, parsed: dict[str, Any]) -> Response | None:
        if "legs" in parsed:
            if self._order_value(parsed) > account.cash - self._reserved(account):
                return service_error(
                    400, "Order rejected", "Insufficient buying power for this order"
                )
            return None
        quote = self._instrument_price(parsed["symbol"])
        held = account.positions.get(parsed["symbol"], FakePosition()).qty
        if parsed["instruction"] == "SELL_SHORT" and account.type != "MARGIN":
            # Short sales need a margin account.
            return service_error(
                400, "Order rejected", "Short sales are not allowed in a cash account"
            )
        if parsed["instruction"] == "BUY_TO_COVER" and parsed["quantity"] > -held:
            return service_error(
                400,
                "Order rejected",
                "This order may result in an oversold/overbought position in your account."
                "  Please check your position quantity and/or open orders.",
            )
        if parsed["instruction"] == "SELL_SHORT":
            return None
        if parsed["instruction"] in BUYS:
            cost = parsed["quantity"] * (parsed["price"] or quote.ask)
            if cost > account.cash - self._reserved(account):
                return service_error(
                    400, "Order rejected", "Insufficient buying power for this order"
                )
        else:
            selling = sum(
                (
                    o.quantity - o.filled
                    for o in account.orders.values()
                    if o.instruction == "SELL"
                    and o.symbol == parsed["symbol"]
                    and o.status in OPEN_STATUSES
                ),
                ZERO,
            )
            if parsed["quantity"] > held - selling:
                # Schwab's wording for this refusal (quoted in itsjafer/schwab-api issue #22).
                return service_error(
                    400,
                    "Order rejected",
                    "This order may result in an oversold/overbought position in your account."
                    "  Please check your position quantity and/or open orders.",
                )
        return None

    def _location(self, request: Request, account: FakeAccount, order_id: int) -> str:
        # Schwab's own host whatever the fake's scheme and port: schwab-py's
        # ``Utils.extract_order_id`` matches this literal prefix
        # (https://github.com/alexgolec/schwab-py/blob/main/schwab/utils.py).
        location = f"{SCHWAB_API}/trader/v1/accounts/{account.hash_value}/orders/{order_id}"
        self.locations.append(location)
        return location

    def _new_order(self, account: FakeAccount, parsed: dict[str, Any]) -> FakeOrder:
        order = FakeOrder(
            id=next(self._ids),
            account_number=account.number,
            symbol=parsed["symbol"],
            instruction=parsed["instruction"],
            order_type=parsed["order_type"],
            duration=parsed["duration"],
            session=parsed["session"],
            quantity=parsed["quantity"],
            price=parsed["price"] if parsed["order_type"] in ("LIMIT", "STOP_LIMIT") else None,
            stop_price=parsed["stop_price"]
            if parsed["order_type"] in ("STOP", "STOP_LIMIT")
            else None,
            entered=self.now(),
        )
        if "legs" in parsed:
            order.legs = parsed["legs"]
            order.complex_type = parsed["complex"]
            order.price = parsed["price"] if parsed["order_type"] != "MARKET" else None
        account.orders[order.id] = order
        return order

    async def orders(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        login, account = found
        if request.method == "GET":
            return self._list(request, list(account.orders.values()))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return service_error(400, "A validation error occurred while processing the request.")
        parsed = self._parse_order(body)
        if isinstance(parsed, Response):
            return parsed
        refused = self._check_funds(account, parsed)
        if refused is not None:
            return refused
        order = self._new_order(account, parsed)
        self._publish(login, account, order, "OrderAccepted")
        await self._maybe_hang()
        if self.faults.omit_location > 0:
            self.faults.omit_location -= 1
            return Response(status_code=201)
        return Response(
            status_code=201, headers={"Location": self._location(request, account, order.id)}
        )

    async def _maybe_hang(self) -> None:
        """``timeout_after_accept``: the order exists now; the answer is held back."""
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)

    def _list(self, request: Request, orders: list[FakeOrder]) -> Response:
        params = request.query_params
        try:
            start = _parse_time(params["fromEnteredTime"])
            end = _parse_time(params["toEnteredTime"])
        except (KeyError, ValueError):
            return service_error(
                400, "Bad Request", "fromEnteredTime and toEnteredTime are required"
            )
        selected = [o for o in orders if start <= o.entered <= end]
        if "status" in params:
            selected = [o for o in selected if o.status == params["status"]]
        selected.sort(key=lambda o: o.entered, reverse=True)
        limit = int(params.get("maxResults", "3000"))
        return JSONResponse([o.wire() for o in selected[:limit]])

    async def all_orders(self, request: Request) -> Response:
        login = await self._gate(request)
        if isinstance(login, Response):
            return login
        return self._list(request, [o for a in login.accounts for o in a.orders.values()])

    async def order(self, request: Request) -> Response:
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        login, account = found
        raw_id = request.path_params["order_id"]
        order = account.orders.get(int(raw_id)) if raw_id.isdigit() else None
        if order is None:
            return service_error(404, "Order not found")
        if request.method == "GET":
            return JSONResponse(order.wire())
        if request.method == "DELETE":
            if order.status not in OPEN_STATUSES:
                return service_error(400, f"Order cannot be canceled in status {order.status}")
            now = self.now()
            order.status, order.closed = "CANCELED", now
            self._publish(login, account, order, "OrderUROutCompleted")
            return Response(status_code=200)
        if order.status not in CHANGEABLE:
            return service_error(400, f"Order cannot be replaced in status {order.status}")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return service_error(400, "A validation error occurred while processing the request.")
        parsed = self._parse_order(body)
        if isinstance(parsed, Response):
            return parsed
        new_key = (
            tuple((leg.symbol, leg.instruction) for leg in parsed["legs"])
            if "legs" in parsed
            else ((parsed["symbol"], parsed["instruction"]),)
        )
        if new_key != order.key():
            return service_error(400, "A replacement must keep the symbol and instruction")
        new = self._new_order(account, parsed)
        order.status, order.closed, order.replaced_by = "REPLACED", self.now(), new.id
        self._publish(login, account, order, "ChangeAccepted")
        self._publish(login, account, new, "OrderAccepted")
        await self._maybe_hang()
        return Response(
            status_code=201, headers={"Location": self._location(request, account, new.id)}
        )

    def _evaluate(self, login: FakeLogin, account: FakeAccount, order: FakeOrder) -> int:
        if order.legs:
            return self._evaluate_option(login, account, order)
        now = self.now()
        quote = self._instrument_price(order.symbol)
        side = OrderSide.buy if order.instruction in BUYS else OrderSide.sell
        decision = decide(
            OrderState(
                side=side,
                order_type=ORDER_TYPES[order.order_type],
                time_in_force=DURATIONS[order.duration],
                remaining=order.quantity - order.filled,
                limit_price=order.price,
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
            order.filled += qty
            order.executions.append((qty, price, now))
            position = account.positions.setdefault(order.symbol, FakePosition())
            account.cash += -qty * price if side is OrderSide.buy else qty * price
            _apply(position, qty if side is OrderSide.buy else -qty, price)
            done = order.filled >= order.quantity
            if done:
                order.status, order.closed = "FILLED", now
            gross = qty * price
            account.transactions.append(
                {
                    "activityId": next(self._seq),
                    "time": wire_time(now),
                    "description": f"{order.instruction} {qty} {order.symbol}",
                    "accountNumber": account.number,
                    "type": "TRADE",
                    "status": "VALID",
                    "subAccount": "CASH",
                    "tradeDate": wire_time(now),
                    "orderId": order.id,
                    "netAmount": num(-gross if side is OrderSide.buy else gross),
                    "transferItems": [
                        {
                            "instrument": {"assetType": "EQUITY", "symbol": order.symbol},
                            "amount": num(qty if side is OrderSide.buy else -qty),
                            "cost": num(-gross if side is OrderSide.buy else gross),
                            "price": num(price),
                            "positionEffect": (
                                "OPENING"
                                if order.instruction in ("BUY", "SELL_SHORT")
                                else "CLOSING"
                            ),
                        }
                    ],
                }
            )
            self._publish(
                login, account, order, "OrderFillCompleted" if done else "ExecutionCreated"
            )
        if decision.cancel_remainder and order.status == "WORKING":
            order.status, order.closed = "CANCELED", now
            self._publish(login, account, order, "OrderUROutCompleted")
        return filled

    # --- options -------------------------------------------------------------------------

    def today(self) -> date:
        return self.now().date()

    def _listed_contract(self, symbol: object) -> OptionContract | None:
        """A padded OCC symbol (exactly 21 characters, as Schwab takes them) of a contract
        the paper option market lists today; None otherwise."""
        if not isinstance(symbol, str) or len(symbol) != 21:
            return None
        try:
            contract = OptionContract.parse(symbol)
        except InvalidOptionSymbol:
            return None
        if contract.occ_padded != symbol or not self.options.is_listed(contract, self.today()):
            return None
        return contract

    def _option_quote(self, contract: OptionContract) -> OptionModelQuote:
        return self.options.quote(contract, self.now())

    def _contract_wire(self, contract: OptionContract) -> dict[str, Any]:
        """The chain's contract object. Live answers carry ``bid``/``ask``/``last``/``mark``
        beside the spec's schema (z-Wind/schwab_api ``option_chain.rs``); ``volatility`` is
        in percent; ``expirationDate`` like ``2024-05-17T20:00:00.000+00:00``."""
        q = self._option_quote(contract)
        expiry = datetime.combine(contract.expiration, EXPIRY_TIME_UTC)
        dte = (contract.expiration - self.today()).days
        intrinsic = Decimal(repr(intrinsic_value(contract, q.underlying_price))).quantize(CENT)
        right = "CALL" if contract.right is OptionRight.call else "PUT"
        greeks = q.greeks
        return {
            "putCall": right,
            "symbol": contract.occ_padded,
            "description": f"{contract.underlying} {contract.expiration:%m/%d/%Y} "
            f"{contract.strike} {right.title()}",
            "exchangeName": "OPR",
            "bid": num(q.bid),
            "ask": num(q.ask),
            "last": num(q.last),
            "mark": num(q.mark),
            "bidSize": 10,
            "askSize": 10,
            "bidAskSize": "10X10",
            "lastSize": 1,
            "highPrice": num(q.last),
            "lowPrice": num(q.last),
            "openPrice": 0,
            "closePrice": num(q.last),
            "totalVolume": 100,
            "tradeTimeInLong": epoch_ms(q.as_of),
            "quoteTimeInLong": epoch_ms(q.as_of),
            "netChange": 0,
            "volatility": num((greeks.iv or ZERO) * 100),
            "delta": num(greeks.delta or ZERO),
            "gamma": num(greeks.gamma or ZERO),
            "theta": num(greeks.theta or ZERO),
            "vega": num(greeks.vega or ZERO),
            "rho": num(greeks.rho or ZERO),
            "openInterest": 1000 + _ident(contract.occ_padded) % 5000,
            "timeValue": num(max(ZERO, q.mark - intrinsic)),
            "theoreticalOptionValue": num(q.mark),
            "theoreticalVolatility": 29,
            "optionDeliverablesList": [
                {
                    "symbol": contract.underlying,
                    "assetType": "STOCK",
                    "deliverableUnits": 100,
                }
            ],
            "strikePrice": num(contract.strike),
            "expirationDate": expiry.strftime("%Y-%m-%dT%H:%M:%S.000+00:00"),
            "daysToExpiration": dte,
            "expirationType": self._expiration_type(contract),
            "lastTradingDay": epoch_ms(expiry),
            "multiplier": 100,
            "settlementType": "P",
            "deliverableNote": "100 " + contract.underlying,
            "percentChange": 0,
            "markChange": 0,
            "markPercentChange": 0,
            "intrinsicValue": num(intrinsic),
            "extrinsicValue": num(max(ZERO, q.mark - intrinsic)),
            "optionRoot": contract.root,
            "exerciseType": "A",
            "high52Week": num(q.last),
            "low52Week": num(q.last),
            "inTheMoney": intrinsic > 0,
            "mini": False,
            "nonStandard": False,
            "pennyPilot": True,
        }

    def _expiration_type(self, contract: OptionContract) -> str:
        for item in self.options.expirations(contract.underlying, self.today()):
            if item.expiration == contract.expiration:
                return _EXPIRATION_CODES[item.expiration_type]
        return "S"

    async def chains(self, request: Request) -> Response:
        """``GET /marketdata/v1/chains`` (``strategy=SINGLE`` only). A symbol without options
        answers ``"status": "FAILED"`` with empty maps (the TD Ameritrade behaviour Schwab's
        chain kept; unconfirmed)."""
        login = await self._gate(request)
        if isinstance(login, Response):
            return login
        params = request.query_params
        symbol = params.get("symbol", "")
        if not symbol:
            return service_error(400, "Bad Request", "symbol is required")
        if params.get("strategy", "SINGLE") != "SINGLE":
            return service_error(400, "Bad Request", "only SINGLE chains are served by this fake")
        contract_type = params.get("contractType", "ALL")
        if contract_type not in ("CALL", "PUT", "ALL"):
            return service_error(400, "Bad Request", f"contractType {contract_type} is invalid")
        try:
            start = date.fromisoformat(params["fromDate"]) if "fromDate" in params else None
            end = date.fromisoformat(params["toDate"]) if "toDate" in params else None
            strike = _opt_decimal(params.get("strike"))
        except (ValueError, InvalidOperation):
            return service_error(400, "Bad Request", "fromDate/toDate/strike are invalid")
        body: dict[str, Any] = {
            "symbol": symbol,
            "status": "SUCCESS",
            "strategy": "SINGLE",
            "interval": 0,
            "isDelayed": False,
            "isIndex": False,
            "interestRate": num(Decimal(str(RISK_FREE_RATE * 100))),
            "underlyingPrice": 0,
            "volatility": 29,
            "daysToExpiration": 0,
            "numberOfContracts": 0,
            "assetMainType": "EQUITY",
            "assetSubType": "COE",
            "isChainTruncated": False,
            "callExpDateMap": {},
            "putExpDateMap": {},
        }
        if not self.options.has_options(symbol):
            body["status"] = "FAILED"
            return JSONResponse(body)
        body["underlyingPrice"] = num(self.quotes.quote(symbol, self.now()).mid)
        count = 0
        for item in self.options.expirations(symbol, self.today()):
            day = item.expiration
            if (start is not None and day < start) or (end is not None and day > end):
                continue
            key = f"{day.isoformat()}:{(day - self.today()).days}"
            for contract in self.options.contracts(symbol, day):
                if strike is not None and contract.strike != strike:
                    continue
                right = "CALL" if contract.right is OptionRight.call else "PUT"
                if contract_type not in ("ALL", right):
                    continue
                side = body["callExpDateMap" if right == "CALL" else "putExpDateMap"]
                strikes = side.setdefault(key, {})
                strikes.setdefault(str(float(contract.strike)), []).append(
                    self._contract_wire(contract)
                )
                count += 1
        body["numberOfContracts"] = count
        return JSONResponse(body)

    async def expiration_chain(self, request: Request) -> Response:
        """``GET /marketdata/v1/expirationchain`` (z-Wind/schwab_api
        ``ExpirationChain_real.json``); a symbol without options has an empty list."""
        login = await self._gate(request)
        if isinstance(login, Response):
            return login
        symbol = request.query_params.get("symbol", "")
        if not symbol:
            return service_error(400, "Bad Request", "symbol is required")
        items = []
        if self.options.has_options(symbol):
            for item in self.options.expirations(symbol, self.today()):
                items.append(
                    {
                        "expirationDate": item.expiration.isoformat(),
                        "daysToExpiration": (item.expiration - self.today()).days,
                        "expirationType": _EXPIRATION_CODES[item.expiration_type],
                        "settlementType": "P",
                        "optionRoots": symbol,
                        "standard": True,
                    }
                )
        return JSONResponse({"expirationList": items})

    def _parse_option_order(self, body: dict[str, Any]) -> dict[str, Any] | Response:
        """An option ``OrderRequest``: one leg (MARKET/LIMIT) or a combo (MARKET, NET_DEBIT,
        NET_CREDIT, NET_ZERO with a positive ``price``) of 2 to 4 legs on one underlying."""

        def bad(detail: str) -> Response:
            return service_error(
                400, "A validation error occurred while processing the request.", detail
            )

        raw_legs = body["orderLegCollection"]
        if len(raw_legs) > MAX_LEGS:
            return bad(f"an order takes at most {MAX_LEGS} legs")
        combo = len(raw_legs) > 1
        order_type = body.get("orderType")
        allowed = COMBO_ORDER_TYPES if combo else ("MARKET", "LIMIT")
        if order_type not in allowed:
            return bad(f"orderType {order_type} is not valid for this order")
        if body.get("duration") not in ("DAY", "GOOD_TILL_CANCEL"):
            return bad(f"duration {body.get('duration')} is not valid for an option order")
        if body.get("session") != "NORMAL":
            return bad("options trade in the NORMAL session only")
        complex_type = body.get("complexOrderStrategyType", "NONE")
        if complex_type not in COMPLEX_TYPES or (combo and complex_type == "NONE"):
            return bad(f"complexOrderStrategyType {complex_type} is not valid")
        try:
            price = _opt_decimal(body.get("price"))
            units = Decimal(str(body.get("quantity", raw_legs[0].get("quantity"))))
        except InvalidOperation:
            return bad("quantity and price must be numbers")
        if not units.is_finite() or units <= 0 or units != units.to_integral_value():
            return bad("quantity must be a positive whole number")
        if order_type in ("LIMIT", "NET_DEBIT", "NET_CREDIT") and (price is None or price <= 0):
            return bad("a positive price is required for this orderType")
        legs: list[FakeLeg] = []
        underlyings: set[str] = set()
        for n, raw in enumerate(raw_legs, start=1):
            instrument = raw.get("instrument") if isinstance(raw, dict) else None
            if not isinstance(instrument, dict):
                return bad("every leg needs an instrument")
            asset_type, symbol = instrument.get("assetType"), instrument.get("symbol")
            instruction = raw.get("instruction")
            if asset_type == "OPTION":
                contract = self._listed_contract(symbol)
                if contract is None:
                    return bad(f"Symbol {symbol} is invalid")
                if instruction not in OPTION_INSTRUCTIONS:
                    return bad(f"instruction {instruction} is not valid for an option")
                underlyings.add(contract.underlying)
            elif asset_type == "EQUITY" and combo:
                if symbol not in EQUITIES or instruction not in ("BUY", "SELL"):
                    return bad(f"the equity leg {symbol} {instruction} is not valid")
                underlyings.add(str(symbol))
            else:
                return bad(f"assetType {asset_type} is not valid in this order")
            try:
                qty = Decimal(str(raw.get("quantity")))
            except InvalidOperation:
                return bad("leg quantity must be a number")
            if not qty.is_finite() or qty <= 0 or qty % units != 0:
                return bad("each leg's quantity must be a whole multiple of the order quantity")
            legs.append(FakeLeg(n, str(symbol), str(asset_type), str(instruction), qty))
        if len(underlyings) != 1 or len({leg.symbol for leg in legs}) != len(legs):
            return bad("the legs must be distinct contracts on one underlying")
        underlying = next(iter(underlyings))
        return {
            "symbol": underlying if combo else legs[0].symbol,
            "instruction": "" if combo else legs[0].instruction,
            "order_type": order_type,
            "duration": body["duration"],
            "session": "NORMAL",
            "quantity": units,
            "price": price,
            "stop_price": None,
            "legs": legs,
            "complex": complex_type,
        }

    def _leg_prices(self, legs: list[FakeLeg]) -> list[tuple[Decimal, Decimal, Decimal]]:
        """(bid, ask, mark) per share of each leg now."""
        prices = []
        for leg in legs:
            if leg.asset_type == "OPTION":
                q = self._option_quote(OptionContract.parse(leg.symbol))
                prices.append((q.bid, q.ask, q.mark))
            else:
                e = self.quotes.quote(leg.symbol, self.now())
                prices.append((e.bid, e.ask, e.last))
        return prices

    def _net_cost(self, legs: list[FakeLeg], units: Decimal) -> Decimal:
        """What filling the legs at the market costs in dollars (negative: a credit)."""
        total = ZERO
        for leg, (bid, ask, _) in zip(legs, self._leg_prices(legs), strict=True):
            buy = leg.instruction.startswith("BUY")
            total += (ask if buy else -bid) * leg.quantity * leg.multiplier
        return total

    def _order_value(self, parsed: dict[str, Any]) -> Decimal:
        """Cash the order takes (positive) or brings (negative), at its price or the market."""
        legs: list[FakeLeg] = parsed["legs"]
        units: Decimal = parsed["quantity"]
        price: Decimal | None = parsed["price"]
        order_type = parsed["order_type"]
        if order_type == "NET_DEBIT" and price is not None:
            return price * units * 100
        if order_type == "NET_CREDIT" and price is not None:
            return -price * units * 100
        if order_type == "NET_ZERO":
            return ZERO
        if order_type == "LIMIT" and price is not None:
            sign = 1 if legs[0].instruction.startswith("BUY") else -1
            return sign * price * units * 100
        return self._net_cost(legs, units)

    def _evaluate_option(self, login: FakeLogin, account: FakeAccount, order: FakeOrder) -> int:
        """Fill a working option order whole when marketable (a combo atomically), each leg
        at its own side of the quote: buys at the ask, sells at the bid."""
        prices = self._leg_prices(order.legs)
        net = ZERO  # per strategy unit, per share
        for leg, (bid, ask, _) in zip(order.legs, prices, strict=True):
            ratio = leg.quantity / order.quantity
            weight = ratio if leg.asset_type == "OPTION" else ratio / 100
            net += (ask if leg.instruction.startswith("BUY") else -bid) * weight
        limit = order.price
        marketable = {
            "MARKET": True,
            "NET_DEBIT": limit is not None and net <= limit,
            "NET_CREDIT": limit is not None and -net >= limit,
            "NET_ZERO": net <= 0,
            "LIMIT": limit is not None
            and (
                prices[0][1] <= limit
                if order.legs[0].instruction.startswith("BUY")
                else prices[0][0] >= limit
            ),
        }[order.order_type]
        if not marketable:
            return 0
        now = self.now()
        executed: list[tuple[int, Decimal, Decimal]] = []
        for leg, (bid, ask, _) in zip(order.legs, prices, strict=True):
            buy = leg.instruction.startswith("BUY")
            price = ask if buy else bid
            executed.append((leg.leg_id, leg.quantity, price))
            signed = leg.quantity if buy else -leg.quantity
            account.cash -= signed * price * leg.multiplier
            position = account.positions.setdefault(leg.symbol, FakePosition())
            position.option = leg.asset_type == "OPTION"
            _apply(position, signed, price * leg.multiplier)
            account.transactions.append(
                {
                    "activityId": next(self._seq),
                    "time": wire_time(now),
                    "description": f"{leg.instruction} {leg.quantity} {leg.symbol}",
                    "accountNumber": account.number,
                    "type": "TRADE",
                    "status": "VALID",
                    "subAccount": "CASH",
                    "tradeDate": wire_time(now),
                    "orderId": order.id,
                    "netAmount": num(-signed * price * leg.multiplier),
                    "transferItems": [
                        {
                            "instrument": {"assetType": leg.asset_type, "symbol": leg.symbol},
                            "amount": num(signed),
                            "cost": num(-signed * price * leg.multiplier),
                            "price": num(price),
                            "positionEffect": "CLOSING"
                            if leg.instruction.endswith("CLOSE")
                            else "OPENING",
                        }
                    ],
                }
            )
        order.combo_fills.append((now, order.quantity, executed))
        order.filled = order.quantity
        order.status, order.closed = "FILLED", now
        self._publish(login, account, order, "OrderFillCompleted")
        return 1

    def settle_option(self, account: FakeAccount, symbol: str, event: str) -> dict[str, Any]:
        """An option's end of life as Schwab reports it: the position is gone and a
        ``RECEIVE_AND_DELIVER`` transaction removes it, ``description`` "REMOVAL OF OPTION DUE
        TO EXPIRATION|ASSIGNMENT|EXERCISE" (TD Ameritrade's wording, which Schwab kept), one
        ``transferItems`` entry of the contract with ``amount`` the position's change,
        ``cost``/``price`` 0 and ``positionEffect`` CLOSING (spec ``TransferItem``; the
        shape of recorded expirations in community fixtures). The underlying's delivery on
        an exercise or assignment is not modelled. Returns the transaction."""
        assert event in ("EXPIRATION", "ASSIGNMENT", "EXERCISE")
        contract = OptionContract.parse(symbol)
        position = account.positions.pop(contract.occ_padded)
        now = self.now()
        body = {
            "activityId": next(self._seq),
            "time": wire_time(now),
            "description": f"REMOVAL OF OPTION DUE TO {event}",
            "accountNumber": account.number,
            "type": "RECEIVE_AND_DELIVER",
            "status": "VALID",
            "subAccount": "CASH",
            "tradeDate": wire_time(now),
            "netAmount": 0,
            "transferItems": [
                {
                    "instrument": {
                        "assetType": "OPTION",
                        "symbol": contract.occ_padded,
                        "underlyingSymbol": contract.underlying,
                        "putCall": "CALL" if contract.right is OptionRight.call else "PUT",
                        "strikePrice": num(contract.strike),
                    },
                    "amount": num(-position.qty),
                    "cost": 0,
                    "price": 0,
                    "positionEffect": "CLOSING",
                }
            ],
        }
        account.transactions.append(body)
        return body

    def _option_position_wire(self, symbol: str, position: FakePosition) -> dict[str, Any]:
        """An option ``Position``: unsigned long/short quantities, ``averagePrice`` per share,
        ``marketValue`` signed (negative when short), the spec's ``AccountOption``
        instrument (``putCall``, ``underlyingSymbol``, ``optionMultiplier``)."""
        contract = OptionContract.parse(symbol)
        mark = self._option_quote(contract).mark
        market_value = (position.qty * mark * 100).quantize(Decimal("0.01"))
        avg = abs(position.cost_basis / (position.qty * 100)).quantize(Decimal("0.0001"))
        long_qty = position.qty if position.qty > 0 else ZERO
        short_qty = -position.qty if position.qty < 0 else ZERO
        body: dict[str, Any] = {
            "shortQuantity": num(short_qty),
            "averagePrice": num(avg),
            "currentDayProfitLoss": 0,
            "currentDayProfitLossPercentage": 0,
            "longQuantity": num(long_qty),
            "settledLongQuantity": num(long_qty),
            "settledShortQuantity": num(short_qty),
            "instrument": {
                "assetType": "OPTION",
                "cusip": f"0{contract.root}.{contract.expiration:%y%m%d}",
                "symbol": symbol,
                "description": f"{contract.underlying} {contract.expiration:%m/%d/%Y} "
                f"${contract.strike} {contract.right.value.title()}",
                "netChange": 0,
                "type": "VANILLA",
                "putCall": "CALL" if contract.right is OptionRight.call else "PUT",
                "underlyingSymbol": contract.underlying,
                "optionMultiplier": 100,
            },
            "marketValue": num(market_value),
            "maintenanceRequirement": 0,
            "previousSessionLongQuantity": 0,
            "previousSessionShortQuantity": 0,
            "currentDayCost": 0,
        }
        pl = (market_value - position.cost_basis).quantize(Decimal("0.01"))
        if position.qty > 0:
            body |= {"averageLongPrice": num(avg), "longOpenProfitLoss": num(pl)}
        else:
            body |= {"averageShortPrice": num(avg), "shortOpenProfitLoss": num(pl)}
        return body

    async def preview(self, request: Request) -> Response:
        """``POST /accounts/{hash}/previewOrder``: 200 with the order's balance, its
        validation (``rejects`` when cash or buying power falls short: Schwab's own words,
        z-Wind/schwab_api ``PreviewOrder_real.json``) and ``commissionAndFee``; a malformed
        order is a 400 like placing it."""
        found = await self._account_gate(request)
        if isinstance(found, Response):
            return found
        _, account = found
        try:
            body = json.loads(await request.body())
        except ValueError:
            return service_error(400, "A validation error occurred while processing the request.")
        parsed = self._parse_order(body)
        if isinstance(parsed, Response):
            return parsed
        if "legs" in parsed:
            value = self._order_value(parsed)
            contracts = sum(
                (leg.quantity for leg in parsed["legs"] if leg.asset_type == "OPTION"), ZERO
            )
            leg_rows = list(zip(parsed["legs"], self._leg_prices(parsed["legs"]), strict=True))
        else:
            quote = self._instrument_price(parsed["symbol"])
            sign = 1 if parsed["instruction"] == "BUY" else -1
            value = sign * parsed["quantity"] * (parsed["price"] or quote.ask)
            contracts = ZERO
            leg = FakeLeg(1, parsed["symbol"], "EQUITY", parsed["instruction"], parsed["quantity"])
            leg_rows = [(leg, (quote.bid, quote.ask, quote.last))]
        available = account.cash - self._reserved(account)
        commission = (contracts * OPTION_COMMISSION).quantize(Decimal("0.01"))
        reg_fee = (contracts * OPTION_REG_FEE).quantize(Decimal("0.01"))
        projected = available - max(value, ZERO) - commission - reg_fee
        validation: dict[str, Any] = {}
        if value > 0 and value + commission + reg_fee > available:
            validation["rejects"] = [
                {
                    "activityMessage": "You do not have enough available cash/buying power "
                    "for this order.",
                    "originalSeverity": "REJECT",
                }
            ]
        now = self.now()
        strategy = {
            "accountNumber": account.number,
            "advancedOrderType": "NONE",
            "enteredTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "orderBalance": {
                "orderValue": num(abs(value)),
                "projectedAvailableFund": num(projected),
                "projectedBuyingPower": num(projected),
                "projectedCommission": num(commission + reg_fee),
            },
            "orderStrategyType": "SINGLE",
            "orderVersion": 1,
            "session": parsed["session"],
            "status": "REJECTED" if validation else "ACCEPTED",
            "discretionary": False,
            "duration": parsed["duration"],
            "filledQuantity": 0,
            "orderType": parsed["order_type"],
            "orderValue": num(abs(value)),
            "quantity": num(parsed["quantity"]),
            "remainingQuantity": num(parsed["quantity"]),
            "sellNonMarginableFirst": False,
            "strategy": parsed.get("complex", "NONE"),
            "amountIndicator": "SHARES",
            "orderLegs": [
                {
                    "askPrice": num(ask),
                    "bidPrice": num(bid),
                    "lastPrice": num(mark),
                    "markPrice": num(mark),
                    "projectedCommission": 0,
                    "finalSymbol": leg.symbol,
                    "legId": leg.leg_id,
                    "assetType": leg.asset_type,
                    "instruction": leg.instruction,
                    "positionEffect": "CLOSING" if "CLOSE" in leg.instruction else "OPENING",
                    "instrument": {"assetType": leg.asset_type, "symbol": leg.symbol},
                }
                for leg, (bid, ask, mark) in leg_rows
            ],
        }
        if parsed["price"] is not None:
            strategy["price"] = num(parsed["price"])

        def charges(kind: str, values: list[tuple[str, Decimal]]) -> dict[str, Any]:
            return {
                f"{kind}Legs": [
                    {f"{kind}Values": [{"value": num(v), "type": t} for t, v in values]}
                ]
            }

        commission_block = charges(
            "commission", [("BASE_CHARGE", ZERO), ("COMMISSION", commission)]
        )
        return JSONResponse(
            {
                "orderId": 0,
                "orderStrategy": strategy,
                "orderValidationResult": validation,
                "commissionAndFee": {
                    "commission": commission_block,
                    "fee": charges(
                        "fee", [("SEC_FEE", ZERO), ("OPT_REG_FEE", reg_fee), ("TAF_FEE", ZERO)]
                    ),
                    "trueCommission": commission_block,
                },
            }
        )

    # --- streamer ------------------------------------------------------------------------

    async def streamer(self, websocket: WebSocket) -> None:
        await websocket.accept()
        login: FakeLogin | None = None
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def respond(request: dict[str, Any], code: int, msg: str) -> str:
            return json.dumps(
                {
                    "response": [
                        {
                            "service": request.get("service"),
                            "requestid": request.get("requestid"),
                            "command": request.get("command"),
                            "SchwabClientCorrelId": request.get("SchwabClientCorrelId"),
                            "timestamp": epoch_ms(self.now()),
                            "content": {"code": code, "msg": msg},
                        }
                    ]
                }
            )

        async def reader() -> None:
            nonlocal login
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, ValueError):
                while True:
                    raw = await websocket.receive_text()
                    message = json.loads(raw)
                    for request in message.get("requests") or []:
                        service, command = request.get("service"), request.get("command")
                        if service == "ADMIN" and command == "LOGIN":
                            token = self.access.get(
                                str((request.get("parameters") or {}).get("Authorization"))
                            )
                            ok = (
                                not self.faults.login_denied
                                and token is not None
                                and not token.grant.revoked
                                and token.expires > self.now()
                                and request.get("SchwabClientCustomerId")
                                == token.grant.login.customer_id
                            )
                            if not ok or token is None:
                                queue.put_nowait(respond(request, 3, "Login denied."))
                                queue.put_nowait(None)
                                return
                            login = token.grant.login
                            login.streams.add(queue)
                            queue.put_nowait(respond(request, 0, "server=fake;status=PN"))
                        elif login is None:
                            queue.put_nowait(respond(request, 21, "Not logged in"))
                        elif service == "ACCT_ACTIVITY" and command == "SUBS":
                            keys = (request.get("parameters") or {}).get("keys")
                            if keys != login.correl_id:
                                queue.put_nowait(respond(request, 22, "Failed command SUBS"))
                                continue
                            queue.put_nowait(respond(request, 0, "ACCT_ACTIVITY command succeeded"))
                            queue.put_nowait(self._subscribed_frame(login))
                        elif self.market.handles(service):
                            self.market.request(queue, request, respond)
                        elif service == "ADMIN" and command == "LOGOUT":
                            queue.put_nowait(respond(request, 0, "SUCCESS"))
                            queue.put_nowait(None)
                            return
                        else:
                            queue.put_nowait(respond(request, 21, "Bad command format"))
            queue.put_nowait(None)

        async def heartbeats() -> None:
            interval = self.faults.heartbeat_seconds
            if interval is None:
                return
            while True:
                await asyncio.sleep(interval)
                if not self.faults.stream_silent:
                    queue.put_nowait(
                        json.dumps({"notify": [{"heartbeat": str(epoch_ms(self.now()))}]})
                    )

        tasks = [asyncio.create_task(reader()), asyncio.create_task(heartbeats())]
        try:
            while True:
                frame = await queue.get()
                if frame is None:
                    break
                if self.faults.stream_silent and '"response"' not in frame:
                    continue
                await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if login is not None:
                login.streams.discard(queue)
            self.market.forget(queue)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1000)

    def _subscribed_frame(self, login: FakeLogin) -> str:
        return json.dumps(
            {
                "data": [
                    {
                        "service": "ACCT_ACTIVITY",
                        "timestamp": epoch_ms(self.now()),
                        "command": "SUBS",
                        "content": [
                            {"seq": 0, "key": login.correl_id, "1": "", "2": "SUBSCRIBED", "3": ""}
                        ],
                    }
                ]
            }
        )


def _ident(symbol: str) -> int:
    return zlib.crc32(symbol.encode())


def _opt_decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    result = Decimal(str(value))
    if not result.is_finite():
        raise InvalidOperation
    return result


def _parse_time(value: str) -> datetime:
    """``yyyy-MM-dd'T'HH:mm:ss.SSSZ`` (spec) or without millis (schwab-py sends that)."""
    text = value.strip().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

"""A fake SnapTrade (partner API, Connection Portal, webhooks) for tests.

It speaks the real protocol, from the official OpenAPI spec (passiv/snaptrade-sdks
``api.yaml``, copy in ../shared/specs/snaptrade-api.yaml) and docs (``docs/*.md`` there):

* every path under both the spec's root (``/accounts``) and the legacy ``/api/v1`` prefix
  (whose answers carry ``Deprecation: @1781222400``);
* request signing checked as SnapTrade checks it: ``clientId`` and ``timestamp`` in the
  query, ``Signature`` = base64(HMAC-SHA256(consumerKey, canonical JSON of ``{"content",
  "path", "query"}``)) over the path and raw query *as received*
  (docs/request-signatures.md); a bad one is 401 "Unable to verify signature sent" (1076,
  the spec's ``401FailedRequestResponse`` example);
* ``userId`` + ``userSecret`` on user-scoped paths (a wrong or rotated secret is a 401);
* the spec's schemas field for field (``Account``, ``BrokerageAuthorization``, ``Balance``,
  ``AllAccountPositionsResponse``, ``AccountOrderRecord`` with decimal strings,
  ``ManualTradeAndImpact``, ``SymbolsQuotes``, ``PaginatedUniversalActivity``, ...), the
  status vocabulary (``ACCEPTED``, ``PARTIAL``, ``EXECUTED``, ``CANCELED``, ``REPLACED``...),
  error bodies ``{"detail", "status_code", "code"}`` (docs/ratelimiting.md's 429 body
  verbatim; the spec's 4xx/5xx examples for the others), ``X-RateLimit-*`` and
  ``X-Request-ID`` on every answer, 250 requests per minute per clientId;
* the Connection Portal: ``POST /snapTrade/login`` answers a ``redirectURI`` shaped like the
  documented one but on this fake's own host (standing in for app.snaptrade.com). A GET on
  it shows a one-button page; POSTing it (what the user's browser does when they finish)
  links the brokerage and redirects to ``customRedirect`` with ``?status=SUCCESS&
  connection_id=...`` (docs/implement-connection-portal.md);
* webhooks (docs/webhooks.md): signed with the consumer key over the canonical payload,
  sent to ``webhook_url`` (USER_REGISTERED, CONNECTION_ADDED, CONNECTION_BROKEN,
  CONNECTION_FIXED, USER_DELETED, and whatever a test sends with ``send_webhook``).

Brokerages and whether they trade through SnapTrade follow docs/broker-access-guide.md:
Interactive Brokers, Robinhood and Fidelity are read only; Schwab trades (with the
partner's own Schwab keys, "bring your own API keys"). Their slugs (``SCHWAB``,
``INTERACTIVE-BROKERS``, ``FIDELITY``) are unconfirmed; ``ROBINHOOD`` and ``ALPACA`` are
the spec's examples.

Not documented by SnapTrade, so chosen here and marked in the code: the wording and code of
refusals relayed from a brokerage (insufficient funds, a finished order), of a wrong
``userSecret``, and of a duplicate ``userId``. The adapter reads status codes, and the
reason text only to tell insufficient funds and finished orders apart.

Orders match by the paper broker's rules (``app.paper.matching.decide``) against the paper
market's prices when the test calls ``match()``; nothing moves on its own. Fault switches
live in ``faults`` (see ``Faults``); ``rotate_secret`` revokes a user's secret and
``disable_authorization`` breaks a brokerage connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from app.brokers.base import AssetClass, OptionContract, OrderSide, OrderType, TimeInForce
from app.paper.matching import OrderState, decide
from app.paper.options_market import SeededOptionMarket
from app.paper.quotes import UNIVERSE, SeededQuoteSource
from tests.fakes.snaptrade import options as opt

ZERO = Decimal(0)
LEGACY_PREFIX = "/api/v1"
DEPRECATION = "@1781222400"  # spec, AccountInformation_getAccountActivities
RATE_LIMIT = 250  # per clientId per rolling minute (docs/ratelimiting.md)
TRADE_LIFETIME = timedelta(minutes=5)  # "the Trade object returned expires after 5 minutes"
PORTAL_LIFETIME = timedelta(minutes=5)
OPEN = frozenset(
    {"PENDING", "ACCEPTED", "PARTIAL", "CANCEL_PENDING", "REPLACE_PENDING", "QUEUED", "TRIGGERED"}
)
USD = {"id": "57f81c53-bdda-45a7-a51f-032afd1ae41b", "code": "USD", "name": "US Dollar"}
_TYPES = {"Market", "Limit", "Stop", "StopLimit"}
_TIFS = {
    "Day": TimeInForce.day,
    "GTC": TimeInForce.gtc,
    "FOK": TimeInForce.fok,
    "IOC": TimeInForce.ioc,
}
_TYPE_OF = {
    "Market": OrderType.market,
    "Limit": OrderType.limit,
    "Stop": OrderType.stop,
    "StopLimit": OrderType.stop_limit,
}


def iso(at: datetime) -> str:
    """SnapTrade's timestamps: ISO 8601 UTC with microseconds (``2024-07-30T22:51:49.746270Z``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def num(value: Decimal) -> float | int:
    """A JSON number (balances, quotes, forms are ``type: number`` in the spec)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def text(value: Decimal | None) -> str | None:
    """Order records carry quantities and prices as decimal strings."""
    return None if value is None else str(value)


def canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def sign(consumer_key: str, message: str) -> str:
    digest = hmac.new(consumer_key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def error(status: int, detail: str, code: str, **headers: str) -> JSONResponse:
    """``{"detail", "status_code", "code"}`` (docs/ratelimiting.md, spec 5xx examples)."""
    return JSONResponse(
        {"detail": detail, "status_code": status, "code": code}, status_code=status, headers=headers
    )


def not_found() -> JSONResponse:
    return error(404, "The requested resource does not exist.", "1011")  # spec 404 example


def bad_request(detail: str = "Unable to verify data sent") -> JSONResponse:
    return error(400, detail, "1076")  # spec 400 example (code); detail per case


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds before every API answer. ``server_errors`` /
    ``server_error_status``: the next N API requests (of ``server_errors_method``, and paths
    matching the regular expression ``server_errors_path``, when set) answer 5xx (503 with
    the spec's "busy syncing" body, else 500). ``rate_limited`` / ``rate_limit_reset``: the
    next N answer 429 with the documented body and ``X-RateLimit-Remaining: 0`` (SnapTrade
    sends no ``Retry-After``; ``X-RateLimit-Reset`` says when). ``timeout_after_accept``:
    the next N ``POST /trade/{tradeId}`` (or ``POST .../trading/options``) place the order,
    then hold the answer ``hang_seconds``. ``max_clock_skew``: refuse timestamps further off
    than this (SnapTrade's window is undocumented; off by default).
    """

    latency: float = 0.0
    server_errors: int = 0
    server_error_status: int = 500
    server_errors_method: str | None = None
    server_errors_path: str | None = None
    rate_limited: int = 0
    rate_limit_reset: int = 7
    timeout_after_accept: int = 0
    hang_seconds: float = 30.0
    max_clock_skew: float | None = None
    # The brokerage has no option impact: ``.../trading/options/impact`` answers 400 (spec:
    # "Invalid request, or option impact is not supported for this brokerage"; wording ours).
    no_option_impact: bool = False


@dataclass(frozen=True)
class FakeBrokerage:
    slug: str
    name: str
    allows_trading: bool
    id: str = ""

    def wire(self) -> dict[str, Any]:
        """The spec's ``Brokerage`` (example values where they describe the brokerage)."""
        lower = self.slug.lower()
        return {
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "display_name": self.name,
            "description": f"{self.name} (fake)",
            "aws_s3_logo_url": f"https://passiv-brokerage-logos.s3.ca-central-1.amazonaws.com/{lower}-logo.png",
            "aws_s3_square_logo_url": None,
            "url": None,
            "enabled": True,
            "maintenance_mode": False,
            "is_degraded": False,
            "allows_trading": self.allows_trading,
            "allows_fractional_units": None,
            "has_reporting": None,
            "is_real_time_connection": True,
            "brokerage_type": {
                "id": "f9fdc6ae-1aec-4ba9-bcfb-9c8b8e3d2e2e",
                "name": "Traditional Brokerage",
            },
            "exchanges": [],
            "open_url": None,
        }


def _brokerage(slug: str, name: str, allows_trading: bool) -> FakeBrokerage:
    return FakeBrokerage(
        slug, name, allows_trading, str(uuid.uuid5(uuid.NAMESPACE_URL, f"snaptrade:{slug}"))
    )


BROKERAGES = {
    b.slug: b
    for b in (
        _brokerage("SCHWAB", "Schwab", True),
        _brokerage("INTERACTIVE-BROKERS", "Interactive Brokers", False),
        _brokerage("ROBINHOOD", "Robinhood", False),
        _brokerage("FIDELITY", "Fidelity", False),
        _brokerage("ALPACA", "Alpaca", True),
    )
}


@dataclass
class FakeOrder:
    id: str
    account_id: str
    symbol: str
    action: str
    order_type: str
    time_in_force: str
    units: Decimal
    price: Decimal | None
    stop: Decimal | None
    time_placed: datetime
    status: str = "ACCEPTED"
    filled: Decimal = ZERO
    canceled: Decimal = ZERO
    execution_price: Decimal | None = None
    time_updated: datetime | None = None
    time_executed: datetime | None = None
    stop_triggered: bool = False
    # A dollar-amount order (``notional_value``): ``units`` stays 0 until it fills.
    notional: Decimal | None = None


@dataclass
class FakePosition:
    units: Decimal = ZERO
    cost: Decimal = ZERO  # total cost of the units held


@dataclass
class FakeAccount:
    id: str
    authorization_id: str
    name: str
    number: str
    cash: Decimal
    created_at: datetime
    positions: dict[str, FakePosition] = field(default_factory=dict)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    activities: list[dict[str, Any]] = field(default_factory=list)
    brokerage: str = ""
    options: opt.OptionBook = field(default_factory=opt.OptionBook)


@dataclass
class FakeAuthorization:
    id: str
    brokerage: FakeBrokerage
    type: str  # "read" | "trade"
    created_at: datetime
    disabled: bool = False
    disabled_at: datetime | None = None
    accounts: dict[str, FakeAccount] = field(default_factory=dict)


@dataclass
class FakeUser:
    user_id: str
    secret: str
    created_at: datetime
    authorizations: dict[str, FakeAuthorization] = field(default_factory=dict)


@dataclass
class PortalSession:
    token: str
    session_id: str
    user_id: str
    broker: str | None
    reconnect: str | None
    connection_type: str
    custom_redirect: str | None
    expires_at: datetime
    used: bool = False


@dataclass
class FakeTrade:
    id: str
    account_id: str
    action: str
    symbol: str
    order_type: str
    time_in_force: str
    units: Decimal
    price: Decimal | None
    stop: Decimal | None
    created_at: datetime
    used: bool = False
    notional: Decimal | None = None


def universal_symbol(symbol: str) -> dict[str, Any]:
    """The spec's ``UniversalSymbol`` of a paper-market instrument (a NASDAQ listing)."""
    instrument = UNIVERSE[symbol]
    crypto = instrument.asset_class is AssetClass.crypto
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"snaptrade-symbol:{symbol}")),
        "symbol": symbol,
        "raw_symbol": symbol,
        "description": f"{symbol} (fake)",
        "currency": USD,
        "exchange": {
            "id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
            "code": "NASDAQ",
            "mic_code": "XNAS",
            "name": "Nasdaq",
            "timezone": "America/New_York",
            "start_time": "09:30:00",
            "close_time": "16:00:00",
            "suffix": None,
        },
        "type": {
            "id": "2bcd7cc3-e922-4976-bce1-9858296801c4",
            "code": "crypto" if crypto else "cs",
            "description": "Cryptocurrency" if crypto else "Common Stock",
            "is_supported": True,
        },
        "figi_code": None,
        "figi_instrument": None,
        "currencies": [USD],
    }


SYMBOL_BY_ID = {universal_symbol(s)["id"]: s for s in UNIVERSE}


class FakeSnapTrade:
    """The fake's state, its fault switches, its webhook sender and its ASGI ``app``."""

    def __init__(
        self,
        *,
        client_id: str = "BGWTEST",
        consumer_key: str | None = None,
        seed: int = 20260522,
        clock: Callable[[], datetime] | None = None,
        webhook_url: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.consumer_key = consumer_key or "ck-" + uuid.uuid4().hex + uuid.uuid4().hex
        self.quotes = SeededQuoteSource(seed)
        self.options = SeededOptionMarket(self.quotes)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.webhook_url = webhook_url
        self.webhook_secret = uuid.uuid4().hex[:20]  # deprecated field still in payloads
        self.users: dict[str, FakeUser] = {}
        self.accounts: dict[str, tuple[FakeUser, FakeAuthorization, FakeAccount]] = {}
        self.sessions: dict[str, PortalSession] = {}
        self.trades: dict[str, FakeTrade] = {}
        self.default_cash = Decimal(100000)
        # (method, path without prefix) of every API request that passed the signature
        self.requests: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str, int]] = []  # (method, path, status) refused
        self.webhooks: list[tuple[str, int | None]] = []  # (eventType, our answer status)
        self._deliveries: set[asyncio.Task[None]] = set()
        self._window: deque[float] = deque()
        self._release = asyncio.Event()
        routes = [
            Route("/", self.status, methods=["GET"]),
            Route("/snapTrade/listUsers", self.list_users, methods=["GET"]),
            Route("/snapTrade/registerUser", self.register_user, methods=["POST"]),
            Route("/snapTrade/deleteUser", self.delete_user, methods=["DELETE"]),
            Route("/snapTrade/login", self.login, methods=["POST"]),
            Route("/snapTrade/resetUserSecret", self.reset_secret, methods=["POST"]),
            Route("/snapTrade/redeemToken", self.portal, methods=["GET", "POST"]),
            Route("/authorizations", self.list_authorizations, methods=["GET"]),
            Route("/authorizations/{auth_id}", self.get_authorization, methods=["GET"]),
            Route("/authorizations/{auth_id}/disable", self.disable, methods=["POST"]),
            Route("/accounts", self.list_accounts, methods=["GET"]),
            Route("/accounts/{account_id}", self.get_account, methods=["GET"]),
            Route("/accounts/{account_id}/balances", self.balances, methods=["GET"]),
            Route("/accounts/{account_id}/positions/all", self.positions, methods=["GET"]),
            Route("/accounts/{account_id}/holdings", self.holdings, methods=["GET"]),
            Route("/accounts/{account_id}/orders", self.orders, methods=["GET"]),
            Route("/accounts/{account_id}/recentOrders", self.recent_orders, methods=["GET"]),
            Route("/accounts/{account_id}/orders/details", self.order_detail, methods=["POST"]),
            Route(
                "/accounts/{account_id}/orders/details/v2/{order_id}",
                self.order_detail_v2,
                methods=["GET"],
            ),
            Route("/accounts/{account_id}/orders/v2", self.orders_v2, methods=["GET"]),
            Route("/accounts/{account_id}/quotes/options", self.option_quote, methods=["GET"]),
            Route(
                "/accounts/{account_id}/trading/options/impact",
                self.option_impact,
                methods=["POST"],
            ),
            Route("/accounts/{account_id}/trading/options", self.place_option, methods=["POST"]),
            Route("/accounts/{account_id}/activities", self.activities, methods=["GET"]),
            Route("/accounts/{account_id}/quotes", self.account_quotes, methods=["GET"]),
            Route("/accounts/{account_id}/trading/cancel", self.cancel, methods=["POST"]),
            Route("/accounts/{account_id}/trading/replace", self.replace, methods=["POST"]),
            Route("/symbols/{query}", self.symbol, methods=["GET"]),
            Route("/trade/impact", self.impact, methods=["POST"]),
            # Trading_placeForceOrder: place without impact (before /trade/{tradeId}).
            Route("/trade/place", self.place_force, methods=["POST"]),
            Route("/trade/{trade_id}", self.place, methods=["POST"]),
        ]
        self.app = Starlette(
            routes=[Mount(LEGACY_PREFIX, routes=routes), *routes],
            # Unknown paths and methods answer SnapTrade's JSON envelope, never plain text.
            exception_handlers={404: self._no_route, 405: self._no_route},
        )

    # --- test controls -------------------------------------------------------------------

    def add_user(self, user_id: str | None = None) -> FakeUser:
        user = FakeUser(
            user_id=user_id or f"user-{uuid.uuid4().hex[:12]}",
            secret=str(uuid.uuid4()),
            created_at=self.clock(),
        )
        self.users[user.user_id] = user
        return user

    def link(
        self,
        user: FakeUser,
        broker: str = "SCHWAB",
        *,
        connection_type: str = "trade-if-available",
        cash: Decimal | str | None = None,
        accounts: int = 1,
    ) -> FakeAuthorization:
        """What the Connection Portal does when the user finishes: a brokerage login (or the
        existing one for that brokerage: SnapTrade de-duplicates) with its accounts."""
        brokerage = BROKERAGES[broker]
        trading = connection_type in ("trade", "trade-if-available") and brokerage.allows_trading
        now = self.clock()
        auth = FakeAuthorization(
            id=str(uuid.uuid4()),
            brokerage=brokerage,
            type="trade" if trading else "read",
            created_at=now,
        )
        user.authorizations[auth.id] = auth
        for index in range(accounts):
            self.add_account(user, auth, cash=cash, name=f"{brokerage.name} Individual {index + 1}")
        return auth

    def add_account(
        self,
        user: FakeUser,
        auth: FakeAuthorization,
        *,
        cash: Decimal | str | None = None,
        name: str | None = None,
    ) -> FakeAccount:
        now = self.clock()
        amount = Decimal(cash) if cash is not None else self.default_cash
        account = FakeAccount(
            id=str(uuid.uuid4()),
            authorization_id=auth.id,
            name=name or f"{auth.brokerage.name} Individual",
            number=f"{uuid.uuid4().int % 10**10:010d}",
            cash=amount,
            created_at=now,
            brokerage=auth.brokerage.name,
        )
        account.activities.append(
            self._activity(account, "CONTRIBUTION", amount, now, description="Deposit")
        )
        auth.accounts[account.id] = account
        self.accounts[account.id] = (user, auth, account)
        return account

    def rotate_secret(self, user_id: str) -> str:
        """The user's secret changes (as ``resetUserSecret`` does): the old one is refused."""
        user = self.users[user_id]
        user.secret = str(uuid.uuid4())
        return user.secret

    async def disable_authorization(self, auth_id: str) -> None:
        """The brokerage login breaks (a changed password, an expired session)."""
        for user in self.users.values():
            auth = user.authorizations.get(auth_id)
            if auth is not None:
                auth.disabled, auth.disabled_at = True, self.clock()
                self._emit("CONNECTION_BROKEN", user, brokerageAuthorizationId=auth.id)
                return
        raise KeyError(auth_id)

    def order_count(self, account_id: str) -> int:
        return len(self.accounts[account_id][2].orders)

    def release_hung(self) -> None:
        """Let requests held by ``timeout_after_accept`` or latency finish (at shutdown)."""
        self._release.set()

    async def flush_webhooks(self) -> None:
        """Wait until every webhook sent so far was answered (or failed)."""
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    def webhook_payload(self, event_type: str, user_id: str, **extra: Any) -> dict[str, Any]:
        """A payload as docs/webhooks.md shows them."""
        return {
            "webhookId": str(uuid.uuid4()),
            "clientId": self.client_id,
            "eventTimestamp": self.clock().astimezone(UTC).isoformat(),
            "userId": user_id,
            "eventType": event_type,
            "webhookSecret": self.webhook_secret,
            **extra,
        }

    def webhook_signature(self, payload: dict[str, Any]) -> str:
        """``Signature``: HMAC-SHA256 of the canonical payload with the consumer key."""
        return sign(self.consumer_key, canonical(payload))

    async def send_webhook(
        self,
        event_type: str,
        user_id: str,
        *,
        signature: str | None = None,
        payload: dict[str, Any] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        """POST one webhook to ``webhook_url`` now and return the answer."""
        assert self.webhook_url is not None, "no webhook_url configured"
        body = (
            payload if payload is not None else self.webhook_payload(event_type, user_id, **extra)
        )
        headers = {
            "Content-Type": "application/json",
            "Signature": signature if signature is not None else self.webhook_signature(body),
        }
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(self.webhook_url, content=json.dumps(body), headers=headers)
        self.webhooks.append((str(body.get("eventType")), answer.status_code))
        return answer

    def _emit(self, event_type: str, user: FakeUser, **extra: Any) -> None:
        """Deliver a webhook in the background, as SnapTrade does (not inside the request)."""
        if self.webhook_url is None:
            self.webhooks.append((event_type, None))
            return

        async def deliver() -> None:
            try:
                await self.send_webhook(event_type, user.user_id, **extra)
            except httpx.HTTPError:
                self.webhooks.append((event_type, None))

        task = asyncio.get_running_loop().create_task(deliver())
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def match(self) -> int:
        """Evaluate every working order against the current quote; returns fills made."""
        fills = 0
        for _, _, account in list(self.accounts.values()):
            for order in list(account.orders.values()):
                if order.status in ("ACCEPTED", "PARTIAL"):
                    fills += self._evaluate(account, order)
            for option_order in list(account.options.orders.values()):
                if option_order.status == "ACCEPTED":
                    fills += self._evaluate_option(account, option_order)
        return fills

    # --- plumbing --------------------------------------------------------------------------

    def _headers(self, request: Request) -> dict[str, str]:
        now = time.monotonic()
        while self._window and now - self._window[0] > 60:
            self._window.popleft()
        headers = {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(max(0, RATE_LIMIT - len(self._window))),
            "X-RateLimit-Reset": str(60 - int(now - self._window[0]) if self._window else 60),
            "X-Request-ID": uuid.uuid4().hex,
        }
        if request.url.path.startswith(LEGACY_PREFIX + "/"):
            headers["Deprecation"] = DEPRECATION
        return headers

    @staticmethod
    def _route_path(request: Request) -> str:
        path = request.url.path
        return path[len(LEGACY_PREFIX) :] if path.startswith(LEGACY_PREFIX + "/") else path

    async def _gate(self, request: Request, *, user: bool = True) -> FakeUser | Response | None:
        """Signature, rate limit, faults, then the user. Returns the user (or None for
        partner-level paths) or the refusal to send."""
        raw = await request.body()  # received in full before any delay, as a real server
        method, path = request.method, self._route_path(request)
        if self.faults.latency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.latency)
        refusal = self._verify(request, raw)
        if refusal is None:
            refusal = self._limits(request, method, path)
        if refusal is not None:
            self.refused.append((method, path, refusal.status_code))
            return refusal
        self.requests.append((method, path))
        if not user:
            return None
        user_id = request.query_params.get("userId")
        secret = request.query_params.get("userSecret")
        found = self.users.get(user_id or "")
        if found is None or not hmac.compare_digest(found.secret, secret or ""):
            # Text and code of this refusal are not documented (401 is: spec,
            # resetUserSecret "Wrong clientId, userId or userSecret provided").
            return error(401, "Invalid userId or userSecret provided", "1083")
        return found

    def _verify(self, request: Request, raw: bytes) -> Response | None:
        query = request.scope.get("query_string", b"").decode("latin-1")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        params = parse_qs(query, keep_blank_values=True)
        refused = error(401, "Unable to verify signature sent", "1076")
        if params.get("clientId") != [self.client_id]:
            return refused
        stamp = params.get("timestamp", [""])
        if len(stamp) != 1 or not stamp[0].isdigit():
            return refused
        skew = self.faults.max_clock_skew
        if skew is not None and abs(time.time() - int(stamp[0])) > skew:
            return refused
        try:
            content = json.loads(raw) if raw else None
        except ValueError:
            return bad_request()
        if content == {}:
            content = None
        expected = sign(
            self.consumer_key, canonical({"content": content, "path": path, "query": query})
        )
        if not hmac.compare_digest(expected, request.headers.get("Signature", "")):
            return refused
        return None

    def _limits(self, request: Request, method: str, path: str) -> Response | None:
        if self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            return self._throttled(self.faults.rate_limit_reset)
        self._window.append(time.monotonic())
        if len(self._window) > RATE_LIMIT:
            return self._throttled(60 - int(time.monotonic() - self._window[0]))
        method_ok = self.faults.server_errors_method in (None, method)
        pattern = self.faults.server_errors_path
        path_ok = pattern is None or re.search(pattern, path) is not None
        if self.faults.server_errors > 0 and method_ok and path_ok:
            self.faults.server_errors -= 1
            if self.faults.server_error_status == 503:  # spec 503BrokerageRequestResponse
                return error(
                    503,
                    "Unable to sync with brokerage account. Invalid response from Brokerage API.",
                    "3002",
                )
            status = self.faults.server_error_status
            return error(status, "Encountered an unexpected exception.", "1000")
        return None

    @staticmethod
    def _throttled(reset: int) -> JSONResponse:
        # docs/ratelimiting.md: the body verbatim; the headers say which limit was hit.
        return error(
            429,
            f"Request was throttled. Expected available in {reset} seconds.",
            "0000",
            **{
                "X-RateLimit-Limit": str(RATE_LIMIT),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            },
        )

    def _answer(self, request: Request, response: Response) -> Response:
        for name, value in self._headers(request).items():
            response.headers.setdefault(name, value)
        return response

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        # spec 404 example: {"detail": "The requested resource does not exist.", ...}
        return self._answer(request, not_found())

    def _json(self, request: Request, body: Any, status: int = 200) -> Response:
        return self._answer(request, JSONResponse(body, status_code=status))

    def _account_of(
        self, user: FakeUser, account_id: str
    ) -> tuple[FakeAuthorization, FakeAccount] | None:
        found = self.accounts.get(account_id)
        if found is None or found[0] is not user:
            return None
        return found[1], found[2]

    async def _body(self, request: Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.body() or b"{}", parse_float=Decimal)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    # --- status, users, portal -----------------------------------------------------------

    async def status(self, request: Request) -> Response:
        return self._json(request, {"version": 153, "timestamp": iso(self.clock()), "online": True})

    async def list_users(self, request: Request) -> Response:
        gate = await self._gate(request, user=False)
        if isinstance(gate, Response):
            return self._answer(request, gate)
        return self._json(request, sorted(self.users))

    async def register_user(self, request: Request) -> Response:
        gate = await self._gate(request, user=False)
        if isinstance(gate, Response):
            return self._answer(request, gate)
        body = await self._body(request)
        user_id = body.get("userId") if body else None
        if not isinstance(user_id, str) or not user_id:
            return self._answer(request, bad_request())
        if user_id in self.users:
            # Wording undocumented; a userId can be registered once.
            return self._answer(request, bad_request("User already exist"))
        user = self.add_user(user_id)
        self._emit("USER_REGISTERED", user)
        return self._json(request, {"userId": user.user_id, "userSecret": user.secret})

    async def delete_user(self, request: Request) -> Response:
        gate = await self._gate(request, user=False)
        if isinstance(gate, Response):
            return self._answer(request, gate)
        user = self.users.pop(request.query_params.get("userId", ""), None)
        if user is None:
            return self._answer(request, not_found())
        for auth in user.authorizations.values():
            for account_id in auth.accounts:
                self.accounts.pop(account_id, None)
        self._emit("USER_DELETED", user)
        return self._json(
            request,
            {
                "status": "deleted",
                "detail": "User queued for deletion; please wait for webhook for confirmation.",
                "userId": user.user_id,
            },
        )

    async def reset_secret(self, request: Request) -> Response:
        gate = await self._gate(request, user=False)
        if isinstance(gate, Response):
            return self._answer(request, gate)
        body = await self._body(request) or {}
        user = self.users.get(str(body.get("userId")))
        if user is None or user.secret != body.get("userSecret"):
            return self._answer(request, error(401, "Unable to verify signature sent", "1076"))
        return self._json(
            request, {"userId": user.user_id, "userSecret": self.rotate_secret(user.user_id)}
        )

    async def login(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        body = await self._body(request)
        if body is None:
            return self._answer(request, bad_request())
        broker = body.get("broker")
        connection_type = body.get("connectionType", "read")
        reconnect = body.get("reconnect")
        if (broker is not None and broker not in BROKERAGES) or connection_type not in (
            "read",
            "trade",
            "trade-if-available",
        ):
            return self._answer(request, error(400, "Invalid input", "1012"))
        if reconnect is not None and not any(
            a.id == reconnect for a in user.authorizations.values()
        ):
            return self._answer(request, error(400, "Invalid input", "1012"))
        session = PortalSession(
            token=base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode(),
            session_id=str(uuid.uuid4()),
            user_id=user.user_id,
            broker=broker,
            reconnect=reconnect,
            connection_type=str(connection_type),
            custom_redirect=body.get("customRedirect"),
            expires_at=self.clock() + PORTAL_LIFETIME,
        )
        self.sessions[session.token] = session
        query = {"token": session.token, "clientId": self.client_id}
        if broker is not None:
            query["broker"] = broker
        query |= {"connectionPortalVersion": "v4", "sessionId": session.session_id}
        base = str(request.base_url).rstrip("/")
        return self._json(
            request,
            {
                "redirectURI": f"{base}/snapTrade/redeemToken?{urlencode(query)}",
                "sessionId": session.session_id,
            },
        )

    async def portal(self, request: Request) -> Response:
        """The Connection Portal stand-in: GET shows it, POST is the user finishing it."""
        token = request.query_params.get("token", "")
        session = self.sessions.get(token)
        if session is None or session.used or session.expires_at < self.clock():
            return HTMLResponse("<p>This link has expired.</p>", status_code=410)
        if request.method == "GET":
            choices = "".join(
                f'<option value="{b}">{html.escape(BROKERAGES[b].name)}</option>'
                for b in ([session.broker] if session.broker else BROKERAGES)
            )
            return HTMLResponse(
                "<form method=post>"
                f'<select name="broker">{choices}</select>'
                '<button type="submit">Connect</button></form>'
            )
        form = parse_qs((await request.body()).decode())
        broker = session.broker or form.get("broker", ["SCHWAB"])[0]
        cash = form.get("cash", [None])[0]
        user = self.users.get(session.user_id)
        if user is None or broker not in BROKERAGES:
            return HTMLResponse("<p>Unknown brokerage.</p>", status_code=400)
        session.used = True
        if session.reconnect is not None:
            auth = user.authorizations[session.reconnect]
            auth.disabled, auth.disabled_at = False, None
            self._emit("CONNECTION_FIXED", user, brokerageAuthorizationId=auth.id)
        else:
            existing = next(
                (a for a in user.authorizations.values() if a.brokerage.slug == broker), None
            )
            auth = existing or self.link(
                user,
                broker,
                connection_type=session.connection_type,
                cash=Decimal(cash) if cash else None,
            )
            self._emit(
                "CONNECTION_ADDED",
                user,
                brokerageId=auth.brokerage.id,
                brokerageAuthorizationId=auth.id,
            )
        if session.custom_redirect:
            outcome = urlencode({"status": "SUCCESS", "connection_id": auth.id})
            target = f"{session.custom_redirect}?{outcome}"
            return RedirectResponse(target, status_code=303)
        return HTMLResponse(f"<p>Connected: {html.escape(auth.brokerage.name)}</p>")

    # --- connections ------------------------------------------------------------------------

    def _authorization_wire(self, auth: FakeAuthorization) -> dict[str, Any]:
        return {
            "id": auth.id,
            "created_date": iso(auth.created_at),
            "brokerage": auth.brokerage.wire(),
            "name": f"Connection-{auth.brokerage.slug.title()}",
            "type": auth.type,
            "disabled": auth.disabled,
            "disabled_date": iso(auth.disabled_at) if auth.disabled_at else None,
            "meta": {},
            "updated_date": iso(auth.disabled_at or auth.created_at),
            "is_eligible_for_payout": False,
            "data_freshness_mode": "realtime",
        }

    async def list_authorizations(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        return self._json(
            request, [self._authorization_wire(a) for a in user.authorizations.values()]
        )

    async def get_authorization(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        auth = user.authorizations.get(request.path_params["auth_id"])
        if auth is None:
            return self._answer(request, not_found())
        return self._json(request, self._authorization_wire(auth))

    async def disable(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        auth = user.authorizations.get(request.path_params["auth_id"])
        if auth is None:
            return self._answer(request, not_found())
        if auth.disabled:  # spec 402BrokerageAuthAlreadyDisabledException
            return self._answer(request, error(402, "This connection is already disabled.", "3011"))
        await self.disable_authorization(auth.id)
        return self._json(request, {"detail": f"Connection {auth.id} has been disabled"})

    # --- accounts ----------------------------------------------------------------------------

    def _account_wire(self, auth: FakeAuthorization, account: FakeAccount) -> dict[str, Any]:
        total = account.cash + self._position_value(account)
        day = self.clock().date().isoformat()
        return {
            "id": account.id,
            "brokerage_authorization": auth.id,
            "portfolio_group": None,
            "name": account.name,
            "number": account.number,
            "institution_account_id": None,
            "institution_name": auth.brokerage.name,
            "created_date": iso(account.created_at),
            "funding_date": None,
            "opening_date": None,
            "sync_status": {
                "transactions": {
                    "initial_sync_completed": True,
                    "last_successful_sync": day,
                    "first_transaction_date": account.created_at.date().isoformat(),
                },
                "holdings": {
                    "initial_sync_completed": True,
                    "last_successful_sync": self.clock().strftime("%Y-%m-%d %H:%M:%S.%f+00:00"),
                },
            },
            "balance": {
                "total": {"amount": num(total.quantize(Decimal("0.01"))), "currency": "USD"}
            },
            "status": "open",
            "raw_type": "Margin",
            "account_category": "INVESTMENT",
            "meta": {"type": "Margin", "status": "ACTIVE", "institution_name": auth.brokerage.name},
            "cash_restrictions": [],
            "is_paper": False,
        }

    async def _account_request(
        self, request: Request
    ) -> tuple[FakeUser, FakeAuthorization, FakeAccount] | Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        found = self._account_of(user, request.path_params["account_id"])
        if found is None:
            return self._answer(request, not_found())
        return user, found[0], found[1]

    async def list_accounts(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        return self._json(
            request,
            [
                self._account_wire(auth, account)
                for auth in user.authorizations.values()
                for account in auth.accounts.values()
            ],
        )

    async def get_account(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        _, auth, account = found
        return self._json(request, self._account_wire(auth, account))

    def _balances_wire(self, account: FakeAccount) -> list[dict[str, Any]]:
        buying_power = account.cash - self._reserved(account)
        return [
            {
                "currency": USD,
                "cash": num(account.cash.quantize(Decimal("0.01"))),
                "buying_power": num(buying_power.quantize(Decimal("0.01"))),
            }
        ]

    async def balances(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        return self._json(request, self._balances_wire(found[2]))

    def _quote(self, symbol: str) -> Any:
        return self.quotes.quote(symbol, self.clock())

    def _position_value(self, account: FakeAccount) -> Decimal:
        shares = sum((p.units * self._quote(s).last for s, p in account.positions.items()), ZERO)
        now = self.clock()
        contracts = sum(
            (
                p.units * self.options.quote(p.contract, now).mark * p.contract.multiplier
                for p in account.options.positions.values()
            ),
            ZERO,
        )
        return shares + contracts

    def _reserved(self, account: FakeAccount) -> Decimal:
        reserved = ZERO
        for order in account.orders.values():
            if order.action == "BUY" and order.status in OPEN:
                price = order.price or self._quote(order.symbol).ask
                reserved += (order.units - order.filled - order.canceled) * price
        for option_order in account.options.orders.values():
            limit = option_order.limit_price
            if option_order.status in OPEN and option_order.price_effect == "DEBIT" and limit:
                reserved += limit * option_order.units * 100
        return reserved

    async def positions(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        account = found[2]
        results = []
        for symbol, position in account.positions.items():
            if not position.units:
                continue
            quote = self._quote(symbol)
            universal = universal_symbol(symbol)
            crypto = UNIVERSE[symbol].asset_class is AssetClass.crypto
            results.append(
                {
                    "instrument": {
                        "kind": "crypto" if crypto else "stock",
                        "id": universal["id"],
                        "symbol": symbol,
                        "raw_symbol": symbol,
                        "description": universal["description"],
                        "currency": "USD",
                        "exchange": None if crypto else "XNAS",
                        "figi_instrument": None,
                    },
                    "units": str(position.units),
                    "price": str(quote.last),
                    "cost_basis": str((position.cost / position.units).quantize(Decimal("0.0001"))),
                    "currency": "USD",
                }
            )
        now = self.clock()
        for held in account.options.positions.values():
            if not held.units:
                continue
            mark = self.options.quote(held.contract, now).mark
            per_share_cost = held.cost / held.units / held.contract.multiplier
            results.append(
                {
                    "instrument": opt.option_instrument(held.contract),
                    "units": str(held.units),
                    "price": str(mark),  # per share
                    "cost_basis": str(per_share_cost.quantize(Decimal("0.0001"))),  # per share
                    "currency": "USD",
                }
            )
        return self._json(
            request, {"results": results, "data_freshness": {"as_of": iso(self.clock())}}
        )

    async def holdings(self, request: Request) -> Response:
        """Deprecated (410 for customers from May 2026): the older combined shape."""
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        _, auth, account = found
        positions = []
        for symbol, position in account.positions.items():
            if not position.units:
                continue
            quote = self._quote(symbol)
            avg = position.cost / position.units
            positions.append(
                {
                    "symbol": {
                        "symbol": universal_symbol(symbol),
                        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{account.id}:{symbol}")),
                        "description": f"{symbol} (fake)",
                        "local_id": None,
                        "is_quotable": True,
                        "is_tradable": True,
                    },
                    "units": num(position.units),
                    "price": num(quote.last),
                    "open_pnl": num(
                        ((quote.last - avg) * position.units).quantize(Decimal("0.01"))
                    ),
                    "average_purchase_price": num(avg.quantize(Decimal("0.0001"))),
                    "fractional_units": None,
                    "currency": USD,
                }
            )
        total = account.cash + self._position_value(account)
        return self._json(
            request,
            {
                "account": self._account_wire(auth, account),
                "balances": self._balances_wire(account),
                "positions": positions,
                "option_positions": [
                    {
                        "symbol": {
                            "option_symbol": opt.option_symbol_wire(held.contract),
                            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{account.id}:{name}")),
                            "description": name,
                        },
                        "price": num(self.options.quote(held.contract, self.clock()).mark),
                        "units": num(held.units),
                        # "Cost basis _per contract_"
                        "average_purchase_price": num(
                            (held.cost / held.units).quantize(Decimal("0.01"))
                        ),
                        "currency": USD,
                    }
                    for name, held in account.options.positions.items()
                    if held.units
                ],
                "orders": [self._order_wire(o) for o in account.orders.values()],
                "total_value": {"value": num(total.quantize(Decimal("0.01"))), "currency": "USD"},
            },
        )

    # --- orders ------------------------------------------------------------------------------

    def _order_wire(self, order: FakeOrder) -> dict[str, Any]:
        """The spec's ``AccountOrderRecord``: quantities and prices as decimal strings."""
        open_quantity = (
            order.units - order.filled - order.canceled if order.status in OPEN else ZERO
        )
        unsized = order.notional is not None and order.units == ZERO
        return {
            "brokerage_order_id": order.id,
            "brokerage_group_order_id": None,
            "order_role": None,
            "status": order.status,
            "universal_symbol": universal_symbol(order.symbol),
            "option_symbol": None,
            "quote_universal_symbol": None,
            "quote_currency": None,
            "action": order.action,
            # A dollar-amount order has no share count until it fills (nullable in the spec).
            "total_quantity": None if unsized else str(order.units),
            "open_quantity": None if unsized else str(open_quantity),
            "canceled_quantity": str(order.canceled),
            "filled_quantity": str(order.filled),
            "execution_price": text(order.execution_price),
            "limit_price": text(order.price),
            "stop_price": text(order.stop),
            "trailing_stop": None,
            "order_type": order.order_type,
            "time_in_force": order.time_in_force,
            "time_placed": iso(order.time_placed),
            "time_updated": iso(order.time_updated) if order.time_updated else None,
            "time_executed": iso(order.time_executed) if order.time_executed else None,
            "expiry_date": None,
            "symbol": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{order.account_id}:{order.symbol}")),
            "child_brokerage_order_ids": None,
        }

    async def orders(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        account = found[2]
        state = request.query_params.get("state", "all")
        if state not in ("all", "open", "executed"):
            return self._answer(request, bad_request())
        days = int(request.query_params.get("days", "30") or 30)
        since = self.clock() - timedelta(days=min(days, 90))
        selected = [o for o in account.orders.values() if o.time_placed >= since]
        if state == "open":
            selected = [o for o in selected if o.status in OPEN]
        elif state == "executed":
            selected = [o for o in selected if o.filled > ZERO]
        selected.sort(key=lambda o: o.time_placed, reverse=True)
        records = [self._order_wire(o) for o in selected]
        for option_order in account.options.orders.values():
            if option_order.time_placed < since:
                continue
            if state == "open" and option_order.status not in OPEN:
                continue
            if state == "executed" and option_order.status != "EXECUTED":
                continue
            records.extend(opt.leg_record_v1(option_order, leg) for leg in option_order.legs)
        return self._json(request, records)

    async def recent_orders(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        account = found[2]
        only_executed = request.query_params.get("only_executed", "true").lower() != "false"
        since = self.clock() - timedelta(hours=24)
        selected = [
            o
            for o in account.orders.values()
            if o.time_placed >= since and (not only_executed or o.filled > ZERO)
        ]
        selected.sort(key=lambda o: o.time_placed, reverse=True)
        return self._json(request, {"orders": [self._order_wire(o) for o in selected]})

    async def order_detail(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        body = await self._body(request)
        wanted = str((body or {}).get("brokerage_order_id"))
        option_order = found[2].options.orders.get(wanted)
        if option_order is not None:
            if len(option_order.legs) > 1:
                # "This endpoint only works for single-leg orders at this time" (the answer
                # for a multi-leg order is undocumented: a 400 here).
                return self._answer(
                    request, bad_request("Multi-leg orders are not supported by this endpoint")
                )
            return self._json(request, opt.leg_record_v1(option_order, option_order.legs[0]))
        order = found[2].orders.get(wanted)
        if order is None:
            return self._answer(request, not_found())
        return self._json(request, self._order_wire(order))

    async def symbol(self, request: Request) -> Response:
        gate = await self._gate(request, user=False)
        if isinstance(gate, Response):
            return self._answer(request, gate)
        query = request.path_params["query"]
        symbol = SYMBOL_BY_ID.get(query) or query.upper()
        if symbol not in UNIVERSE:
            return self._answer(request, not_found())
        return self._json(request, universal_symbol(symbol))

    def _parse_form(
        self, body: dict[str, Any] | None, *, symbol_key: str
    ) -> (
        tuple[str, str, str, str, Decimal, Decimal | None, Decimal | None, Decimal | None]
        | Response
    ):
        """An order form's fields, refused as SnapTrade would refuse them (400); the last is
        ``notional_value`` (then units are 0)."""
        if body is None:
            return bad_request()
        action, order_type, tif = (
            body.get("action"),
            body.get("order_type"),
            body.get("time_in_force"),
        )
        if symbol_key == "universal_symbol_id":
            symbol = SYMBOL_BY_ID.get(str(body.get("universal_symbol_id")))
        else:
            symbol = str(body.get("symbol", "")).upper() or None
        if symbol is None or symbol not in UNIVERSE:
            return bad_request("Symbol not found")
        if action not in ("BUY", "SELL") or order_type not in _TYPES or tif not in _TIFS:
            return bad_request()
        try:
            notional = _opt(body.get("notional_value"))
            units = ZERO if body.get("units") is None else Decimal(str(body.get("units")))
            price = _opt(body.get("price"))
            stop = _opt(body.get("stop"))
        except InvalidOperation:
            return bad_request()
        if notional is not None:
            # NotionalValue: "Must be `null` if `units` is provided. Can only work with
            # `Market` for `order_type` and `Day` for `time_in_force`" (snaptrade-api.yaml).
            if body.get("units") is not None or order_type != "Market" or tif != "Day":
                return bad_request("notional_value is only valid for Market Day orders")
            if not notional.is_finite() or notional <= 0:
                return bad_request()
            return symbol, str(action), str(order_type), str(tif), ZERO, price, stop, notional
        if not units.is_finite() or units <= 0:
            return bad_request()
        if order_type in ("Limit", "StopLimit") and price is None:
            return bad_request("A limit price is required for Limit and StopLimit orders")
        if order_type in ("Stop", "StopLimit") and stop is None:
            return bad_request("A stop price is required for Stop and StopLimit orders")
        return symbol, str(action), str(order_type), str(tif), units, price, stop, None

    def _affordable(
        self,
        account: FakeAccount,
        action: str,
        symbol: str,
        units: Decimal,
        price: Decimal | None,
        notional: Decimal | None = None,
    ) -> Response | None:
        """The brokerage's own checks, relayed by SnapTrade (wording undocumented)."""
        if notional is not None and action == "SELL":
            units = notional / self._quote(symbol).bid
        if action == "BUY":
            cost = notional if notional is not None else units * (price or self._quote(symbol).ask)
            if cost > account.cash - self._reserved(account):
                return bad_request("Insufficient buying power to place this order")
            return None
        held = account.positions.get(symbol, FakePosition()).units
        selling = sum(
            (
                o.units - o.filled - o.canceled
                for o in account.orders.values()
                if o.action == "SELL" and o.symbol == symbol and o.status in OPEN
            ),
            ZERO,
        )
        if units > held - selling:
            return bad_request("Insufficient shares to sell")
        return None

    def _may_trade(self, auth: FakeAuthorization) -> Response | None:
        if auth.disabled:  # spec 402BrokerageAuthDisabledResponse
            return error(
                402,
                "Unable to sync with brokerage account because the connection is disabled.",
                "3003",
            )
        if auth.type != "trade" or not auth.brokerage.allows_trading:
            return error(403, "User does not have permission to access this resource", "1066")
        return None

    async def impact(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        body = await self._body(request)
        found = self._account_of(user, str((body or {}).get("account_id")))
        if found is None:
            return self._answer(request, not_found())
        auth, account = found
        refusal = self._may_trade(auth)
        if refusal is not None:
            return self._answer(request, refusal)
        parsed = self._parse_form(body, symbol_key="universal_symbol_id")
        if isinstance(parsed, Response):
            return self._answer(request, parsed)
        symbol, action, order_type, tif, units, price, stop, notional = parsed
        refusal = self._affordable(account, action, symbol, units, price, notional)
        if refusal is not None:
            return self._answer(request, refusal)
        trade = FakeTrade(
            id=str(uuid.uuid4()),
            account_id=account.id,
            action=action,
            symbol=symbol,
            order_type=order_type,
            time_in_force=tif,
            units=units,
            price=price,
            stop=stop,
            created_at=self.clock(),
            notional=notional,
        )
        self.trades[trade.id] = trade
        quote = self._quote(symbol)
        cost = notional if notional is not None else units * (price or quote.ask)
        proceeds = notional if notional is not None else units * quote.bid
        remaining = account.cash - cost if action == "BUY" else account.cash + proceeds
        universal = universal_symbol(symbol)
        return self._json(
            request,
            {
                "trade": {
                    "id": trade.id,
                    "account": account.id,
                    "order_type": order_type,
                    "time_in_force": tif,
                    "symbol": {
                        "universal_symbol_id": universal["id"],
                        "currency": USD,
                        "local_id": str(uuid.UUID(universal["id"]).int % 10**7),
                        "description": universal["description"],
                        "symbol": symbol,
                        "brokerage_symbol_id": str(
                            uuid.uuid5(uuid.NAMESPACE_URL, f"{account.id}:{symbol}")
                        ),
                    },
                    "action": action,
                    "units": None if notional is not None else num(units),
                    "price": None if price is None else num(price),
                },
                "trade_impacts": [
                    {
                        "account": account.id,
                        "currency": USD["id"],
                        "remaining_cash": num(remaining.quantize(Decimal("0.01"))),
                        "estimated_commission": 0,
                        "forex_fees": 0,
                    }
                ],
                "combined_remaining_balance": {
                    "account": {
                        "id": account.id,
                        "name": account.name,
                        "number": account.number,
                        "institution_account_id": None,
                        "sync_status": self._account_wire(auth, account)["sync_status"],
                    },
                    "currency": USD,
                    "cash": num(remaining.quantize(Decimal("0.01"))),
                },
            },
        )

    async def place(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        trade = self.trades.get(request.path_params["trade_id"])
        if trade is None:
            return self._answer(request, not_found())
        if trade.used or self.clock() - trade.created_at > TRADE_LIFETIME:
            return self._answer(request, bad_request("Trade has expired or was already placed"))
        found = self._account_of(user, trade.account_id)
        if found is None:
            return self._answer(request, not_found())
        auth, account = found
        refusal = self._may_trade(auth) or self._affordable(
            account, trade.action, trade.symbol, trade.units, trade.price, trade.notional
        )
        if refusal is not None:
            return self._answer(request, refusal)
        body = await self._body(request) or {}
        trade.used = True
        now = self.clock()
        order = FakeOrder(
            id=str(uuid.uuid4()),
            account_id=account.id,
            symbol=trade.symbol,
            action=trade.action,
            order_type=trade.order_type,
            time_in_force=trade.time_in_force,
            units=trade.units,
            price=trade.price,
            stop=trade.stop,
            time_placed=now,
            time_updated=now,
            notional=trade.notional,
            # wait_to_confirm (default true): the status is checked before answering.
            status="ACCEPTED" if body.get("wait_to_confirm", True) is not False else "PENDING",
        )
        account.orders[order.id] = order
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return self._json(request, self._order_wire(order))

    async def place_force(self, request: Request) -> Response:
        """``POST /trade/place`` (``ManualTradeFormWithOptions``): the order is sent to the
        brokerage at once, without an impact check; the answer is its ``AccountOrderRecord``."""
        user = await self._gate(request)
        if isinstance(user, Response):
            return self._answer(request, user)
        assert user is not None
        body = await self._body(request)
        found = self._account_of(user, str((body or {}).get("account_id")))
        if found is None:
            return self._answer(request, not_found())
        auth, account = found
        refusal = self._may_trade(auth)
        if refusal is not None:
            return self._answer(request, refusal)
        # ``symbol`` (a ticker) or ``universal_symbol_id``, one of the two.
        key = "symbol" if (body or {}).get("symbol") is not None else "universal_symbol_id"
        parsed = self._parse_form(body, symbol_key=key)
        if isinstance(parsed, Response):
            return self._answer(request, parsed)
        symbol, action, order_type, tif, units, price, stop, notional = parsed
        session = (body or {}).get("trading_session", "REGULAR")
        if session not in (None, "REGULAR", "EXTENDED"):  # TradingSession enum
            return self._answer(request, bad_request())
        refusal = self._affordable(account, action, symbol, units, price, notional)
        if refusal is not None:
            return self._answer(request, refusal)
        now = self.clock()
        order = FakeOrder(
            id=str(uuid.uuid4()),
            account_id=account.id,
            symbol=symbol,
            action=action,
            order_type=order_type,
            time_in_force=tif,
            units=units,
            price=price,
            stop=stop,
            time_placed=now,
            time_updated=now,
            notional=notional,
        )
        account.orders[order.id] = order
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return self._json(request, self._order_wire(order))

    async def cancel(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        account = found[2]
        body = await self._body(request)
        wanted = str((body or {}).get("brokerage_order_id"))
        option_order = account.options.orders.get(wanted)
        if option_order is not None:
            return self._cancel_option(request, option_order)
        order = account.orders.get(wanted)
        if order is None:
            return self._answer(request, not_found())
        if order.status not in OPEN:
            # Wording undocumented (the brokerage's refusal, relayed).
            return self._answer(
                request,
                bad_request(f"Order cannot be canceled in its current state ({order.status})"),
            )
        now = self.clock()
        order.canceled = order.units - order.filled
        order.status = "PARTIAL_CANCELED" if order.filled > ZERO else "CANCELED"
        order.time_updated = now
        return self._json(
            request,
            {
                "brokerage_order_id": order.id,
                "raw_response": {"order_id": order.id, "status": "CANCELLED"},
            },
        )

    async def replace(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        _, auth, account = found
        refusal = self._may_trade(auth)
        if refusal is not None:
            return self._answer(request, refusal)
        body = await self._body(request)
        option_order = account.options.orders.get(str((body or {}).get("brokerage_order_id")))
        if option_order is not None:
            return self._replace_option(request, account, option_order, body or {})
        old = account.orders.get(str((body or {}).get("brokerage_order_id")))
        if old is None:
            return self._answer(request, not_found())
        parsed = self._parse_form(body, symbol_key="symbol")
        if isinstance(parsed, Response):
            return self._answer(request, parsed)
        symbol, action, order_type, tif, units, price, stop, notional = parsed
        if notional is not None:  # ManualTradeReplaceForm has units, no notional_value
            return self._answer(request, bad_request())
        if old.status not in ("ACCEPTED", "PARTIAL") or symbol != old.symbol:
            return self._answer(
                request,
                bad_request(f"Order cannot be replaced in its current state ({old.status})"),
            )
        now = self.clock()
        # Like most brokerages: cancel and place anew, so the id changes.
        new = FakeOrder(
            id=str(uuid.uuid4()),
            account_id=account.id,
            symbol=symbol,
            action=action,
            order_type=order_type,
            time_in_force=tif,
            units=units,
            price=price,
            stop=stop,
            time_placed=now,
            time_updated=now,
        )
        old.status, old.time_updated = "REPLACED", now
        old.canceled = old.units - old.filled
        account.orders[new.id] = new
        return self._json(request, self._order_wire(new))

    def _evaluate(self, account: FakeAccount, order: FakeOrder) -> int:
        now = self.clock()
        quote = self._quote(order.symbol)
        if order.notional is not None and order.units == ZERO and order.status in OPEN:
            # A dollar-amount market order becomes shares at the price it fills at.
            price = quote.ask if order.action == "BUY" else quote.bid
            order.units = (order.notional / price).quantize(Decimal("0.000001"), ROUND_DOWN)
        decision = decide(
            OrderState(
                side=OrderSide.buy if order.action == "BUY" else OrderSide.sell,
                order_type=_TYPE_OF[order.order_type],
                time_in_force=_TIFS[order.time_in_force],
                remaining=order.units - order.filled,
                limit_price=order.price,
                stop_price=order.stop,
                stop_triggered=order.stop_triggered,
            ),
            quote,
        )
        order.stop_triggered = decision.stop_triggered
        made = 0
        if decision.fills and decision.fill_price is not None:
            made = 1
            qty, price = decision.fill_quantity, decision.fill_price
            previous = order.filled * (order.execution_price or ZERO)
            order.filled += qty
            order.execution_price = ((previous + qty * price) / order.filled).quantize(
                Decimal("0.0001")
            )
            order.time_updated = now
            position = account.positions.setdefault(order.symbol, FakePosition())
            if order.action == "BUY":
                account.cash -= qty * price
                position.cost += qty * price
                position.units += qty
            else:
                account.cash += qty * price
                if position.units:
                    position.cost -= position.cost * qty / position.units
                position.units -= qty
            done = order.filled >= order.units
            order.status = "EXECUTED" if done else "PARTIAL"
            if done:
                order.time_executed = now
            gross = qty * price
            account.activities.append(
                self._activity(
                    account,
                    order.action,
                    -gross if order.action == "BUY" else gross,
                    now,
                    symbol=order.symbol,
                    units=qty,
                    price=price,
                    description=f"{order.action} {qty} {order.symbol} @ {price}",
                    reference=order.id,
                )
            )
        if decision.cancel_remainder and order.status in OPEN:
            order.canceled = order.units - order.filled
            order.status = "PARTIAL_CANCELED" if order.filled > ZERO else "CANCELED"
            order.time_updated = now
        return made

    # --- options (tests/fakes/snaptrade/options.py has the wire shapes) ------------------------

    def _option_request_refusal(
        self, auth: FakeAuthorization, body: dict[str, Any] | None
    ) -> tuple[Response | None, opt.ParsedForm | None]:
        refusal = self._may_trade(auth)
        if refusal is not None:
            return refusal, None
        if auth.brokerage.slug not in opt.OPTION_BROKERAGES:
            # spec: "Only supported on certain option trading brokerages" (wording chosen)
            return bad_request("Option trading is not supported for this brokerage"), None
        parsed = opt.parse_form(body, self.options, self.clock().date())
        if isinstance(parsed, str):
            return bad_request(parsed), None
        return None, parsed

    def _option_cost(self, parsed: opt.ParsedForm) -> tuple[Decimal, Decimal, list[Decimal]]:
        """(natural net per strategy unit, cash the order would move per the form, leg prices);
        cash is signed from the account's side (negative: a debit)."""
        units = math.gcd(*(u for _, _, u in parsed.legs))
        net, prices = opt.natural_net(
            [(c, a, u // units) for c, a, u in parsed.legs], self.options, self.clock()
        )
        if parsed.limit_price is not None and parsed.price_effect in ("DEBIT", "CREDIT"):
            sign = -1 if parsed.price_effect == "DEBIT" else 1
            cash = sign * parsed.limit_price * units * 100
        else:
            cash = -net * units * 100
        return net, cash, prices

    async def option_impact(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        _, auth, account = found
        refusal, parsed = self._option_request_refusal(auth, await self._body(request))
        if refusal is not None or parsed is None:
            return self._answer(request, refusal or bad_request())
        if self.faults.no_option_impact:
            return self._answer(
                request, bad_request("Option impact is not supported for this brokerage")
            )
        net, cash, _ = self._option_cost(parsed)
        if cash < 0 and -cash > account.cash - self._reserved(account):
            return self._answer(request, bad_request("Insufficient buying power"))
        # The direction is the brokerage's reading of the legs (the natural net), not an
        # echo of the form's price_effect.
        direction = "DEBIT" if net > 0 else "CREDIT" if net < 0 else "EVEN"
        return self._json(
            request,
            {
                "estimated_cash_change": opt.text(abs(cash).quantize(Decimal("0.01"))),
                "cash_change_direction": direction,
                "estimated_fee_total": "0.65",
            },
        )

    async def place_option(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        _, auth, account = found
        refusal, parsed = self._option_request_refusal(auth, await self._body(request))
        if refusal is not None or parsed is None:
            return self._answer(request, refusal or bad_request())
        _, cash, _ = self._option_cost(parsed)
        if cash < 0 and -cash > account.cash - self._reserved(account):
            return self._answer(request, bad_request("Insufficient buying power"))
        order_id = str(uuid.uuid4())
        order = opt.FakeOptionOrder(
            id=order_id,
            account_id=account.id,
            legs=[
                # A single-leg order's record is the order (its id); a combo's records are
                # its legs (ids of ours: the spec does not say how leg ids look).
                opt.FakeLeg(
                    contract,
                    action,
                    units,
                    order_id if len(parsed.legs) == 1 else f"{order_id}-{n}",
                )
                for n, (contract, action, units) in enumerate(parsed.legs, start=1)
            ],
            order_type=parsed.order_type,
            time_in_force=parsed.time_in_force,
            limit_price=parsed.limit_price,
            stop_price=parsed.stop_price,
            price_effect=parsed.price_effect,
            time_placed=self.clock(),
        )
        account.options.orders[order.id] = order
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return self._json(
            request,
            {
                "brokerage_order_id": order.id,
                "orders": [opt.leg_record_v1(order, leg) for leg in order.legs],
            },
        )

    async def order_detail_v2(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        order = found[2].options.orders.get(request.path_params["order_id"])
        if order is None:
            return self._answer(request, not_found())
        return self._json(request, opt.order_record_v2(order))

    async def orders_v2(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        account = found[2]
        state = request.query_params.get("state", "all")
        days = int(request.query_params.get("days", "30") or 30)
        since = self.clock() - timedelta(days=min(days, 90))
        selected = [
            o
            for o in account.options.orders.values()
            if o.time_placed >= since
            and (state != "open" or o.status in OPEN)
            and (state != "executed" or o.status == "EXECUTED")
        ]
        selected.sort(key=lambda o: o.time_placed, reverse=True)
        return self._json(request, {"orders": [opt.order_record_v2(o) for o in selected]})

    async def option_quote(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        contract = opt.parse_contract(
            request.query_params.get("symbol"), self.options, self.clock().date()
        )
        if contract is None:
            return self._answer(request, not_found())
        quote = self.options.quote(contract, self.clock())
        greeks = quote.greeks
        return self._json(
            request,
            {
                "symbol": contract.occ_padded,
                "synthetic_price": float(quote.mark),
                "implied_volatility": float(greeks.iv or 0),
                "timestamp": iso(quote.as_of),
                "greeks": {
                    "delta": float(greeks.delta or 0),
                    "gamma": float(greeks.gamma or 0),
                    "theta": float(greeks.theta or 0),
                    "vega": float(greeks.vega or 0),
                },
            },
        )

    def _cancel_option(self, request: Request, order: opt.FakeOptionOrder) -> Response:
        if order.status not in OPEN:
            return self._answer(
                request,
                bad_request(f"Order cannot be canceled in its current state ({order.status})"),
            )
        order.status = "CANCELED"
        return self._json(
            request,
            {
                "brokerage_order_id": order.id,
                "raw_response": {"order_id": order.id, "status": "CANCELLED"},
            },
        )

    def _replace_option(
        self,
        request: Request,
        account: FakeAccount,
        old: opt.FakeOptionOrder,
        body: dict[str, Any],
    ) -> Response:
        """``ManualTradeReplaceForm`` for an option order: "Use the OCC symbol to replace an
        option order"; one leg only (a combo has no replace form: refused, wording chosen)."""
        if len(old.legs) != 1:
            return self._answer(request, bad_request("Multi-leg orders cannot be replaced"))
        [leg] = old.legs
        types = {v: k for k, v in opt.V1_TYPES.items()}
        order_type = types.get(str(body.get("order_type")))
        units = body.get("units")
        try:
            price = _opt(body.get("price"))
            stop = _opt(body.get("stop"))
        except InvalidOperation:
            return self._answer(request, bad_request())
        if (
            body.get("symbol") != leg.contract.occ_padded
            or body.get("action") != leg.action
            or order_type is None
            or body.get("time_in_force") not in opt.TIFS
            or not isinstance(units, int)
            or units < 1
        ):
            return self._answer(request, bad_request())
        if old.status != "ACCEPTED":
            return self._answer(
                request,
                bad_request(f"Order cannot be replaced in its current state ({old.status})"),
            )
        new_id = str(uuid.uuid4())
        new = opt.FakeOptionOrder(
            id=new_id,
            account_id=account.id,
            legs=[opt.FakeLeg(leg.contract, leg.action, units, new_id)],
            order_type=order_type,
            time_in_force=str(body["time_in_force"]),
            limit_price=price,
            stop_price=stop,
            price_effect=old.price_effect,
            time_placed=self.clock(),
        )
        old.status = "REPLACED"
        account.options.orders[new.id] = new
        return self._json(request, opt.leg_record_v1(new, new.legs[0]))

    def _evaluate_option(self, account: FakeAccount, order: opt.FakeOptionOrder) -> int:
        """A combo fills whole at its legs' natural prices when the net is within the limit
        (a debit at most the limit, a credit at least it); market orders fill at once."""
        now = self.clock()
        units = order.units
        legs = [(leg.contract, leg.action, leg.units // units) for leg in order.legs]
        net, prices = opt.natural_net(legs, self.options, now)
        if order.order_type in ("LIMIT", "STOP_LOSS_LIMIT") and order.limit_price is not None:
            if order.price_effect == "DEBIT" and net > order.limit_price:
                return 0
            if order.price_effect == "CREDIT" and -net < order.limit_price:
                return 0
            if order.price_effect == "EVEN" and net > 0:
                return 0
        for leg, price in zip(order.legs, prices, strict=True):
            leg.filled, leg.execution_price = leg.units, price
            sign = 1 if leg.buys else -1
            held = account.options.positions.setdefault(
                leg.contract.symbol, opt.FakeOptionPosition(leg.contract)
            )
            dollars = price * leg.units * leg.contract.multiplier
            account.cash -= sign * dollars
            if held.units and (held.units > 0) != (sign > 0):  # closing: cost leaves pro rata
                held.cost -= held.cost * leg.units / abs(held.units)
            else:
                held.cost += sign * dollars
            held.units += sign * leg.units
            account.activities.append(
                self._activity(
                    account,
                    "BUY" if leg.buys else "SELL",
                    -sign * dollars,
                    now,
                    units=Decimal(leg.units),
                    price=price,
                    description=f"{leg.action} {leg.units} {leg.contract.occ_padded} @ {price}",
                    reference=order.id,
                    option=leg.contract,
                    option_type=leg.action,
                )
            )
        order.status, order.time_executed = "EXECUTED", now
        return 1

    def record_option_event(
        self, account_id: str, kind: str, contract: OptionContract, units: Decimal
    ) -> dict[str, Any]:
        """An option's end of life as SnapTrade reports it (``OPTIONEXPIRATION``,
        ``OPTIONASSIGNMENT``, ``OPTIONEXERCISE``, contract in ``option_symbol``); the
        position is gone. Returns the activity."""
        assert kind in ("OPTIONEXPIRATION", "OPTIONASSIGNMENT", "OPTIONEXERCISE")
        account = self.accounts[account_id][2]
        account.options.positions.pop(contract.symbol, None)
        activity = self._activity(
            account,
            kind,
            ZERO,
            self.clock(),
            units=units,
            description=f"{kind} {contract.occ_padded}",
            option=contract,
        )
        account.activities.append(activity)
        return activity

    # --- activities, quotes --------------------------------------------------------------------

    def _activity(
        self,
        account: FakeAccount,
        kind: str,
        amount: Decimal,
        at: datetime,
        *,
        symbol: str | None = None,
        units: Decimal = ZERO,
        price: Decimal = ZERO,
        description: str = "",
        reference: str | None = None,
        option: OptionContract | None = None,
        option_type: str = "",
    ) -> dict[str, Any]:
        """The spec's ``AccountUniversalActivity``."""
        symbol_wire = None
        if symbol is not None:
            universal = universal_symbol(symbol)
            symbol_wire = {
                k: universal[k]
                for k in (
                    "id",
                    "symbol",
                    "raw_symbol",
                    "description",
                    "currency",
                    "exchange",
                    "type",
                    "figi_code",
                    "figi_instrument",
                )
            }
        return {
            "id": str(uuid.uuid4()),
            "symbol": symbol_wire,
            "currency_universal_symbol": None,
            "option_symbol": None if option is None else opt.option_symbol_wire(option),
            "price": num(price),
            "units": num(units),
            "amount": num(amount.quantize(Decimal("0.0001"))),
            "currency": USD,
            "type": kind,
            "option_type": option_type,
            "description": description,
            "trade_date": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "settlement_date": (at + timedelta(days=1))
            .astimezone(UTC)
            .strftime("%Y-%m-%dT00:00:00Z"),
            "fee": 0,
            "fx_rate": None,
            "institution": account.brokerage,
            "external_reference_id": reference,
        }

    async def activities(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        account = found[2]
        params = request.query_params
        items = sorted(account.activities, key=lambda a: a["trade_date"], reverse=True)
        if "startDate" in params:
            items = [a for a in items if a["trade_date"][:10] >= params["startDate"]]
        if "endDate" in params:
            items = [a for a in items if a["trade_date"][:10] <= params["endDate"]]
        if "type" in params:
            wanted = set(params["type"].split(","))
            items = [a for a in items if a["type"] in wanted]
        offset = int(params.get("offset", "0") or 0)
        limit = int(params.get("limit", "1000") or 1000)
        return self._json(
            request,
            {
                "data": items[offset : offset + limit],
                "pagination": {"offset": offset, "limit": limit, "total": len(items)},
            },
        )

    async def account_quotes(self, request: Request) -> Response:
        found = await self._account_request(request)
        if isinstance(found, Response):
            return found
        wanted = [s for s in request.query_params.get("symbols", "").split(",") if s]
        if len(wanted) > 10:  # "Maximum of 10 values allowed"
            return self._answer(request, bad_request())
        use_ticker = request.query_params.get("use_ticker", "false").lower() == "true"
        result = []
        for raw in wanted:
            symbol = raw.upper() if use_ticker else SYMBOL_BY_ID.get(raw)
            if symbol is None or symbol not in UNIVERSE:
                continue
            quote = self._quote(symbol)
            result.append(
                {
                    "symbol": universal_symbol(symbol),
                    "last_trade_price": num(quote.last),
                    "bid_price": num(quote.bid),
                    "ask_price": num(quote.ask),
                    "bid_size": num(quote.bid_size),
                    "ask_size": num(quote.ask_size),
                }
            )
        return self._json(request, result)


def _opt(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    result = Decimal(str(value))
    if not result.is_finite():
        raise InvalidOperation
    return result

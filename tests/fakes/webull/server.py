"""A fake Webull OpenAPI (trading, token, config, account, assets, instruments, snapshots).

It speaks the protocol of the official SDK (PyPI ``webull-openapi-python-sdk`` 3.0.4) and docs
(https://developer.webull.com/apis/docs/): the current generation's paths (``GET /openapi/
config``, ``/auth/tokens/{create,check}``, ``/trading/accounts/list``, ``/trading/assets/
balances/get``, ``/trading/assets/positions/list``, ``/trading/orders/{place,preview,replace,
cancel,get}``, ``/trading/orders/open-orders/list`` and ``historical-orders/list`` in their
legacy pagination protocol (``x-version: v2``), ``/market-data/{stocks,options}/snapshots/
list``) and, still shipped by the SDKs (3.x ``OrderOperationV2``, Java ``TradeClientV3``), the
older ``/openapi/...`` paths as aliases; option orders (decomposed legs, ``option_strategy``,
``position_intent``, leg ``id``s; ``app.brokers.webull.options`` cites the sources) priced by
the paper option market; amount orders (``entrust_type`` ``AMOUNT``, ``total_cash_amount``);
short sales (side ``SHORT``); unknown routes answer the JSON error envelope. The signed headers
(``x-app-key``, ``x-timestamp``, ``x-signature-version``, ``x-signature-algorithm``,
``x-signature-nonce``, ``x-signature``) verified with the SDK's composer (HMAC-SHA1 over the
percent-encoded string of path, sorted signing headers, ``host`` and query, and the body's
MD5; the SDK's HMAC-SHA256/SHA-256 variant too), the access token lifecycle (create ->
``PENDING`` until confirmed in the app -> ``NORMAL``; ``EXPIRED``/``INVALID``; refresh
takes ``{"token"}`` like check, the SDK's ``RefreshTokenRequest``) with
``x-access-token`` required once two-factor authentication is on, snake_case bodies with
string amounts (the Java SDK's response beans), order combos ``{"client_order_id",
"combo_type", "orders": [...]}``, the SDK's status vocabulary (SUBMITTED, PARTIAL_FILLED,
FILLED, CANCELLED, FAILED), ``client_order_id`` as the key of detail/replace/cancel, and
``{"error_code", "message"}`` error bodies (the SDK's ``_parse_error_info_from_response_body``).

Not documented, so chosen here (and kept in one place, ``ERRORS``): the ``error_code``
strings and HTTP statuses of business refusals, the timestamp tolerance (15 minutes, the
Aliyun-style composer's usual window), refusing a reused nonce, the time formats of
``place_time`` (epoch milliseconds) and ``place_time_at`` (ISO 8601), and ``Retry-After``
on 429.

Prices come from the paper market (``app.paper.quotes.SeededQuoteSource``) and orders match
by the paper broker's rules (``app.paper.matching.decide``) when the test (or the
fake-brokers ticker) calls ``match()``. Fault switches live in ``faults``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.brokers.base import (
    AssetClass,
    OptionContract,
    OptionRight,
    OrderSide,
    OrderType,
    TimeInForce,
)
from app.paper.matching import OrderState, decide
from app.paper.options_market import SeededOptionMarket
from app.paper.quotes import UNIVERSE, SeededQuoteSource

ZERO = Decimal(0)
OPEN = frozenset({"SUBMITTED", "PARTIAL_FILLED"})
TYPES = {
    "MARKET": OrderType.market,
    "LIMIT": OrderType.limit,
    "STOP_LOSS": OrderType.stop,
    "STOP_LOSS_LIMIT": OrderType.stop_limit,
}
TIFS = {"DAY": TimeInForce.day, "GTC": TimeInForce.gtc, "IOC": TimeInForce.ioc}
TIMESTAMP_SKEW = timedelta(minutes=15)
TOKEN_LIFETIME = timedelta(days=15)  # "Tokens are time-sensitive (default 15 days)"
MAX_CLIENT_ORDER_ID = 40
# (HTTP status, error_code) of each refusal; see the module docstring.
ERRORS: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "UNAUTHORIZED"),
    "signature": (401, "INVALID_SIGNATURE"),
    "timestamp": (401, "INVALID_TIMESTAMP"),
    "nonce": (401, "SIGNATURE_NONCE_USED"),
    "token_missing": (401, "ACCESS_TOKEN_REQUIRED"),
    "token_pending": (401, "ACCESS_TOKEN_NOT_VERIFIED"),
    "token_invalid": (401, "ACCESS_TOKEN_INVALID"),
    "parameter": (400, "INVALID_PARAMETER"),
    "symbol": (400, "INVALID_SYMBOL"),
    "funds": (400, "INSUFFICIENT_BUYING_POWER"),
    "holdings": (400, "INSUFFICIENT_POSITION"),
    "duplicate": (400, "DUPLICATE_CLIENT_ORDER_ID"),
    "not_found": (404, "ORDER_NOT_FOUND"),
    "not_modifiable": (400, "ORDER_STATUS_NOT_SUPPORT"),
    "account": (400, "INVALID_ACCOUNT_ID"),
    "rate": (429, "TOO_MANY_REQUESTS"),
    "server": (500, "INTERNAL_ERROR"),
    "route": (404, "NOT_FOUND"),
    "method": (405, "METHOD_NOT_ALLOWED"),
}
STRATEGIES = frozenset(
    {"SINGLE", "STRADDLE", "STRANGLE", "VERTICAL", "CALENDAR", "BUTTERFLY", "CONDOR"}
    | {"IRON_BUTTERFLY", "IRON_CONDOR"}
)
INTENTS = frozenset({"BUY_TO_OPEN", "BUY_TO_CLOSE", "SELL_TO_OPEN", "SELL_TO_CLOSE"})
AMOUNT_PLACES = Decimal("0.00001")  # shares bought by amount (precision chosen here)


def error(kind: str, message: str, **headers: str) -> JSONResponse:
    status, code = ERRORS[kind]
    return JSONResponse(
        {"error_code": code, "message": message}, status_code=status, headers=headers
    )


def iso_ms(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def epoch_ms(at: datetime) -> str:
    return str(int(at.timestamp() * 1000))


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds before every answer. ``server_errors`` / ``server_errors_method``:
    the next N requests (of that method only, when set) answer 500. ``rate_limited`` /
    ``retry_after``: the next N answer 429. ``timeout_after_accept``: the next N placements
    create the order, then hold the answer ``hang_seconds``. ``revoke(app_key)`` disables
    an app key; ``expire_token(token)`` ends a token; ``invalidate_token(token)`` makes it
    ``INVALID`` (refresh answers that status instead of renewing it).
    """

    latency: float = 0.0
    server_errors: int = 0
    server_errors_method: str | None = None
    rate_limited: int = 0
    retry_after: int = 7
    timeout_after_accept: int = 0
    hang_seconds: float = 30.0


@dataclass
class FakeLeg:
    leg_id: str
    contract: OptionContract
    side: str  # BUY or SELL
    quantity: Decimal  # ratio x strategy quantity

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.leg_id,
            "side": self.side,
            "quantity": str(self.quantity),
            "market": "US",
            "instrument_type": "OPTION",
            "symbol": self.contract.underlying,
            "option_type": "CALL" if self.contract.right is OptionRight.call else "PUT",
            "option_expire_date": self.contract.expiration.isoformat(),
            "strike_price": str(self.contract.strike),
            "option_category": "US_OPTION",
            "option_contract_multiplier": "100",
            "option_contract_deliverable": "100",
            "expiration_type": "STANDARD",
        }


@dataclass
class FakeOrder:
    client_order_id: str
    order_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    session: str
    placed_at: datetime
    status: str = "SUBMITTED"
    filled: Decimal = ZERO
    filled_price: Decimal | None = None
    filled_at: datetime | None = None
    stop_triggered: bool = False
    amount: Decimal | None = None  # entrust_type AMOUNT: the cash to spend or raise
    strategy: str | None = None  # option orders: option_strategy
    intent: str | None = None  # option orders: position_intent
    legs: list[FakeLeg] = field(default_factory=list)
    instrument: str = "EQUITY"  # or CRYPTO

    @property
    def is_option(self) -> bool:
        return bool(self.legs)

    def wire(self) -> dict[str, Any]:
        def opt(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        item: dict[str, Any] = {
            "client_order_id": self.client_order_id,
            "order_id": self.order_id,
            "symbol": self.symbol,
            "market": "US",
            "side": self.side,
            "status": self.status,
            "order_type": self.order_type,
            "instrument_type": "OPTION" if self.is_option else self.instrument,
            "total_quantity": str(self.quantity),
            "filled_quantity": str(self.filled),
            "remain_quantity": str(self.quantity - self.filled),
            "limit_price": opt(self.limit_price),
            "stop_price": opt(self.stop_price),
            "filled_price": opt(self.filled_price),
            "time_in_force": self.time_in_force,
            "support_trading_session": self.session,
            "entrust_type": "QTY" if self.amount is None else "AMOUNT",
            "place_time": epoch_ms(self.placed_at),
            "place_time_at": iso_ms(self.placed_at),
            "filled_time": None if self.filled_at is None else epoch_ms(self.filled_at),
            "filled_time_at": None if self.filled_at is None else iso_ms(self.filled_at),
        }
        if self.amount is not None:
            item["total_cash_amount"] = str(self.amount)
            if self.filled == ZERO:
                item["total_quantity"] = "0"
                item["remain_quantity"] = "0"
        if self.is_option:
            item["option_strategy"] = self.strategy
            item["legs"] = [leg.wire() for leg in self.legs]
            if self.intent is not None:
                item["position_intent"] = self.intent
        return {"client_order_id": self.client_order_id, "combo_type": "NORMAL", "orders": [item]}


@dataclass
class FakeAccount:
    account_id: str
    account_number: str
    cash: Decimal
    # A crypto account (crypto orders need one: "please use a cryptocurrency account ID", the
    # 3.x sample). Its account-list labels are chosen here (not documented).
    crypto: bool = False
    orders: dict[str, FakeOrder] = field(default_factory=dict)  # by client_order_id
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # qty, cost
    # Option strategy positions: the strategy and its legs (OCC symbol -> signed qty, cost).
    option_groups: list[tuple[str, dict[str, tuple[Decimal, Decimal]]]] = field(
        default_factory=list
    )
    # Rows placed outside the gateway in shapes it may not represent (list tests).
    foreign_orders: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeToken:
    token: str
    app_key: str
    status: str
    expires: datetime


@dataclass
class FakeApp:
    app_key: str
    app_secret: str
    accounts: dict[str, FakeAccount]
    two_factor: bool = True
    revoked: bool = False


class FakeWebull:
    """The fake's state, its fault switches and its ASGI ``app``."""

    def __init__(
        self,
        *,
        seed: int = 20260522,
        clock: Callable[[], datetime] | None = None,
        unix_clock: Callable[[], float] = time.time,
    ) -> None:
        self.quotes = SeededQuoteSource(seed)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.unix_clock = unix_clock
        self.faults = Faults()
        self.apps: dict[str, FakeApp] = {}
        self.tokens: dict[str, FakeToken] = {}
        self.nonces: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self._foreign_positions: dict[str, list[dict[str, Any]]] = {}
        self.categories: list[str | None] = []  # the category header of each placement
        self._release = asyncio.Event()
        post, get = ["POST"], ["GET"]
        self.options = SeededOptionMarket(self.quotes)
        # (path, handler, methods): the current generation first, then the older paths the
        # SDKs still ship (3.x ``OrderOperationV2``, Java ``TradeClientV2``/``V3``).
        routes = [
            ("/openapi/config", self.config, get),
            ("/auth/tokens/create", self.token_create, post),
            ("/auth/tokens/check", self.token_check, post),
            ("/openapi/auth/token/refresh", self.token_refresh, post),
            ("/trading/accounts/list", self.account_list, get),
            ("/trading/assets/balances/get", self.balance, get),
            ("/trading/assets/positions/list", self.positions, get),
            ("/openapi/instrument/stock/list", self.instruments, get),
            ("/market-data/stocks/snapshots/list", self.snapshot, get),
            ("/market-data/options/snapshots/list", self.option_snapshot, get),
            ("/market-data/crypto/snapshots/list", self.crypto_snapshot, get),
            ("/openapi/instrument/crypto/list", self.crypto_instruments, get),
            ("/trading/orders/place", self.place, post),
            ("/trading/orders/preview", self.preview, post),
            ("/trading/orders/replace", self.replace, post),
            ("/trading/orders/cancel", self.cancel, post),
            ("/trading/orders/get", self.detail, get),
            ("/trading/orders/open-orders/list", self.open_orders, get),
            ("/trading/orders/historical-orders/list", self.history, get),
            # older generation
            ("/openapi/auth/token/create", self.token_create, post),
            ("/openapi/auth/token/check", self.token_check, post),
            ("/openapi/account/list", self.account_list, get),
            ("/openapi/assets/balance", self.balance, get),
            ("/openapi/assets/positions", self.positions, get),
            ("/openapi/market-data/stock/snapshot", self.snapshot, get),
            ("/openapi/market-data/option/snapshot", self.option_snapshot, get),
            ("/openapi/trade/stock/order/place", self.place, post),
            ("/openapi/trade/stock/order/preview", self.preview, post),
            ("/openapi/trade/stock/order/replace", self.replace, post),
            ("/openapi/trade/stock/order/cancel", self.cancel, post),
            ("/openapi/trade/option/order/place", self.place, post),
            ("/openapi/trade/option/order/preview", self.preview, post),
            ("/openapi/trade/option/order/replace", self.replace, post),
            ("/openapi/trade/option/order/cancel", self.cancel, post),
            ("/openapi/trade/order/detail", self.detail, get),
            ("/openapi/trade/order/open", self.open_orders, get),
            ("/openapi/trade/order/history", self.history, get),
        ]
        self.app = Starlette(
            routes=[Route(path, handler, methods=methods) for path, handler, methods in routes],
            exception_handlers={404: self._no_route, 405: self._no_method},
        )

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        """Unknown paths answer Webull's JSON envelope (the SDK parses ``error_code`` and
        ``message`` of any non-2xx body, ``client.py`` ``_parse_error_info_from_response_body``)."""
        return error("route", f"{request.url.path} is not an API path")

    async def _no_method(self, request: Request, exc: Exception) -> Response:
        return error("method", f"{request.method} is not allowed on {request.url.path}")

    # --- test controls -----------------------------------------------------------------

    def add_app(self, cash: str = "100000", *, two_factor: bool = True) -> FakeApp:
        """A user's registered app with one brokerage account."""
        account = FakeAccount(
            account_id=uuid.uuid4().hex[:22].upper(),
            account_number=str(uuid.uuid4().int)[:8],
            cash=Decimal(cash),
        )
        app = FakeApp(
            app_key=uuid.uuid4().hex,
            app_secret=uuid.uuid4().hex,
            accounts={account.account_id: account},
            two_factor=two_factor,
        )
        self.apps[app.app_key] = app
        return app

    def add_crypto_account(self, app: FakeApp, cash: str = "10000") -> FakeAccount:
        account = FakeAccount(
            account_id=uuid.uuid4().hex[:22].upper(),
            account_number=str(uuid.uuid4().int)[:8],
            cash=Decimal(cash),
            crypto=True,
        )
        app.accounts[account.account_id] = account
        return account

    def confirm(self, token: str) -> None:
        """The user entered the SMS code in the Webull app."""
        self.tokens[token].status = "NORMAL"

    def expire_token(self, token: str) -> None:
        self.tokens[token].status = "EXPIRED"

    def invalidate_token(self, token: str) -> None:
        """Webull no longer knows the token (``INVALID``): it cannot be refreshed."""
        self.tokens[token].status = "INVALID"

    def token_requests(self, path: str) -> int:
        """How many requests reached the token endpoint ``path`` (create, check, refresh),
        under either generation's path."""
        return self.requests.count(("POST", f"/openapi/auth/token/{path}")) + self.requests.count(
            ("POST", f"/auth/tokens/{path}")
        )

    def add_foreign_order(self, account: FakeAccount, combo: dict[str, Any]) -> None:
        """An order placed outside the gateway, listed as given (any shape)."""
        account.foreign_orders.append(combo)

    def add_foreign_position(self, account: FakeAccount, row: dict[str, Any]) -> None:
        self._foreign_positions.setdefault(account.account_id, []).append(row)

    def revoke(self, app_key: str) -> None:
        self.apps[app_key].revoked = True

    def release_hung(self) -> None:
        self._release.set()

    def set_status(self, client_order_id: str, status: str) -> None:
        """Force a status, even one outside the vocabulary (for mapping tests)."""
        for app in self.apps.values():
            for account in app.accounts.values():
                if client_order_id in account.orders:
                    account.orders[client_order_id].status = status
                    return
        raise KeyError(client_order_id)

    def order_count(self, app_key: str) -> int:
        return sum(len(a.orders) for a in self.apps[app_key].accounts.values())

    async def match(self) -> int:
        fills = 0
        for app in self.apps.values():
            for account in app.accounts.values():
                for order in list(account.orders.values()):
                    if order.status in OPEN:
                        fills += self._evaluate(account, order)
        return fills

    # --- plumbing ------------------------------------------------------------------------

    def _verify_signature(self, request: Request, body: bytes) -> FakeApp | Response:
        headers = request.headers
        needed = (
            "x-app-key",
            "x-timestamp",
            "x-signature-version",
            "x-signature-algorithm",
            "x-signature-nonce",
            "x-signature",
        )
        if any(not headers.get(name) for name in needed):
            return error("unauthorized", "missing signature headers")
        app = self.apps.get(headers["x-app-key"])
        if app is None or app.revoked:
            return error("unauthorized", "invalid app key")
        try:
            sent = datetime.strptime(headers["x-timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=UTC
            )
        except ValueError:
            return error("timestamp", "x-timestamp is not an ISO 8601 UTC time")
        if abs(datetime.fromtimestamp(self.unix_clock(), UTC) - sent) > TIMESTAMP_SKEW:
            return error("timestamp", "x-timestamp is out of range")
        algorithm = headers["x-signature-algorithm"]
        if algorithm not in ("HMAC-SHA1", "HMAC-SHA256"):
            return error("signature", "unsupported signature algorithm")
        # The adapter signs the Host header as sent (with its port); the SDK signs its
        # endpoint, which has no port (``get_signed_header(host=request.get_endpoint())``),
        # so a fake on a non-default port accepts either form of its own host.
        host = headers.get("host", "")
        hosts = [host] + ([host.rsplit(":", 1)[0]] if ":" in host else [])
        sent_signature = headers["x-signature"]
        if not any(
            hmac.compare_digest(
                self._signature(request, body, app.app_secret, algorithm, candidate),
                sent_signature,
            )
            for candidate in hosts
        ):
            return error("signature", "signature does not match")
        nonce = headers["x-signature-nonce"]
        if nonce in self.nonces:
            return error("nonce", "x-signature-nonce was used before")
        self.nonces.add(nonce)
        return app

    @staticmethod
    def _signature(request: Request, body: bytes, secret: str, algorithm: str, host: str) -> str:
        names = ("x-app-key", "x-timestamp", "x-signature-version", "x-signature-algorithm")
        params = {name: request.headers[name] for name in (*names, "x-signature-nonce")}
        params["host"] = host
        for key, value in request.query_params.multi_items():
            params[key] = f"{params[key]}&{value}" if key in params else value
        text = request.url.path + "&" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        if body:
            digest = (
                hashlib.md5(body).hexdigest()  # noqa: S324 - Webull's scheme
                if algorithm == "HMAC-SHA1"
                else hashlib.sha256(body).hexdigest()
            )
            text += "&" + digest.upper()
        mac = hmac.new(
            (secret + "&").encode(),
            quote(text, safe="").encode(),
            hashlib.sha1 if algorithm == "HMAC-SHA1" else hashlib.sha256,
        )
        return base64.b64encode(mac.digest()).decode()

    async def _gate(
        self, request: Request, *, token: bool = True
    ) -> tuple[FakeApp, bytes] | Response:
        body = await request.body()
        self.requests.append((request.method, request.url.path))
        if self.faults.latency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.latency)
        if self.faults.server_errors > 0 and self.faults.server_errors_method in (
            None,
            request.method,
        ):
            self.faults.server_errors -= 1
            return error("server", "internal error")
        if self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            return error(
                "rate", "too many requests", **{"Retry-After": str(self.faults.retry_after)}
            )
        app = self._verify_signature(request, body)
        if isinstance(app, Response):
            return app
        if token and app.two_factor:
            value = request.headers.get("x-access-token")
            if not value:
                return error("token_missing", "two-factor authentication requires x-access-token")
            found = self.tokens.get(value)
            if (
                found is None
                or found.app_key != app.app_key
                or found.status in ("INVALID", "EXPIRED")
            ):
                return error("token_invalid", "the access token is invalid or expired")
            if found.status == "PENDING":
                return error("token_pending", "the access token is pending verification")
        return app, body

    def _account(self, app: FakeApp, account_id: object) -> FakeAccount | Response:
        account = app.accounts.get(str(account_id))
        if account is None:
            return error("account", "invalid account_id")
        return account

    def _json(self, body: bytes) -> dict[str, Any] | Response:
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            return error("parameter", "the body is not JSON")
        if not isinstance(parsed, dict):
            return error("parameter", "the body is not an object")
        return parsed

    def _quote(self, symbol: str) -> Any:
        return self.quotes.quote(_pair(symbol) or symbol, self.clock())

    def _reserved(self, account: FakeAccount) -> Decimal:
        total = ZERO
        for order in account.orders.values():
            if order.side == "BUY" and order.status in OPEN:
                if order.is_option:
                    price = order.limit_price or abs(self._option_net(order))
                    total += (order.quantity - order.filled) * price * 100
                elif order.amount is not None:
                    total += order.amount
                else:
                    price = order.limit_price or self._quote(order.symbol).ask
                    total += (order.quantity - order.filled) * price
        return total

    # --- config and token ----------------------------------------------------------------

    async def config(self, request: Request) -> Response:
        """``GET /openapi/config``: the 3.x SDK asks it when a client is built
        (``client_initializer.py``) and creates a token only when ``token_check_enabled``."""
        gated = await self._gate(request, token=False)
        if isinstance(gated, Response):
            return gated
        return JSONResponse({"token_check_enabled": gated[0].two_factor})

    def _token_body(self, token: FakeToken) -> dict[str, Any]:
        return {
            "token": token.token,
            "expires": int(token.expires.timestamp() * 1000),
            "status": token.status,
        }

    async def token_create(self, request: Request) -> Response:
        gated = await self._gate(request, token=False)
        if isinstance(gated, Response):
            return gated
        app, body = gated
        # The SDK sends its stored token with create (``CreateTokenRequest.set_token``) and
        # takes the answer's status as that token's: a token Webull still knows is answered
        # as it stands (inferred from the SDK's token manager; not documented).
        parsed = self._json(body)
        known = self.tokens.get(str(parsed.get("token"))) if isinstance(parsed, dict) else None
        if known is not None and known.app_key == app.app_key and known.status == "NORMAL":
            return JSONResponse(self._token_body(known))
        token = FakeToken(
            token=uuid.uuid4().hex + uuid.uuid4().hex,
            app_key=app.app_key,
            status="PENDING" if app.two_factor else "NORMAL",
            expires=self.clock() + TOKEN_LIFETIME,
        )
        self.tokens[token.token] = token
        return JSONResponse(self._token_body(token))

    async def _existing_token(self, request: Request) -> FakeToken | Response:
        gated = await self._gate(request, token=False)
        if isinstance(gated, Response):
            return gated
        app, body = gated
        parsed = self._json(body)
        if isinstance(parsed, Response):
            return parsed
        token = self.tokens.get(str(parsed.get("token")))
        if token is None or token.app_key != app.app_key:
            return error("parameter", "unknown token")
        return token

    async def token_check(self, request: Request) -> Response:
        token = await self._existing_token(request)
        if isinstance(token, Response):
            return token
        return JSONResponse(self._token_body(token))

    async def token_refresh(self, request: Request) -> Response:
        token = await self._existing_token(request)
        if isinstance(token, Response):
            return token
        if token.status == "NORMAL":
            token.expires = self.clock() + TOKEN_LIFETIME
        return JSONResponse(self._token_body(token))

    # --- account, assets, instruments, market data ---------------------------------------

    async def account_list(self, request: Request) -> Response:
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        app, _ = gated
        return JSONResponse(
            [
                {
                    "user_id": app.app_key[:12],
                    "account_id": a.account_id,
                    "account_number": a.account_number,
                    "account_type": "CASH" if a.crypto else "MARGIN",
                    "account_label": "Crypto" if a.crypto else "Individual Margin",
                    "account_class": "INDIVIDUAL",
                }
                for a in app.accounts.values()
            ]
        )

    def _position_value(self, account: FakeAccount) -> Decimal:
        return sum(
            (qty * self._quote(symbol).last for symbol, (qty, _) in account.positions.items()),
            ZERO,
        )

    async def balance(self, request: Request) -> Response:
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        account = self._account(gated[0], request.query_params.get("account_id"))
        if isinstance(account, Response):
            return account
        market = self._position_value(account)
        cost = sum((c for _, c in account.positions.values()), ZERO)
        buying_power = account.cash - self._reserved(account)
        return JSONResponse(
            {
                "total_asset_currency": "USD",
                "total_cash_balance": str(account.cash),
                "total_market_value": str(market),
                "total_net_liquidation_value": str(account.cash + market),
                "total_unrealized_profit_loss": str(market - cost),
                "account_currency_assets": [
                    {
                        "currency": "USD",
                        "cash_balance": str(account.cash),
                        "settled_cash": str(account.cash),
                        "unsettled_cash": "0",
                        "market_value": str(market),
                        "buying_power": str(buying_power),
                        "unrealized_profit_loss": str(market - cost),
                        "net_liquidation_value": str(account.cash + market),
                    }
                ],
            }
        )

    async def positions(self, request: Request) -> Response:
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        account = self._account(gated[0], request.query_params.get("account_id"))
        if isinstance(account, Response):
            return account
        items = []
        for symbol, (qty, cost) in sorted(account.positions.items()):
            if not qty:
                continue
            last = self._quote(symbol).last
            items.append(
                {
                    "position_id": str(uuid.uuid5(uuid.NAMESPACE_URL, account.account_id + symbol)),
                    "symbol": symbol,
                    "instrument_id": str(zlib.crc32(symbol.encode())),
                    "instrument_type": "CRYPTO" if _pair(symbol) else "EQUITY",
                    "currency": "USD",
                    "quantity": str(qty),
                    "available_quantity": str(qty),
                    "cost_price": str((cost / qty).quantize(Decimal("0.0001"))),
                    "last_price": str(last),
                    "market_value": str(qty * last),
                    "unrealized_profit_loss": str(qty * last - cost),
                }
            )
        items.extend(self._option_rows(account))
        items.extend(self._foreign_positions.get(account.account_id, []))
        return JSONResponse(items)

    def _option_rows(self, account: FakeAccount) -> list[dict[str, Any]]:
        """One row per option strategy held, its legs in ``legs`` (Java SDK
        ``v3/AccountPositionsInfo.java`` + ``CommonPositionInfo.java``)."""
        rows = []
        now = self.clock()
        for strategy, legs in account.option_groups:
            held = {symbol: v for symbol, v in legs.items() if v[0]}
            if not held:
                continue
            leg_rows = []
            total_value = total_pl = ZERO
            for symbol, (qty, cost) in sorted(held.items()):
                contract = OptionContract.parse(symbol)
                mark = self.options.quote(contract, now).mark
                value = mark * qty * 100
                total_value += value
                total_pl += value - cost
                leg_rows.append(
                    {
                        "item_id": str(uuid.uuid5(uuid.NAMESPACE_URL, account.account_id + symbol)),
                        "side": "BUY" if qty > 0 else "SELL",
                        "quantity": str(abs(qty)),
                        "available_quantity": str(abs(qty)),
                        "symbol": contract.underlying,
                        "instrument_type": "OPTION",
                        "option_type": "CALL" if contract.right is OptionRight.call else "PUT",
                        "option_category": "US_OPTION",
                        "option_expire_date": contract.expiration.isoformat(),
                        "option_exercise_price": str(contract.strike),
                        "option_contract_multiplier": "100",
                        "option_contract_deliverable": "100",
                        "cost_price": str((cost / qty / 100).quantize(Decimal("0.0001"))),
                        "last_price": str(mark),
                        "market_value": str(value),
                        "unrealized_profit_loss": str(value - cost),
                        "expiration_type": "STANDARD",
                    }
                )
            first = OptionContract.parse(sorted(held)[0])
            rows.append(
                {
                    "position_id": str(
                        uuid.uuid5(uuid.NAMESPACE_URL, account.account_id + ",".join(held))
                    ),
                    "symbol": first.underlying,
                    "instrument_type": "OPTION",
                    "option_strategy": strategy,
                    "currency": "USD",
                    "quantity": str(min(abs(q) for q, _ in held.values())),
                    "market_value": str(total_value),
                    "unrealized_profit_loss": str(total_pl),
                    "legs": leg_rows,
                }
            )
        return rows

    def _equities(self, raw: str | None) -> list[str]:
        wanted = [s for s in (raw or "").split(",") if s]
        return [s for s in wanted if s in UNIVERSE and UNIVERSE[s].asset_class is AssetClass.equity]

    async def instruments(self, request: Request) -> Response:
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        return JSONResponse(
            [
                {
                    "symbol": s,
                    "instrument_id": str(zlib.crc32(s.encode())),
                    "name": f"{s} (fake)",
                    "exchange_code": "NAS",
                    "currency_code": "USD",
                }
                for s in self._equities(request.query_params.get("symbols"))
            ]
        )

    async def snapshot(self, request: Request) -> Response:
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        items = []
        for symbol in self._equities(request.query_params.get("symbols")):
            q = self._quote(symbol)
            items.append(
                {
                    "symbol": symbol,
                    "instrument_id": str(zlib.crc32(symbol.encode())),
                    "price": str(q.last),
                    "bid": str(q.bid),
                    "ask": str(q.ask),
                    "bid_size": str(q.bid_size),
                    "ask_size": str(q.ask_size),
                    "trade_time": epoch_ms(q.as_of),
                }
            )
        return JSONResponse(items)

    def _cryptos(self, raw: str | None) -> list[str]:
        """Wire crypto symbols (``BTCUSD``) of pairs the paper market lists."""
        return [s for s in (raw or "").split(",") if _pair(s)]

    async def crypto_instruments(self, request: Request) -> Response:
        """``GET /openapi/instrument/crypto/list?symbols=BTCUSD&category=US_CRYPTO``."""
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        return JSONResponse(
            [
                {"symbol": s, "instrument_id": str(zlib.crc32(s.encode())), "name": s}
                for s in self._cryptos(request.query_params.get("symbols"))
            ]
        )

    async def crypto_snapshot(self, request: Request) -> Response:
        """``GET /market-data/crypto/snapshots/list?symbols=BTCUSD&category=US_CRYPTO``."""
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        if request.query_params.get("category") != "US_CRYPTO":
            return error("parameter", "category must be US_CRYPTO")
        items = []
        for symbol in self._cryptos(request.query_params.get("symbols")):
            q = self._quote(symbol)
            items.append(
                {
                    "symbol": symbol,
                    "price": str(q.last),
                    "bid": str(q.bid),
                    "ask": str(q.ask),
                    "trade_time": epoch_ms(q.as_of),
                }
            )
        return JSONResponse(items)

    async def option_snapshot(self, request: Request) -> Response:
        """``GET /market-data/options/snapshots/list?symbols=<OCC,...>&category=US_OPTION``
        (3.x ``get_option_snapshot_request.py``: at most 20 symbols)."""
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        wanted = [s for s in (request.query_params.get("symbols") or "").split(",") if s]
        if request.query_params.get("category") != "US_OPTION":
            return error("parameter", "category must be US_OPTION")
        if len(wanted) > 20:
            return error("parameter", "at most 20 symbols per query")
        items = []
        now = self.clock()
        for symbol in wanted:
            try:
                contract = OptionContract.parse(symbol)
            except ValueError:
                continue
            if not self.options.is_listed(contract, now.date()):
                continue
            q = self.options.quote(contract, now)
            items.append(
                {
                    "symbol": contract.symbol,
                    "price": str(q.last),
                    "bid": str(q.bid),
                    "ask": str(q.ask),
                    "trade_time": epoch_ms(q.as_of),
                }
            )
        return JSONResponse(items)

    # --- orders --------------------------------------------------------------------------

    async def _order_body(self, request: Request) -> tuple[FakeAccount, dict[str, Any]] | Response:
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        app, body = gated
        parsed = self._json(body)
        if isinstance(parsed, Response):
            return parsed
        account = self._account(app, parsed.get("account_id"))
        if isinstance(account, Response):
            return account
        return account, parsed

    def _admit(self, account: FakeAccount, body: dict[str, Any]) -> FakeOrder | Response:
        """Parse and check one placement (or preview) the way the account would take it."""
        new_orders = body.get("new_orders")
        if not isinstance(new_orders, list) or len(new_orders) != 1:
            return error("parameter", "new_orders must hold one order")
        entry = new_orders[0]
        if not isinstance(entry, dict):
            return error("parameter", "new_orders must hold objects")
        parsed = self._parse(entry)
        if isinstance(parsed, Response):
            return parsed
        if parsed.client_order_id in account.orders:
            return error("duplicate", "client_order_id already exists")
        if (parsed.instrument == "CRYPTO") != account.crypto:
            return error("account", "crypto trades in the crypto account only")
        if parsed.is_option:
            debit = self._option_net(parsed) * parsed.quantity * 100
            price = parsed.limit_price or abs(self._option_net(parsed))
            cost = price * parsed.quantity * 100 if parsed.side == "BUY" else ZERO
            if debit > 0 and cost > account.cash - self._reserved(account):
                return error("funds", "insufficient buying power")
            if parsed.intent in ("BUY_TO_CLOSE", "SELL_TO_CLOSE"):
                held = self._option_held(account, parsed.legs[0].contract.symbol)
                closing = -held if parsed.intent == "BUY_TO_CLOSE" else held
                if closing < parsed.quantity:
                    return error("holdings", "insufficient position quantity")
            return parsed
        quote_now = self._quote(parsed.symbol)
        if parsed.side == "BUY":
            cost = parsed.amount or parsed.quantity * (parsed.limit_price or quote_now.ask)
            if cost > account.cash - self._reserved(account):
                return error("funds", "insufficient buying power")
        elif parsed.side == "SELL":
            held = account.positions.get(parsed.symbol, (ZERO, ZERO))[0]
            selling = sum(
                (
                    o.quantity - o.filled
                    for o in account.orders.values()
                    if o.side == "SELL" and o.symbol == parsed.symbol and o.status in OPEN
                ),
                ZERO,
            )
            wanted = parsed.quantity if parsed.amount is None else parsed.amount / quote_now.bid
            if wanted > held - selling:
                return error("holdings", "insufficient position quantity")
        return parsed

    async def place(self, request: Request) -> Response:
        found = await self._order_body(request)
        if isinstance(found, Response):
            return found
        account, body = found
        parsed = self._admit(account, body)
        if isinstance(parsed, Response):
            return parsed
        # The 3.x SDK names the placement's category in a header (market_instrument type).
        sent_category = request.headers.get("category")
        instrument = "OPTION" if parsed.is_option else parsed.instrument
        if sent_category is not None and sent_category != f"US_{instrument}":
            return error("parameter", f"category {sent_category} does not match the order")
        self.categories.append(sent_category)
        account.orders[parsed.client_order_id] = parsed
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return JSONResponse(
            {"client_order_id": parsed.client_order_id, "order_id": parsed.order_id}
        )

    async def preview(self, request: Request) -> Response:
        """``POST /trading/orders/preview``: ``{"estimated_cost",
        "estimated_transaction_fee", "currency"}`` (Java ``v2/PreviewOrderResponse.java``);
        refusals as a placement would answer them. Fee: none (chosen here)."""
        found = await self._order_body(request)
        if isinstance(found, Response):
            return found
        account, body = found
        parsed = self._admit(account, body)
        if isinstance(parsed, Response):
            return parsed
        if parsed.is_option:
            price = parsed.limit_price or abs(self._option_net(parsed))
            cost = price * parsed.quantity * 100
        elif parsed.amount is not None:
            cost = parsed.amount
        else:
            q = self._quote(parsed.symbol)
            price = parsed.limit_price or (q.ask if parsed.side == "BUY" else q.bid)
            cost = price * parsed.quantity
        return JSONResponse(
            {
                "estimated_cost": str(cost.quantize(Decimal("0.01"))),
                "estimated_transaction_fee": "0",
                "currency": "USD",
            }
        )

    def _parse(self, entry: dict[str, Any]) -> FakeOrder | Response:
        client_order_id = entry.get("client_order_id")
        if (
            not isinstance(client_order_id, str)
            or not client_order_id
            or len(client_order_id) > MAX_CLIENT_ORDER_ID
        ):
            return error("parameter", "client_order_id is required, at most 40 characters")
        if entry.get("combo_type") != "NORMAL":
            return error("parameter", "combo_type must be NORMAL for this fake")
        if entry.get("legs") is not None:
            return self._parse_option(entry, client_order_id)
        instrument = entry.get("instrument_type")
        if instrument not in ("EQUITY", "CRYPTO") or entry.get("market") != "US":
            return error("parameter", "instrument_type EQUITY or CRYPTO, market US")
        symbol = str(entry.get("symbol"))
        crypto = instrument == "CRYPTO"
        if symbol not in (self._cryptos(symbol) if crypto else self._equities(symbol)):
            return error("symbol", f"invalid symbol {symbol}")
        side, order_type, tif = (
            entry.get("side"),
            entry.get("order_type"),
            entry.get("time_in_force"),
        )
        if side not in ("BUY", "SELL", "SHORT"):
            return error("parameter", "invalid side")
        if order_type not in TYPES:
            return error("parameter", "invalid order_type")
        if tif not in TIFS:
            return error("parameter", "invalid time_in_force")
        session = entry.get("support_trading_session", "CORE" if crypto else None)
        if session not in ("CORE", "ALL", "NIGHT"):
            return error("parameter", "invalid support_trading_session")
        if crypto and side == "SHORT":
            return error("parameter", "crypto cannot be sold short")
        entrust = entry.get("entrust_type")
        amount: Decimal | None = None
        try:
            if entrust == "AMOUNT":
                if order_type != "MARKET" or side == "SHORT":
                    return error("parameter", "amount orders are market buys or sells")
                if entry.get("quantity") not in (None, ""):
                    return error("parameter", "an amount order takes no quantity")
                amount = _opt(entry.get("total_cash_amount"))
                if amount is None:
                    return error("parameter", "total_cash_amount is required")
                quantity = ZERO
            elif entrust == "QTY":
                quantity = Decimal(str(entry.get("quantity")))
                if not quantity.is_finite() or quantity <= 0:
                    return error("parameter", "quantity must be positive")
                if not crypto and quantity != quantity.to_integral_value():
                    return error("parameter", "fractional shares are traded by amount")
            else:
                return error("parameter", "entrust_type must be QTY or AMOUNT")
            limit_price = _opt(entry.get("limit_price"))
            stop_price = _opt(entry.get("stop_price"))
        except InvalidOperation:
            return error("parameter", "quantity and prices must be numbers")
        if order_type in ("LIMIT", "STOP_LOSS_LIMIT") and limit_price is None:
            return error("parameter", "limit_price is required")
        if order_type in ("STOP_LOSS", "STOP_LOSS_LIMIT") and stop_price is None:
            return error("parameter", "stop_price is required")
        return FakeOrder(
            client_order_id=client_order_id,
            order_id=uuid.uuid4().hex[:26].upper(),
            symbol=symbol,
            side=str(side),
            order_type=str(order_type),
            time_in_force=str(tif),
            quantity=quantity,
            limit_price=limit_price,
            stop_price=stop_price,
            session=str(session),
            placed_at=self.clock(),
            amount=amount,
            instrument=str(instrument),
        )

    def _parse_option(self, entry: dict[str, Any], client_order_id: str) -> FakeOrder | Response:
        strategy = entry.get("option_strategy")
        if strategy not in STRATEGIES:
            return error("parameter", "invalid option_strategy")
        side, order_type, tif = (
            entry.get("side"),
            entry.get("order_type"),
            entry.get("time_in_force"),
        )
        if side not in ("BUY", "SELL"):
            return error("parameter", "invalid side")
        if order_type not in ("LIMIT", "MARKET"):
            return error("parameter", "option orders are LIMIT or MARKET")
        if tif not in ("DAY", "GTC"):
            return error("parameter", "option orders are DAY or GTC")
        if entry.get("entrust_type") != "QTY":
            return error("parameter", "option orders go by quantity (entrust_type QTY)")
        raw_legs = entry.get("legs")
        if not isinstance(raw_legs, list) or not 1 <= len(raw_legs) <= 4:
            return error("parameter", "legs must hold 1 to 4 legs")
        if (strategy == "SINGLE") != (len(raw_legs) == 1):
            return error("parameter", "option_strategy does not match the legs")
        intent = entry.get("position_intent")
        if intent is not None and intent not in INTENTS:
            return error("parameter", "invalid position_intent")
        try:
            quantity = Decimal(str(entry.get("quantity")))
            limit_price = _opt(entry.get("limit_price"))
        except InvalidOperation:
            return error("parameter", "quantity and prices must be numbers")
        if not quantity.is_finite() or quantity <= 0 or quantity != int(quantity):
            return error("parameter", "quantity must be a whole number of contracts")
        if order_type == "LIMIT" and limit_price is None:
            return error("parameter", "limit_price is required")
        legs = []
        today = self.clock().date()
        for raw in raw_legs:
            if not isinstance(raw, dict):
                return error("parameter", "legs must hold objects")
            if raw.get("instrument_type") != "OPTION" or raw.get("market") != "US":
                return error("parameter", "legs are US OPTION legs")
            if raw.get("side") not in ("BUY", "SELL"):
                return error("parameter", "invalid leg side")
            right = {"CALL": OptionRight.call, "PUT": OptionRight.put}.get(
                str(raw.get("option_type"))
            )
            if right is None:
                return error("parameter", "invalid option_type")
            try:
                contract = OptionContract(
                    underlying=str(raw.get("symbol")),
                    root=str(raw.get("symbol")),
                    expiration=date.fromisoformat(str(raw.get("option_expire_date"))),
                    right=right,
                    strike=Decimal(str(raw.get("strike_price"))).normalize(),
                )
                leg_qty = Decimal(str(raw.get("quantity")))
            except (ValueError, InvalidOperation):
                return error("parameter", "invalid leg strike, expiry or quantity")
            if contract.strike == contract.strike.to_integral_value():
                contract = dataclasses.replace(
                    contract, strike=contract.strike.quantize(Decimal(1))
                )
            if not self.options.is_listed(contract, today):
                return error("symbol", f"invalid option contract {contract.symbol}")
            if leg_qty <= 0 or leg_qty % quantity:
                return error("parameter", "leg quantity must be a multiple of the quantity")
            legs.append(FakeLeg(uuid.uuid4().hex[:20].upper(), contract, str(raw["side"]), leg_qty))
        if len({leg.contract.symbol for leg in legs}) != len(legs):
            return error("parameter", "legs repeat a contract")
        return FakeOrder(
            client_order_id=client_order_id,
            order_id=uuid.uuid4().hex[:26].upper(),
            symbol=legs[0].contract.underlying,
            side=str(side),
            order_type=str(order_type),
            time_in_force=str(tif),
            quantity=quantity,
            limit_price=limit_price,
            stop_price=None,
            session="CORE",
            placed_at=self.clock(),
            strategy=str(strategy),
            intent=None if intent is None else str(intent),
            legs=legs,
        )

    def _option_net(self, order: FakeOrder) -> Decimal:
        """The strategy's model net price per unit: positive a debit, negative a credit."""
        now = self.clock()
        total = ZERO
        for leg in order.legs:
            mark = self.options.quote(leg.contract, now).mark
            ratio = leg.quantity / order.quantity
            total += mark * ratio * (1 if leg.side == "BUY" else -1)
        return total.quantize(Decimal("0.01"))

    def _option_held(self, account: FakeAccount, symbol: str) -> Decimal:
        return sum((legs[symbol][0] for _, legs in account.option_groups if symbol in legs), ZERO)

    async def replace(self, request: Request) -> Response:
        found = await self._order_body(request)
        if isinstance(found, Response):
            return found
        account, body = found
        changes = body.get("modify_orders")
        if not isinstance(changes, list) or len(changes) != 1 or not isinstance(changes[0], dict):
            return error("parameter", "modify_orders must hold one order")
        change = changes[0]
        order = account.orders.get(str(change.get("client_order_id")))
        if order is None:
            return error("not_found", "order not found")
        if order.status not in OPEN:
            return error("not_modifiable", f"order status {order.status} does not support modify")
        try:
            quantity = _opt(change.get("quantity"))
            limit_price = _opt(change.get("limit_price"))
            stop_price = _opt(change.get("stop_price"))
        except InvalidOperation:
            return error("parameter", "quantity and prices must be numbers")
        tif = change.get("time_in_force")
        if tif is not None and tif not in TIFS:
            return error("parameter", "invalid time_in_force")
        if quantity is not None:
            if quantity <= order.filled:
                return error("parameter", "quantity must exceed the filled quantity")
            if order.is_option:
                # US option replace names each leg by its id (3.x sample "replace for Webull US").
                legs = change.get("legs")
                by_id = {leg.leg_id: leg for leg in order.legs}
                if not isinstance(legs, list) or len(legs) != len(order.legs):
                    return error("parameter", "legs with their id are required for options")
                updates = {}
                for leg in legs:
                    if not isinstance(leg, dict) or leg.get("id") not in by_id:
                        return error("parameter", "unknown leg id")
                    try:
                        updates[str(leg["id"])] = Decimal(str(leg.get("quantity")))
                    except InvalidOperation:
                        return error("parameter", "invalid leg quantity")
                for leg_id, leg_qty in updates.items():
                    old = by_id[leg_id]
                    if leg_qty * order.quantity != old.quantity * quantity:
                        return error("parameter", "leg quantities must keep the ratios")
                for leg_id, leg_qty in updates.items():
                    by_id[leg_id].quantity = leg_qty
            order.quantity = quantity
        if limit_price is not None:
            order.limit_price = limit_price
        if stop_price is not None:
            order.stop_price = stop_price
        if tif is not None:
            order.time_in_force = str(tif)
        return JSONResponse({"client_order_id": order.client_order_id, "order_id": order.order_id})

    async def cancel(self, request: Request) -> Response:
        found = await self._order_body(request)
        if isinstance(found, Response):
            return found
        account, body = found
        order = account.orders.get(str(body.get("client_order_id")))
        if order is None:
            return error("not_found", "order not found")
        if order.status not in OPEN:
            return error("not_modifiable", f"order status {order.status} does not support cancel")
        order.status = "CANCELLED"
        return JSONResponse({"client_order_id": order.client_order_id, "order_id": order.order_id})

    async def _account_query(self, request: Request) -> FakeAccount | Response:
        gated = await self._gate(request)
        if isinstance(gated, Response):
            return gated
        return self._account(gated[0], request.query_params.get("account_id"))

    async def detail(self, request: Request) -> Response:
        account = await self._account_query(request)
        if isinstance(account, Response):
            return account
        order = account.orders.get(request.query_params.get("client_order_id", ""))
        if order is None:
            return error("not_found", "order not found")
        return JSONResponse(order.wire())

    def _paged(
        self, request: Request, orders: list[FakeOrder], foreign: list[dict[str, Any]]
    ) -> Response:
        params = request.query_params
        try:
            size = min(int(params.get("page_size", "10")), 100)
        except ValueError:
            return error("parameter", "invalid page_size")
        if request.headers.get("x-version") == "v3":
            # The new pagination protocol (pagination_key) has no documented body: not faked.
            return error("parameter", "this fake serves the legacy pagination (x-version v2)")
        ordered = sorted(orders, key=lambda o: o.placed_at, reverse=True)
        rows = [o.wire() for o in ordered] + list(foreign)
        last = params.get("last_client_order_id")
        if last:
            ids = [row.get("client_order_id") for row in rows]
            rows = rows[ids.index(last) + 1 :] if last in ids else []
        return JSONResponse(rows[:size])

    async def open_orders(self, request: Request) -> Response:
        account = await self._account_query(request)
        if isinstance(account, Response):
            return account
        return self._paged(
            request,
            [o for o in account.orders.values() if o.status in OPEN],
            account.foreign_orders,
        )

    async def history(self, request: Request) -> Response:
        account = await self._account_query(request)
        if isinstance(account, Response):
            return account
        params = request.query_params
        selected = list(account.orders.values())
        try:
            if "start_date" in params:
                start = datetime.strptime(params["start_date"], "%Y-%m-%d").replace(tzinfo=UTC)
                selected = [o for o in selected if o.placed_at >= start]
            if "end_date" in params:
                end = datetime.strptime(params["end_date"], "%Y-%m-%d").replace(tzinfo=UTC)
                selected = [o for o in selected if o.placed_at < end + timedelta(days=1)]
        except ValueError:
            return error("parameter", "dates are yyyy-MM-dd")
        return self._paged(request, selected, account.foreign_orders)

    def _evaluate(self, account: FakeAccount, order: FakeOrder) -> int:
        if order.is_option:
            return self._evaluate_option(account, order)
        now = self.clock()
        quote_now = self._quote(order.symbol)
        remaining = order.quantity - order.filled
        if order.amount is not None:
            # An amount order buys (sells) what the amount pays for at the touch, at once.
            price = quote_now.ask if order.side == "BUY" else quote_now.bid
            remaining = (order.amount / price).quantize(AMOUNT_PLACES)
            order.quantity = remaining
        decision = decide(
            OrderState(
                side=OrderSide.buy if order.side == "BUY" else OrderSide.sell,
                order_type=TYPES[order.order_type],
                time_in_force=TIFS[order.time_in_force],
                remaining=remaining,
                limit_price=order.limit_price,
                stop_price=order.stop_price,
                stop_triggered=order.stop_triggered,
            ),
            quote_now,
        )
        order.stop_triggered = decision.stop_triggered
        filled = 0
        if decision.fills and decision.fill_price is not None:
            filled = 1
            qty, price = decision.fill_quantity, decision.fill_price
            previous = order.filled * (order.filled_price or ZERO)
            order.filled += qty
            order.filled_price = ((previous + qty * price) / order.filled).quantize(
                Decimal("0.0001")
            )
            order.filled_at = now
            signed = qty if order.side == "BUY" else -qty
            account.cash -= signed * price
            account.positions[order.symbol] = _moved(
                account.positions.get(order.symbol, (ZERO, ZERO)), signed, price
            )
            order.status = "FILLED" if order.filled >= order.quantity else "PARTIAL_FILLED"
        if decision.cancel_remainder and order.status in OPEN:
            order.status = "CANCELLED"
        return filled

    def _evaluate_option(self, account: FakeAccount, order: FakeOrder) -> int:
        """All or nothing at the model's net price (no better than the limit): a debit fills
        when the limit is at or above it, a credit when the limit is at or below it."""
        net = self._option_net(order)
        # What the strategy costs (BUY) or brings (SELL) at the model marks, per unit.
        price = net if order.side == "BUY" else -net
        if order.limit_price is not None:
            if order.side == "BUY" and order.limit_price < price:
                return 0
            if order.side == "SELL" and order.limit_price > price:
                return 0
            if price <= 0:  # the marks disagree with the order's direction: fill at its limit
                price = order.limit_price
        elif price <= 0:
            price = Decimal("0.01")
        now = self.clock()
        units = order.quantity - order.filled
        order.filled = order.quantity
        order.filled_price = price
        order.filled_at = now
        order.status = "FILLED"
        account.cash += (-price if order.side == "BUY" else price) * units * 100
        opening = order.intent in (None, "BUY_TO_OPEN", "SELL_TO_OPEN")
        legs = {leg.contract.symbol: leg for leg in order.legs}
        group = next(
            (g for _, g in account.option_groups if set(legs) <= set(g) and not opening),
            None,
        )
        if group is None:
            group = next(
                (
                    g
                    for s, g in account.option_groups
                    if s == order.strategy and set(g) == set(legs)
                ),
                None,
            )
        if group is None:
            group = {}
            account.option_groups.append((str(order.strategy), group))
        for symbol, leg in legs.items():
            mark = self.options.quote(leg.contract, now).mark
            leg_qty = leg.quantity / order.quantity * units
            signed = leg_qty if leg.side == "BUY" else -leg_qty
            # Each leg carries its share of the net price at the model's relative marks.
            group[symbol] = _moved(group.get(symbol, (ZERO, ZERO)), signed, mark * 100)
        return 1


def _moved(
    held: tuple[Decimal, Decimal], signed: Decimal, price: Decimal
) -> tuple[Decimal, Decimal]:
    """(quantity, cost) after a signed fill at ``price``: adds in the same direction, releases
    cost pro rata when reducing, and starts anew when it crosses zero."""
    qty, cost = held
    new_qty = qty + signed
    if qty == 0 or (qty > 0) == (signed > 0):
        return new_qty, cost + signed * price
    if new_qty == 0:
        return ZERO, ZERO
    if (new_qty > 0) == (qty > 0):
        return new_qty, cost * new_qty / qty
    return new_qty, new_qty * price


def _opt(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    result = Decimal(str(value))
    if not result.is_finite() or result <= 0:
        raise InvalidOperation
    return result


def _pair(symbol: str) -> str | None:
    """``BTCUSD`` -> ``BTC-USD`` when the paper market lists that crypto pair."""
    if not symbol.endswith("USD") or len(symbol) <= 3:
        return None
    pair = f"{symbol[:-3]}-USD"
    found = UNIVERSE.get(pair)
    return pair if found is not None and found.asset_class is AssetClass.crypto else None

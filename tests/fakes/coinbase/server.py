"""A fake Coinbase Advanced Trade (REST v3, the v2 wallet transactions, the user WebSocket).

It speaks the real protocol (sources as in ``app/brokers/coinbase/mapping.py``):

* authentication: every REST request carries ``Authorization: Bearer <JWT>``, verified like
  Coinbase would: the ES256/EdDSA signature against the registered public key, ``kid`` and
  ``sub`` naming the key, ``iss`` "cdp", ``nbf``/``exp`` (120 s), a ``nonce`` header, and the
  ``uri`` claim equal to ``"<METHOD> <host><path>"`` of this very request. Anything else (and
  a revoked key) is ``401`` with the plain-text body ``Unauthorized`` (what ccxt/ccxt#22182
  shows Coinbase sending; v2 paths answer the v2 ``{"errors": [...]}`` shape);
* the paths, field names, string decimals and enums of the API reference and its examples:
  ``/api/v3/brokerage/accounts``, ``/portfolios/{uuid}``, ``/products``,
  ``/products/{id}``, ``/best_bid_ask``, ``/orders`` (200 ``success: false`` with
  ``error_response`` for a refused order), ``/orders/batch_cancel`` (per-order results),
  ``/orders/edit``, ``/orders/historical/{id}``, ``/orders/historical/batch``,
  ``/orders/historical/fills``, and ``/v2/accounts/{uuid}/transactions``;
* gRPC-style error bodies ``{"error", "error_details", "message"}`` (hummingbot#7220);
* the ``user`` channel: subscribe with a JWT (no ``uri``), the ``subscriptions`` answer,
  a ``snapshot`` of open orders batched by 50, ``update`` events, the ``heartbeats``
  channel (one message per ``heartbeat_seconds``, a counting ``heartbeat_counter``), one
  ``sequence_num`` per connection, ``{"type": "error", "message": "authentication failure"}``
  for a refused JWT (coinbase/coinbase-advanced-py#19).

Choices where the documentation is silent (each is a choice of this fake, not a documented
fact, and the adapter is written not to depend on it): a resting order is ``OPEN`` at once;
an IOC/FOK remainder ends ``CANCELLED``; a repeated ``client_order_id`` answers the existing
order's id; cancelling a finished order answers ``INVALID_CANCEL_REQUEST`` and an unknown
one ``UNKNOWN_CANCEL_ORDER``; a cancelled order's user-channel entry reports
``leaves_quantity`` "0"; an unknown product is 404 ``NOT_FOUND``; commissions are zero; a
429 body is ``RESOURCE_EXHAUSTED``.

Prices come from the paper market (``SeededQuoteSource``) and orders match by the paper
broker's rules (``app.paper.matching.decide``) over in-memory books, when the test (or the
fake-brokers ticker) calls ``match()``. Fault switches live in ``faults``; see ``Faults``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers.base import AssetClass, OrderSide, OrderType, TimeInForce
from app.paper.market_data import PaperMarketData
from app.paper.matching import OrderState, decide
from app.paper.options_market import SeededOptionMarket
from app.paper.quotes import UNIVERSE, SeededQuoteSource
from tests.fakes.coinbase.market_stream import MARKET_PATH, FakeCoinbaseMarket

ZERO = Decimal(0)
PREFIX = "/api/v3/brokerage"
SIZE_STEP = Decimal("0.00000001")  # base_increment of the fake's products
PRICE_STEP = Decimal("0.01")  # quote_increment
WORKING = frozenset({"OPEN", "PENDING", "QUEUED", "CANCEL_QUEUED"})
FINISHED = frozenset({"FILLED", "CANCELLED", "EXPIRED", "FAILED"})
CONFIG_TERMS: dict[str, tuple[OrderType, TimeInForce]] = {
    "market_market_ioc": (OrderType.market, TimeInForce.ioc),
    "sor_limit_ioc": (OrderType.limit, TimeInForce.ioc),
    "limit_limit_gtc": (OrderType.limit, TimeInForce.gtc),
    "limit_limit_fok": (OrderType.limit, TimeInForce.fok),
    "stop_limit_stop_limit_gtc": (OrderType.stop_limit, TimeInForce.gtc),
}
TIF_WIRE = {
    TimeInForce.gtc: "GOOD_UNTIL_CANCELLED",
    TimeInForce.ioc: "IMMEDIATE_OR_CANCEL",
    TimeInForce.fok: "FILL_OR_KILL",
}
ORDER_TYPE_WIRE = {
    OrderType.market: ("MARKET", "Market"),
    OrderType.limit: ("LIMIT", "Limit"),
    OrderType.stop_limit: ("STOP_LIMIT", "Stop Limit"),
}


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def grpc_error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    """``{"error", "error_details", "message"}``: the shape of Coinbase's non-200 answers."""
    return JSONResponse(
        {"error": code, "error_details": message, "message": message},
        status_code=status,
        headers=headers,
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    """An unknown route (or method): Coinbase's JSON error envelope, never plain text.
    v3 paths answer the gRPC-style ``{"error", "error_details", "message"}``, v2 paths the
    ``{"errors": [{"id", "message"}]}`` of the Coinbase App API."""
    if request.url.path.startswith("/v2/"):
        return JSONResponse({"errors": [{"id": "not_found", "message": "Not found"}]}, 404)
    return grpc_error(404, "NOT_FOUND", "Not Found")


def _dec(value: object) -> Decimal:
    if not isinstance(value, str):
        raise InvalidOperation
    result = Decimal(value)
    if not result.is_finite():
        raise InvalidOperation
    return result


def _product(product_id: str) -> str | None:
    """The fake lists the paper market's crypto pairs (BTC-USD, ETH-USD)."""
    found = UNIVERSE.get(product_id)
    return product_id if found is not None and found.asset_class is AssetClass.crypto else None


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds before every REST answer (``latency_by_key`` per key name).
    ``server_errors`` / ``server_error_status`` / ``server_errors_method``: the next N REST
    requests (of that method only, when set) answer 5xx. ``rate_limited`` / ``retry_after``:
    the next N answer 429, with ``Retry-After`` unless it is None. ``timeout_after_accept``:
    the next N ``POST /orders`` create the order, then hold the answer ``hang_seconds``.
    ``stream_silent``: user-channel connections say nothing at all (heartbeats included).
    ``skip_messages``: the next N user-channel messages are lost (their sequence numbers are
    used, so the client sees a gap). ``drop_streams()`` and ``revoke(key)`` cover the rest.
    """

    latency: float = 0.0
    latency_by_key: dict[str, float] = field(default_factory=dict)
    server_errors: int = 0
    server_error_status: int = 500
    server_errors_method: str | None = None
    rate_limited: int = 0
    retry_after: int | None = 7
    timeout_after_accept: int = 0
    hang_seconds: float = 30.0
    stream_silent: bool = False
    skip_messages: int = 0


@dataclass
class FakeWallet:
    currency: str
    total: Decimal = ZERO
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    cost_basis: Decimal = ZERO  # USD paid for what is held (for the portfolio breakdown)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class FakeOrder:
    order_id: str
    client_order_id: str
    product_id: str
    side: str  # BUY / SELL
    config_key: str
    base_size: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    stop_direction: str | None
    post_only: bool
    created_time: datetime
    status: str = "OPEN"
    filled_size: Decimal = ZERO
    filled_value: Decimal = ZERO
    number_of_fills: int = 0
    last_fill_time: datetime | None = None
    stop_triggered: bool = False
    cancel_message: str = ""
    edit_history: list[dict[str, Any]] = field(default_factory=list)
    # A market order by quote_size: the dollar amount asked for; ``base_size`` is then what
    # that amount buys (or what selling it takes) at the touch when the order arrives.
    quote_size: Decimal | None = None

    @property
    def order_type(self) -> OrderType:
        return CONFIG_TERMS[self.config_key][0]

    @property
    def tif(self) -> TimeInForce:
        return CONFIG_TERMS[self.config_key][1]

    @property
    def remaining(self) -> Decimal:
        return self.base_size - self.filled_size

    @property
    def average(self) -> Decimal:
        return self.filled_value / self.filled_size if self.filled_size else ZERO

    def configuration(self) -> dict[str, Any]:
        terms: dict[str, Any] = (
            {"quote_size": str(self.quote_size)}
            if self.quote_size is not None
            else {"base_size": str(self.base_size)}
        )
        if self.limit_price is not None:
            terms["limit_price"] = str(self.limit_price)
        if self.config_key == "limit_limit_gtc":
            terms["post_only"] = self.post_only
        if self.stop_price is not None:
            terms["stop_price"] = str(self.stop_price)
            terms["stop_direction"] = self.stop_direction
        return {self.config_key: terms}

    def trigger_status(self) -> str:
        if self.order_type is not OrderType.stop_limit:
            return "INVALID_ORDER_TYPE"
        return "STOP_TRIGGERED" if self.stop_triggered else "STOP_PENDING"


@dataclass
class FakeUser:
    """One CDP key and the portfolio it trades (a key belongs to one portfolio)."""

    key_name: str
    private_key: str  # what the user pastes: PEM (ES256) or base64 (Ed25519)
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    algorithm: str
    portfolio: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    revoked: bool = False
    wallets: dict[str, FakeWallet] = field(default_factory=dict)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    cash_transactions: list[dict[str, Any]] = field(default_factory=list)

    def wallet(self, currency: str) -> FakeWallet:
        return self.wallets.setdefault(currency, FakeWallet(currency))


@dataclass(eq=False)
class _Connection:
    """One user-channel WebSocket: its queue (None closes it) and its sequence counter."""

    queue: asyncio.Queue[dict[str, Any] | str | None]
    channels: set[str] = field(default_factory=set)
    user: FakeUser | None = None
    sequence: int = 0
    heartbeat: asyncio.Task[None] | None = None


def new_key(
    algorithm: str = "ES256",
) -> tuple[str, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey]:
    """A fresh CDP-style private key as the user would paste it, and its public key."""
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        seed = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = private.public_key()
        raw_public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(seed + raw_public).decode(), public
    ec_private = ec.generate_private_key(ec.SECP256R1())
    pem = ec_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "-----BEGIN EC PRIVATE KEY-----"
        serialization.NoEncryption(),
    ).decode()
    return pem, ec_private.public_key()


class FakeCoinbase:
    """The fake's state, its fault switches and its ASGI ``app``."""

    def __init__(
        self,
        *,
        seed: int = 20260522,
        clock: Callable[[], datetime] | None = None,
        heartbeat_seconds: float = 1.0,
    ) -> None:
        self.quotes = SeededQuoteSource(seed)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.heartbeat_seconds = heartbeat_seconds
        self.users: dict[str, FakeUser] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST request
        self.bodies: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of writes
        self.claims: list[dict[str, Any]] = []  # verified JWT claims, REST and WebSocket
        self.refusals: list[str] = []  # why a JWT was refused
        self.subscribe_messages: list[dict[str, Any]] = []
        self._release = asyncio.Event()
        self._connections: set[_Connection] = set()
        # Market data (market_stream.py).
        self.market = FakeCoinbaseMarket(
            PaperMarketData(self.quotes, SeededOptionMarket(self.quotes)),
            gate=self._gate,
            verify=lambda token: self._verify(token, None),
            refuse=grpc_error,
            clock=self.clock,
        )
        self.app = Starlette(
            routes=[
                Route(f"{PREFIX}/products/{{product_id}}/candles", self.market.candles),
                WebSocketRoute(MARKET_PATH, self.market.serve),
                Route(f"{PREFIX}/accounts", self.accounts, methods=["GET"]),
                Route(f"{PREFIX}/accounts/{{uuid}}", self.account, methods=["GET"]),
                Route(f"{PREFIX}/portfolios", self.portfolios, methods=["GET"]),
                Route(f"{PREFIX}/portfolios/{{uuid}}", self.portfolio, methods=["GET"]),
                Route(f"{PREFIX}/products", self.products, methods=["GET"]),
                Route(f"{PREFIX}/products/{{product_id}}", self.product, methods=["GET"]),
                Route(f"{PREFIX}/best_bid_ask", self.best_bid_ask, methods=["GET"]),
                Route(f"{PREFIX}/orders", self.create_order, methods=["POST"]),
                Route(f"{PREFIX}/orders/batch_cancel", self.batch_cancel, methods=["POST"]),
                Route(f"{PREFIX}/orders/edit", self.edit_order, methods=["POST"]),
                Route(f"{PREFIX}/orders/edit_preview", self.edit_preview, methods=["POST"]),
                Route(f"{PREFIX}/orders/preview", self.preview_order, methods=["POST"]),
                Route(f"{PREFIX}/orders/historical/batch", self.list_orders, methods=["GET"]),
                Route(f"{PREFIX}/orders/historical/fills", self.list_fills, methods=["GET"]),
                Route(f"{PREFIX}/orders/historical/{{order_id}}", self.get_order, methods=["GET"]),
                Route("/v2/accounts/{uuid}/transactions", self.v2_transactions, methods=["GET"]),
                WebSocketRoute("/", self.user_channel),
            ],
            exception_handlers={404: _not_found, 405: _not_found},
        )

    # --- test controls -----------------------------------------------------------------

    def add_user(
        self, cash: str = "100000", *, key_name: str | None = None, algorithm: str = "ES256"
    ) -> FakeUser:
        private, public = new_key(algorithm)
        user = FakeUser(
            key_name=key_name or f"organizations/{uuid.uuid4()}/apiKeys/{uuid.uuid4()}",
            private_key=private,
            public_key=public,
            algorithm=algorithm,
        )
        usd = user.wallet("USD")
        for product in UNIVERSE.values():
            if product.asset_class is AssetClass.crypto:
                user.wallet(product.symbol.split("-")[0])
        self.users[user.key_name] = user
        if Decimal(cash):
            self.deposit(user, cash)
        assert usd.total == Decimal(cash)
        return user

    def deposit(self, user: FakeUser, amount: str) -> None:
        usd = user.wallet("USD")
        usd.total += Decimal(amount)
        now = self.clock()
        user.cash_transactions.append(
            {
                "id": str(uuid.uuid4()),
                "type": "fiat_deposit",
                "status": "completed",
                "amount": {"amount": amount, "currency": "USD"},
                "native_amount": {"amount": amount, "currency": "USD"},
                "description": None,
                "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "updated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "resource": "transaction",
                "resource_path": f"/v2/accounts/{usd.uuid}/transactions",
                "details": {"title": "Deposited funds", "subtitle": "From bank account"},
            }
        )

    def revoke(self, user: FakeUser) -> None:
        user.revoked = True

    def drop_streams(self) -> None:
        """Close every user-channel connection at once (as a network drop would)."""
        for connection in list(self._connections):
            connection.queue.put_nowait(None)

    def release_hung(self) -> None:
        """Let requests held by ``timeout_after_accept`` finish (used at shutdown)."""
        self._release.set()

    def set_status(self, order_id: str, status: str) -> None:
        """Force a status, even one outside Coinbase's vocabulary (for mapping tests)."""
        for user in self.users.values():
            if order_id in user.orders:
                user.orders[order_id].status = status
                return
        raise KeyError(order_id)

    def order_count(self, user: FakeUser) -> int:
        return len(user.orders)

    @property
    def stream_connections(self) -> int:
        return len(self._connections)

    async def match(self) -> int:
        """Evaluate every working order against the current quote; returns fills made."""
        fills = 0
        for user in self.users.values():
            for order in list(user.orders.values()):
                if order.status == "OPEN":
                    fills += self._evaluate(user, order)
        return fills

    # --- authentication ----------------------------------------------------------------

    def _verify(self, token: str, uri: str | None) -> FakeUser | None:
        """The user whose key signed ``token`` with the claims Coinbase requires, else None
        (the reason is kept in ``refusals``)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            self.refusals.append("not a JWT")
            return None
        user = self.users.get(str(header.get("kid")))
        if user is None or user.revoked:
            self.refusals.append("unknown or revoked key")
            return None
        if header.get("alg") != user.algorithm or not header.get("nonce"):
            self.refusals.append("wrong algorithm or no nonce")
            return None
        try:
            claims = jwt.decode(
                token,
                user.public_key,
                algorithms=[user.algorithm],
                issuer="cdp",
                options={"require": ["sub", "iss", "nbf", "exp"]},
                leeway=5,
            )
        except jwt.PyJWTError as exc:
            self.refusals.append(f"invalid token: {type(exc).__name__}")
            return None
        if claims.get("sub") != user.key_name:
            self.refusals.append("sub is not the key name")
            return None
        if int(claims["exp"]) - int(claims["nbf"]) > 120:
            self.refusals.append("lives longer than 120 s")
            return None
        if uri is not None and claims.get("uri") != uri:
            self.refusals.append(f"uri claim {claims.get('uri')!r} is not {uri!r}")
            return None
        self.claims.append({"header": header, **claims})
        return user

    def _unauthorized(self, request: Request) -> Response:
        if request.url.path.startswith("/v2/"):
            return JSONResponse(
                {"errors": [{"id": "authentication_error", "message": "invalid signature"}]},
                status_code=401,
            )
        return PlainTextResponse("Unauthorized\n", status_code=401)

    async def _gate(self, request: Request) -> FakeUser | Response:
        self.requests.append((request.method, request.url.path))
        raw = await request.body()  # received in full before any delay, as a real server would
        if request.method != "GET":
            try:
                self.bodies.append((request.method, request.url.path, json.loads(raw or b"null")))
            except ValueError:
                self.bodies.append((request.method, request.url.path, raw.decode(errors="replace")))
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else ""
        kid = ""
        with contextlib.suppress(jwt.PyJWTError):
            kid = str(jwt.get_unverified_header(token).get("kid")) if token else ""
        latency = self.faults.latency_by_key.get(kid, self.faults.latency)
        if latency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), latency)
        method_matches = self.faults.server_errors_method in (None, request.method)
        if self.faults.server_errors > 0 and method_matches:
            self.faults.server_errors -= 1
            status = self.faults.server_error_status
            return grpc_error(status, "INTERNAL", "internal error")
        if self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            headers = {"x-ratelimit-limit": "30", "x-ratelimit-remaining": "0"}
            if self.faults.retry_after is not None:
                headers["Retry-After"] = str(self.faults.retry_after)
            return grpc_error(429, "RESOURCE_EXHAUSTED", "Too many requests", **headers)
        host = request.headers.get("host", "")
        user = self._verify(token, f"{request.method} {host}{request.url.path}") if token else None
        if user is None:
            if not token:
                self.refusals.append("no bearer token")
            return self._unauthorized(request)
        return user

    def _now(self) -> datetime:
        return self.clock()

    # --- wallets, portfolio, products ----------------------------------------------------

    def _held(self, user: FakeUser, currency: str) -> Decimal:
        """What open orders hold: USD for buys (at the limit, or the ask), coins for sells."""
        held = ZERO
        for order in user.orders.values():
            if order.status not in WORKING:
                continue
            base, quote = order.product_id.split("-")
            if order.side == "BUY" and currency == quote:
                price = order.limit_price or self.quotes.quote(order.product_id, self._now()).ask
                held += order.remaining * price
            elif order.side == "SELL" and currency == base:
                held += order.remaining
        return held

    def _wallet_wire(self, user: FakeUser, wallet: FakeWallet) -> dict[str, Any]:
        held = self._held(user, wallet.currency)
        fiat = wallet.currency == "USD"
        return {
            "uuid": wallet.uuid,
            "name": f"{wallet.currency} Wallet",
            "currency": wallet.currency,
            "available_balance": {"value": str(wallet.total - held), "currency": wallet.currency},
            "default": fiat,
            "active": True,
            "created_at": iso(wallet.created_at),
            "updated_at": iso(self._now()),
            "deleted_at": None,
            "type": "ACCOUNT_TYPE_FIAT" if fiat else "ACCOUNT_TYPE_CRYPTO",
            "ready": True,
            "hold": {"value": str(held), "currency": wallet.currency},
            "retail_portfolio_id": user.portfolio,
            "platform": "ACCOUNT_PLATFORM_CONSUMER",
        }

    async def accounts(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        params = request.query_params
        try:
            limit = min(int(params.get("limit", "49")), 250)
            start = int(params.get("cursor") or 0)
        except ValueError:
            return grpc_error(400, "INVALID_ARGUMENT", "invalid limit or cursor")
        wallets = list(user.wallets.values())
        page = wallets[start : start + limit]
        more = start + limit < len(wallets)
        return JSONResponse(
            {
                "accounts": [self._wallet_wire(user, w) for w in page],
                "has_next": more,
                "cursor": str(start + limit) if more else "",
                "size": len(page),
            }
        )

    async def account(self, request: Request) -> Response:
        """``GET /accounts/{account_uuid}``: ``{"account": {...}}`` (get-account reference)."""
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        wallet = next(
            (w for w in user.wallets.values() if w.uuid == request.path_params["uuid"]), None
        )
        if wallet is None:
            return grpc_error(404, "NOT_FOUND", "account not found")
        return JSONResponse({"account": self._wallet_wire(user, wallet)})

    async def portfolios(self, request: Request) -> Response:
        """``GET /portfolios``: the key's portfolio (list-portfolios reference:
        ``{"portfolios": [{"name", "uuid", "type", "deleted"}]}``; ``portfolio_type``
        filters by DEFAULT, CONSUMER, INTX)."""
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        wanted = request.query_params.get("portfolio_type")
        listed = [{"name": "Default", "uuid": user.portfolio, "type": "DEFAULT", "deleted": False}]
        if wanted and wanted != "UNDEFINED":
            listed = [p for p in listed if p["type"] == wanted]
        return JSONResponse({"portfolios": listed})

    async def portfolio(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        if request.path_params["uuid"] != user.portfolio:
            return grpc_error(404, "NOT_FOUND", "portfolio not found")
        now = self._now()
        spots = []
        total = ZERO
        for wallet in user.wallets.values():
            if not wallet.total:
                continue
            fiat = wallet.currency == "USD"
            price = Decimal(1) if fiat else self.quotes.quote(f"{wallet.currency}-USD", now).mid
            value = wallet.total * price
            total += value
            spots.append(
                {
                    "asset": wallet.currency,
                    "account_uuid": wallet.uuid,
                    "total_balance_fiat": str(value),
                    "total_balance_crypto": str(wallet.total),
                    "available_to_trade_fiat": str(value),
                    "allocation": "0",
                    "one_day_change": "0",
                    "cost_basis": {
                        "value": str(wallet.total if fiat else wallet.cost_basis),
                        "currency": "USD",
                    },
                    "asset_img_url": "",
                    "is_cash": fiat,
                }
            )
        money = {"value": str(total), "currency": "USD"}
        nothing = {"value": "0", "currency": "USD"}
        return JSONResponse(
            {
                "breakdown": {
                    "portfolio": {
                        "name": "Default",
                        "uuid": user.portfolio,
                        "type": "DEFAULT",
                        "deleted": False,
                    },
                    "portfolio_balances": {
                        "total_balance": money,
                        "total_futures_balance": nothing,
                        "total_cash_equivalent_balance": {
                            "value": str(user.wallet("USD").total),
                            "currency": "USD",
                        },
                        "total_crypto_balance": nothing,
                        "futures_unrealized_pnl": nothing,
                        "perp_unrealized_pnl": nothing,
                    },
                    "spot_positions": spots,
                    "perp_positions": [],
                    "futures_positions": [],
                }
            }
        )

    def _product_wire(self, product_id: str) -> dict[str, Any]:
        instrument = UNIVERSE[product_id]
        quote = self.quotes.quote(product_id, self._now())
        base, quote_ccy = product_id.split("-")
        return {
            "product_id": product_id,
            "price": str(quote.last),
            "price_percentage_change_24h": "0",
            "volume_24h": "0",
            "volume_percentage_change_24h": "0",
            "base_increment": str(SIZE_STEP),
            "quote_increment": str(PRICE_STEP),
            "quote_min_size": "1",
            "quote_max_size": "50000000",
            "base_min_size": str(SIZE_STEP),
            "base_max_size": "1000",
            "base_name": base,
            "quote_name": "US Dollar",
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": "online",
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": False,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": quote_ccy,
            "base_currency_id": base,
            "mid_market_price": str(quote.mid),
            "alias": "",
            "alias_to": [],
            "base_display_symbol": base,
            "quote_display_symbol": quote_ccy,
            "view_only": False,
            "price_increment": str(PRICE_STEP),
            "display_name": f"{base}/{quote_ccy}",
            "product_venue": "CBE",
            "approximate_quote_24h_volume": "0",
            "base_size_name": instrument.symbol,
        }

    async def product(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        product_id = _product(request.path_params["product_id"])
        if product_id is None:
            return grpc_error(404, "NOT_FOUND", "ProductID is invalid")
        return JSONResponse(self._product_wire(product_id))

    async def products(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        wanted = request.query_params.getlist("product_ids")
        listed = [p for p in UNIVERSE if _product(p)]
        chosen = [p for p in listed if not wanted or p in wanted]
        return JSONResponse(
            {"products": [self._product_wire(p) for p in chosen], "num_products": len(chosen)}
        )

    async def best_bid_ask(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        books = []
        now = self._now()
        for product_id in request.query_params.getlist("product_ids"):
            if _product(product_id) is None:
                continue
            quote = self.quotes.quote(product_id, now)
            books.append(
                {
                    "product_id": product_id,
                    "bids": [{"price": str(quote.bid), "size": str(quote.bid_size)}],
                    "asks": [{"price": str(quote.ask), "size": str(quote.ask_size)}],
                    "time": iso(quote.as_of),
                }
            )
        return JSONResponse({"pricebooks": books})

    # --- orders ------------------------------------------------------------------------

    def _order_wire(self, user: FakeUser, order: FakeOrder) -> dict[str, Any]:
        """Field for field the get-order reference's ``Order`` example."""
        done = order.status in FINISHED
        held = (
            ZERO
            if done
            else order.remaining * (order.limit_price or ZERO)
            if order.side == "BUY"
            else order.remaining
        )
        return {
            "order_id": order.order_id,
            "product_id": order.product_id,
            "user_id": user.user_id,
            "order_configuration": order.configuration(),
            "side": order.side,
            "client_order_id": order.client_order_id,
            "status": order.status,
            "time_in_force": TIF_WIRE[order.tif],
            "created_time": iso(order.created_time),
            "completion_percentage": str(
                (order.filled_size / order.base_size * 100).quantize(Decimal("0.01"))
            ),
            "filled_size": str(order.filled_size),
            "average_filled_price": str(order.average.quantize(PRICE_STEP)),
            "fee": "",
            "number_of_fills": str(order.number_of_fills),
            "filled_value": str(order.filled_value),
            "pending_cancel": order.status == "CANCEL_QUEUED",
            "size_in_quote": False,
            "total_fees": "0",
            "size_inclusive_of_fees": False,
            "total_value_after_fees": str(order.filled_value),
            "trigger_status": order.trigger_status(),
            "order_type": ORDER_TYPE_WIRE[order.order_type][0],
            "reject_reason": "REJECT_REASON_UNSPECIFIED",
            "settled": done,
            "product_type": "SPOT",
            "reject_message": "",
            "cancel_message": order.cancel_message,
            "order_placement_source": "RETAIL_ADVANCED",
            "outstanding_hold_amount": str(held),
            "is_liquidation": False,
            "last_fill_time": iso(order.last_fill_time) if order.last_fill_time else None,
            "edit_history": order.edit_history,
            "leverage": "",
            "margin_type": "UNKNOWN_MARGIN_TYPE",
            "retail_portfolio_id": user.portfolio,
            "originating_order_id": "",
            "attached_order_id": "",
        }

    @staticmethod
    def _refused(
        error: str, message: str, *, preview: str = "UNKNOWN_PREVIEW_FAILURE_REASON", new: str = ""
    ) -> JSONResponse:
        """The create-order answer for a refusal: still 200, ``success: false``."""
        return JSONResponse(
            {
                "success": False,
                "error_response": {
                    "error": error,
                    "message": message,
                    "error_details": "",
                    "preview_failure_reason": preview,
                    "new_order_failure_reason": new or error,
                },
            }
        )

    def _order_terms(
        self, user: FakeUser, body: dict[str, Any]
    ) -> (
        Response
        | tuple[str, str, dict[str, Any], Decimal, Decimal | None, Decimal | None, Decimal | None]
    ):
        """An order body's product, configuration key, terms, base size, quote size, limit
        and stop, or the refusal Coinbase answers (create-order and preview-orders alike)."""
        side = body.get("side")
        if side not in ("BUY", "SELL"):
            return self._refused("INVALID_SIDE", "Invalid side")
        product_id = _product(str(body.get("product_id")))
        if product_id is None:
            return self._refused(
                "INVALID_PRODUCT_ID", "Invalid product_id", preview="PREVIEW_INVALID_PRODUCT_ID"
            )
        config = body.get("order_configuration")
        if not isinstance(config, dict) or len(config) != 1:
            return self._refused("UNSUPPORTED_ORDER_CONFIGURATION", "Invalid order configuration")
        [(key, terms)] = config.items()
        if key not in CONFIG_TERMS or not isinstance(terms, dict):
            return self._refused(
                "UNSUPPORTED_ORDER_CONFIGURATION",
                f"order configuration {key} is not supported",
                preview="PREVIEW_INVALID_ORDER_CONFIG",
            )
        quote = self.quotes.quote(product_id, self._now())
        quote_size: Decimal | None = None
        try:
            # market_market_ioc takes quote_size or base_size, the others base_size
            # (create-order reference, MarketMarketIoc: "quote_size" / "base_size").
            if key == "market_market_ioc" and "quote_size" in terms and "base_size" not in terms:
                quote_size = _dec(terms.get("quote_size"))
                if quote_size <= 0 or quote_size != quote_size.quantize(PRICE_STEP):
                    return self._refused(
                        "INVALID_SIZE_PRECISION", "Too many decimals in order amount"
                    )
                touch = quote.ask if side == "BUY" else quote.bid
                size = (quote_size / touch).quantize(SIZE_STEP, rounding=ROUND_DOWN)
            else:
                size = _dec(terms.get("base_size"))
            limit = _dec(terms["limit_price"]) if "limit_price" in terms else None
            stop = _dec(terms["stop_price"]) if "stop_price" in terms else None
        except (InvalidOperation, KeyError):
            return grpc_error(400, "INVALID_ARGUMENT", "sizes and prices must be decimal strings")
        order_type = CONFIG_TERMS[key][0]
        if size <= 0 or size != size.quantize(SIZE_STEP):
            return self._refused("INVALID_SIZE_PRECISION", "Too many decimals in order amount")
        if (order_type is not OrderType.market and limit is None) or (
            order_type is OrderType.stop_limit and stop is None
        ):
            return self._refused("INVALID_LIMIT_PRICE", "Missing price")
        for price in (limit, stop):
            if price is not None and (price <= 0 or price != price.quantize(PRICE_STEP)):
                return self._refused("INVALID_PRICE_PRECISION", "Too many decimals in order price")
        base, quote_ccy = product_id.split("-")
        if side == "BUY":
            needed = quote_size if quote_size is not None else size * (limit or quote.ask)
            available = user.wallet(quote_ccy).total - self._held(user, quote_ccy)
        else:
            needed = size
            available = user.wallet(base).total - self._held(user, base)
        if needed > available:
            return self._refused(
                "INSUFFICIENT_FUND",
                "Insufficient balance in source account",
                preview="PREVIEW_INSUFFICIENT_FUND",
                new="UNKNOWN_FAILURE_REASON",
            )
        return product_id, key, terms, size, quote_size, limit, stop

    async def create_order(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        try:
            body = json.loads(await request.body())
        except ValueError:
            return grpc_error(400, "INVALID_ARGUMENT", "request body is not JSON")
        if not isinstance(body, dict):
            return grpc_error(400, "INVALID_ARGUMENT", "request body is not an object")
        client_order_id = body.get("client_order_id")
        if not isinstance(client_order_id, str) or not client_order_id:
            return grpc_error(400, "INVALID_ARGUMENT", "client_order_id is required")
        side = str(body.get("side"))
        if side not in ("BUY", "SELL"):
            return self._refused("INVALID_SIDE", "Invalid side")
        existing = next(
            (o for o in user.orders.values() if o.client_order_id == client_order_id), None
        )
        if existing is not None:  # a repeated client_order_id: the order it already names
            return self._success(existing, body)
        terms_or_refusal = self._order_terms(user, body)
        if isinstance(terms_or_refusal, Response):
            return terms_or_refusal
        product_id, key, terms, size, quote_size, limit, stop = terms_or_refusal
        order = FakeOrder(
            order_id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            product_id=product_id,
            side=side,
            config_key=key,
            base_size=size,
            quote_size=quote_size,
            limit_price=limit,
            stop_price=stop,
            stop_direction=terms.get("stop_direction"),
            post_only=bool(terms.get("post_only", False)),
            created_time=self._now(),
        )
        user.orders[order.order_id] = order
        self._broadcast(user, order)
        if order.tif in (TimeInForce.ioc, TimeInForce.fok):
            self._evaluate(user, order)  # immediate: fills now or never
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return self._success(order, body)

    async def preview_order(self, request: Request) -> Response:
        """``POST /orders/preview``: the create-order checks, placing nothing. A refusal is
        still 200, listed in ``errs`` (preview-orders reference: ``order_total``,
        ``commission_total``, ``errs``, ``warning``, ``quote_size``, ``base_size``,
        ``best_bid``, ``best_ask``, ``is_max``, ``slippage``, ``preview_id``, ...)."""
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        try:
            body = json.loads(await request.body())
        except ValueError:
            return grpc_error(400, "INVALID_ARGUMENT", "request body is not JSON")
        if not isinstance(body, dict):
            return grpc_error(400, "INVALID_ARGUMENT", "request body is not an object")
        checked = self._order_terms(user, body)
        product_id = _product(str(body.get("product_id"))) or "BTC-USD"
        quote = self.quotes.quote(product_id, self._now())
        errs: list[str] = []
        size = quote_size = ZERO
        if isinstance(checked, Response):
            refusal = json.loads(bytes(checked.body))
            reason = refusal.get("error_response", {}).get("preview_failure_reason")
            if checked.status_code != 200:
                return checked
            errs.append(
                reason
                if isinstance(reason, str) and reason != "UNKNOWN_PREVIEW_FAILURE_REASON"
                else "PREVIEW_INVALID_ORDER_CONFIG"
            )
        else:
            _product_id, _key, _terms, size, quote_size_or_none, limit, _stop = checked
            price = limit or (quote.ask if body.get("side") == "BUY" else quote.bid)
            quote_size = quote_size_or_none if quote_size_or_none is not None else size * price
        return JSONResponse(
            {
                "order_total": str(quote_size),
                "commission_total": "0",
                "errs": errs,
                "warning": [],
                "quote_size": str(quote_size),
                "base_size": str(size),
                "best_bid": str(quote.bid),
                "best_ask": str(quote.ask),
                "is_max": False,
                "order_margin_total": "0",
                "leverage": "1",
                "long_leverage": "1",
                "short_leverage": "1",
                "slippage": "0",
                "preview_id": str(uuid.uuid4()),
                "current_liquidation_buffer": "",
                "projected_liquidation_buffer": "",
                "max_leverage": "",
            }
        )

    @staticmethod
    def _success(order: FakeOrder, body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(
            {
                "success": True,
                "success_response": {
                    "order_id": order.order_id,
                    "product_id": order.product_id,
                    "side": order.side,
                    "client_order_id": order.client_order_id,
                },
                "order_configuration": order.configuration(),
            }
        )

    async def batch_cancel(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        try:
            body = json.loads(await request.body())
            order_ids = body["order_ids"]
        except (ValueError, KeyError, TypeError):
            return grpc_error(400, "INVALID_ARGUMENT", "order_ids is required")
        if not isinstance(order_ids, list) or not order_ids or len(order_ids) > 100:
            return grpc_error(400, "INVALID_ARGUMENT", "order_ids must list 1 to 100 ids")
        results = []
        for order_id in order_ids:
            order = user.orders.get(str(order_id))
            if order is None:
                results.append(
                    {
                        "success": False,
                        "failure_reason": "UNKNOWN_CANCEL_ORDER",
                        "order_id": order_id,
                    }
                )
                continue
            if order.status not in WORKING or order.status == "CANCEL_QUEUED":
                results.append(
                    {
                        "success": False,
                        "failure_reason": "INVALID_CANCEL_REQUEST",
                        "order_id": order_id,
                    }
                )
                continue
            order.status, order.cancel_message = "CANCELLED", "User requested cancel"
            self._broadcast(user, order)
            results.append(
                {
                    "success": True,
                    "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
                    "order_id": order_id,
                }
            )
        return JSONResponse({"results": results})

    async def edit_order(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        checked = self._edit_terms(user, await request.body())
        if isinstance(checked, Response):
            return checked
        order, price, size = checked
        order.limit_price, order.base_size = price, size
        order.edit_history.append(
            {"price": str(price), "size": str(size), "replace_accept_timestamp": iso(self._now())}
        )
        self._broadcast(user, order)
        return JSONResponse({"success": True, "errors": []})

    async def edit_preview(self, request: Request) -> Response:
        """``POST /orders/edit_preview``: the edit's checks and its totals, changing nothing
        (edit-order-preview reference: ``errors``, ``slippage``, ``order_total``,
        ``commission_total``, ``quote_size``, ``base_size``, ``best_bid``, ``best_ask``,
        ``average_filled_price``)."""
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        checked = self._edit_terms(user, await request.body())
        if isinstance(checked, Response):
            return checked
        order, price, size = checked
        quote = self.quotes.quote(order.product_id, self._now())
        total = size * price
        return JSONResponse(
            {
                "errors": [],
                "slippage": "0",
                "order_total": str(total),
                "commission_total": "0",
                "quote_size": str(total),
                "base_size": str(size),
                "best_bid": str(quote.bid),
                "best_ask": str(quote.ask),
                "average_filled_price": str(order.average.quantize(PRICE_STEP)),
            }
        )

    def _edit_terms(
        self, user: FakeUser, raw: bytes
    ) -> Response | tuple[FakeOrder, Decimal, Decimal]:
        """An edit's order, new price and new size, or its refusal. Either may be left out:
        "Edit an order with a specified new size, or new price" (edit-order reference)."""
        try:
            body = json.loads(raw)
            order_id = str(body["order_id"])
            new_price = _dec(body["price"]) if body.get("price") is not None else None
            new_size = _dec(body["size"]) if body.get("size") is not None else None
        except (ValueError, KeyError, TypeError, InvalidOperation):
            return grpc_error(400, "INVALID_ARGUMENT", "order_id and a price or size are required")
        if new_price is None and new_size is None:
            return grpc_error(400, "INVALID_ARGUMENT", "a new price or size is required")

        def refused(reason: str, preview: str = "UNKNOWN_PREVIEW_FAILURE_REASON") -> Response:
            errors = [{"edit_failure_reason": reason, "preview_failure_reason": preview}]
            return JSONResponse({"success": False, "errors": errors})

        order = user.orders.get(order_id)
        if order is None:
            return refused("ORDER_NOT_FOUND")
        price = new_price if new_price is not None else order.limit_price or ZERO
        size = new_size if new_size is not None else order.base_size
        if order.config_key != "limit_limit_gtc":
            return refused("ONLY_LIMIT_ORDER_EDITS_SUPPORTED")
        if order.status != "OPEN":
            return refused("ONLY_OPEN_ORDERS_CAN_BE_EDITED")
        if size < order.filled_size or size <= 0 or size != size.quantize(SIZE_STEP):
            return refused(
                "CANNOT_EDIT_TO_BELOW_FILLED_SIZE"
                if size < order.filled_size
                else "INVALID_EDITED_SIZE"
            )
        if price <= 0 or price != price.quantize(PRICE_STEP):
            return refused("INVALID_EDITED_PRICE")
        if (price, size) == (order.limit_price, order.base_size):
            return refused("EDIT_REQUEST_EQUAL_TO_ORIGINAL_REQUEST")
        if order.side == "BUY":
            quote_ccy = order.product_id.split("-")[1]
            now_held = order.remaining * (order.limit_price or ZERO)
            available = user.wallet(quote_ccy).total - self._held(user, quote_ccy) + now_held
            if (size - order.filled_size) * price > available:
                return refused("UNKNOWN_EDIT_ORDER_FAILURE_REASON", "PREVIEW_INSUFFICIENT_FUND")
        return order, price, size

    async def get_order(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        order = user.orders.get(request.path_params["order_id"])
        if order is None:
            return grpc_error(404, "NOT_FOUND", "order with this orderID was not found")
        return JSONResponse({"order": self._order_wire(user, order)})

    async def list_orders(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        params = request.query_params
        selected = sorted(user.orders.values(), key=lambda o: o.created_time, reverse=True)
        statuses = params.getlist("order_status")
        if statuses:
            selected = [o for o in selected if o.status in statuses]
        products = params.getlist("product_ids")
        if products:
            selected = [o for o in selected if o.product_id in products]
        ids = params.getlist("order_ids")
        if ids:
            selected = [o for o in selected if o.order_id in ids]
        try:
            if params.get("start_date"):
                start = datetime.fromisoformat(params["start_date"].replace("Z", "+00:00"))
                selected = [o for o in selected if o.created_time >= start]
            if params.get("end_date"):
                end = datetime.fromisoformat(params["end_date"].replace("Z", "+00:00"))
                selected = [o for o in selected if o.created_time <= end]
            limit = min(int(params.get("limit") or 100), 1000)
            offset = int(params.get("cursor") or 0)
        except ValueError:
            return grpc_error(400, "INVALID_ARGUMENT", "invalid date, limit or cursor")
        page = selected[offset : offset + limit]
        more = offset + limit < len(selected)
        return JSONResponse(
            {
                "orders": [self._order_wire(user, o) for o in page],
                "sequence": "0",
                "has_next": more,
                "cursor": str(offset + limit) if more else "",
            }
        )

    async def list_fills(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        params = request.query_params
        selected = sorted(user.fills, key=lambda f: f["sequence_timestamp"], reverse=True)
        ids = params.getlist("order_ids")
        if ids:
            selected = [f for f in selected if f["order_id"] in ids]
        products = params.getlist("product_ids")
        if products:
            selected = [f for f in selected if f["product_id"] in products]
        if params.get("start_sequence_timestamp"):
            selected = [
                f for f in selected if f["sequence_timestamp"] >= params["start_sequence_timestamp"]
            ]
        if params.get("end_sequence_timestamp"):
            selected = [
                f for f in selected if f["sequence_timestamp"] <= params["end_sequence_timestamp"]
            ]
        try:
            limit = min(int(params.get("limit") or 100), 1000)
            offset = int(params.get("cursor") or 0)
        except ValueError:
            return grpc_error(400, "INVALID_ARGUMENT", "invalid limit or cursor")
        page = selected[offset : offset + limit]
        more = offset + limit < len(selected)
        return JSONResponse({"fills": page, "cursor": str(offset + limit) if more else ""})

    async def v2_transactions(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        wallet = next(
            (w for w in user.wallets.values() if w.uuid == request.path_params["uuid"]), None
        )
        if wallet is None:
            return JSONResponse(
                {"errors": [{"id": "not_found", "message": "Not found"}]}, status_code=404
            )
        items = [t for t in reversed(user.cash_transactions) if wallet.currency == "USD"]
        params = request.query_params
        limit = min(int(params.get("limit") or 25), 100)
        after = params.get("starting_after")
        if after:
            ids = [t["id"] for t in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        more = len(items) > limit
        path = f"/v2/accounts/{wallet.uuid}/transactions"
        return JSONResponse(
            {
                "pagination": {
                    "ending_before": None,
                    "starting_after": after,
                    "limit": limit,
                    "order": "desc",
                    "previous_uri": None,
                    "next_uri": f"{path}?limit={limit}&starting_after={page[-1]['id']}"
                    if more
                    else None,
                },
                "data": page,
            }
        )

    # --- matching ------------------------------------------------------------------------

    def _evaluate(self, user: FakeUser, order: FakeOrder) -> int:
        now = self._now()
        quote = self.quotes.quote(order.product_id, now)
        decision = decide(
            OrderState(
                side=OrderSide.buy if order.side == "BUY" else OrderSide.sell,
                order_type=order.order_type,
                time_in_force=order.tif,
                remaining=order.remaining,
                limit_price=order.limit_price,
                stop_price=order.stop_price,
                stop_triggered=order.stop_triggered,
            ),
            quote,
        )
        changed = decision.stop_triggered != order.stop_triggered
        order.stop_triggered = decision.stop_triggered
        filled = 0
        if decision.fills and decision.fill_price is not None:
            filled = 1
            qty, price = decision.fill_quantity, decision.fill_price
            order.filled_size += qty
            order.filled_value += qty * price
            order.number_of_fills += 1
            order.last_fill_time = now
            base, quote_ccy = order.product_id.split("-")
            cash, coin = user.wallet(quote_ccy), user.wallet(base)
            if order.side == "BUY":
                cash.total -= qty * price
                coin.total += qty
                coin.cost_basis += qty * price
            else:
                if coin.total:
                    coin.cost_basis -= coin.cost_basis * qty / coin.total
                coin.total -= qty
                cash.total += qty * price
            if order.filled_size >= order.base_size:
                order.status = "FILLED"
            user.fills.append(
                {
                    "entry_id": str(uuid.uuid4()),
                    "trade_id": str(uuid.uuid4()),
                    "order_id": order.order_id,
                    "trade_time": iso(now),
                    "trade_type": "FILL",
                    "price": str(price),
                    "size": str(qty),
                    "commission": "0",
                    "product_id": order.product_id,
                    "sequence_timestamp": iso(now),
                    "liquidity_indicator": "TAKER",
                    "size_in_quote": False,
                    "user_id": user.user_id,
                    "side": order.side,
                    "retail_portfolio_id": user.portfolio,
                }
            )
            changed = True
        if decision.cancel_remainder and order.status not in FINISHED:
            order.status = "CANCELLED"
            order.cancel_message = decision.reason or "Immediate order not filled"
            changed = True
        if changed:
            self._broadcast(user, order)
        return filled

    # --- the user channel ------------------------------------------------------------------

    def _event_order(self, user: FakeUser, order: FakeOrder) -> dict[str, Any]:
        """A user-channel order entry, field for field the docs' example."""
        finished = order.status in FINISHED
        return {
            "avg_price": str(order.average.quantize(PRICE_STEP)),
            "cancel_reason": order.cancel_message,
            "client_order_id": order.client_order_id,
            "completion_percentage": str(
                (order.filled_size / order.base_size * 100).quantize(Decimal("0.01"))
            ),
            "contract_expiry_type": "UNKNOWN_CONTRACT_EXPIRY_TYPE",
            "cumulative_quantity": str(order.filled_size),
            "filled_value": str(order.filled_value),
            # Nothing is left of a finished order, filled or not (a choice of this fake).
            "leaves_quantity": "0" if finished else str(order.remaining),
            "limit_price": str(order.limit_price) if order.limit_price is not None else "",
            "number_of_fills": str(order.number_of_fills),
            "order_id": order.order_id,
            "order_side": order.side,
            "order_type": ORDER_TYPE_WIRE[order.order_type][1],
            "outstanding_hold_amount": "0",
            "post_only": "true" if order.post_only else "false",
            "product_id": order.product_id,
            "product_type": "SPOT",
            "reject_reason": "",
            "retail_portfolio_id": user.portfolio,
            "risk_managed_by": "UNKNOWN_RISK_MANAGEMENT_TYPE",
            "status": order.status,
            "stop_price": str(order.stop_price) if order.stop_price is not None else "",
            "time_in_force": TIF_WIRE[order.tif],
            "total_fees": "0",
            "total_value_after_fees": str(order.filled_value),
            "trigger_status": order.trigger_status(),
            "creation_time": iso(order.created_time),
            "end_time": "0001-01-01T00:00:00Z",
            "start_time": "0001-01-01T00:00:00Z",
        }

    def _envelope(self, channel: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "channel": channel,
            "client_id": "",
            "timestamp": iso(self._now()),
            "events": events,
        }

    def _broadcast(self, user: FakeUser, order: FakeOrder) -> None:
        message = self._envelope(
            "user", [{"type": "update", "orders": [self._event_order(user, order)]}]
        )
        for connection in list(self._connections):
            if connection.user is user and "user" in connection.channels:
                if self.faults.skip_messages > 0:
                    self.faults.skip_messages -= 1
                    connection.queue.put_nowait("skip")
                else:
                    connection.queue.put_nowait(message)

    async def _heartbeats(self, connection: _Connection) -> None:
        counter = 0
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            counter += 1
            now = self._now()
            connection.queue.put_nowait(
                self._envelope(
                    "heartbeats",
                    [
                        {
                            "current_time": now.strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC"),
                            "heartbeat_counter": counter,
                        }
                    ],
                )
            )

    def _on_subscribe(self, connection: _Connection, message: dict[str, Any]) -> None:
        self.subscribe_messages.append(message)
        channel = message.get("channel")
        token = message.get("jwt")
        user = self._verify(token, None) if isinstance(token, str) and token else None
        if user is None or channel not in ("user", "heartbeats"):
            connection.queue.put_nowait({"type": "error", "message": "authentication failure"})
            return
        if message.get("type") == "unsubscribe":
            connection.channels.discard(str(channel))
            return
        connection.user = user
        connection.channels.add(str(channel))
        subscriptions: dict[str, list[str]] = {}
        if "user" in connection.channels:
            subscriptions["user"] = [user.user_id]
        if "heartbeats" in connection.channels:
            subscriptions["heartbeats"] = ["heartbeats"]
        connection.queue.put_nowait(
            self._envelope("subscriptions", [{"subscriptions": subscriptions}])
        )
        if channel == "user":
            working = [o for o in user.orders.values() if o.status in WORKING]
            batches = [working[i : i + 50] for i in range(0, len(working), 50)] or [[]]
            for batch in batches:
                connection.queue.put_nowait(
                    self._envelope(
                        "user",
                        [
                            {
                                "type": "snapshot",
                                "orders": [self._event_order(user, o) for o in batch],
                                "positions": {
                                    "perpetual_futures_positions": [],
                                    "expiring_futures_positions": [],
                                },
                            }
                        ],
                    )
                )
        elif connection.heartbeat is None:
            connection.heartbeat = asyncio.create_task(self._heartbeats(connection))

    async def user_channel(self, websocket: WebSocket) -> None:
        await websocket.accept()
        connection = _Connection(queue=asyncio.Queue())
        self._connections.add(connection)

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    try:
                        parsed = json.loads(message.get("text") or message.get("bytes") or b"")
                    except ValueError:
                        connection.queue.put_nowait({"type": "error", "message": "malformed"})
                        continue
                    if isinstance(parsed, dict) and parsed.get("type") in (
                        "subscribe",
                        "unsubscribe",
                    ):
                        self._on_subscribe(connection, parsed)
            connection.queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await connection.queue.get()
                if item is None:
                    break
                if isinstance(item, dict) and "channel" in item:
                    connection.sequence += 1
                    item = {**item, "sequence_num": connection.sequence}
                elif item == "skip":  # lost on the way: its number is used, nothing arrives
                    connection.sequence += 1
                    continue
                if self.faults.stream_silent:
                    continue
                await websocket.send_text(json.dumps(item))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._connections.discard(connection)
            reader.cancel()
            if connection.heartbeat is not None:
                connection.heartbeat.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1011)

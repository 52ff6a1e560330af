"""A fake Robinhood Crypto Trading API for tests.

It speaks the real protocol of https://docs.robinhood.com/crypto/trading/: the
``/api/v1/crypto/...`` paths with their trailing slashes, the three authentication headers
(``x-api-key``, ``x-timestamp``, ``x-signature``) with the Ed25519 signature verified over
``api_key + timestamp + path (with its query) + method + body`` exactly as received, the
30-second timestamp validity, cursor pagination (``next``/``previous``/``results``), repeated
query parameters (``?symbol=BTC-USD&symbol=ETH-USD``), the order object and its
``*_order_config`` objects, the ``state`` vocabulary (open, partially_filled, filled,
canceled, failed), UUID client order ids, cancel's ``text/plain`` answer, and the error
envelope ``{"type": "validation_error"|"client_error"|"server_error", "errors": [{"detail",
"attr"}]}``. Amounts the docs' response samples type as numbers are JSON numbers, the
others strings.

Not documented, so chosen here (and marked where used): the ``detail`` texts other than the
docs' "Must be a valid UUID.", the answer to a request without the headers (the plain-text
400 recorded by a live probe, api-evangelist/robinhood openapi/_original/
robinhood-crypto-trading-openapi.yml), that a reused ``client_order_id`` is a 400 on that
attribute, and ``Retry-After`` on 429.

Prices come from the paper market (``app.paper.quotes.SeededQuoteSource``) and orders match
by the paper broker's rules (``app.paper.matching.decide``) over in-memory books when the
test (or the fake-brokers ticker) calls ``match()``. Fault switches live in ``faults``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from app.brokers.base import AssetClass, OrderSide, OrderType, TimeInForce
from app.paper.matching import OrderState, decide
from app.paper.quotes import UNIVERSE, SeededQuoteSource

ZERO = Decimal(0)
BASE = "/api/v1/crypto"
OPEN = frozenset({"open", "partially_filled"})
TYPES = {
    "market": OrderType.market,
    "limit": OrderType.limit,
    "stop_loss": OrderType.stop,
    "stop_limit": OrderType.stop_limit,
}
TIMESTAMP_TTL = 30  # "timestamps are only valid for 30 seconds after they're generated"
MISSING_HEADERS = (
    "Request missing required headers. Required headers: x-api-key, x-signature, x-timestamp. "
    "Please refer to API documentation for more information."
)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def num(value: Decimal) -> float:
    """A JSON number, as the docs' samples type these amounts (exact for these magnitudes)."""
    return float(value)


def error(status: int, detail: str, attr: str | None = None, **headers: str) -> JSONResponse:
    kind = (
        "validation_error" if status == 400 else "server_error" if status >= 500 else "client_error"
    )
    return JSONResponse(
        {"type": kind, "errors": [{"detail": detail, "attr": attr}]},
        status_code=status,
        headers=headers,
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    """An unknown route or method: the documented error envelope, never plain text."""
    return error(404, "Not found.")


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N matching requests, then reset.

    ``latency``: seconds before every answer. ``server_errors`` / ``server_error_status``:
    the next N requests (of ``server_errors_method`` only, when set) answer 5xx.
    ``rate_limited`` / ``retry_after``: the next N answer 429. ``timeout_after_accept``: the
    next N order placements create the order, then hold the answer ``hang_seconds`` (the
    client times out). ``revoke(api_key)`` on ``FakeRobinhood`` disables a key.
    """

    latency: float = 0.0
    server_errors: int = 0
    server_error_status: int = 500
    server_errors_method: str | None = None
    rate_limited: int = 0
    retry_after: int = 7
    timeout_after_accept: int = 0
    hang_seconds: float = 30.0


@dataclass
class FakeOrder:
    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    config: dict[str, Decimal | str]
    created_at: datetime
    state: str = "open"
    filled: Decimal = ZERO
    average_price: Decimal | None = None
    updated_at: datetime | None = None
    executions: list[dict[str, Any]] = field(default_factory=list)
    stop_triggered: bool = False
    # A quote_amount order: the coins that amount buys or sells at its limit (or stop)
    # price, fixed when the order arrives (a choice of this fake; Robinhood does not say).
    sized: Decimal | None = None

    @property
    def quantity(self) -> Decimal:
        value = self.config.get("asset_quantity", self.sized)
        assert isinstance(value, Decimal)
        return value

    def price(self, name: str) -> Decimal | None:
        value = self.config.get(name)
        return value if isinstance(value, Decimal) else None

    def wire(self, account_number: str) -> dict[str, Any]:
        config = {k: (num(v) if isinstance(v, Decimal) else v) for k, v in self.config.items()}
        return {
            "id": self.id,
            "account_number": account_number,
            "symbol": self.symbol,
            "client_order_id": self.client_order_id,
            "side": self.side,
            "executions": list(self.executions),
            "type": self.type,
            "state": self.state,
            "average_price": None if self.average_price is None else num(self.average_price),
            "filled_asset_quantity": num(self.filled),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at or self.created_at),
            f"{self.type}_order_config": config,
        }


@dataclass
class FakeAccount:
    api_key: str
    private_key_b64: str  # what the user keeps; the fake itself only uses the public key
    public_key: Ed25519PublicKey
    cash: Decimal
    account_number: str = field(default_factory=lambda: str(uuid.uuid4().int)[:10])
    revoked: bool = False
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    holdings: dict[str, Decimal] = field(default_factory=dict)  # asset code -> quantity


def _within(order: FakeOrder, name: str, bound: datetime) -> bool:
    at = order.created_at if name.startswith("created") else order.updated_at or order.created_at
    return at >= bound if name.endswith("_start") else at <= bound


class FakeRobinhood:
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
        self.accounts: dict[str, FakeAccount] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self._release = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route(f"{BASE}/trading/accounts/", self.get_account, methods=["GET"]),
                Route(f"{BASE}/trading/holdings/", self.get_holdings, methods=["GET"]),
                Route(f"{BASE}/trading/trading_pairs/", self.get_pairs, methods=["GET"]),
                Route(f"{BASE}/marketdata/best_bid_ask/", self.best_bid_ask, methods=["GET"]),
                Route(f"{BASE}/marketdata/estimated_price/", self.estimated_price, methods=["GET"]),
                Route(f"{BASE}/trading/orders/", self.orders, methods=["GET", "POST"]),
                Route(f"{BASE}/trading/orders/{{order_id}}/", self.get_order, methods=["GET"]),
                Route(f"{BASE}/trading/orders/{{order_id}}/cancel/", self.cancel, methods=["POST"]),
            ],
            exception_handlers={404: _not_found, 405: _not_found},
        )

    # --- test controls -----------------------------------------------------------------

    def add_account(self, cash: str = "100000", *, node_key: bool = False) -> FakeAccount:
        """A new API credential and its account. ``node_key``: hand the private key out in
        the 64-byte form the docs' Node.js snippet prints (seed + public key)."""
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes_raw()
        public = key.public_key()
        raw = seed + public.public_bytes(Encoding.Raw, PublicFormat.Raw) if node_key else seed
        account = FakeAccount(
            api_key=f"rh-api-{uuid.uuid4()}",
            private_key_b64=base64.b64encode(raw).decode(),
            public_key=public,
            cash=Decimal(cash),
        )
        self.accounts[account.api_key] = account
        return account

    def revoke(self, api_key: str) -> None:
        self.accounts[api_key].revoked = True

    def release_hung(self) -> None:
        self._release.set()

    def set_state(self, order_id: str, state: str) -> None:
        """Force a state, even one outside the documented vocabulary (for mapping tests)."""
        for account in self.accounts.values():
            if order_id in account.orders:
                account.orders[order_id].state = state
                return
        raise KeyError(order_id)

    def order_count(self, api_key: str) -> int:
        return len(self.accounts[api_key].orders)

    async def match(self) -> int:
        """Evaluate every open order against the current quote; returns fills made."""
        fills = 0
        for account in self.accounts.values():
            for order in list(account.orders.values()):
                if order.state in OPEN:
                    fills += self._evaluate(account, order)
        return fills

    # --- plumbing ------------------------------------------------------------------------

    async def _gate(self, request: Request) -> FakeAccount | Response:
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        self.requests.append((request.method, target))
        if self.faults.latency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.latency)
        if self.faults.server_errors > 0 and self.faults.server_errors_method in (
            None,
            request.method,
        ):
            self.faults.server_errors -= 1
            return error(self.faults.server_error_status, "Internal server error.")
        if self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            return error(429, "Too many requests.", **{"Retry-After": str(self.faults.retry_after)})
        return self._authenticate(request, target, body)

    def _authenticate(self, request: Request, target: str, body: bytes) -> FakeAccount | Response:
        api_key = request.headers.get("x-api-key")
        signature = request.headers.get("x-signature")
        timestamp = request.headers.get("x-timestamp")
        if not api_key or not signature or not timestamp:
            return PlainTextResponse(MISSING_HEADERS, status_code=400)
        account = self.accounts.get(api_key)
        if account is None or account.revoked:
            return error(401, "Invalid API key.")
        try:
            sent_at = int(timestamp)
        except ValueError:
            return error(401, "Invalid timestamp.")
        if abs(self.unix_clock() - sent_at) > TIMESTAMP_TTL:
            return error(401, "Timestamp is expired.")
        message = f"{api_key}{sent_at}{target}{request.method}".encode() + body
        try:
            account.public_key.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            return error(401, "Invalid signature.")
        return account

    def _page(self, request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        params = request.query_params
        try:
            limit = min(int(params.get("limit", "100")), 1000)
            start = (
                int(base64.urlsafe_b64decode(params["cursor"]).decode())
                if ("cursor" in params)
                else 0
            )
        except (ValueError, binascii.Error):
            return error(400, "Invalid cursor.", "cursor")
        if limit <= 0:
            return error(400, "Ensure this value is greater than or equal to 1.", "limit")
        path = str(request.base_url).rstrip("/") + request.url.path

        def link(offset: int) -> str:
            cursor = base64.urlsafe_b64encode(str(offset).encode()).decode()
            return f"{path}?cursor={cursor}"

        end = start + limit
        return JSONResponse(
            {
                "next": link(end) if end < len(items) else None,
                "previous": link(max(0, start - limit)) if start > 0 else None,
                "results": items[start:end],
            }
        )

    def _quote(self, symbol: str) -> Any:
        return self.quotes.quote(symbol, self.clock())

    def _reserved(self, account: FakeAccount) -> Decimal:
        total = ZERO
        for order in account.orders.values():
            if order.side == "buy" and order.state in OPEN:
                price = order.price("limit_price") or self._quote(order.symbol).ask
                total += (order.quantity - order.filled) * price
        return total

    # --- account, holdings, pairs, quotes ------------------------------------------------

    async def get_account(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        return JSONResponse(
            {
                "account_number": account.account_number,
                "status": "active",
                "buying_power": str(account.cash - self._reserved(account)),
                "buying_power_currency": "USD",
            }
        )

    async def get_holdings(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        wanted = set(request.query_params.getlist("asset_code"))
        items = [
            {
                "account_number": account.account_number,
                "asset_code": code,
                "total_quantity": num(quantity),
                "quantity_available_for_trading": num(quantity - self._selling(account, code)),
            }
            for code, quantity in sorted(account.holdings.items())
            if quantity and (not wanted or code in wanted)
        ]
        return self._page(request, items)

    def _selling(self, account: FakeAccount, code: str) -> Decimal:
        return sum(
            (
                o.quantity - o.filled
                for o in account.orders.values()
                if o.side == "sell" and o.state in OPEN and o.symbol.split("-")[0] == code
            ),
            ZERO,
        )

    async def get_pairs(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        wanted = set(request.query_params.getlist("symbol"))
        items = [
            {
                "asset_code": symbol.split("-")[0],
                "quote_code": "USD",
                "quote_increment": "0.01",
                "asset_increment": str(instrument.size_quantum),
                "max_order_size": "100",
                "min_order_size": str(instrument.size_quantum),
                "status": "tradable",
                "symbol": symbol,
            }
            for symbol, instrument in UNIVERSE.items()
            if instrument.asset_class is AssetClass.crypto and (not wanted or symbol in wanted)
        ]
        return self._page(request, items)

    async def best_bid_ask(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        wanted = request.query_params.getlist("symbol")
        crypto = [s for s, i in UNIVERSE.items() if i.asset_class is AssetClass.crypto]
        for symbol in wanted:
            if symbol not in crypto:
                return error(400, f"Invalid symbol {symbol}.", "symbol")
        results = []
        for symbol in wanted or crypto:
            quote = self._quote(symbol)
            mid = (quote.bid + quote.ask) / 2
            results.append(
                {
                    "symbol": symbol,
                    "price": num(mid),
                    "bid_inclusive_of_sell_spread": num(quote.bid),
                    "sell_spread": num(((mid - quote.bid) / mid).quantize(Decimal("0.000001"))),
                    "ask_inclusive_of_buy_spread": num(quote.ask),
                    "buy_spread": num(((quote.ask - mid) / mid).quantize(Decimal("0.000001"))),
                    "timestamp": iso(quote.as_of),
                }
            )
        return JSONResponse({"results": results})

    async def estimated_price(self, request: Request) -> Response:
        """``GET .../marketdata/estimated_price/?symbol=BTC-USD&side=bid|ask|both&quantity=
        0.1,1``: one result per side and quantity ("Get Estimated Price": "Only USD symbols
        are accepted"; quantities comma-separated, at most 10), the side's price including
        Robinhood's spread (the fake's book has no depth: every size gets the touch)."""
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        params = request.query_params
        symbol = params.get("symbol", "")
        instrument = UNIVERSE.get(symbol)
        if instrument is None or instrument.asset_class is not AssetClass.crypto:
            return error(400, f"Invalid symbol {symbol}.", "symbol")
        side = params.get("side")
        if side not in ("bid", "ask", "both"):
            return error(400, f'"{side}" is not a valid choice.', "side")
        try:
            quantities = [Decimal(q) for q in params.get("quantity", "").split(",")]
        except InvalidOperation:
            return error(400, "A valid number is required.", "quantity")
        if not quantities or len(quantities) > 10 or any(q <= 0 for q in quantities):
            return error(400, "Between 1 and 10 positive quantities are required.", "quantity")
        quote = self._quote(symbol)
        mid = (quote.bid + quote.ask) / 2
        results = []
        for one_side in ("bid", "ask") if side == "both" else (side,):
            for quantity in quantities:
                results.append(
                    {
                        "symbol": symbol,
                        "side": one_side,
                        "price": num(quote.bid if one_side == "bid" else quote.ask),
                        "quantity": num(quantity),
                        "bid_inclusive_of_sell_spread": num(quote.bid),
                        "sell_spread": num(((mid - quote.bid) / mid).quantize(Decimal("0.000001"))),
                        "ask_inclusive_of_buy_spread": num(quote.ask),
                        "buy_spread": num(((quote.ask - mid) / mid).quantize(Decimal("0.000001"))),
                        "timestamp": iso(quote.as_of),
                    }
                )
        return JSONResponse({"results": results})

    # --- orders --------------------------------------------------------------------------

    async def orders(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        if request.method == "POST":
            return await self._place(request, account)
        params = request.query_params
        selected = sorted(account.orders.values(), key=lambda o: o.created_at, reverse=True)
        for name in ("state", "symbol", "side", "type", "id"):
            if name in params:
                value = params[name]
                selected = [o for o in selected if str(getattr(o, name)) == value]
        # ">= start" and "<= end" on created_at / updated_at ("Get Crypto Orders").
        for name in ("created_at_start", "created_at_end", "updated_at_start", "updated_at_end"):
            if name not in params:
                continue
            try:
                bound = datetime.fromisoformat(params[name].replace("Z", "+00:00"))
            except ValueError:
                return error(400, "Enter a valid date/time.", name)
            selected = [o for o in selected if _within(o, name, bound)]
        return self._page(request, [o.wire(account.account_number) for o in selected])

    async def _place(self, request: Request, account: FakeAccount) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "JSON parse error.", "non_field_errors")
        if not isinstance(body, dict):
            return error(400, "Invalid data.", "non_field_errors")
        client_order_id = body.get("client_order_id")
        try:
            uuid.UUID(str(client_order_id))
        except ValueError:
            return error(400, "Must be a valid UUID.", "client_order_id")  # the docs' example
        if any(o.client_order_id == client_order_id for o in account.orders.values()):
            return error(400, "Order with this client order id already exists.", "client_order_id")
        symbol = body.get("symbol")
        instrument = UNIVERSE.get(str(symbol))
        if instrument is None or instrument.asset_class is not AssetClass.crypto:
            return error(400, f"Invalid symbol {symbol}.", "symbol")
        side, type_ = body.get("side"), body.get("type")
        if side not in ("buy", "sell"):
            return error(400, f'"{side}" is not a valid choice.', "side")
        if type_ not in TYPES:
            return error(400, f'"{type_}" is not a valid choice.', "type")
        raw_config = body.get(f"{type_}_order_config")
        if not isinstance(raw_config, dict):
            return error(400, "This field is required.", f"{type_}_order_config")
        config = self._config(str(type_), raw_config)
        if isinstance(config, Response):
            return config
        sized: Decimal | None = None
        amount = config.get("quote_amount")
        if isinstance(amount, Decimal):
            price = config.get("limit_price") or config.get("stop_price")
            assert isinstance(price, Decimal)  # _config required one for these types
            sized = (amount / price).quantize(instrument.size_quantum, rounding=ROUND_DOWN)
            if sized <= 0:
                return error(400, "Order amount is below the minimum order size.", "quote_amount")
        order = FakeOrder(
            id=str(uuid.uuid4()),
            client_order_id=str(client_order_id),
            symbol=str(symbol),
            side=str(side),
            type=str(type_),
            config=config,
            created_at=self.clock(),
            sized=sized,
        )
        quote = self._quote(order.symbol)
        if side == "buy":
            cost = (
                amount
                if isinstance(amount, Decimal)
                else (order.quantity * (order.price("limit_price") or quote.ask))
            )
            if cost > account.cash - self._reserved(account):
                return error(400, "Insufficient buying power.", "non_field_errors")
        else:
            code = order.symbol.split("-")[0]
            available = account.holdings.get(code, ZERO) - self._selling(account, code)
            if order.quantity > available:
                return error(400, "Insufficient holdings.", "non_field_errors")
        account.orders[order.id] = order
        if self.faults.timeout_after_accept > 0:
            self.faults.timeout_after_accept -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.faults.hang_seconds)
        return JSONResponse(order.wire(account.account_number), status_code=201)

    def _config(self, type_: str, raw: dict[str, Any]) -> dict[str, Decimal | str] | Response:
        allowed = {
            "market": {"asset_quantity"},
            "limit": {"asset_quantity", "quote_amount", "limit_price", "time_in_force"},
            "stop_loss": {"asset_quantity", "quote_amount", "stop_price", "time_in_force"},
            "stop_limit": {
                "asset_quantity",
                "quote_amount",
                "limit_price",
                "stop_price",
                "time_in_force",
            },
        }[type_]
        attr = f"{type_}_order_config"
        if set(raw) - allowed:
            return error(400, f"Unexpected fields: {sorted(set(raw) - allowed)}.", attr)
        if "quote_amount" in raw and "asset_quantity" in raw:
            # One or the other (hood: "Cannot specify both asset quantity and quote amount").
            return error(400, "Specify either asset_quantity or quote_amount.", attr)
        config: dict[str, Decimal | str] = {}
        for name in ("asset_quantity", "quote_amount", "limit_price", "stop_price"):
            if name in raw:
                try:
                    value = Decimal(str(raw[name]))
                except InvalidOperation:
                    return error(400, "A valid number is required.", attr)
                if not value.is_finite() or value <= 0:
                    return error(400, "Ensure this value is greater than 0.", attr)
                config[name] = value
        needed = {"quote_amount" if "quote_amount" in config else "asset_quantity"}
        if type_ in ("limit", "stop_limit"):
            needed.add("limit_price")
        if type_ in ("stop_loss", "stop_limit"):
            needed.add("stop_price")
        if needed - set(config):
            return error(400, "This field is required.", attr)
        if type_ == "limit" and "time_in_force" not in raw:
            # The hood client sends limit configs without one (its ORDER_REQUIREMENTS refuse
            # time_in_force on "limit"); others send "gtc". Taken as gtc: a choice of this
            # fake, the docs do not say what Robinhood defaults to.
            raw = {**raw, "time_in_force": "gtc"}
        if type_ != "market":
            if raw.get("time_in_force") not in ("gtc", "gfd"):
                return error(400, f'"{raw.get("time_in_force")}" is not a valid choice.', attr)
            config["time_in_force"] = str(raw["time_in_force"])
        return config

    def _find(self, request: Request, account: FakeAccount) -> FakeOrder | Response:
        order = account.orders.get(request.path_params["order_id"])
        if order is None:
            return error(404, "Not found.")
        return order

    async def get_order(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        order = self._find(request, account)
        if isinstance(order, Response):
            return order
        return JSONResponse(order.wire(account.account_number))

    async def cancel(self, request: Request) -> Response:
        account = await self._gate(request)
        if isinstance(account, Response):
            return account
        order = self._find(request, account)
        if isinstance(order, Response):
            return order
        if order.state not in OPEN:
            return error(400, f"Order is already {order.state}.", "non_field_errors")
        order.state, order.updated_at = "canceled", self.clock()
        return PlainTextResponse(f"Cancel request was submitted for order {order.id}")

    def _evaluate(self, account: FakeAccount, order: FakeOrder) -> int:
        now = self.clock()
        quote = self._quote(order.symbol)
        tif = order.config.get("time_in_force", "gtc")
        decision = decide(
            OrderState(
                side=OrderSide(order.side),
                order_type=TYPES[order.type],
                time_in_force=TimeInForce.day if tif == "gfd" else TimeInForce.gtc,
                remaining=order.quantity - order.filled,
                limit_price=order.price("limit_price"),
                stop_price=order.price("stop_price"),
                stop_triggered=order.stop_triggered,
            ),
            quote,
        )
        order.stop_triggered = decision.stop_triggered
        if not decision.fills or decision.fill_price is None:
            return 0
        qty, price = decision.fill_quantity, decision.fill_price
        previous = order.filled * (order.average_price or ZERO)
        order.filled += qty
        order.average_price = ((previous + qty * price) / order.filled).quantize(Decimal("0.01"))
        order.executions.append(
            {"effective_price": str(price), "quantity": str(qty), "timestamp": iso(now)}
        )
        order.updated_at = now
        code = order.symbol.split("-")[0]
        if order.side == "buy":
            account.cash -= qty * price
            account.holdings[code] = account.holdings.get(code, ZERO) + qty
        else:
            account.cash += qty * price
            account.holdings[code] = account.holdings.get(code, ZERO) - qty
        order.state = "filled" if order.filled >= order.quantity else "partially_filled"
        return 1

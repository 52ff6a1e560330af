"""The fake Coinbase's market data: the Advanced Trade market WebSocket (``heartbeats``,
``ticker``, ``market_trades``, ``candles``) and REST product candles, from the paper market.

Sources: https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/
websocket-channels (subscribe/unsubscribe per channel with ``product_ids``, optional
``jwt``; heartbeats every second with ``heartbeat_counter``; ticker fields ``product_id,
price, volume_24_h, low_24_h, high_24_h, best_bid, best_bid_quantity, best_ask,
best_ask_quantity``; market_trades ``trade_id, product_id, price, size, side, time``;
candles in five-minute buckets updated every second, ``start`` as epoch seconds), the
AsyncAPI (no ``client_id``, ``heartbeat_counter`` an integer:
https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/advanced-trade-asyncapi.json)
and get-product-candles (``{"candles": [{"start", "low", "high", "open", "close",
"volume"}]}``, newest first, at most 350 a request:
https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/products/
get-product-candles).

Every message of a connection carries ``sequence_num``, one counter across channels.

Chosen here (not documented): the error text for an unknown product, the tick
(``tick_seconds``: every subscribed product gets a ticker, one trade and a candle update per
tick), and that the first update of a subscription is a ``snapshot``.

Fault switches: ``faults.silent`` (nothing is sent, heartbeats included), ``faults.slow``
(seconds slept before each frame), ``faults.skip_messages`` (the next N messages use their
sequence number but never arrive), ``drop()`` closes every market socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers import errors
from app.brokers.base import BarInterval
from app.brokers.market_data.bars import window_start
from app.paper.market_data import PaperMarketData

MARKET_PATH = "/market"  # the fake's stand-in for wss://advanced-trade-ws.coinbase.com
CANDLE_PAGE = 350
GRANULARITY = {
    "ONE_MINUTE": BarInterval.m1,
    "FIVE_MINUTE": BarInterval.m5,
    "FIFTEEN_MINUTE": BarInterval.m15,
    "ONE_HOUR": BarInterval.h1,
    "ONE_DAY": BarInterval.d1,
}
CHANNELS = ("ticker", "market_trades", "candles")

Gate = Callable[[Request], Awaitable[Any]]
Verify = Callable[[str], object | None]
Refuse = Callable[[int, str, str], Response]


@dataclass
class MarketFaults:
    silent: bool = False
    slow: float = 0.0
    skip_messages: int = 0


@dataclass(eq=False)
class _Socket:
    queue: asyncio.Queue[dict[str, Any] | None]
    products: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in CHANNELS})
    snapshot_sent: set[tuple[str, str]] = field(default_factory=set)
    candles: dict[str, dict[str, Any]] = field(default_factory=dict)
    sequence: int = 0
    heartbeats: asyncio.Task[None] | None = None


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeCoinbaseMarket:
    def __init__(
        self,
        data: PaperMarketData,
        *,
        gate: Gate,
        verify: Verify,
        refuse: Refuse,
        clock: Callable[[], datetime],
        tick_seconds: float = 0.05,
        heartbeat_seconds: float = 1.0,
    ) -> None:
        self.data = data
        self._gate = gate
        self._verify = verify
        self._refuse = refuse
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.faults = MarketFaults()
        self.messages: list[dict[str, Any]] = []  # every subscribe/unsubscribe received
        self.connections_opened = 0
        self._sockets: set[_Socket] = set()

    @property
    def connection_count(self) -> int:
        return len(self._sockets)

    def drop(self) -> None:
        for socket in self._sockets:
            socket.queue.put_nowait(None)

    def subscribed(self) -> dict[str, set[str]]:
        """The union of what every open socket holds, per channel."""
        found: dict[str, set[str]] = {c: set() for c in CHANNELS}
        for socket in self._sockets:
            for channel, products in socket.products.items():
                found[channel] |= products
        return found

    # --- REST candles --------------------------------------------------------------------

    async def candles(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        params = request.query_params
        product_id = request.path_params["product_id"]
        interval = GRANULARITY.get(params.get("granularity", ""))
        try:
            start = datetime.fromtimestamp(int(params["start"]), tz=UTC)
            end = datetime.fromtimestamp(int(params["end"]), tz=UTC)
        except (KeyError, ValueError):
            return self._refuse(400, "INVALID_ARGUMENT", "start and end are required")
        if interval is None:
            return self._refuse(400, "INVALID_ARGUMENT", "unknown granularity")
        if (end - start) / timedelta(seconds=interval.seconds) > CANDLE_PAGE:
            return self._refuse(
                400, "INVALID_ARGUMENT", "number of candles requested should be less than 350"
            )
        try:
            bars = self.data.history(product_id, interval, start, end, CANDLE_PAGE, self.clock())
        except (errors.UnknownSymbol, errors.NotSupported):
            return self._refuse(404, "NOT_FOUND", "product not found")
        rows = [
            {"start": str(int(b.start.timestamp())), "low": _text(b.low), "high": _text(b.high),
             "open": _text(b.open), "close": _text(b.close), "volume": _text(b.volume)}
            for b in reversed(bars)
        ]  # fmt: skip
        return JSONResponse({"candles": rows})

    # --- the market WebSocket ------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        socket = _Socket(queue=asyncio.Queue())
        self._sockets.add(socket)
        self.connections_opened += 1

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    try:
                        parsed = json.loads(message.get("text") or message.get("bytes") or b"")
                    except ValueError:
                        self._error(socket, "malformed message")
                        continue
                    if isinstance(parsed, dict):
                        self._on_message(socket, parsed)
            socket.queue.put_nowait(None)

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.tick_seconds)
                if not self.faults.silent:
                    self._publish(socket)

        reader = asyncio.create_task(read())
        ticker = asyncio.create_task(tick())
        try:
            while True:
                item = await socket.queue.get()
                if item is None:
                    break
                if "channel" in item:
                    socket.sequence += 1
                    item = {**item, "sequence_num": socket.sequence}
                    if self.faults.skip_messages > 0:
                        self.faults.skip_messages -= 1
                        continue
                if self.faults.silent:
                    continue
                if self.faults.slow:
                    await asyncio.sleep(self.faults.slow)
                await websocket.send_text(json.dumps(item))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._sockets.discard(socket)
            reader.cancel()
            ticker.cancel()
            if socket.heartbeats is not None:
                socket.heartbeats.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1000)

    def _error(self, socket: _Socket, message: str) -> None:
        socket.queue.put_nowait({"type": "error", "message": message})

    def _envelope(self, channel: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        return {"channel": channel, "timestamp": _iso(self.clock()), "events": events}

    def _on_message(self, socket: _Socket, message: dict[str, Any]) -> None:
        self.messages.append(message)
        kind, channel = message.get("type"), message.get("channel")
        token = message.get("jwt")
        if token is not None and (not isinstance(token, str) or self._verify(token) is None):
            self._error(socket, "authentication failure")
            return
        if kind not in ("subscribe", "unsubscribe"):
            self._error(socket, "unknown message type")
            return
        if channel == "heartbeats":
            if kind == "subscribe" and socket.heartbeats is None:
                socket.heartbeats = asyncio.create_task(self._heartbeats(socket))
            return
        if channel not in CHANNELS:
            self._error(socket, f"unknown channel {channel}")
            return
        products = message.get("product_ids")
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            self._error(socket, "product_ids must be a list of strings")
            return
        held = socket.products[str(channel)]
        for product in products:
            if kind == "unsubscribe":
                held.discard(product)
                socket.snapshot_sent.discard((str(channel), product))
                continue
            try:
                self.data.resolve(product, self.clock())
            except errors.UnknownSymbol:
                self._error(socket, f"Failed to subscribe: {product} is not a valid product")
                continue
            held.add(product)
        subscriptions = {c: sorted(p) for c, p in socket.products.items() if p}
        socket.queue.put_nowait(self._envelope("subscriptions", [{"subscriptions": subscriptions}]))

    async def _heartbeats(self, socket: _Socket) -> None:
        counter = 0
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            if self.faults.silent:
                continue
            counter += 1
            now = self.clock().strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC")
            socket.queue.put_nowait(
                self._envelope("heartbeats", [{"current_time": now, "heartbeat_counter": counter}])
            )

    def _publish(self, socket: _Socket) -> None:
        now = self.clock()
        step = self.data.step_at(now)
        at = self.data.time_of(step)
        for product in sorted(socket.products["ticker"]):
            q = self.data.quote(product, step)
            t = self.data.trade(product, step)
            ticker = {"type": "ticker", "product_id": product, "price": _text(t.price),
                      "volume_24_h": "0", "low_24_h": _text(t.price), "high_24_h": _text(t.price),
                      "best_bid": _text(q.bid or Decimal(0)),
                      "best_bid_quantity": _text(q.bid_size or Decimal(0)),
                      "best_ask": _text(q.ask or Decimal(0)),
                      "best_ask_quantity": _text(q.ask_size or Decimal(0))}  # fmt: skip
            kind = self._kind(socket, "ticker", product)
            socket.queue.put_nowait(self._envelope("ticker", [{"type": kind, "tickers": [ticker]}]))
        for product in sorted(socket.products["market_trades"]):
            t = self.data.trade(product, step)
            trade = {"trade_id": str(uuid.uuid4().int % 10**9), "product_id": product,
                     "price": _text(t.price), "size": _text(t.size), "side": "BUY",
                     "time": _iso(at)}  # fmt: skip
            kind = self._kind(socket, "market_trades", product)
            trades = [] if kind == "snapshot" else [trade]
            socket.queue.put_nowait(
                self._envelope("market_trades", [{"type": kind, "trades": trades}])
            )
        for product in sorted(socket.products["candles"]):
            t = self.data.trade(product, step)
            start = str(int(window_start(at, BarInterval.m5).timestamp()))
            candle = socket.candles.get(product)
            if candle is None or candle["start"] != start:
                candle = socket.candles[product] = {
                    "start": start, "open": t.price, "high": t.price, "low": t.price,
                    "close": t.price, "volume": Decimal(0)}  # fmt: skip
            candle["high"] = max(candle["high"], t.price)
            candle["low"] = min(candle["low"], t.price)
            candle["close"] = t.price
            candle["volume"] += t.size
            row = {
                "start": start,
                "product_id": product,
                **{k: _text(candle[k]) for k in ("open", "high", "low", "close", "volume")},
            }
            kind = self._kind(socket, "candles", product)
            socket.queue.put_nowait(self._envelope("candles", [{"type": kind, "candles": [row]}]))

    @staticmethod
    def _kind(socket: _Socket, channel: str, product: str) -> str:
        if (channel, product) in socket.snapshot_sent:
            return "update"
        socket.snapshot_sent.add((channel, product))
        return "snapshot"

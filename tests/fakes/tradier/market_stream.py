"""The fake Tradier's market data: the market streaming session, the market WebSocket and
REST bars (history, timesales), from the paper market.

Sources: https://docs.tradier.com/docs/streaming (event payloads, quoted below),
https://documentation.tradier.com/brokerage-api/streaming/wss-market-websocket (payload
``{"symbols", "sessionid", "filter", "linebreak", "validOnly", "advancedDetails"}``, resent
whole to change the subscription), create-market-session (``{"stream": {"url",
"sessionid"}}``, 5 minutes to connect), https://docs.tradier.com/reference/streaming
(``{"error": "1234 is not a valid symbol"}``), markets get-history (``{"history": {"day":
[...]}}``) and get-timesales (``{"series": {"data": [{"time", "timestamp", "price", "open",
"high", "low", "close", "volume", "vwap"}]}}``, start/end ``YYYY-MM-DD HH:MM`` in US/Eastern).

As in the docs' examples, a quote carries ``bid``/``ask`` as JSON numbers and sizes as
numbers, dates as epoch-ms strings; a trade carries ``price``, ``size``, ``cvol``, ``last``
as strings. With ``linebreak`` every payload ends with ``\\n``.

Chosen here (not documented): an unknown session id closes the socket with 1008 (as the
account fake does), the tick (``tick_seconds``), the order of events within a tick, and
that bars are the paper market's (UTC days for ``daily``).

Fault switches: ``faults.silent`` (nothing is sent), ``faults.slow`` (seconds slept before
each frame), ``drop()`` closes every market socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers import errors
from app.brokers.base import Bar, BarInterval
from app.paper.market_data import PaperMarketData

SESSION_TTL = timedelta(minutes=5)
EASTERN = ZoneInfo("America/New_York")
MARKET_PATH = "/v1/markets/events"
_INTERVALS = {"1min": BarInterval.m1, "5min": BarInterval.m5, "15min": BarInterval.m15}

Gate = Callable[[Request], Awaitable[Any]]
Answer = Callable[[Request, dict[str, Any]], Response]


@dataclass
class MarketFaults:
    silent: bool = False
    slow: float = 0.0


@dataclass(eq=False)
class _Socket:
    queue: asyncio.Queue[str | None]
    payloads: list[dict[str, Any]] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    filters: set[str] = field(default_factory=set)
    linebreak: bool = False
    cvol: dict[str, Decimal] = field(default_factory=dict)


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _number(value: Decimal | None) -> Any:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


class FakeTradierMarket:
    def __init__(
        self,
        data: PaperMarketData,
        *,
        gate: Gate,
        answer: Answer,
        clock: Callable[[], datetime],
        tick_seconds: float = 0.05,
    ) -> None:
        self.data = data
        self._gate = gate
        self._answer = answer
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.faults = MarketFaults()
        self.sessions: dict[str, datetime] = {}  # market session id -> connect-by
        self.payloads: list[dict[str, Any]] = []  # every subscription payload received
        self.connections_opened = 0
        self._sockets: set[_Socket] = set()

    @property
    def connection_count(self) -> int:
        return len(self._sockets)

    def drop(self) -> None:
        for socket in self._sockets:
            socket.queue.put_nowait(None)

    # --- REST ----------------------------------------------------------------------------

    async def session(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        session_id = uuid.uuid4().hex.upper()
        self.sessions[session_id] = self.clock() + SESSION_TTL
        scheme = "wss" if request.url.scheme == "https" else "ws"
        url = f"{scheme}://{request.url.netloc}{MARKET_PATH}"
        return self._answer(request, {"stream": {"url": url, "sessionid": session_id}})

    async def history(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        params = request.query_params
        if params.get("interval", "daily") != "daily":
            return self._answer(request, {"history": "null"})  # weekly/monthly: not served
        try:
            start = datetime.strptime(params["start"], "%Y-%m-%d").replace(tzinfo=UTC)
            end = datetime.strptime(params["end"], "%Y-%m-%d").replace(tzinfo=UTC)
        except (KeyError, ValueError):
            return self._answer(request, {"history": "null"})
        bars = self._bars(params.get("symbol", ""), BarInterval.d1, start, end + timedelta(days=1))
        days = [
            {"date": b.start.strftime("%Y-%m-%d"), "open": _number(b.open),
             "high": _number(b.high), "low": _number(b.low), "close": _number(b.close),
             "volume": _number(b.volume)}
            for b in bars
        ]  # fmt: skip
        return self._answer(request, {"history": _one_or_many("day", days)})

    async def timesales(self, request: Request) -> Response:
        user = await self._gate(request)
        if isinstance(user, Response):
            return user
        params = request.query_params
        interval = _INTERVALS.get(params.get("interval", "tick"))
        try:
            start = _eastern(params["start"])
            end = _eastern(params["end"])
        except (KeyError, ValueError):
            return self._answer(request, {"series": "null"})
        if interval is None:
            return self._answer(request, {"series": "null"})
        bars = self._bars(params.get("symbol", ""), interval, start, end + timedelta(minutes=1))
        rows = [
            {"time": b.start.astimezone(EASTERN).strftime("%Y-%m-%dT%H:%M:%S"),
             "timestamp": int(b.start.timestamp()), "price": _number(b.close),
             "open": _number(b.open), "high": _number(b.high), "low": _number(b.low),
             "close": _number(b.close), "volume": _number(b.volume),
             "vwap": _number(b.vwap)}
            for b in bars
        ]  # fmt: skip
        return self._answer(request, {"series": _one_or_many("data", rows)})

    def _bars(
        self, symbol: str, interval: BarInterval, start: datetime, end: datetime
    ) -> list[Bar]:
        try:
            return self.data.history(symbol, interval, start, end, 10_000, self.clock())
        except (errors.UnknownSymbol, errors.NotSupported):
            return []

    # --- the market WebSocket ------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        socket = _Socket(queue=asyncio.Queue())
        try:
            first = json.loads(await websocket.receive_text())
        except (WebSocketDisconnect, ValueError, RuntimeError):
            return
        if not self._take(socket, first):
            await websocket.close(code=1008)
            return
        self._sockets.add(socket)
        self.connections_opened += 1

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    raw = message.get("text") or (message.get("bytes") or b"").decode()
                    with contextlib.suppress(ValueError):
                        payload = json.loads(raw)
                        if isinstance(payload, dict) and not self._take(socket, payload):
                            break
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
                frame = await socket.queue.get()
                if frame is None:
                    break
                if self.faults.silent:
                    continue
                if self.faults.slow:
                    await asyncio.sleep(self.faults.slow)
                await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._sockets.discard(socket)
            reader.cancel()
            ticker.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1000)

    def _take(self, socket: _Socket, payload: dict[str, Any]) -> bool:
        """A subscription payload: it replaces the socket's symbols and filter."""
        self.payloads.append(payload)
        socket.payloads.append(payload)
        session_id = payload.get("sessionid")
        connect_by = self.sessions.get(session_id) if isinstance(session_id, str) else None
        first = len(socket.payloads) == 1
        if connect_by is None or (first and connect_by < self.clock()):
            return False
        symbols = payload.get("symbols")
        filters = payload.get("filter")
        socket.symbols = []
        for symbol in symbols if isinstance(symbols, list) else []:
            if self._known(symbol):
                socket.symbols.append(symbol)
            else:
                self._send(socket, {"error": f"{symbol} is not a valid symbol"})
        socket.filters = set(filters) if isinstance(filters, list) else {
            "quote", "trade", "summary", "timesale", "tradex"}  # fmt: skip
        socket.linebreak = bool(payload.get("linebreak"))
        return True

    def _known(self, symbol: object) -> bool:
        if not isinstance(symbol, str) or not re.fullmatch(r"[A-Z0-9.]{1,21}", symbol):
            return False
        try:
            self.data.resolve(symbol, self.clock())
        except errors.UnknownSymbol:
            return False
        return True

    def _send(self, socket: _Socket, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        socket.queue.put_nowait(text + "\n" if socket.linebreak else text)

    def _publish(self, socket: _Socket) -> None:
        now = self.clock()
        step = self.data.step_at(now)
        at = str(int(self.data.time_of(step).timestamp() * 1000))
        for symbol in socket.symbols:
            if "quote" in socket.filters:
                q = self.data.quote(symbol, step)
                self._send(socket, {"type": "quote", "symbol": symbol, "bid": _number(q.bid),
                                    "bidsz": _number(q.bid_size) or 0, "bidexch": "Q",
                                    "biddate": at, "ask": _number(q.ask),
                                    "asksz": _number(q.ask_size) or 0, "askexch": "Q",
                                    "askdate": at})  # fmt: skip
            if "trade" in socket.filters:
                t = self.data.trade(symbol, step)
                cvol = socket.cvol.get(symbol, Decimal(0)) + t.size
                socket.cvol[symbol] = cvol
                self._send(socket, {"type": "trade", "symbol": symbol, "exch": "Q",
                                    "price": _text(t.price), "size": _text(t.size),
                                    "cvol": _text(cvol), "date": at,
                                    "last": _text(t.price)})  # fmt: skip


def _eastern(text: str) -> datetime:
    for form in ("%Y-%m-%d %H:%M", "%Y-%m-%d"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(text, form).replace(tzinfo=EASTERN).astimezone(UTC)
    raise ValueError(text)


def _one_or_many(inner: str, values: list[Any]) -> Any:
    """Tradier's collection quirk: one item is a bare object, none is the string "null"."""
    if not values:
        return "null"
    return {inner: values[0] if len(values) == 1 else values}

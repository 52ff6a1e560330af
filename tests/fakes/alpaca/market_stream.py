"""The fake Alpaca's market data: the stock and crypto streams and the history bars.

The real protocol (https://docs.alpaca.markets/docs/streaming-market-data,
https://docs.alpaca.markets/docs/real-time-stock-pricing-data, alpaca-py
``alpaca/data/live/websocket.py``): WebSockets at ``/v2/{iex|sip}`` and
``/v1beta3/crypto/us``; ``[{"T":"success","msg":"connected"}]`` on connect; ``auth`` with key
and secret (``402 auth failed``); ``subscribe``/``unsubscribe`` add to and subtract from the
current set, answered by the full set (``T: subscription``); data arrays of ``t``, ``q``,
``b`` messages whose fields are the data spec's ``stock_trade``/``stock_quote``/``stock_bar``
(``crypto_*`` for crypto) plus ``T`` and ``S``; one connection per endpoint and key (``406
connection limit exceeded``); a trade+quote symbol cap per plan (``405 symbol limit
exceeded``, subscription unchanged; bars uncapped); a slow client whose buffer fills gets
``407 slow client`` and is disconnected. REST: ``GET /v2/stocks/{symbol}/bars``,
``/v2/stocks/bars`` and ``/v1beta3/crypto/{loc}/bars`` with ``timeframe``, ``start``/``end``
(inclusive), ``limit``, ``page_token``, ``sort`` (../shared/specs/alpaca-market-data-api.json).

Data come from the paper market (``PaperMarketData`` over the fake's ``SeededQuoteSource``):
nothing moves on its own; ``publish(steps)`` moves this market ``steps`` quote steps on from
its cursor (which starts at the fake's clock) and sends every subscriber that step's quotes
and trades, and at each minute's end the minute bar. Faults: ``faults.silent`` (connections
stay open and say nothing), ``faults.buffer`` (the per-connection outgoing buffer; overflow
is a slow client), ``symbol_limit`` (the plan's cap), ``drop()``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgpack
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers.base import Bar, BarInterval, MarketQuote, MarketTrade, is_option_symbol
from app.brokers.errors import NotSupported, UnknownSymbol
from app.brokers.market_data.bars import window_start
from app.paper.market_data import PaperMarketData

if TYPE_CHECKING:
    from tests.fakes.alpaca.server import FakeAlpaca

CHANNELS = ("trades", "quotes", "bars")
TIMEFRAMES = {
    "1Min": BarInterval.m1,
    "1T": BarInterval.m1,
    "5Min": BarInterval.m5,
    "5T": BarInterval.m5,
    "15Min": BarInterval.m15,
    "15T": BarInterval.m15,
    "1Hour": BarInterval.h1,
    "1H": BarInterval.h1,
    "1Day": BarInterval.d1,
    "1D": BarInterval.d1,
}


def _ts(at: datetime) -> str:
    """RFC 3339 with nanoseconds, as Alpaca writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _num(value: Decimal) -> Any:
    """A JSON number (Alpaca's market data sends numbers, not strings)."""
    return int(value) if value == value.to_integral_value() else float(value)


def wire_symbol(symbol: str) -> str:
    return symbol.replace("-", "/")


def our_symbol(symbol: str) -> str:
    return symbol.replace("/", "-")


def pack(messages: list[dict[str, Any]], binary: bool) -> bytes:
    """JSON (stocks, crypto) or msgpack with Timestamp extensions (options)."""
    if not binary:
        return json.dumps(messages).encode()
    converted = [
        {k: msgpack.Timestamp.from_datetime(_parse(v)) if k == "t" else v for k, v in m.items()}
        for m in messages
    ]
    packed: bytes = msgpack.packb(converted)
    return packed


def control(kind: str, binary: bool = False, **fields: Any) -> bytes:
    return pack([{"T": kind, **fields}], binary)


def error(code: int, msg: str, binary: bool = False) -> bytes:
    return control("error", binary, code=code, msg=msg)


@dataclass
class MarketFaults:
    silent: bool = False  # connections open, nothing sent (control answers included)
    buffer: int = 10_000  # frames buffered per connection; overflow: 407 slow client


@dataclass
class Connection:
    endpoint: str  # "stocks" | "crypto" | "options"
    key: str
    queue: asyncio.Queue[bytes | None]
    subs: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in CHANNELS})
    closed: bool = False

    @property
    def binary(self) -> bool:
        return self.endpoint == "options"


class AlpacaMarketStream:
    """Mounted by ``FakeAlpaca`` (``routes``); tests drive it with ``publish``."""

    def __init__(self, fake: FakeAlpaca, *, symbol_limit: int | None = 30) -> None:
        self.fake = fake
        self.data = PaperMarketData(fake.quotes, fake.options)
        self.faults = MarketFaults()
        self.symbol_limit = symbol_limit
        self.connections: list[Connection] = []
        self.cursor: int | None = None  # the last step published
        self.received: list[dict[str, Any]] = []  # every client message after auth
        self.handshake_headers: list[dict[str, str]] = []  # each connection's request headers
        # "The API may return less [than limit]" (data spec ``limit``): bars per page at most.
        self.bars_page = 10000
        self.auth_timeout = 10.0  # seconds to authenticate after connecting (then 404)

    def routes(self) -> list[BaseRoute]:
        return [
            WebSocketRoute("/v2/iex", self._stocks),
            WebSocketRoute("/v2/sip", self._stocks),
            WebSocketRoute("/v1beta3/crypto/us", self._crypto),
            WebSocketRoute("/v1beta1/indicative", self._options),
            WebSocketRoute("/v1beta1/opra", self._options),
            Route("/v2/stocks/bars", self.multi_bars, methods=["GET"]),
            Route("/v2/stocks/{symbol}/bars", self.single_bars, methods=["GET"]),
            Route("/v1beta3/crypto/{loc}/bars", self.multi_bars, methods=["GET"]),
        ]

    # --- test controls -------------------------------------------------------------------

    def live(self, endpoint: str | None = None) -> list[Connection]:
        return [c for c in self.connections if endpoint in (None, c.endpoint)]

    def drop(self) -> None:
        """Every market connection closes at once (a network drop)."""
        for connection in self.connections:
            connection.queue.put_nowait(None)

    async def run(self, seconds: float = 0.25) -> None:
        """Follow the fake's clock (scripts/fake-brokers): every ``seconds``, publish the
        steps it passed (at most a minute's worth at once)."""
        while True:
            await asyncio.sleep(seconds)
            if self.cursor is None:
                self.cursor = self.data.step_at(self.fake.clock())
            behind = self.data.step_at(self.fake.clock()) - self.cursor
            if behind > 0:
                self.publish(min(behind, 60))

    def publish(self, steps: int = 1) -> int:
        """Move the market ``steps`` steps on; returns the frames queued."""
        if self.cursor is None:
            self.cursor = self.data.step_at(self.fake.clock())
        frames = 0
        for _ in range(steps):
            self.cursor += 1
            for connection in list(self.connections):
                messages = self._step_messages(connection, self.cursor)
                if messages and not self.faults.silent:
                    frames += self._send(connection, pack(messages, connection.binary))
        return frames

    # --- messages of one step --------------------------------------------------------------

    def _step_messages(self, connection: Connection, step: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        subs = connection.subs
        for symbol in sorted(subs["quotes"]):
            quote = self.data.quote(our_symbol(symbol), step)
            if connection.binary:  # the model quotes no sizes: a seeded one a minute
                size = self.data.trade_size(symbol, self.data.minute_index(step))
                quote = MarketQuote(
                    symbol, quote.bid, quote.ask, size, size, quote.ts, quote.source
                )
            out.append(self._quote(quote, symbol))
        for symbol in sorted(subs["trades"]):
            out.append(self._trade(self.data.trade(our_symbol(symbol), step), symbol, step))
        if subs["bars"]:
            minute = window_start(self.data.time_of(step), BarInterval.m1)
            previous = window_start(self.data.time_of(step - 1), BarInterval.m1)
            if minute != previous:
                for symbol in sorted(subs["bars"]):
                    bar = self.data.minute_bar(our_symbol(symbol), previous)
                    if bar is not None:
                        out.append({"T": "b", "S": symbol, **bar_body(bar)})
        return out

    @staticmethod
    def _quote(q: MarketQuote, symbol: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "T": "q",
            "S": symbol,
            "bp": _num(q.bid or Decimal(0)),
            "bs": _num(q.bid_size or Decimal(0)),
            "ap": _num(q.ask or Decimal(0)),
            "as": _num(q.ask_size or Decimal(0)),
            "t": _ts(q.ts),
        }
        if is_option_symbol(symbol):  # option_quote: exchanges and one condition
            body.update({"bx": "C", "ax": "C", "c": "A"})
        elif "/" not in symbol:  # stock quotes carry exchanges, conditions and tape
            body.update({"bx": "V", "ax": "V", "c": ["R"], "z": "C"})
        return body

    @staticmethod
    def _trade(t: MarketTrade, symbol: str, step: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "T": "t",
            "S": symbol,
            "i": step,
            "p": _num(t.price),
            "s": _num(t.size),
            "t": _ts(t.ts),
        }
        if is_option_symbol(symbol):  # option_trade: exchange and one condition, no id
            del body["i"]
            body.update({"x": "C", "c": "I"})
        elif "/" in symbol:
            body["tks"] = "B" if step % 2 else "S"
        else:
            body.update({"x": "V", "c": ["@"], "z": "C"})
        return body

    def _send(self, connection: Connection, frame: bytes) -> int:
        if connection.closed:
            return 0
        if connection.queue.qsize() >= self.faults.buffer:
            # "slow clients may get disconnected if their buffer becomes full" (docs)
            connection.closed = True
            connection.queue.put_nowait(error(407, "slow client", connection.binary))
            connection.queue.put_nowait(None)
            return 0
        connection.queue.put_nowait(frame)
        return 1

    # --- the WebSocket ---------------------------------------------------------------------

    async def _stocks(self, websocket: WebSocket) -> None:
        await self._serve(websocket, "stocks")

    async def _crypto(self, websocket: WebSocket) -> None:
        await self._serve(websocket, "crypto")

    async def _options(self, websocket: WebSocket) -> None:
        await self._serve(websocket, "options")

    async def _serve(self, websocket: WebSocket, endpoint: str) -> None:
        await websocket.accept()
        binary = endpoint == "options"  # the option feed is msgpack only
        self.handshake_headers.append(dict(websocket.headers))

        async def receive() -> dict[str, Any] | None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            try:
                if binary:
                    parsed = msgpack.unpackb(message.get("bytes") or b"")
                else:
                    raw = message.get("text") or (message.get("bytes") or b"").decode()
                    parsed = json.loads(raw)
            except ValueError:
                return None
            return parsed if isinstance(parsed, dict) else None

        try:
            if not self.faults.silent:
                await websocket.send_bytes(control("success", binary, msg="connected"))
            try:  # "you only have 10 seconds to do so after connecting" (docs)
                hello = await asyncio.wait_for(receive(), self.auth_timeout)
            except TimeoutError:
                await websocket.send_bytes(error(404, "auth timeout", binary))
                await websocket.close(code=1008)
                return
            if hello is None or hello.get("action") != "auth":
                await websocket.send_bytes(error(401, "not authenticated", binary))
                await websocket.close(code=1008)
                return
            account = self.fake.accounts.get(str(hello.get("key")))
            if account is None or account.secret != hello.get("secret") or account.revoked:
                await websocket.send_bytes(error(402, "auth failed", binary))
                await websocket.close(code=1008)
                return
            if any(c.key == account.key_id and not c.closed for c in self.live(endpoint)):
                await websocket.send_bytes(error(406, "connection limit exceeded", binary))
                await websocket.close(code=1008)
                return
        except (WebSocketDisconnect, RuntimeError):
            return
        connection = Connection(endpoint=endpoint, key=account.key_id, queue=asyncio.Queue())
        self.connections.append(connection)
        if not self.faults.silent:
            connection.queue.put_nowait(control("success", binary, msg="authenticated"))

        async def reader() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = await receive()
                    if message is None:
                        self._send(connection, error(400, "invalid syntax", binary))
                        continue
                    self.received.append(message)
                    self._apply(connection, message)
            connection.queue.put_nowait(None)

        task = asyncio.create_task(reader())
        try:
            while True:
                frame = await connection.queue.get()
                if frame is None:
                    break
                await websocket.send_bytes(frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            connection.closed = True
            self.connections.remove(connection)
            task.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1000)

    def _apply(self, connection: Connection, message: dict[str, Any]) -> None:
        action = message.get("action")
        binary = connection.binary
        if action not in ("subscribe", "unsubscribe"):
            self._send(connection, error(400, "invalid syntax", binary))
            return
        asked: dict[str, set[str]] = {}
        for channel in CHANNELS:
            symbols = message.get(channel) or []
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                self._send(connection, error(400, "invalid syntax", binary))
                return
            asked[channel] = set(symbols)
        after = {c: set(connection.subs[c]) for c in CHANNELS}
        for channel in CHANNELS:
            if action == "subscribe":
                after[channel] |= asked[channel]
            else:
                after[channel] -= asked[channel]
        capped = after["trades"] | after["quotes"]  # bars are uncapped (docs, IEX plan)
        if self.symbol_limit is not None and len(capped) > self.symbol_limit:
            self._send(connection, error(405, "symbol limit exceeded", binary))
            return  # the subscription is unchanged
        connection.subs = after
        if not self.faults.silent:
            self._send(
                connection,
                control("subscription", binary, **{c: sorted(after[c]) for c in CHANNELS}),
            )

    # --- history -----------------------------------------------------------------------------

    async def single_bars(self, request: Request) -> Response:
        gate = await self.fake._gate(request)
        if isinstance(gate, Response):
            return gate
        symbol = request.path_params["symbol"]
        found = self._bars(request, symbol)
        if isinstance(found, Response):
            return found
        bars, token = found
        return JSONResponse({"bars": bars, "symbol": symbol, "next_page_token": token})

    async def multi_bars(self, request: Request) -> Response:
        gate = await self.fake._gate(request)
        if isinstance(gate, Response):
            return gate
        symbols = [s for s in (request.query_params.get("symbols") or "").split(",") if s]
        if not symbols:
            return JSONResponse({"code": 40010001, "message": "symbols is required"}, 400)
        out: dict[str, list[dict[str, Any]]] = {}
        token: str | None = None
        # One symbol per call is what the gateway asks; several are answered symbol by
        # symbol ("sorted by symbol first then by timestamp"), the page shared.
        for symbol in symbols:
            found = self._bars(request, symbol)
            if isinstance(found, Response):
                return found
            bars, token = found
            if bars:
                out[symbol] = bars
            if token:
                break
        return JSONResponse({"bars": out, "next_page_token": token})

    def _bars(
        self, request: Request, symbol: str
    ) -> tuple[list[dict[str, Any]], str | None] | Response:
        params = request.query_params
        interval = TIMEFRAMES.get(params.get("timeframe") or "")
        if interval is None:
            return JSONResponse({"code": 40010001, "message": "invalid timeframe"}, 400)
        try:
            limit = int(params.get("limit") or "1000")
            now = self.fake.clock()
            start = _parse(params.get("start")) or window_start(now, BarInterval.d1)
            end = _parse(params.get("end")) or now
            token = params.get("page_token")
            if token:
                start = datetime.fromisoformat(base64.b64decode(token).decode())
        except ValueError:
            return JSONResponse({"code": 40010001, "message": "invalid parameter"}, 400)
        if not 1 <= limit <= 10000:
            return JSONResponse({"code": 40010001, "message": "invalid limit"}, 400)
        limit = min(limit, self.bars_page)
        try:
            # ``end`` is inclusive at Alpaca: bars starting at ``end`` count.
            bars = self.data.history(
                our_symbol(symbol),
                interval,
                start,
                end + timedelta(microseconds=1),
                limit + 1,
                now,
            )
        except UnknownSymbol:
            return JSONResponse({"code": 40410000, "message": "symbol not found"}, 404)
        except NotSupported as exc:
            return JSONResponse({"code": 42210000, "message": exc.reason}, 422)
        next_token = None
        if len(bars) > limit:
            next_token = base64.b64encode(bars[limit].start.isoformat().encode()).decode()
            bars = bars[:limit]
        return [bar_body(b) for b in bars], next_token


def bar_body(bar: Bar) -> dict[str, Any]:
    """The data spec's ``stock_bar``/``crypto_bar``."""
    return {
        "t": _ts(bar.start).replace(".000000000Z", "Z"),
        "o": _num(bar.open),
        "h": _num(bar.high),
        "l": _num(bar.low),
        "c": _num(bar.close),
        "v": _num(bar.volume),
        "n": bar.trade_count or 0,
        "vw": _num(bar.vwap if bar.vwap is not None else bar.close),
    }


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) == 10:
        text += "T00:00:00+00:00"
    if "." in text:  # nanoseconds: Python reads microseconds
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

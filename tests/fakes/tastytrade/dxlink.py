"""The fake tastytrade's market-data side: ``GET /api-quote-tokens`` and a DXLink WebSocket.

Protocol sources (nothing here is invented beyond what is marked "chosen here"):

* Token: ``GET /api-quote-tokens`` answers ``{"data": {"token", "dxlink-url", "level"},
  "context": "/api-quote-tokens"}``; tokens last 24 hours
  (https://developer.tastytrade.com/docs/concepts/streaming).
* DXLink (dxFeed/dxLink ``dxlink-specification/asyncapi.yml``): every message is
  ``{"type", "channel", ...}``; ``SETUP`` is answered ``SETUP`` (with the server's
  ``keepaliveTimeout``) then ``AUTH_STATE`` ``UNAUTHORIZED`` (authorization required);
  ``AUTH`` with a good token is answered ``AUTH_STATE`` ``AUTHORIZED``, a bad one
  ``AUTH_STATE`` ``UNAUTHORIZED``; ``CHANNEL_REQUEST`` (service ``FEED``) is answered
  ``CHANNEL_OPENED``; ``FEED_SETUP`` is answered ``FEED_CONFIG`` with the ``eventFields``
  the server will send (``COMPACT``: ``"data": ["Quote", [v1, v2, ..., v1, v2, ...]]``);
  ``FEED_SUBSCRIPTION`` ``add``/``remove``/``reset`` is additive per (type, symbol);
  ``KEEPALIVE`` on channel 0 both ways; ``ERROR`` with ``error`` in ``UNSUPPORTED_PROTOCOL,
  TIMEOUT, UNAUTHORIZED, INVALID_MESSAGE, BAD_ACTION, UNKNOWN``.
* Symbols: equities by ticker, options as streamer symbols ``.AAPL261218C150``, candles as
  ``AAPL{=1m}`` (``{=5m,tho=true}`` etc.) with ``fromTime`` epoch ms (tastyware/tastytrade
  ``DXLinkStreamer.subscribe_candle``). Unavailable numbers are the string ``"NaN"``
  (tastyware ``dxfeed/event.py`` NAN_VALUES).
* Field names per event (tastyware ``dxfeed/quote.py``, ``trade.py``, ``greeks.py``,
  ``candle.py``).

Data are the paper market's (``app.paper.market_data.PaperMarketData``): every
``tick_seconds`` the feed sends, per subscribed (type, symbol), the current quote, the
current step's trade, the greeks and the candle of the current window (forming, then a newer
candle once the window turns). Chosen here: the field subset the server honours (any field it
knows, in the order asked; unknown fields are ``"NaN"``), the tick, the quote token's form.

Fault switches (``MarketFaults``): ``silent`` (connections stay open, nothing is sent, not
even keepalives), ``slow`` (seconds slept before every data frame), ``refuse_auth`` (every
AUTH answered UNAUTHORIZED), ``drop()`` closes every DXLink connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers import errors
from app.brokers.base import Bar, BarInterval, OptionContract, OptionRight
from app.brokers.market_data.bars import aggregate, window_start
from app.paper.market_data import PaperMarketData

QUOTE_TOKEN_TTL = timedelta(hours=24)
SERVER_KEEPALIVE = 60
DXLINK_PATH = "/dxlink"

_STREAMER = re.compile(r"^\.([A-Z][A-Z0-9]{0,5})(\d{6})([CP])(\d+(?:\.\d+)?)$")
_CANDLE = re.compile(r"^(?P<symbol>[^{]+)\{=(?P<period>\d+[smhd])(?P<rest>(,[a-z]+=[a-z]+)*)\}$")
_PERIODS = {"1m": BarInterval.m1, "5m": BarInterval.m5, "15m": BarInterval.m15}
_PERIODS.update({"1h": BarInterval.h1, "1d": BarInterval.d1})


@dataclass
class MarketFaults:
    silent: bool = False
    slow: float = 0.0
    refuse_auth: bool = False


@dataclass(eq=False)
class _Connection:
    queue: asyncio.Queue[str | None]
    authorized: bool = False
    fields: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    subs: dict[int, dict[tuple[str, str], int | None]] = field(default_factory=dict)
    last_candle: dict[str, int] = field(default_factory=dict)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _num(value: Decimal | int | None) -> Any:
    """A JSON number (as the wire sends it); ``"NaN"`` for unknown."""
    if value is None:
        return "NaN"
    if isinstance(value, int):
        return value
    return float(value) if value != value.to_integral_value() else int(value)


def canonical_of(symbol: str) -> str | None:
    """The paper symbol of a DXLink symbol (equity ticker or ``.AAPL261218C150``)."""
    match = _STREAMER.match(symbol)
    if match is None:
        return symbol if re.fullmatch(r"[A-Z][A-Z0-9./]{0,9}", symbol) else None
    root, day, right, strike = match.groups()
    try:
        contract = OptionContract(
            underlying=root,
            root=root,
            expiration=date(2000 + int(day[:2]), int(day[2:4]), int(day[4:])),
            right=OptionRight.call if right == "C" else OptionRight.put,
            strike=Decimal(strike),
        )
    except (ValueError, TypeError):
        return None
    return contract.symbol


class FakeDXLink:
    """Quote tokens and the DXLink feed of one fake tastytrade."""

    def __init__(
        self,
        data: PaperMarketData,
        *,
        clock: Callable[[], datetime],
        tick_seconds: float = 0.05,
    ) -> None:
        self.data = data
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.faults = MarketFaults()
        self.tokens: dict[str, datetime] = {}  # quote token -> expiry
        self.messages: list[dict[str, Any]] = []  # every DXLink message a client sent
        self.connections_opened = 0
        self._connections: set[_Connection] = set()

    # --- test controls -------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def drop(self) -> None:
        for connection in self._connections:
            connection.queue.put_nowait(None)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def sent(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == type_]

    def subscribed(self) -> set[tuple[str, str]]:
        """(type, symbol) held by the open connections."""
        return {key for c in self._connections for subs in c.subs.values() for key in subs}

    # --- REST ----------------------------------------------------------------------------

    def quote_token(self, request: Request) -> Response:
        token = "dxlink-" + uuid.uuid4().hex
        self.tokens[token] = self.clock() + QUOTE_TOKEN_TTL
        scheme = "wss" if request.url.scheme == "https" else "ws"
        url = f"{scheme}://{request.url.netloc}{DXLINK_PATH}"
        body = {"data": {"token": token, "dxlink-url": url, "level": "api"}}
        return JSONResponse({**body, "context": "/api-quote-tokens"})

    # --- the socket ----------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        connection = _Connection(queue=asyncio.Queue())
        self._connections.add(connection)
        self.connections_opened += 1

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    raw = message.get("text") or (message.get("bytes") or b"").decode()
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        self._send(connection, {"type": "ERROR", "channel": 0,
                                                "error": "INVALID_MESSAGE",
                                                "message": "not JSON"})  # fmt: skip
                        continue
                    if isinstance(parsed, dict):
                        self.messages.append(parsed)
                        self._on_message(connection, parsed)
            connection.queue.put_nowait(None)

        async def tick() -> None:
            beat = 0.0
            while True:
                await asyncio.sleep(self.tick_seconds)
                if self.faults.silent or not connection.authorized:
                    continue
                self._publish(connection)
                beat += self.tick_seconds
                if beat >= SERVER_KEEPALIVE / 2:
                    beat = 0.0
                    self._send(connection, {"type": "KEEPALIVE", "channel": 0})

        reader = asyncio.create_task(read())
        ticker = asyncio.create_task(tick())
        try:
            while True:
                frame = await connection.queue.get()
                if frame is None:
                    break
                if self.faults.silent:
                    continue
                if self.faults.slow and '"FEED_DATA"' in frame:
                    await asyncio.sleep(self.faults.slow)
                await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._connections.discard(connection)
            reader.cancel()
            ticker.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1000)

    def _send(self, connection: _Connection, message: dict[str, Any]) -> None:
        connection.queue.put_nowait(json.dumps(message))

    def _error(self, connection: _Connection, channel: int, error: str, text: str) -> None:
        self._send(
            connection, {"type": "ERROR", "channel": channel, "error": error, "message": text}
        )

    def _on_message(self, connection: _Connection, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        if not isinstance(channel, int):
            self._error(connection, 0, "INVALID_MESSAGE", "channel is required")
            return
        if kind == "SETUP":
            self._send(connection, {"type": "SETUP", "channel": 0, "version": "1.0-fake",
                                    "keepaliveTimeout": SERVER_KEEPALIVE,
                                    "acceptKeepaliveTimeout": SERVER_KEEPALIVE})  # fmt: skip
            self._send(connection, {"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"})
        elif kind == "AUTH":
            token = message.get("token")
            expiry = self.tokens.get(token) if isinstance(token, str) else None
            ok = expiry is not None and expiry > self.clock() and not self.faults.refuse_auth
            connection.authorized = ok
            state = "AUTHORIZED" if ok else "UNAUTHORIZED"
            self._send(connection, {"type": "AUTH_STATE", "channel": 0, "state": state})
        elif kind == "KEEPALIVE":
            pass
        elif not connection.authorized:
            self._error(connection, channel, "UNAUTHORIZED", "authorization is required")
        elif kind == "CHANNEL_REQUEST":
            if message.get("service") != "FEED" or channel % 2 == 0:
                self._error(connection, channel, "BAD_ACTION", "unsupported channel request")
                return
            connection.fields.setdefault(channel, {})
            connection.subs.setdefault(channel, {})
            self._send(connection, {"type": "CHANNEL_OPENED", "channel": channel,
                                    "service": "FEED",
                                    "parameters": message.get("parameters") or {}})  # fmt: skip
        elif channel not in connection.subs:
            self._error(connection, channel, "BAD_ACTION", "the channel is not open")
        elif kind == "FEED_SETUP":
            accepted = message.get("acceptEventFields") or {}
            if message.get("acceptDataFormat") != "COMPACT" or not isinstance(accepted, dict):
                self._error(connection, channel, "BAD_ACTION", "the fake speaks COMPACT only")
                return
            fields = connection.fields[channel]
            for event_type, names in accepted.items():
                if event_type in ("Quote", "Trade", "Greeks", "Candle"):
                    fields[event_type] = [n for n in names if isinstance(n, str)]
            self._send(connection, {"type": "FEED_CONFIG", "channel": channel,
                                    "aggregationPeriod": message.get("acceptAggregationPeriod", 0),
                                    "dataFormat": "COMPACT", "eventFields": fields})  # fmt: skip
        elif kind == "FEED_SUBSCRIPTION":
            subs = connection.subs[channel]
            if message.get("reset"):
                subs.clear()
            for entry in message.get("remove") or []:
                subs.pop((entry.get("type"), entry.get("symbol")), None)
            for entry in message.get("add") or []:
                subs[(entry.get("type"), entry.get("symbol"))] = entry.get("fromTime")
        elif kind == "CHANNEL_CANCEL":
            connection.subs.pop(channel, None)
            connection.fields.pop(channel, None)
            self._send(connection, {"type": "CHANNEL_CLOSED", "channel": channel})
        else:
            self._error(connection, channel, "BAD_ACTION", f"unknown message type {kind}")

    # --- data ------------------------------------------------------------------------------

    def _publish(self, connection: _Connection) -> None:
        now = self.clock()
        step = self.data.step_at(now)
        for channel, subs in connection.subs.items():
            rows: dict[str, list[Any]] = {}
            fields = connection.fields.get(channel, {})
            for event_type, symbol in sorted(subs):
                names = fields.get(event_type)
                if not names:
                    continue
                values = self._event(connection, event_type, symbol, step, now)
                if values is None:
                    continue
                for event in values:
                    rows.setdefault(event_type, []).extend(event.get(name, "NaN") for name in names)
            for event_type, row in rows.items():
                self._send(
                    connection,
                    {"type": "FEED_DATA", "channel": channel, "data": [event_type, row]},
                )

    def _event(
        self, connection: _Connection, event_type: str, symbol: str, step: int, now: datetime
    ) -> list[dict[str, Any]] | None:
        if event_type == "Candle":
            return self._candles(connection, symbol, now)
        paper = canonical_of(symbol)
        if paper is None:
            return None
        is_option = symbol.startswith(".")
        try:
            self.data.resolve(paper, now)
        except errors.UnknownSymbol:
            return None  # an unknown symbol gets no events
        base = {"eventType": event_type, "eventSymbol": symbol, "eventTime": 0}
        at = _ms(self.data.time_of(step))
        if event_type == "Quote":
            q = self.data.quote(paper, step)
            return [{**base, "bidPrice": _num(q.bid), "askPrice": _num(q.ask),
                     "bidSize": _num(q.bid_size), "askSize": _num(q.ask_size),
                     "bidTime": at, "askTime": at, "sequence": 0, "timeNanoPart": 0,
                     "bidExchangeCode": "Q", "askExchangeCode": "Q"}]  # fmt: skip
        if event_type == "Trade":
            t = self.data.trade(paper, step)
            return [{**base, "price": _num(t.price), "size": _num(t.size), "time": at,
                     "exchangeCode": "Q", "dayVolume": "NaN", "change": "NaN",
                     "sequence": 0, "tickDirection": "UNDEFINED",
                     "extendedTradingHours": False}]  # fmt: skip
        if event_type == "Greeks":
            if not is_option:
                return None
            g = self.data.greeks(paper, step)
            return [{**base, "time": at, "index": 0, "sequence": 0, "eventFlags": 0,
                     "price": "NaN", "volatility": _num(g.greeks.iv),
                     "delta": _num(g.greeks.delta), "gamma": _num(g.greeks.gamma),
                     "theta": _num(g.greeks.theta), "vega": _num(g.greeks.vega),
                     "rho": _num(g.greeks.rho)}]  # fmt: skip
        return None

    def _candles(self, connection: _Connection, symbol: str, now: datetime) -> list[dict[str, Any]]:
        match = _CANDLE.match(symbol)
        if match is None or match["period"] not in _PERIODS:
            return []
        paper = canonical_of(match["symbol"])
        if paper is None:
            return []
        interval = _PERIODS[match["period"]]
        start = window_start(now, interval)
        bar = self._forming(paper, interval, start, now)
        if bar is None:
            return []
        out: list[dict[str, Any]] = []
        previous = connection.last_candle.get(symbol)
        if previous is not None and previous < _ms(start):
            # the window turned: its last state first (a dxFeed candle is updated in place
            # until a newer one starts)
            last = self._forming(paper, interval, start - timedelta(seconds=interval.seconds),
                                 start)  # fmt: skip
            if last is not None:
                out.append(self._candle_event(symbol, last))
        connection.last_candle[symbol] = _ms(start)
        out.append(self._candle_event(symbol, bar))
        return out

    def _forming(
        self, paper: str, interval: BarInterval, start: datetime, now: datetime
    ) -> Bar | None:
        """The window's bar from its minutes so far (the current minute's trades up to now)."""
        minutes: list[Bar] = []
        minute = start
        while minute <= now and minute < start + timedelta(seconds=interval.seconds):
            if minute + timedelta(minutes=1) <= now:
                bar = self.data.minute_bar(paper, minute)
            else:
                bar = self._partial_minute(paper, minute, now)
            if bar is not None:
                minutes.append(bar)
            minute += timedelta(minutes=1)
        if not minutes:
            return None
        if interval is BarInterval.m1:
            return minutes[0]
        [bar] = aggregate(minutes, interval, complete_until=start)
        return bar

    def _partial_minute(self, paper: str, minute: datetime, now: datetime) -> Bar | None:
        steps = [s for s in self.data.minute_steps(minute) if self.data.time_of(s) <= now]
        if not steps:
            return None
        trades = [self.data.trade(paper, s) for s in steps]
        volume = sum((t.size for t in trades), Decimal(0))
        notional = sum((t.price * t.size for t in trades), Decimal(0))
        prices = [t.price for t in trades]
        return Bar(
            symbol=paper, interval=BarInterval.m1, start=minute, open=prices[0],
            high=max(prices), low=min(prices), close=prices[-1], volume=volume,
            vwap=(notional / volume).quantize(Decimal("0.0001")) if volume else None,
            trade_count=len(trades), final=False, source=trades[0].source,
        )  # fmt: skip

    @staticmethod
    def _candle_event(symbol: str, bar: Bar) -> dict[str, Any]:
        return {"eventType": "Candle", "eventSymbol": symbol, "eventTime": 0, "eventFlags": 0,
                "index": 0, "time": _ms(bar.start), "sequence": 0,
                "count": bar.trade_count or 0, "open": _num(bar.open), "high": _num(bar.high),
                "low": _num(bar.low), "close": _num(bar.close), "volume": _num(bar.volume),
                "vwap": _num(bar.vwap), "bidVolume": "NaN", "askVolume": "NaN",
                "impVolatility": "NaN", "openInterest": "NaN"}  # fmt: skip

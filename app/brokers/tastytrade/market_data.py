"""tastytrade market data over DXLink: quotes, trades, greeks and candles (bars).

Protocol (dxFeed/dxLink ``dxlink-specification/asyncapi.yml``; tastyware/tastytrade
``streamer.py`` ``DXLinkStreamer``; https://developer.tastytrade.com/docs/concepts/streaming):

1. ``GET /api-quote-tokens`` (REST, OAuth access token) answers ``{"data": {"token",
   "dxlink-url", "level"}}``; the token lasts 24 hours, so one is reused across reconnects
   until ``TOKEN_REUSE`` has passed (then replaced on the open connection by a new
   ``AUTH``), and a refused one is dropped.
2. Connect to ``dxlink-url``; send ``SETUP`` (``keepaliveTimeout`` 60,
   ``acceptKeepaliveTimeout`` 60, ``version``); the server answers ``SETUP`` then
   ``AUTH_STATE`` ``UNAUTHORIZED`` (authorization required: not a refusal). Send ``AUTH``
   with the token; ``AUTH_STATE`` ``AUTHORIZED`` (a second ``UNAUTHORIZED``: refused).
3. One ``CHANNEL_REQUEST`` (service ``FEED``, contract ``AUTO``, odd channel 1) answered
   ``CHANNEL_OPENED``; ``FEED_SETUP`` with ``acceptDataFormat`` ``COMPACT`` and
   ``acceptEventFields`` for Quote, Trade, Greeks and Candle; the server's ``FEED_CONFIG``
   names the fields it will send, in order, and rows are decoded by it (dxLink
   ``dxlink-feed/src/feed.ts`` ``parseEventData``).
4. ``FEED_SUBSCRIPTION`` ``add``/``remove`` is ADDITIVE: an update sends only the diff.
   Candle entries carry ``fromTime`` (mandatory on ``remove`` too, where it is ignored).
   Long lists are split (``MAX_ENTRIES``): the server closes with 1009 on a message too big
   (tastyware ``DXLinkStreamer``).
5. ``KEEPALIVE`` on channel 0 every ``keepalive_interval`` (30 s, tastyware); the server
   must send something within our ``keepaliveTimeout`` (60 s), so a connection silent past
   ``idle_timeout`` is restarted (gap, then resubscribed).

Symbols: equities travel as tickers; options as streamer symbols ``.AAPL261218C150``
(``mapping.streamer_symbol``); bars as ``AAPL{=1m}`` Candle subscriptions with ``fromTime``
at the start of the current window, so the forming candle comes first. A dxFeed candle is
updated in place while its period lasts; a candle with a later ``time`` means the earlier one
is done, so it is then delivered again, final. Unavailable values come as ``"NaN"``
(tastyware ``dxfeed/event.py``); a Quote's time is the later of ``bidTime``/``askTime``
(epoch ms), or the receive time when both are 0.

History: tastytrade has no REST bars endpoint (its REST market data is the
``/market-data/by-type`` snapshot); candles with an older ``fromTime`` are a stream
snapshot, not a paged history, so ``get_bars`` is not offered (``history`` unsupported).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection

from app.brokers import errors
from app.brokers.base import (
    Bar,
    BarInterval,
    Greeks,
    GreeksUpdate,
    InvalidOptionSymbol,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketQuote,
    MarketTrade,
    OptionContract,
    Support,
    is_option_symbol,
)
from app.brokers.market_data.bars import window_start
from app.brokers.market_data.subscription import SubscriptionDiff
from app.brokers.market_data.upstream import UpstreamMarketSession
from app.brokers.tastytrade import mapping
from app.brokers.upstream_stream import StreamRefused, decode_object, frames_logger

log = logging.getLogger(__name__)

SLUG = mapping.SLUG
DXLINK_VERSION = "0.1-DXF-JS/0.3.0"  # tastyware/tastytrade streamer.py
KEEPALIVE_TIMEOUT = 60  # seconds, both ways (SETUP)
FEED_CHANNEL = 1  # odd channel numbers for client requests (asyncapi.yml "Channel")
MAX_ENTRIES = 500  # subscription entries per FEED_SUBSCRIPTION (1009 when too large)
TOKEN_REUSE = timedelta(hours=23)  # quote tokens last 24 h
_NAN = frozenset({"NaN", "Infinity", "-Infinity"})

# The fields asked for per event type (names from tastyware ``dxfeed/*.py``).
EVENT_FIELDS: dict[str, list[str]] = {
    "Quote": ["eventSymbol", "bidPrice", "askPrice", "bidSize", "askSize", "bidTime", "askTime"],
    "Trade": ["eventSymbol", "price", "size", "time"],
    "Greeks": [
        "eventSymbol",
        "time",
        "price",
        "volatility",
        "delta",
        "gamma",
        "theta",
        "vega",
        "rho",
    ],
    "Candle": [
        "eventSymbol",
        "time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "count",
    ],
}
CANDLE_PERIODS = {
    BarInterval.m1: "1m",
    BarInterval.m5: "5m",
    BarInterval.m15: "15m",
    BarInterval.h1: "1h",
    BarInterval.d1: "1d",
}

TASTYTRADE_MARKET_DATA = MarketDataCapabilities(
    quotes=Support.native,
    trades=Support.native,
    bars=Support.native,  # Candle events of any period (dxFeed candle symbology)
    greeks=Support.native,  # Greeks events, options only
    bar_intervals=frozenset(CANDLE_PERIODS),
    history=Support.unsupported,  # no REST bars; see the module docstring
    max_symbols=None,  # unpublished
    # Unpublished; one DXLink connection per credential is what the gateway keeps.
    max_sessions=1,
)

QuoteToken = Callable[[], Awaitable[tuple[str, str]]]


def wire_symbol(symbol: str) -> str:
    """Our symbol as DXLink's: options as streamer symbols, equities as tickers."""
    if is_option_symbol(symbol):
        return mapping.streamer_symbol(OptionContract.parse(symbol))
    return symbol


def candle_symbol(symbol: str, interval: BarInterval) -> str:
    """``AAPL{=5m}``: every session's trades (tastyware adds ``tho=true`` for regular
    hours only)."""
    return f"{wire_symbol(symbol)}{{={CANDLE_PERIODS[interval]}}}"


def _value(value: object, field: str) -> Decimal | None:
    """A COMPACT number: JSON numbers (parsed as Decimal), ``"NaN"`` = unknown."""
    if value is None or (isinstance(value, str) and value in _NAN):
        return None
    return mapping.WIRE.decimal(value, field, text=False)


def _millis(value: object, field: str) -> datetime | None:
    number = _value(value, field)
    if number is None or number <= 0:
        return None
    return datetime.fromtimestamp(int(number) / 1000, tz=UTC)


def decode_compact(data: object, fields: dict[str, list[str]]) -> Iterator[dict[str, Any]]:
    """``["Quote", [v1, v2, ..., v1, v2, ...]]`` as one dict per event, by the field order of
    the server's ``FEED_CONFIG`` (``eventType`` added)."""
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not isinstance(data[0], str)
        or not isinstance(data[1], list)
    ):
        raise mapping.unknown("FEED_DATA payload", type(data).__name__)
    event_type, values = data
    names = fields.get(event_type)
    if not names:
        raise mapping.unknown("FEED_DATA event type", event_type)
    if len(values) % len(names):
        raise mapping.unknown(f"{event_type} row length", len(values))
    for start in range(0, len(values), len(names)):
        event = dict(zip(names, values[start : start + len(names)], strict=True))
        event["eventType"] = event_type
        yield event


class TastytradeMarketSession(UpstreamMarketSession):
    """One DXLink connection for one tastytrade credential (a ``MarketDataSession``)."""

    broker = SLUG
    name = "tastytrade DXLink"
    frames = frames_logger(__name__)  # never DEBUG: AUTH carries the quote token
    ping_interval = 20.0
    max_refused = 2  # refusals in a row (each with a fresh token) before the grant is dead

    def __init__(
        self,
        quote_token: QuoteToken,
        *,
        capabilities: MarketDataCapabilities = TASTYTRADE_MARKET_DATA,
        keepalive_interval: float = 30.0,
        token_reuse: float = TOKEN_REUSE.total_seconds(),
        idle_timeout: float = KEEPALIVE_TIMEOUT + 5.0,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            capabilities,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_backoff=max_backoff,
        )
        self._quote_token = quote_token
        self.keepalive_interval = keepalive_interval
        self.token_reuse = token_reuse
        self.reauths = 0
        self._token: tuple[str, str, float] | None = None  # (token, url, fetched monotonic)
        self._refused = 0
        self._fields: dict[str, list[str]] = dict(EVENT_FIELDS)
        self._names: dict[str, str] = {}  # DXLink symbol -> ours
        self._candles: dict[str, tuple[BarInterval, str]] = {}  # candle symbol -> (i, ours)
        self._forming: dict[str, Bar] = {}
        self.keepalives_sent = 0
        self.token_fetches = 0

    def __repr__(self) -> str:
        return "TastytradeMarketSession()"

    # --- update: symbols checked before anything changes ----------------------------------

    async def update(self, wanted: MarketDataSubscription) -> None:
        for symbol in wanted.symbols:
            if is_option_symbol(symbol):
                try:
                    OptionContract.parse(symbol)
                except InvalidOptionSymbol as exc:
                    raise errors.UnknownSymbol(str(exc), broker=SLUG) from None
        for symbol in wanted.greeks:
            if not is_option_symbol(symbol):
                raise errors.UnknownSymbol(
                    f"greeks are for option contracts, not {symbol!r}", broker=SLUG
                )
        await super().update(wanted)

    # --- connection ------------------------------------------------------------------------

    async def _open(self) -> str:
        if self._refused >= self.max_refused:
            raise errors.AuthenticationFailed(
                "tastytrade's DXLink refused the quote token", broker=SLUG
            )
        held = self._token
        if held is None or self._stale(held):
            held = await self._fresh_token()
        return held[1]

    def _stale(self, held: tuple[str, str, float]) -> bool:
        return time.monotonic() - held[2] > self.token_reuse

    async def _fresh_token(self) -> tuple[str, str, float]:
        try:
            token, url = await self._quote_token()
        except errors.AuthenticationFailed:
            raise
        except errors.Rejected as exc:
            # quote_streamer.customer_not_found_error and the like: no retry helps.
            raise errors.AuthenticationFailed(
                f"tastytrade gives this login no quote token: {exc.reason}", broker=SLUG
            ) from None
        self.token_fetches += 1
        held = (token, url, time.monotonic())
        self._token = held
        return held

    async def _send(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        await ws.send(json.dumps(message))

    async def _expect(self, ws: ClientConnection, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer to the DXLink handshake")
        async with asyncio.timeout(remaining):
            raw = await ws.recv()
        message = decode_object(raw, "DXLink message", SLUG)
        if message.get("type") == "ERROR":
            self._refuse_if_unauthorized(message)
            raise StreamRefused(f"DXLink error {message.get('error')}: {message.get('message')}")
        return message

    def _refuse_if_unauthorized(self, message: dict[str, Any]) -> None:
        if message.get("error") == "UNAUTHORIZED" or message.get("state") == "UNAUTHORIZED":
            self._token = None  # a fresh token at the next connection
            self._refused += 1

    async def _handshake(self, ws: ClientConnection) -> None:
        assert self._token is not None
        deadline = time.monotonic() + self._handshake_timeout
        await self._send(
            ws,
            {
                "type": "SETUP",
                "channel": 0,
                "keepaliveTimeout": KEEPALIVE_TIMEOUT,
                "acceptKeepaliveTimeout": KEEPALIVE_TIMEOUT,
                "version": DXLINK_VERSION,
            },
        )
        while (await self._expect(ws, deadline)).get("type") != "SETUP":
            pass
        await self._send(ws, {"type": "AUTH", "channel": 0, "token": self._token[0]})
        # The server's first AUTH_STATE may be the "authorization required" UNAUTHORIZED it
        # sends after SETUP (asyncapi.yml "Authentication"); the answer to AUTH follows it.
        unauthorized = 0
        while True:
            message = await self._expect(ws, deadline)
            if message.get("type") != "AUTH_STATE":
                continue
            if message.get("state") == "AUTHORIZED":
                break
            unauthorized += 1
            if unauthorized >= 2:
                self._refuse_if_unauthorized(message)
                raise StreamRefused("DXLink refused the quote token")
        self._refused = 0
        await self._send(
            ws,
            {
                "type": "CHANNEL_REQUEST",
                "channel": FEED_CHANNEL,
                "service": "FEED",
                "parameters": {"contract": "AUTO"},
            },
        )
        while (await self._expect(ws, deadline)).get("type") != "CHANNEL_OPENED":
            pass
        await self._send(
            ws,
            {
                "type": "FEED_SETUP",
                "channel": FEED_CHANNEL,
                "acceptAggregationPeriod": 0.1,
                "acceptDataFormat": "COMPACT",
                "acceptEventFields": EVENT_FIELDS,
            },
        )
        while True:
            message = await self._expect(ws, deadline)
            if message.get("type") == "FEED_CONFIG":
                self._configure(message)
                break
        self._forming.clear()

    def _configure(self, message: dict[str, Any]) -> None:
        if message.get("dataFormat") not in (None, "COMPACT"):
            raise mapping.unknown("DXLink data format", message.get("dataFormat"))
        fields = message.get("eventFields")
        if isinstance(fields, dict):
            for event_type, names in fields.items():
                if isinstance(names, list) and all(isinstance(n, str) for n in names):
                    self._fields[event_type] = list(names)

    # --- subscriptions ---------------------------------------------------------------------

    def _entries(self, subs: MarketDataSubscription, now: datetime) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for event_type, symbols in (
            ("Quote", subs.quotes),
            ("Trade", subs.trades),
            ("Greeks", subs.greeks),
        ):
            for symbol in sorted(symbols):
                wire = wire_symbol(symbol)
                self._names[wire] = symbol
                entries.append({"type": event_type, "symbol": wire})
        for interval, symbol in sorted(subs.bars):
            wire = candle_symbol(symbol, interval)
            self._candles[wire] = (interval, symbol)
            since = window_start(now, interval)
            entries.append(
                {"type": "Candle", "symbol": wire, "fromTime": int(since.timestamp() * 1000)}
            )
        return entries

    async def _send_subscription(self, ws: ClientConnection, diff: SubscriptionDiff) -> None:
        now = self._clock()
        add = self._entries(diff.added, now)
        remove = self._entries(diff.removed, now)
        for entry in remove:
            if entry["type"] == "Candle":
                self._forming.pop(entry["symbol"], None)
        for batch in _chunks(remove):
            await self._send(
                ws, {"type": "FEED_SUBSCRIPTION", "channel": FEED_CHANNEL, "remove": batch}
            )
        for batch in _chunks(add):
            await self._send(
                ws, {"type": "FEED_SUBSCRIPTION", "channel": FEED_CHANNEL, "add": batch}
            )

    # --- reading ---------------------------------------------------------------------------

    async def _keepalive(self, ws: ClientConnection) -> None:
        """KEEPALIVE every ``keepalive_interval``; a token near its 24 hours is replaced on
        the open connection by a new ``AUTH`` (DXLink takes one at any time: dxLink
        ``SPECIFICATION.md`` "Token Management"), so a long session needs no reconnect."""
        while True:
            await asyncio.sleep(self.keepalive_interval)
            held = self._token
            if held is not None and self._stale(held):
                token = (await self._fresh_token())[0]
                await self._send(ws, {"type": "AUTH", "channel": 0, "token": token})
                self.reauths += 1
            await self._send(ws, {"type": "KEEPALIVE", "channel": 0})
            self.keepalives_sent += 1

    async def _read(self, ws: ClientConnection) -> AsyncIterator[MarketEvent]:
        keepalive = asyncio.create_task(self._keepalive(ws))
        try:
            while True:
                if keepalive.done():
                    keepalive.result()  # a failed send: the connection is gone
                raw = await self._recv(ws)
                if raw is None:
                    return
                message = decode_object(raw, "DXLink message", SLUG)
                kind = message.get("type")
                if kind == "FEED_DATA":
                    received = self._clock()
                    for event in decode_compact(message.get("data"), self._fields):
                        for out in self._event(event, received):
                            yield out
                elif kind == "FEED_CONFIG":
                    self._configure(message)
                elif kind == "ERROR":
                    self._refuse_if_unauthorized(message)
                    raise StreamRefused(
                        f"DXLink error {message.get('error')}: {message.get('message')}"
                    )
                elif kind == "AUTH_STATE" and message.get("state") == "UNAUTHORIZED":
                    self._refuse_if_unauthorized(message)  # the token lapsed
                    raise StreamRefused("DXLink withdrew the authorization")
                elif kind == "CHANNEL_CLOSED":
                    raise StreamRefused("DXLink closed the feed channel")
                # KEEPALIVE, SETUP, CHANNEL_OPENED, AUTH_STATE AUTHORIZED: nothing to do
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keepalive

    def _event(self, event: dict[str, Any], received: datetime) -> Iterable[MarketEvent]:
        kind = event["eventType"]
        wire = event.get("eventSymbol")
        if not isinstance(wire, str):
            raise mapping.unknown("eventSymbol", wire)
        if kind == "Candle":
            return self._candle(wire, event)
        symbol = self._names.get(wire)
        if symbol is None:
            return ()  # no longer wanted (an event in flight across a remove)
        if kind == "Quote" and symbol in self._wanted.quotes:
            times = [
                t
                for t in (
                    _millis(event.get("bidTime"), "bidTime"),
                    _millis(event.get("askTime"), "askTime"),
                )
                if t is not None
            ]
            return (
                MarketQuote(
                    symbol=symbol,
                    bid=_value(event.get("bidPrice"), "bidPrice"),
                    ask=_value(event.get("askPrice"), "askPrice"),
                    bid_size=_value(event.get("bidSize"), "bidSize"),
                    ask_size=_value(event.get("askSize"), "askSize"),
                    ts=max(times) if times else received,
                    source=MarketDataSource.stream,
                ),
            )
        if kind == "Trade" and symbol in self._wanted.trades:
            price = _value(event.get("price"), "price")
            size = _value(event.get("size"), "size")
            if price is None:
                return ()  # no trade yet (a NaN snapshot)
            return (
                MarketTrade(
                    symbol=symbol,
                    price=price,
                    size=size if size is not None else Decimal(0),
                    ts=_millis(event.get("time"), "time") or received,
                    source=MarketDataSource.stream,
                ),
            )
        if kind == "Greeks" and symbol in self._wanted.greeks:
            return (
                GreeksUpdate(
                    symbol=symbol,
                    greeks=Greeks(
                        delta=_value(event.get("delta"), "delta"),
                        gamma=_value(event.get("gamma"), "gamma"),
                        theta=_value(event.get("theta"), "theta"),
                        vega=_value(event.get("vega"), "vega"),
                        rho=_value(event.get("rho"), "rho"),
                        iv=_value(event.get("volatility"), "volatility"),
                    ),
                    underlying_price=None,  # the Greeks event has none
                    ts=_millis(event.get("time"), "time") or received,
                    source=MarketDataSource.stream,
                ),
            )
        return ()

    def _candle(self, wire: str, event: dict[str, Any]) -> list[MarketEvent]:
        found = self._candles.get(wire)
        if found is None or found not in self._wanted.bars:
            return []
        interval, symbol = found
        start = _millis(event.get("time"), "time")
        prices = [_value(event.get(k), k) for k in ("open", "high", "low", "close")]
        if start is None or any(p is None for p in prices):
            return []  # an empty candle (no trades yet)
        open_, high, low, close = (p for p in prices if p is not None)
        count = _value(event.get("count"), "count")
        bar = Bar(
            symbol=symbol,
            interval=interval,
            start=start,
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=_value(event.get("volume"), "volume") or Decimal(0),
            vwap=_value(event.get("vwap"), "vwap"),
            trade_count=int(count) if count is not None else None,
            final=False,
            source=MarketDataSource.stream,
        )
        forming = self._forming.get(wire)
        out: list[MarketEvent] = []
        if forming is not None:
            if start < forming.start:
                return []  # an older candle of the snapshot: before what we stream
            if start > forming.start:
                out.append(_final(forming))
        self._forming[wire] = bar
        out.append(bar)
        return out


def _final(bar: Bar) -> Bar:
    return replace(bar, final=True)


def _chunks(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(entries), MAX_ENTRIES):
        yield entries[start : start + MAX_ENTRIES]

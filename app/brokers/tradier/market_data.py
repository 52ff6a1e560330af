"""Tradier market data: the market WebSocket (quotes, trades; 1-minute bars built from the
trades) and REST bar history.

Streaming (https://docs.tradier.com/docs/streaming;
https://documentation.tradier.com/brokerage-api/streaming/wss-market-websocket):

1. ``POST /v1/markets/events/session`` answers ``{"stream": {"url", "sessionid"}}``; the id
   must be used within 5 minutes, so every (re)connection creates a new one.
2. Connect ``wss://ws.tradier.com/v1/markets/events`` and send one JSON payload
   ``{"symbols": [...], "sessionid", "filter": [...], "linebreak": true, "validOnly": true}``.
   The payload REPLACES the subscription: an update resends the whole wanted list with the
   same session id (set-replacing, ``diff.wanted``). Options travel as unpadded OCC symbols,
   our canonical form, so no translation is needed.
3. Events, one JSON object per line: ``quote`` (``bid, bidsz, bidexch, biddate, ask, asksz,
   askexch, askdate``), ``trade`` (``exch, price, size, cvol, date, last``), ``summary``,
   ``timesale``, ``tradex``. Numbers come as JSON numbers or as decimal strings in the same
   stream, dates as epoch-millisecond strings (the docs' own examples). Only ``quote`` and
   ``trade`` are asked for (``filter``); the others are read and ignored. A refusal is
   ``{"error": "1234 is not a valid symbol"}`` (https://docs.tradier.com/reference/streaming):
   logged, the rest of the subscription goes on.
4. Tradier streams no bars: 1-minute bars are built here from the trades (``BarBuilder``,
   source ``aggregated``): a bar is forming until a trade or the clock passes its end, then
   final. After a gap the builders start afresh (a bar that lost trades is never final).

Limits: "It is not permitted to open more than one session at a time"
(https://documentation.tradier.com/brokerage-api/streaming/wss-market-websocket), so
``max_sessions`` is 1. The market and account streams are separate sessions (different
``.../events/session`` endpoints; a user's report that Tradier needs "one stream for quotes
and another for account status", https://github.com/alexgolec/tda-api/issues/332; Tradier's
docs say nothing either way), so the account stream does not use up the market one. Symbol
limits are unpublished. Tradier's greeks are REST-only (ORATS, hourly): no greeks stream.

History (https://docs.tradier.com/reference/brokerage-api-markets-get-history,
``.../get-timesales``): ``GET /v1/markets/history?interval=daily`` for 1d bars
(``{"history": {"day": [{"date", "open", "high", "low", "close", "volume"}]}}``) and
``GET /v1/markets/timesales?interval=1min|5min|15min&session_filter=all`` for intraday
(``{"series": {"data": [{"time", "timestamp", "price", "open", "high", "low", "close",
"volume", "vwap"}]}}``, ``start``/``end`` as ``YYYY-MM-DD HH:MM`` US/Eastern, ``timestamp``
epoch seconds). 1h is aggregated by the gateway from 15m. Timesales reach back 20 days for
1min and 5min and 40 days for 15min; an older start is refused (``NotSupported``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from websockets.asyncio.client import ClientConnection

from app.brokers import errors
from app.brokers.base import (
    Bar,
    BarInterval,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketQuote,
    MarketTrade,
    Support,
)
from app.brokers.market_data.bars import BarBuilder
from app.brokers.market_data.subscription import SubscriptionDiff
from app.brokers.market_data.upstream import UpstreamMarketSession
from app.brokers.tradier import mapping
from app.brokers.upstream_stream import frames_logger

log = logging.getLogger(__name__)

SLUG = mapping.SLUG
EXCHANGE_TIME = ZoneInfo("America/New_York")  # timesales start/end and ``time``
# Intervals of GET /v1/markets/timesales and how far back each reaches.
TIMESALES = {
    BarInterval.m1: ("1min", timedelta(days=20)),
    BarInterval.m5: ("5min", timedelta(days=20)),
    BarInterval.m15: ("15min", timedelta(days=40)),
}

TRADIER_MARKET_DATA = MarketDataCapabilities(
    quotes=Support.native,
    trades=Support.native,
    bars=Support.emulated,  # built from the trade stream
    greeks=Support.unsupported,
    bar_intervals=frozenset({BarInterval.m1}),
    history=Support.native,
    history_intervals=frozenset({*TIMESALES, BarInterval.d1}),
    max_symbols=None,  # unpublished ("ask for what you need")
    max_sessions=1,  # one market session at a time (the account stream is separate)
)

CreateSession = Callable[[], Awaitable[str]]


def _dec(value: object, field: str) -> Decimal | None:
    """A number or decimal string; ``None``/``""`` unknown."""
    return mapping.WIRE.opt_decimal(value, field)


def _ms(value: object, field: str) -> datetime | None:
    if value is None or value == "" or value == "0" or value == 0:
        return None
    return mapping.WIRE.epoch_ms(value, field)


def lines(frame: str | bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of one frame (one per line with ``linebreak``; a bare newline is a
    keepalive)."""
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    for line in text.splitlines():
        if not line.strip():
            continue
        message = json.loads(line, parse_float=Decimal)
        if not isinstance(message, dict):
            raise mapping.unknown("market event", type(message).__name__)
        yield message


class TradierMarketSession(UpstreamMarketSession):
    """One market WebSocket for one Tradier token (a ``MarketDataSession``)."""

    broker = SLUG
    name = "Tradier market stream"
    frames = frames_logger(__name__)

    def __init__(
        self,
        url: str,
        create_session: CreateSession,
        *,
        capabilities: MarketDataCapabilities = TRADIER_MARKET_DATA,
        idle_timeout: float = 900.0,  # HTTP streams close after 15 min without data
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            capabilities,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_backoff=max_backoff,
        )
        self._url = url
        self._create_session = create_session
        self._session_id: str | None = None
        self._builders: dict[str, BarBuilder] = {}
        self.sessions_created = 0
        self.late_trades = 0

    def __repr__(self) -> str:
        return f"TradierMarketSession(url={self._url!r})"

    async def _open(self) -> str:
        self._session_id = await self._create_session()  # valid 5 minutes: one per connection
        self.sessions_created += 1
        return self._url

    async def _handshake(self, ws: ClientConnection) -> None:
        """Nothing to exchange: the subscription payload carries the session id. Bars start
        afresh on every connection."""
        for builder in self._builders.values():
            self.late_trades += builder.late_trades
        self._builders.clear()

    def payload(self, wanted: MarketDataSubscription) -> dict[str, Any]:
        filters = []
        if wanted.quotes:
            filters.append("quote")
        if wanted.trades or wanted.bars:
            filters.append("trade")
        return {
            "symbols": sorted(wanted.quotes | wanted.trades | {s for _, s in wanted.bars}),
            "sessionid": self._session_id,
            "filter": filters,
            "linebreak": True,
            "validOnly": True,
        }

    async def _send_subscription(self, ws: ClientConnection, diff: SubscriptionDiff) -> None:
        # Set-replacing: the whole wanted set, every time.
        await ws.send(json.dumps(self.payload(diff.wanted)))

    async def _read(self, ws: ClientConnection) -> AsyncIterator[MarketEvent]:
        while True:
            raw = await self._recv(ws)
            if raw is None:
                return
            received = self._clock()
            for message in lines(raw):
                for event in self._events(message, received):
                    yield event
            for event in self._close_bars(received):
                yield event

    def _events(self, message: dict[str, Any], received: datetime) -> list[MarketEvent]:
        if "error" in message:
            log.warning(
                "Tradier refused part of the market subscription: %s",
                message.get("error"),
                extra={"broker": SLUG},
            )
            return []
        kind = message.get("type")
        symbol = message.get("symbol")
        if kind in ("summary", "timesale", "tradex"):
            return []
        if kind not in ("quote", "trade"):
            raise mapping.unknown("market event type", kind)
        if not isinstance(symbol, str):
            raise mapping.unknown("market event symbol", symbol)
        wanted = self._wanted
        if kind == "quote":
            if symbol not in wanted.quotes:
                return []
            times = [
                t
                for t in (
                    _ms(message.get("biddate"), "biddate"),
                    _ms(message.get("askdate"), "askdate"),
                )
                if t is not None
            ]
            return [
                MarketQuote(
                    symbol=symbol,
                    bid=_dec(message.get("bid"), "bid"),
                    ask=_dec(message.get("ask"), "ask"),
                    bid_size=_dec(message.get("bidsz"), "bidsz"),
                    ask_size=_dec(message.get("asksz"), "asksz"),
                    ts=max(times) if times else received,
                    source=MarketDataSource.stream,
                )
            ]
        price = _dec(message.get("price"), "price")
        size = _dec(message.get("size"), "size")
        if price is None or size is None:
            raise mapping.unknown("trade event", {k: message.get(k) for k in ("price", "size")})
        trade = MarketTrade(
            symbol=symbol,
            price=price,
            size=size,
            ts=_ms(message.get("date"), "date") or received,
            source=MarketDataSource.stream,
        )
        out: list[MarketEvent] = []
        if symbol in wanted.trades:
            out.append(trade)
        if (BarInterval.m1, symbol) in wanted.bars:
            builder = self._builders.get(symbol)
            if builder is None:
                builder = self._builders[symbol] = BarBuilder(symbol)
            out.extend(builder.add(trade))
        return out

    def _close_bars(self, now: datetime) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for symbol, builder in list(self._builders.items()):
            if (BarInterval.m1, symbol) not in self._wanted.bars:
                self.late_trades += builder.late_trades
                del self._builders[symbol]
                continue
            out.extend(builder.close_until(now))
        return out


# --- history -------------------------------------------------------------------------------

Request = Callable[[str, dict[str, str]], Awaitable[Any]]


def _eastern(at: datetime) -> str:
    return at.astimezone(EXCHANGE_TIME).strftime("%Y-%m-%d %H:%M")


def _bar(
    symbol: str, interval: BarInterval, start: datetime, row: dict[str, Any], vwap: bool
) -> Bar:
    prices = [mapping.WIRE.decimal(row.get(k), k) for k in ("open", "high", "low", "close")]
    return Bar(
        symbol=symbol,
        interval=interval,
        start=start,
        open=prices[0],
        high=prices[1],
        low=prices[2],
        close=prices[3],
        volume=mapping.WIRE.decimal(row.get("volume"), "volume"),
        vwap=_dec(row.get("vwap"), "vwap") if vwap else None,
        trade_count=None,  # Tradier's bars carry no trade count
        final=True,
        source=MarketDataSource.history,
    )


async def get_bars(
    request: Request,
    symbol: str,
    interval: BarInterval,
    start: datetime,
    end: datetime,
    limit: int,
    now: datetime,
) -> list[Bar]:
    """Final bars with ``start <= bar.start < end`` whose window ended by ``now``, oldest
    first, at most ``limit``. ``request(path, params)`` is one GET answering JSON."""
    step = timedelta(seconds=interval.seconds)
    if interval is BarInterval.d1:
        body = await request(
            "/v1/markets/history",
            {
                "symbol": symbol,
                "interval": "daily",
                "start": start.astimezone(UTC).strftime("%Y-%m-%d"),
                "end": end.astimezone(UTC).strftime("%Y-%m-%d"),
            },
        )
        rows = mapping.items(body, "history", "day")
        bars = []
        for row in rows:
            day = mapping.WIRE.timestamp(row.get("date"), "date", date_only=True)
            bars.append(_bar(symbol, interval, day, row, vwap=False))
    elif interval in TIMESALES:
        name, reach = TIMESALES[interval]
        if start < now - reach:
            raise errors.NotSupported(
                f"Tradier keeps {interval.value} bars for {reach.days} days", broker=SLUG
            )
        body = await request(
            "/v1/markets/timesales",
            {
                "symbol": symbol,
                "interval": name,
                "start": _eastern(start),
                "end": _eastern(end),
                "session_filter": "all",
            },
        )
        bars = []
        for row in mapping.items(body, "series", "data"):
            stamp = row.get("timestamp")
            if isinstance(stamp, bool) or not isinstance(stamp, int | str | Decimal):
                raise mapping.unknown("timesales timestamp", stamp)
            at = datetime.fromtimestamp(int(stamp), tz=UTC)
            bars.append(_bar(symbol, interval, at, row, vwap=True))
    else:
        raise errors.NotSupported(f"Tradier has no {interval.value} bars", broker=SLUG)
    bars = [b for b in bars if start <= b.start < end and b.start + step <= now]
    bars.sort(key=lambda b: b.start)
    return bars[: max(limit, 0)]

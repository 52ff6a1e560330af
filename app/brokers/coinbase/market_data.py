"""Coinbase market data: the Advanced Trade market WebSocket (quotes from ``ticker``, trades
from ``market_trades``, 1-minute bars built from those trades, 5-minute bars from
``candles``) and REST candles for history.

Streaming (https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/
websocket-channels; AsyncAPI https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/
advanced-trade-asyncapi.json):

1. Connect ``wss://advanced-trade-ws.coinbase.com`` (not the user-channel host).
2. ``{"type": "subscribe", "channel": <one channel>, "product_ids": [...], "jwt": ...}``
   per channel; ``unsubscribe`` the same way. Subscriptions are ADDITIVE per channel and
   product: an update sends only what was added and removed (``diff.added``/``removed``).
   The JWT is optional on market channels ("For the most reliable connection, authenticate
   with a CDP API key"): each message carries a fresh one signed with the connection's key,
   as the user channel does (``auth.Signer.ws_jwt``).
3. ``heartbeats`` is always subscribed: "Most channels close within 60-90 seconds if no
   updates are sent", and its message every second makes silence detectable
   (``idle_timeout``).
4. Every message carries ``sequence_num``, counted per connection across channels. A jump
   means messages were lost: the connection is dropped, so subscribers get ``MarketGap``,
   then everything is subscribed again on a new connection and they get
   ``MarketResubscribed`` (the market channels have no replay).
5. Messages: ``{"channel", "timestamp", "sequence_num", "events": [{"type": "snapshot" |
   "update", "tickers" | "trades" | "candles": [...]}]}``. A ticker carries ``product_id,
   price, best_bid, best_bid_quantity, best_ask, best_ask_quantity`` and no time of its own
   (the message ``timestamp`` is used); a trade ``trade_id, product_id, price, size, side,
   time``; a candle ``start`` (epoch seconds as a string), ``open, high, low, close, volume,
   product_id``, "grouped into five-minute buckets, with updates every second": the bucket
   being updated is forming, and it is final once a later bucket arrives. The
   ``market_trades`` snapshot (recent trades from before the subscription) is not delivered
   as live trades.

History (https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/products/
get-product-candles): ``GET /api/v3/brokerage/products/{product_id}/candles?start&end&
granularity`` (epoch seconds; ONE_MINUTE, FIVE_MINUTE, FIFTEEN_MINUTE, ONE_HOUR, ONE_DAY),
at most 350 candles a request, newest first, without VWAP or trade count.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import WebSocketException

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
from app.brokers.coinbase import mapping
from app.brokers.market_data.bars import BarBuilder
from app.brokers.market_data.subscription import SubscriptionDiff
from app.brokers.market_data.upstream import UpstreamMarketSession
from app.brokers.upstream_stream import StreamRefused, decode_object, frames_logger

log = logging.getLogger(__name__)

SLUG = mapping.SLUG
STREAM = MarketDataSource.stream
TICKER, TRADES, CANDLES, HEARTBEATS = "ticker", "market_trades", "candles", "heartbeats"
CANDLE_PAGE = 350  # "max 350 candles per request" (get-product-candles)
GRANULARITY = {
    BarInterval.m1: "ONE_MINUTE",
    BarInterval.m5: "FIVE_MINUTE",
    BarInterval.m15: "FIFTEEN_MINUTE",
    BarInterval.h1: "ONE_HOUR",
    BarInterval.d1: "ONE_DAY",
}

COINBASE_MARKET_DATA = MarketDataCapabilities(
    quotes=Support.native,  # ticker
    trades=Support.native,  # market_trades
    bars=Support.native,  # 5m from candles; 1m built here from market_trades
    greeks=Support.unsupported,  # spot only
    bar_intervals=frozenset({BarInterval.m1, BarInterval.m5}),
    history=Support.native,
    history_intervals=frozenset(GRANULARITY),
    max_symbols=None,  # no published cap on product_ids
    max_sessions=1,
)


class SequenceGap(WebSocketException):
    """``sequence_num`` jumped: messages were lost on this connection."""


def channels_of(wanted: MarketDataSubscription) -> dict[str, frozenset[str]]:
    """The product ids each market channel carries for ``wanted`` (symbols are product ids:
    ``BTC-USD``)."""
    m1 = {mapping.to_product_id(s) for i, s in wanted.bars if i is BarInterval.m1}
    m5 = {mapping.to_product_id(s) for i, s in wanted.bars if i is BarInterval.m5}
    return {
        TICKER: frozenset(mapping.to_product_id(s) for s in wanted.quotes),
        TRADES: frozenset({mapping.to_product_id(s) for s in wanted.trades} | m1),
        CANDLES: frozenset(m5),
    }


def _epoch_seconds(value: object, field: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).isdigit():
        raise mapping.unknown(field, value)
    return datetime.fromtimestamp(int(value), tz=UTC)


def candle_bar(
    row: object, symbol: str, interval: BarInterval, *, final: bool, source: MarketDataSource
) -> Bar:
    if not isinstance(row, dict):
        raise mapping.unknown("candle", type(row).__name__)
    return Bar(
        symbol=symbol,
        interval=interval,
        start=_epoch_seconds(row.get("start"), "start"),
        open=mapping.dec(row.get("open"), "open"),
        high=mapping.dec(row.get("high"), "high"),
        low=mapping.dec(row.get("low"), "low"),
        close=mapping.dec(row.get("close"), "close"),
        volume=mapping.dec(row.get("volume"), "volume"),
        vwap=None,
        trade_count=None,
        final=final,
        source=source,
    )


class CoinbaseMarketSession(UpstreamMarketSession):
    """One market WebSocket for one Coinbase key (a ``MarketDataSession``)."""

    broker = SLUG
    name = "Coinbase market stream"
    frames = frames_logger(__name__)  # never DEBUG: subscribe messages carry a JWT

    def __init__(
        self,
        url: str,
        *,
        jwt: Callable[[], str] | None,
        capabilities: MarketDataCapabilities = COINBASE_MARKET_DATA,
        idle_timeout: float = 15.0,  # heartbeats come every second
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
        self._jwt = jwt
        self._sequence = -1
        self._builders: dict[str, BarBuilder] = {}
        self._candles: dict[str, Bar] = {}  # the forming 5-minute bar per symbol
        self.sequence_gaps = 0
        self.late_trades = 0

    def __repr__(self) -> str:
        return f"CoinbaseMarketSession(url={self._url!r})"

    def _message(self, kind: str, channel: str, products: frozenset[str] | None) -> str:
        body: dict[str, Any] = {"type": kind, "channel": channel}
        if products is not None:
            body["product_ids"] = sorted(products)
        if self._jwt is not None:
            body["jwt"] = self._jwt()
        return json.dumps(body)

    async def _open(self) -> str:
        return self._url

    async def _handshake(self, ws: ClientConnection) -> None:
        """Heartbeats first (they keep every subscription open); state starts afresh."""
        self._sequence = -1
        for builder in self._builders.values():
            self.late_trades += builder.late_trades
        self._builders.clear()
        self._candles.clear()
        await ws.send(self._message("subscribe", HEARTBEATS, None))

    async def _send_subscription(self, ws: ClientConnection, diff: SubscriptionDiff) -> None:
        # Additive per channel and product: what the connection holds is the wanted set
        # before this change.
        held = channels_of((diff.wanted - diff.added) | diff.removed)
        wanted = channels_of(diff.wanted)
        for channel in (TICKER, TRADES, CANDLES):
            gone = held[channel] - wanted[channel]
            new = wanted[channel] - held[channel]
            if gone:
                await ws.send(self._message("unsubscribe", channel, gone))
            if new:
                await ws.send(self._message("subscribe", channel, new))

    async def _read(self, ws: ClientConnection) -> AsyncIterator[MarketEvent]:
        while True:
            raw = await self._recv(ws)
            if raw is None:
                return
            received = self._clock()
            message = decode_object(raw, "market channel message", SLUG)
            for event in self._events(message, received):
                yield event
            for event in self._close_bars(received):
                yield event

    def _events(self, message: dict[str, Any], received: datetime) -> list[MarketEvent]:
        if message.get("type") == "error":
            reason = str(message.get("message") or "error")
            if "auth" in reason.lower():
                raise StreamRefused(reason)
            log.warning(
                "Coinbase refused part of the market subscription: %s",
                reason,
                extra={"broker": SLUG},
            )
            return []
        number = message.get("sequence_num")
        if isinstance(number, int) and not isinstance(number, bool):
            if self._sequence >= 0 and number > self._sequence + 1:
                self.sequence_gaps += 1
                raise SequenceGap(f"sequence_num jumped from {self._sequence} to {number}")
            self._sequence = max(self._sequence, number)
        channel = message.get("channel")
        if channel in (HEARTBEATS, "subscriptions"):
            return []
        at = mapping.opt_ts(message.get("timestamp"), "timestamp") or received
        out: list[MarketEvent] = []
        for event in message.get("events") or []:
            if not isinstance(event, dict):
                raise mapping.unknown("market event", type(event).__name__)
            kind = event.get("type")
            if kind not in ("snapshot", "update"):
                raise mapping.unknown("market event type", kind)
            if channel == TICKER:
                out.extend(self._quotes(event.get("tickers") or [], at))
            elif channel == TRADES:
                if kind == "update":  # the snapshot is recent history, not live trades
                    out.extend(self._trades(event.get("trades") or []))
            elif channel == CANDLES:
                out.extend(self._candle_bars(event.get("candles") or []))
            else:
                raise mapping.unknown("market channel", channel)
        return out

    def _quotes(self, tickers: list[Any], at: datetime) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for ticker in tickers:
            if not isinstance(ticker, dict):
                raise mapping.unknown("ticker", type(ticker).__name__)
            symbol = mapping.from_product_id(ticker.get("product_id"))
            if symbol not in self._wanted.quotes:
                continue
            out.append(
                MarketQuote(
                    symbol=symbol,
                    bid=mapping.opt_dec(ticker.get("best_bid"), "best_bid"),
                    ask=mapping.opt_dec(ticker.get("best_ask"), "best_ask"),
                    bid_size=mapping.opt_dec(ticker.get("best_bid_quantity"), "best_bid_quantity"),
                    ask_size=mapping.opt_dec(ticker.get("best_ask_quantity"), "best_ask_quantity"),
                    ts=at,
                    source=MarketDataSource.stream,
                )
            )
        return out

    def _trades(self, trades: list[Any]) -> list[MarketEvent]:
        parsed: list[MarketTrade] = []
        for item in trades:
            if not isinstance(item, dict):
                raise mapping.unknown("trade", type(item).__name__)
            parsed.append(
                MarketTrade(
                    symbol=mapping.from_product_id(item.get("product_id")),
                    price=mapping.dec(item.get("price"), "price"),
                    size=mapping.dec(item.get("size"), "size"),
                    ts=mapping.ts(item.get("time"), "time"),
                    source=MarketDataSource.stream,
                )
            )
        parsed.sort(key=lambda t: t.ts)  # a batch may list the newest first
        out: list[MarketEvent] = []
        for trade in parsed:
            if trade.symbol in self._wanted.trades:
                out.append(trade)
            if (BarInterval.m1, trade.symbol) in self._wanted.bars:
                builder = self._builders.get(trade.symbol)
                if builder is None:
                    builder = self._builders[trade.symbol] = BarBuilder(trade.symbol)
                out.extend(builder.add(trade))
        return out

    def _candle_bars(self, candles: list[Any]) -> list[MarketEvent]:
        rows = []
        for row in candles:
            if not isinstance(row, dict):
                raise mapping.unknown("candle", type(row).__name__)
            rows.append(row)
        rows.sort(key=lambda r: _epoch_seconds(r.get("start"), "start"))
        out: list[MarketEvent] = []
        for row in rows:
            symbol = mapping.from_product_id(row.get("product_id"))
            if (BarInterval.m5, symbol) not in self._wanted.bars:
                self._candles.pop(symbol, None)
                continue
            bar = candle_bar(row, symbol, BarInterval.m5, final=False, source=STREAM)
            forming = self._candles.get(symbol)
            if forming is not None and bar.start < forming.start:
                continue  # an older bucket than the one forming: already final
            if forming is not None and bar.start > forming.start:
                out.append(_final(forming))
            self._candles[symbol] = bar
            out.append(bar)
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


def _final(bar: Bar) -> Bar:
    return dataclasses.replace(bar, final=True)


# --- history -------------------------------------------------------------------------------

Request = Callable[[str, dict[str, str]], Awaitable[Any]]


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
    first, at most ``limit``; ``request(path, params)`` is one signed GET answering JSON.
    Pages of 350 candles, oldest window first, until ``limit`` bars are found."""
    granularity = GRANULARITY.get(interval)
    if granularity is None:
        raise errors.NotSupported(f"Coinbase has no {interval.value} candles", broker=SLUG)
    product = mapping.to_product_id(symbol)
    step = timedelta(seconds=interval.seconds)
    end = min(end, now)
    bars: dict[datetime, Bar] = {}
    window_start = start
    while window_start < end and len(bars) < limit:
        window_end = min(end, window_start + step * CANDLE_PAGE)
        body = await request(
            f"/api/v3/brokerage/products/{product}/candles",
            {
                "start": str(int(window_start.timestamp())),
                "end": str(int(window_end.timestamp())),
                "granularity": granularity,
            },
        )
        rows = body.get("candles") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise mapping.unknown("candles payload", type(body).__name__)
        for row in rows:
            bar = candle_bar(row, symbol, interval, final=True, source=MarketDataSource.history)
            bars[bar.start] = bar
        window_start = window_end
    found = [b for b in bars.values() if start <= b.start < end and b.start + step <= now]
    found.sort(key=lambda b: b.start)
    return found[: max(limit, 0)]

"""Market data on ``/v1/stream``: the client messages, the frames, and each subscriber's queue.

Client messages (after ``auth``; API.md "Market data")
    ``{"type": "market.subscribe", "account_id", "quotes": [..], "trades": [..], "bars":
    {"1m": [..]}, "greeks": [..]}`` adds to what this connection receives through that
    account; ``{"type": "market.unsubscribe", ...same shape}`` removes. Omitted channels are
    empty. Either may be sent any number of times, with or without an order-event
    ``subscribe``; each is answered with ``market.subscribed`` (the full current set for
    the account) or an ``error`` frame, in which case nothing changed.

Server messages
    ``market.subscribed``; ``quote``, ``trade``, ``bar``, ``greeks`` (each with ``symbol``,
    ``ts`` the exchange's time, ``received_at`` the gateway's, and ``source``);
    ``market.gap`` / ``market.resubscribed`` around an upstream reconnect (per account);
    ``market.resync`` when this connection fell behind on trades/bars/greeks (below).
    A new bars subscription (any interval) first gets the last ``market_bar_replay``
    final bars from the broker's history (``source`` ``history`` or ``aggregated``),
    then its live bars, each start final at most once and none missing at the seam
    (``MarketDataService.backfill``).

Slow consumers
    Each connection has one market queue. Quotes are conflated: an unsent quote for a
    symbol is replaced by the newer one (counted in ``brokerage_market_conflations_total``),
    so a slow reader gets the latest top of book, never a backlog. Trades, bars and greeks
    go into a bounded FIFO (``market_queue_size``); when it is full, what it holds is
    dropped and the next frame the client reads is ``{"type": "market.resync", "reason":
    "slow_consumer", "dropped": n, "since": <received_at of the first dropped frame>}``:
    those trades/bars/greeks were not delivered, nothing later is skipped without another
    ``market.resync``, and final bars for the span can be fetched from ``GET .../bars``.
    Nothing is ever dropped silently, and a slow connection never delays another.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from app.brokers.base import (
    Bar,
    GreeksUpdate,
    MarketDataSubscription,
    MarketQuote,
    MarketTrade,
)
from app.streaming.protocol import AccountIdField, format_timestamp

MARKET_CHANNELS = ("quotes", "trades", "bars", "greeks")
_MAX_SYMBOLS_PER_MESSAGE = 1000


class MarketSubscribeMessage(BaseModel):
    """``market.subscribe`` / ``market.unsubscribe``: a delta to one account's wanted set.

    Unknown keys are not forbidden here: the session answers them with ``unknown_channel``
    (a clearer error than a generic validation failure).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["market.subscribe", "market.unsubscribe"]
    account_id: AccountIdField
    quotes: list[StrictStr] = Field(default_factory=list, max_length=_MAX_SYMBOLS_PER_MESSAGE)
    trades: list[StrictStr] = Field(default_factory=list, max_length=_MAX_SYMBOLS_PER_MESSAGE)
    bars: dict[StrictStr, list[StrictStr]] = Field(default_factory=dict, max_length=5)
    greeks: list[StrictStr] = Field(default_factory=list, max_length=_MAX_SYMBOLS_PER_MESSAGE)

    def unknown_channels(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


def _dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def subscribed_frame(account_id: str, wanted: MarketDataSubscription) -> str:
    bars: dict[str, list[str]] = {}
    for interval, symbol in sorted(wanted.bars):
        bars.setdefault(interval.value, []).append(symbol)
    return _dumps(
        {
            "type": "market.subscribed",
            "account_id": account_id,
            "quotes": sorted(wanted.quotes),
            "trades": sorted(wanted.trades),
            "bars": bars,
            "greeks": sorted(wanted.greeks),
        }
    )


@functools.lru_cache(maxsize=8192)
def _json_text(text: str) -> str:
    """A JSON string literal (symbols repeat: each is escaped once)."""
    return json.dumps(text, ensure_ascii=False)


def _json_dec(value: Decimal | None) -> str:
    # ``str`` of a Decimal is digits, sign, point and exponent: nothing to escape.
    return "null" if value is None else f'"{value}"'


def quote_frame(quote: MarketQuote, received_at: str) -> str:
    """The ``quote`` frame: byte for byte what ``_dumps`` makes of it, built without the
    intermediate dict (this runs once per upstream quote, at thousands a second; the frame
    is then shared by every subscriber of the symbol). Timestamps (RFC 3339) need no
    escaping; the symbol and source are escaped as JSON."""
    return (
        f'{{"type":"quote","symbol":{_json_text(quote.symbol)}'
        f',"bid":{_json_dec(quote.bid)},"ask":{_json_dec(quote.ask)}'
        f',"bid_size":{_json_dec(quote.bid_size)},"ask_size":{_json_dec(quote.ask_size)}'
        f',"ts":"{format_timestamp(quote.ts)}","received_at":"{received_at}"'
        f',"source":{_json_text(quote.source.value)}}}'
    )


def trade_frame(trade: MarketTrade, received_at: str) -> str:
    return _dumps(
        {
            "type": "trade",
            "symbol": trade.symbol,
            "price": str(trade.price),
            "size": str(trade.size),
            "ts": format_timestamp(trade.ts),
            "received_at": received_at,
            "source": trade.source.value,
        }
    )


def bar_body(bar: Bar) -> dict[str, Any]:
    return {
        "symbol": bar.symbol,
        "interval": bar.interval.value,
        "start": format_timestamp(bar.start),
        "open": str(bar.open),
        "high": str(bar.high),
        "low": str(bar.low),
        "close": str(bar.close),
        "volume": str(bar.volume),
        "vwap": _dec(bar.vwap),
        "trade_count": bar.trade_count,
        "final": bar.final,
        "source": bar.source.value,
    }


def bar_frame(bar: Bar, received_at: str) -> str:
    body = {"type": "bar", **bar_body(bar)}
    # A bar's exchange time is its start; a forming bar is re-sent as it changes.
    body["ts"] = body["start"]
    body["received_at"] = received_at
    return _dumps(body)


def greeks_frame(update: GreeksUpdate, received_at: str) -> str:
    g = update.greeks
    return _dumps(
        {
            "type": "greeks",
            "symbol": update.symbol,
            "delta": _dec(g.delta),
            "gamma": _dec(g.gamma),
            "theta": _dec(g.theta),
            "vega": _dec(g.vega),
            "rho": _dec(g.rho),
            "iv": _dec(g.iv),
            "underlying_price": _dec(update.underlying_price),
            "ts": format_timestamp(update.ts),
            "received_at": received_at,
            "source": update.source.value,
        }
    )


def gap_frame(account_id: str, reason: str, since: datetime) -> str:
    return _dumps(
        {
            "type": "market.gap",
            "account_id": account_id,
            "reason": reason,
            "since": format_timestamp(since),
        }
    )


def resubscribed_frame(account_id: str, at: datetime) -> str:
    return _dumps({"type": "market.resubscribed", "account_id": account_id, "at": at_text(at)})


def at_text(value: datetime) -> str:
    return format_timestamp(value)


def resync_frame(dropped: int, since: str | None) -> str:
    return _dumps(
        {"type": "market.resync", "reason": "slow_consumer", "dropped": dropped, "since": since}
    )


class MarketFeed:
    """One connection's market queue: conflated quotes plus a bounded FIFO for the rest.

    ``offer_*`` never block and never await (the upstream pump calls them for every
    subscriber); the connection's writer calls ``take`` and ``wait``. Quote keys are
    ``(upstream key, symbol)`` so the same symbol through two upstreams is not merged.
    """

    __slots__ = (
        "_data",
        "_dropped",
        "_dropped_since",
        "_max",
        "_queue",
        "_quotes",
        "_waiter",
        "conflations",
        "overflows",
    )

    def __init__(self, max_queue: int) -> None:
        self._quotes: dict[tuple[str, str], str] = {}
        # (is data, frame): data frames count against the bound and may be dropped; control
        # frames and flushed quotes never are.
        self._queue: deque[tuple[bool, str]] = deque()
        self._data = 0
        self._max = max_queue
        self._dropped = 0
        self._dropped_since: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.conflations = 0
        self.overflows = 0

    def offer_quote(self, key: tuple[str, str], frame: str) -> bool:
        """Queue a quote; True when it replaced an unsent one (a conflation)."""
        quotes = self._quotes
        if key in quotes:
            quotes[key] = frame
            self.conflations += 1
            return True
        quotes[key] = frame
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return False

    def offer(self, frame: str, received_at: str) -> int:
        """Queue a trade/bar/greeks frame; returns how many frames were dropped by doing so
        (0: queued; at an overflow, this one and every data frame the queue held)."""
        if self._dropped:
            # Already behind: keep counting until the writer has told the client.
            self._dropped += 1
            return 1
        if self._data >= self._max:
            self.overflows += 1
            self._dropped = self._data + 1
            first = next((f for is_data, f in self._queue if is_data), None)
            since = None if first is None else _first_received_at(first)
            self._dropped_since = since if since is not None else received_at
            self._queue = deque(item for item in self._queue if not item[0])
            self._data = 0
            self._wakeup()
            return self._dropped
        self._queue.append((True, frame))
        self._data += 1
        self._wakeup()
        return 0

    def control(self, frame: str) -> None:
        """A control frame (``market.gap``/``market.resubscribed``): never dropped, and
        ordered after every quote received before it."""
        if self._quotes:
            self._queue.extend((False, q) for q in self._quotes.values())
            self._quotes.clear()
        self._queue.append((False, frame))
        self._wakeup()

    def take(self) -> list[str]:
        """Everything to send now, oldest first; a ``market.resync`` leads when frames
        were dropped."""
        out: list[str] = []
        if self._dropped:
            out.append(resync_frame(self._dropped, self._dropped_since))
            self._dropped = 0
            self._dropped_since = None
        if self._queue:
            out.extend(frame for _, frame in self._queue)
            self._queue.clear()
            self._data = 0
        if self._quotes:
            out.extend(self._quotes.values())
            self._quotes.clear()
        return out

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._quotes)

    def _wakeup(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def poke(self) -> None:
        self._wakeup()

    async def wait(self) -> None:
        if self._queue or self._quotes or self._dropped:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None


_RECEIVED = '"received_at":"'


def _first_received_at(frame: str) -> str | None:
    start = frame.find(_RECEIVED)
    if start < 0:
        return None
    start += len(_RECEIVED)
    end = frame.find('"', start)
    return frame[start:end] if end > 0 else None

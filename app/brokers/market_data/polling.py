"""A ``MarketDataSession`` for brokers without a market stream: it polls their quotes.

SnapTrade (``/quotes``, at most 10 symbols a call), Robinhood crypto (``best_bid_ask``),
Webull where its push is not reachable and Plaid have no market-data stream (reference
"2.8 Brokers without market-data streaming"). Behind the same subscription, this session
calls the adapter's ``get_quotes`` for every wanted quote symbol once per
``capabilities.market_data.poll_seconds``: one call for all of them, or one per
``batch_size`` symbols where the broker caps a call. So a session spends
``ceil(symbols / batch_size) * 60 / poll_seconds`` requests a minute, which the adapter's
capabilities keep within the broker's budget (``max_symbols`` bounds the symbols; the
adapter's own request pacer still spaces every call).

What it offers, and what it refuses:

* **Quotes** only, marked ``poll``, with the broker's quote time; sizes are unknown
  (``None``). A poll that returns the quote already delivered (same bid, ask, last and
  time) delivers nothing, so an idle market costs subscribers nothing.
* **Trades, bars and greeks** cannot be polled from a quotes endpoint: the capabilities
  built by ``polling_capabilities`` mark them unsupported, so the service refuses them
  before asking (``market_data_unsupported``); asked anyway, ``update`` raises
  ``MarketDataLimit`` and changes nothing. A bar built from polled quotes would be an
  invention, not a bar.
* **Faults**: a poll that fails (``Transient``, rate limits, a broker value the mapping does
  not know, a socket error) yields ``MarketGap`` once, since the last good poll, then the
  session polls again with backoff (doubling up to ``max_backoff``, or the broker's
  ``Retry-After``) and yields ``MarketResubscribed`` before the first quotes of the poll that
  works. ``AuthenticationFailed`` yields ``MarketGap`` and is raised: no retry helps it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from app.brokers import errors
from app.brokers.base import (
    Capabilities,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    Quote,
    Support,
)
from app.brokers.market_data.subscription import check_subscription

# What ends one poll but not the session: it backs off and polls again.
POLL_FAULTS: tuple[type[Exception], ...] = (
    errors.Transient,  # includes RateLimitExceeded
    errors.UnknownBrokerValue,
    OSError,
    TimeoutError,
)


class QuotePolling(Protocol):
    """What the session needs of an adapter: its capabilities and ``get_quotes``."""

    slug: str
    capabilities: Capabilities

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]: ...


def polling_capabilities(
    poll_seconds: float, *, max_symbols: int | None = None, max_sessions: int | None = 1
) -> MarketDataCapabilities:
    """Capabilities of a broker served by ``PollingMarketDataSession``: quotes (emulated by
    polling), nothing else."""
    if poll_seconds <= 0:
        raise ValueError("poll_seconds must be positive")
    return MarketDataCapabilities(
        quotes=Support.emulated,
        max_symbols=max_symbols,
        max_sessions=max_sessions,
        poll_seconds=poll_seconds,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _batches(symbols: Sequence[str], size: int | None) -> list[list[str]]:
    if size is None or size >= len(symbols):
        return [list(symbols)]
    return [list(symbols[i : i + size]) for i in range(0, len(symbols), size)]


class PollingMarketDataSession:
    """Quotes by polling ``adapter.get_quotes`` (a ``MarketDataSession``; one reader)."""

    def __init__(
        self,
        adapter: QuotePolling,
        *,
        capabilities: MarketDataCapabilities | None = None,
        batch_size: int | None = None,
        max_backoff: float = 60.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._adapter = adapter
        self._caps = capabilities or adapter.capabilities.market_data
        interval = self._caps.poll_seconds
        if interval is None or interval <= 0:
            raise ValueError(f"{adapter.slug} has no poll interval (capabilities.market_data)")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.interval: float = interval
        self.batch_size = batch_size
        self._max_backoff = max(max_backoff, interval)
        self._clock = clock
        self._wanted = MarketDataSubscription()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._delivered: dict[str, tuple[Decimal, Decimal, Decimal, datetime]] = {}
        self.polls = 0  # calls made to the broker, for metrics and tests

    @property
    def capabilities(self) -> MarketDataCapabilities:
        return self._caps

    def requests_per_minute(self, symbols: int) -> float:
        """What polling ``symbols`` quotes costs the broker budget."""
        calls = math.ceil(symbols / self.batch_size) if self.batch_size else min(symbols, 1)
        return calls * 60.0 / self.interval

    async def update(self, wanted: MarketDataSubscription) -> None:
        """Replace the wanted set; ``MarketDataLimit`` (nothing changed) for a channel this
        broker cannot be polled for, or more symbols than ``max_symbols``."""
        check_subscription(self._caps, wanted, broker=self._adapter.slug)
        added = wanted.quotes - self._wanted.quotes
        for gone in self._wanted.quotes - wanted.quotes:
            self._delivered.pop(gone, None)
        self._wanted = MarketDataSubscription(quotes=wanted.quotes)
        if added:
            self._changed.set()

    async def events(self) -> AsyncIterator[MarketEvent]:
        gap_since: datetime | None = None
        last_good = self._clock()
        failures = 0
        while not self._closed.is_set():
            symbols = sorted(self._wanted.quotes)
            if not symbols:
                self._changed.clear()
                await self._sleep(None)
                continue
            self._changed.clear()
            started = time.monotonic()
            try:
                quotes = await self._poll(symbols)
            except errors.AuthenticationFailed as exc:
                if gap_since is None:
                    yield MarketGap(reason=f"quotes poll refused: {exc.reason}", since=last_good)
                raise
            except POLL_FAULTS as exc:
                failures += 1
                if gap_since is None:
                    gap_since = last_good
                    yield MarketGap(reason=_reason(exc), since=last_good)
                await self._sleep(self._backoff(failures, exc), wake_on_change=False)
                continue
            failures = 0
            last_good = self._clock()
            if gap_since is not None:
                gap_since = None
                yield MarketResubscribed(at=last_good)
                self._delivered.clear()  # after a hole, every quote is news
            wanted = self._wanted.quotes
            for symbol in symbols:
                quote = quotes.get(symbol)
                if quote is None or symbol not in wanted:
                    continue
                seen = (quote.bid, quote.ask, quote.last, quote.as_of)
                if self._delivered.get(symbol) == seen:
                    continue
                self._delivered[symbol] = seen
                yield MarketQuote(
                    symbol=symbol,
                    bid=quote.bid,
                    ask=quote.ask,
                    bid_size=None,
                    ask_size=None,
                    ts=quote.as_of,
                    source=MarketDataSource.poll,
                )
            await self._sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def _poll(self, symbols: list[str]) -> dict[str, Quote]:
        found: dict[str, Quote] = {}
        for batch in _batches(symbols, self.batch_size):
            self.polls += 1
            found.update(await self._adapter.get_quotes(batch))
        return found

    def _backoff(self, failures: int, exc: Exception) -> float:
        if isinstance(exc, errors.RateLimitExceeded) and exc.retry_after is not None:
            return min(max(float(exc.retry_after), self.interval), self._max_backoff)
        return min(self.interval * 2.0 ** (failures - 1), self._max_backoff)

    async def _sleep(self, seconds: float | None, *, wake_on_change: bool = True) -> None:
        """Until ``seconds`` pass, the session closes or (when waking on change) a symbol
        is added; ``None``: no timeout."""
        waits = {asyncio.ensure_future(self._closed.wait())}
        if wake_on_change and seconds is None:
            waits.add(asyncio.ensure_future(self._changed.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def close(self) -> None:
        self._closed.set()


def _reason(exc: Exception) -> str:
    if isinstance(exc, errors.BrokerError):
        return f"quotes poll failed: {exc.reason}"
    return f"quotes poll failed: {type(exc).__name__}"

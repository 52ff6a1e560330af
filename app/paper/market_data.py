"""The paper market's market data: quotes, trades, 1-minute bars and greeks, all pure
functions of the seeded path, and the session that streams them on the paper clock.

* **Quotes**: ``SeededQuoteSource``'s quote at every step (option contracts: the model's
  quote from ``SeededOptionMarket``, sizes unknown).
* **Trades**: one per step and symbol, at that step's ``last`` (options: the model's mark),
  with a seeded size drawn once a minute.
* **Bars**: the 1-minute bar of those trades (so a bar built from the streamed trades equals
  the streamed bar); a bar is streamed once, final, at the step that ends its minute. No
  forming bars (``BarBuilder`` makes them from trades where a subscriber wants them).
  History bars of 5m and 15m are the aggregate of the 1-minute bars, so a backfill and the
  live bars agree to the cent; 1h and 1d bars of equities and crypto have the same OHLC,
  volume and trade count, found without computing every step (``_bounded_bar``), and no
  vwap.
* **Greeks**: the model's greeks of an option contract at every step.

``PaperMarketDataSession`` emits, for every step the clock passes, that step's events for
the wanted set, in step order (quotes, trades, greeks, then the bar ending there). On the
system clock it ticks in real time at the quote step; on a ``ManualClock`` it emits exactly
the steps a test moves the clock past. A jump of more than ``MAX_CATCH_UP`` steps is not
replayed: the session says ``MarketGap`` then ``MarketResubscribed`` and goes on from now.

History from 1-minute bars costs one quote computation per step, so one ``get_bars`` call
computes at most ``MAX_HISTORY_STEPS`` steps not already cached and is refused
(``NotSupported``, saying how many bars fit) beyond (only option contracts' 1h and 1d bars
come near it); it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from decimal import Decimal

from app.brokers import errors
from app.brokers.base import (
    Bar,
    BarInterval,
    GreeksUpdate,
    InvalidOptionSymbol,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    MarketTrade,
    OptionContract,
    Support,
    is_option_symbol,
)
from app.brokers.market_data.bars import aggregate, window_start
from app.brokers.market_data.subscription import check_subscription
from app.paper.clock import Clock, WaitableClock
from app.paper.options_market import EXPIRY_TIME_UTC, SeededOptionMarket
from app.paper.quotes import EPOCH, SeededQuoteSource, _digest, _unit

PAPER_MARKET_DATA = MarketDataCapabilities(
    quotes=Support.native,
    trades=Support.native,
    bars=Support.native,
    greeks=Support.native,
    bar_intervals=frozenset({BarInterval.m1}),
    history=Support.native,
    history_intervals=frozenset(BarInterval),
    max_symbols=None,
    max_sessions=None,  # in-process: no upstream connection to ration
)

MAX_CATCH_UP = 3600  # steps replayed after the clock jumps; beyond, a gap
MAX_HISTORY_STEPS = 200_000  # uncached steps one get_bars call may compute
_MINUTE_CACHE = 50_000  # 1-minute bars kept per market
_MINUTE = timedelta(minutes=1)
# Intervals whose equity and crypto history bars are found by trend bounds (``_bounded_bar``).
_BOUNDED = frozenset({BarInterval.h1, BarInterval.d1})
_MS = timedelta(milliseconds=1)
_OPTION_SIZES = 20  # an option trade is 1..20 contracts
_TRADE_SHARE = Decimal(4)  # an equity/crypto trade is up to a quarter of the displayed range


class PaperMarketData:
    """Quotes, trades, greeks and bars of the paper market as pure functions of a step."""

    def __init__(self, quotes: SeededQuoteSource, options: SeededOptionMarket) -> None:
        self.quotes = quotes
        self.options = options
        self._step_ms = quotes.step // _MS
        self._minutes: OrderedDict[tuple[str, datetime], Bar] = OrderedDict()
        self._runs: OrderedDict[tuple[str, int, int], tuple[Decimal, Decimal]] = OrderedDict()
        self._lock = threading.Lock()  # history runs in a worker thread

    # --- steps -----------------------------------------------------------------------------

    def step_at(self, at: datetime) -> int:
        return self.quotes.step_at(at)

    def time_of(self, step: int) -> datetime:
        return EPOCH + self.quotes.step * step

    def _first_step_from(self, at: datetime) -> int:
        """The first step starting at or after ``at``."""
        ms = (at - EPOCH) // _MS
        return -(-ms // self._step_ms)

    def minute_steps(self, minute: datetime) -> range:
        return range(self._first_step_from(minute), self._first_step_from(minute + _MINUTE))

    # --- symbols ---------------------------------------------------------------------------

    def resolve(self, symbol: str, now: datetime) -> str:
        """The canonical symbol; ``UnknownSymbol`` unless the paper market lists it (an
        option must be listed and not expired)."""
        if is_option_symbol(symbol):
            return self._contract(symbol, now).symbol
        self.quotes.instrument(symbol)
        return symbol

    def _contract(self, symbol: str, now: datetime) -> OptionContract:
        try:
            contract = OptionContract.parse(symbol)
        except InvalidOptionSymbol as exc:
            raise errors.UnknownSymbol(str(exc), broker="paper") from exc
        listed = self.options.is_listed(contract, now.date())
        if not listed or now >= datetime.combine(contract.expiration, EXPIRY_TIME_UTC):
            raise errors.UnknownSymbol(
                f"the paper market does not list the option {contract.symbol}", broker="paper"
            )
        return contract

    # --- events of one step ------------------------------------------------------------------

    def quote(self, symbol: str, step: int) -> MarketQuote:
        at = self.time_of(step)
        if is_option_symbol(symbol):
            o = self.options.quote(OptionContract.parse(symbol), at)
            return MarketQuote(symbol, o.bid, o.ask, None, None, at, MarketDataSource.stream)
        q = self.quotes.quote_at_step(self.quotes.instrument(symbol), step)
        return MarketQuote(
            symbol, q.bid, q.ask, q.bid_size, q.ask_size, q.as_of, MarketDataSource.stream
        )

    def minute_index(self, step: int) -> int:
        return (self.time_of(step) - EPOCH) // _MINUTE

    def trade_size(self, symbol: str, minute: int) -> Decimal:
        """The size of every trade of ``symbol`` in minute ``minute`` (since the epoch): one
        seeded size a minute, so a bar's volume needs no step-by-step sum."""
        digest = _digest(self.quotes._key, symbol, "trade-size", minute)
        if is_option_symbol(symbol):
            return Decimal(1 + digest[0] % _OPTION_SIZES)
        instrument = self.quotes.instrument(symbol)
        span = (instrument.size_max - instrument.size_min) / _TRADE_SHARE
        size = (instrument.size_min + span * _unit(digest, 0)).quantize(instrument.size_quantum)
        return max(instrument.size_min, size)

    def trade_price(self, symbol: str, step: int) -> Decimal:
        if is_option_symbol(symbol):
            return self.options.quote(OptionContract.parse(symbol), self.time_of(step)).last
        return self.quotes.quote_at_step(self.quotes.instrument(symbol), step).last

    def trade(self, symbol: str, step: int) -> MarketTrade:
        return MarketTrade(
            symbol,
            self.trade_price(symbol, step),
            self.trade_size(symbol, self.minute_index(step)),
            self.time_of(step),
            MarketDataSource.stream,
        )

    def greeks(self, symbol: str, step: int) -> GreeksUpdate:
        at = self.time_of(step)
        o = self.options.quote(OptionContract.parse(symbol), at)
        return GreeksUpdate(symbol, o.greeks, o.underlying_price, at, MarketDataSource.stream)

    # --- bars ------------------------------------------------------------------------------

    def minute_bar(self, symbol: str, minute: datetime) -> Bar | None:
        """The final 1-minute bar of the trades in ``[minute, minute + 1m)`` (None when the
        step is longer than the minute and no step starts in it)."""
        key = (symbol, minute)
        with self._lock:
            cached = self._minutes.get(key)
            if cached is not None:
                self._minutes.move_to_end(key)
                return cached
        trades = [self.trade(symbol, step) for step in self.minute_steps(minute)]
        if not trades:
            return None
        volume = sum((t.size for t in trades), Decimal(0))
        notional = sum((t.price * t.size for t in trades), Decimal(0))
        prices = [t.price for t in trades]
        bar = Bar(
            symbol=symbol,
            interval=BarInterval.m1,
            start=minute,
            open=prices[0],
            high=max(prices),
            low=min(prices),
            close=prices[-1],
            volume=volume,
            vwap=(notional / volume).quantize(Decimal("0.0001")) if volume > 0 else None,
            trade_count=len(trades),
            final=True,
            source=MarketDataSource.stream,
        )
        with self._lock:
            self._minutes[key] = bar
            if len(self._minutes) > _MINUTE_CACHE:
                self._minutes.popitem(last=False)
        return bar

    def history(
        self,
        symbol: str,
        interval: BarInterval,
        start: datetime,
        end: datetime,
        limit: int,
        now: datetime,
    ) -> list[Bar]:
        """Final bars with ``start <= bar.start < end`` whose window ended by ``now``,
        oldest first, at most ``limit`` (source ``history``)."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("history needs timezone-aware datetimes")
        symbol = self.resolve(symbol, min(now, end))
        size = timedelta(seconds=interval.seconds)
        first = window_start(start, interval)
        if first < start:
            first += size
        windows: list[datetime] = []
        at = first
        while at < end and at + size <= now and len(windows) < max(limit, 0):
            windows.append(at)
            at += size
        if interval in _BOUNDED and not is_option_symbol(symbol):
            minutes = []  # bounded bars read a few segments, not every step
        else:
            minutes = [w + _MINUTE * i for w in windows for i in range(interval.seconds // 60)]
        with self._lock:
            missing = [m for m in minutes if (symbol, m) not in self._minutes]
        uncached = sum(len(self.minute_steps(m)) for m in missing)
        if uncached > MAX_HISTORY_STEPS:
            per_bar = max(1, uncached // max(1, len(windows)))
            raise errors.NotSupported(
                f"the paper market computes at most {MAX_HISTORY_STEPS} quote steps per "
                f"request: ask for at most {max(1, MAX_HISTORY_STEPS // per_bar)} "
                f"{interval.value} bars",
                broker="paper",
            )
        result = []
        if interval in _BOUNDED and not is_option_symbol(symbol):
            for window in windows:
                bounded = self._bounded_bar(symbol, interval, window)
                if bounded is not None:
                    result.append(bounded)
            return result
        for window in windows:
            parts = [
                b
                for i in range(interval.seconds // 60)
                if (b := self.minute_bar(symbol, window + _MINUTE * i)) is not None
            ]
            if not parts:
                continue
            if interval is BarInterval.m1:
                [bar] = parts
            else:
                [bar] = aggregate(parts, interval, complete_until=window + size)
            result.append(_as_history(bar))
        return result

    def _bounded_bar(self, symbol: str, interval: BarInterval, window: datetime) -> Bar | None:
        """A 1h or 1d bar without computing every step: open and close are the first and
        last trades; high and low come from the trend segments whose bounds could hold
        them, best first, stopping once no other segment could do better (exact, the same
        as aggregating the 1-minute bars); volume is the per-minute sizes times the trades
        per minute. No vwap: that would take every step's price."""
        first = self._first_step_from(window)
        last = self._first_step_from(window + timedelta(seconds=interval.seconds)) - 1
        if last < first:
            return None
        runs = self.quotes.last_bounds(self.quotes.instrument(symbol), first, last)
        high: Decimal | None = None
        for run_first, run_last, _, upper in sorted(runs, key=lambda r: r[3], reverse=True):
            if high is not None and upper <= high:
                break
            run_high = self._run_extremes(symbol, run_first, run_last)[1]
            high = run_high if high is None else max(high, run_high)
        low: Decimal | None = None
        for run_first, run_last, lower, _ in sorted(runs, key=lambda r: r[2]):
            if low is not None and lower >= low:
                break
            run_low = self._run_extremes(symbol, run_first, run_last)[0]
            low = run_low if low is None else min(low, run_low)
        assert high is not None
        assert low is not None
        volume = Decimal(0)
        minute = window
        while minute < window + timedelta(seconds=interval.seconds):
            trades = len(self.minute_steps(minute))
            if trades:
                volume += self.trade_size(symbol, (minute - EPOCH) // _MINUTE) * trades
            minute += _MINUTE
        return Bar(
            symbol=symbol,
            interval=interval,
            start=window,
            open=self.trade_price(symbol, first),
            high=high,
            low=low,
            close=self.trade_price(symbol, last),
            volume=volume,
            vwap=None,
            trade_count=last - first + 1,
            final=True,
            source=MarketDataSource.history,
        )

    def _run_extremes(self, symbol: str, first: int, last: int) -> tuple[Decimal, Decimal]:
        key = (symbol, first, last)
        with self._lock:
            found = self._runs.get(key)
        if found is None:
            prices = [self.trade_price(symbol, step) for step in range(first, last + 1)]
            found = (min(prices), max(prices))
            with self._lock:
                self._runs[key] = found
                if len(self._runs) > _MINUTE_CACHE:
                    self._runs.popitem(last=False)
        return found


def _as_history(bar: Bar) -> Bar:
    return Bar(
        symbol=bar.symbol,
        interval=bar.interval,
        start=bar.start,
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        vwap=bar.vwap,
        trade_count=bar.trade_count,
        final=True,
        source=MarketDataSource.history,
    )


class PaperMarketDataSession:
    """One paper market-data session (``MarketDataSession``); any number may run."""

    def __init__(self, data: PaperMarketData, clock: Clock) -> None:
        self._data = data
        self._clock = clock
        self._wanted = MarketDataSubscription()
        self._closed = asyncio.Event()
        # The last step emitted: the session streams every step after its creation.
        self._cursor = data.step_at(clock.now())

    async def update(self, wanted: MarketDataSubscription) -> None:
        """Replace the wanted set. ``UnknownSymbol`` for a symbol the paper market does not
        list (or greeks of a non-option), ``MarketDataLimit`` for a bar interval other than
        1m (the service aggregates the others); nothing changes when either is raised."""
        now = self._clock.now()
        check_subscription(PAPER_MARKET_DATA, wanted, broker="paper")
        canonical: dict[str, str] = {}
        for symbol in wanted.symbols:
            canonical[symbol] = self._data.resolve(symbol, now)
        for symbol in wanted.greeks:
            if not is_option_symbol(symbol):
                raise errors.UnknownSymbol(
                    f"greeks are for option contracts, not {symbol!r}", broker="paper"
                )
        self._wanted = MarketDataSubscription(
            quotes=frozenset(canonical[s] for s in wanted.quotes),
            trades=frozenset(canonical[s] for s in wanted.trades),
            bars=frozenset((i, canonical[s]) for i, s in wanted.bars),
            greeks=frozenset(canonical[s] for s in wanted.greeks),
        )

    async def events(self) -> AsyncIterator[MarketEvent]:
        """Every step after the session's creation, in order, until ``close``."""
        while not self._closed.is_set():
            now_step = self._data.step_at(self._clock.now())
            if now_step - self._cursor > MAX_CATCH_UP:
                yield MarketGap(
                    reason=f"the paper clock jumped {now_step - self._cursor} steps",
                    since=self._data.time_of(self._cursor + 1),
                )
                yield MarketResubscribed(at=self._clock.now())
                self._cursor = now_step - 1
            while self._cursor < now_step and not self._closed.is_set():
                self._cursor += 1
                for event in self._step_events(self._cursor):
                    yield event
            await self._wait(self._data.time_of(self._cursor + 1))

    def _step_events(self, step: int) -> Iterator[MarketEvent]:
        wanted = self._wanted
        for symbol in sorted(wanted.quotes):
            yield self._data.quote(symbol, step)
        for symbol in sorted(wanted.trades):
            yield self._data.trade(symbol, step)
        for symbol in sorted(wanted.greeks):
            yield self._data.greeks(symbol, step)
        if wanted.bars:
            at = self._data.time_of(step)
            minute = window_start(at, BarInterval.m1)
            previous = window_start(self._data.time_of(step - 1), BarInterval.m1)
            if minute != previous:  # this step opens a minute: the one before it is done
                for _, symbol in sorted(wanted.bars):
                    bar = self._data.minute_bar(symbol, previous)
                    if bar is not None:
                        yield bar

    async def _wait(self, at: datetime) -> None:
        clock = self._clock
        if isinstance(clock, WaitableClock):
            waiting = asyncio.ensure_future(clock.wait_until(at))
        else:  # a clock that cannot wait: look again every step (at most a second)
            left = (at - clock.now()).total_seconds()
            waiting = asyncio.ensure_future(asyncio.sleep(min(max(left, 0.001), 1.0)))
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({waiting, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, closing):
                task.cancel()

    async def close(self) -> None:
        self._closed.set()


async def history_bars(
    data: PaperMarketData,
    symbol: str,
    interval: BarInterval,
    start: datetime,
    end: datetime,
    limit: int,
    now: datetime,
) -> list[Bar]:
    """``PaperMarketData.history`` off the event loop (it may compute many steps)."""
    return await asyncio.to_thread(data.history, symbol, interval, start, end, limit, now)

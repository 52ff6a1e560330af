"""The paper market's data: deterministic quotes, trades, 1-minute bars and greeks streamed on
a manual clock, history bars that agree with the live ones, and the benchmark's fast market."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    Bar,
    BarInterval,
    GreeksUpdate,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    MarketTrade,
    OptionContract,
    OptionRight,
    Support,
    SupportsBarHistory,
    SupportsMarketData,
)
from app.brokers.market_data.bars import BarBuilder, aggregate, stitch
from app.db.session import SessionMaker
from app.paper.adapter import PaperAdapter
from app.paper.clock import ManualClock
from app.paper.engine import PaperEngine
from app.paper.market_data import (
    MAX_CATCH_UP,
    PaperMarketData,
    PaperMarketDataSession,
)
from app.paper.options_market import SeededOptionMarket
from app.paper.quotes import SeededQuoteSource

START = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
SEED = 7
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


def market(**kwargs: int) -> PaperMarketData:
    quotes = SeededQuoteSource(SEED, **kwargs)  # type: ignore[arg-type]
    return PaperMarketData(quotes, SeededOptionMarket(quotes))


def an_option(data: PaperMarketData, at: datetime = START) -> str:
    expiration = data.options.expirations("AAPL", at.date())[1].expiration
    strike = data.options.strikes("AAPL")[20]
    return OptionContract(
        underlying="AAPL", root="AAPL", expiration=expiration, right=OptionRight.call, strike=strike
    ).symbol


class Reader:
    """Reads a session's events into a queue in the background."""

    def __init__(self, session: PaperMarketDataSession) -> None:
        self.queue: asyncio.Queue[MarketEvent] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(session))

    async def _run(self, session: PaperMarketDataSession) -> None:
        async for event in session.events():
            await self.queue.put(event)

    async def take(self, count: int) -> list[MarketEvent]:
        return [await asyncio.wait_for(self.queue.get(), 10) for _ in range(count)]

    async def idle(self) -> bool:
        """Nothing more arrives (the session waits for the clock)."""
        await asyncio.sleep(0.05)
        return self.queue.empty()


@contextlib.asynccontextmanager
async def reading(session: PaperMarketDataSession) -> AsyncIterator[Reader]:
    reader = Reader(session)
    try:
        yield reader
    finally:
        await session.close()
        await asyncio.wait_for(reader.task, 5)


async def test_each_step_the_clock_passes_brings_quotes_trades_and_greeks() -> None:
    data = market()
    option = an_option(data)
    clock = ManualClock(START)
    session = PaperMarketDataSession(data, clock)
    await session.update(
        MarketDataSubscription(
            quotes=frozenset({"AAPL", "BTC-USD", option}),
            trades=frozenset({"AAPL"}),
            greeks=frozenset({option}),
        )
    )
    async with reading(session) as reader:
        assert await reader.idle()  # nothing until the clock moves
        clock.advance(2 * SECOND)
        events = await reader.take(10)
        assert await reader.idle()
    sources = {e.source for e in events if not isinstance(e, MarketGap | MarketResubscribed)}
    assert sources == {MarketDataSource.stream}
    first, second = events[:5], events[5:]
    for step_events, at in ((first, START + SECOND), (second, START + 2 * SECOND)):
        quotes = [e for e in step_events if isinstance(e, MarketQuote)]
        assert sorted(q.symbol for q in quotes) == sorted(["AAPL", "BTC-USD", option])
        assert all(e.ts == at for e in step_events)  # type: ignore[union-attr]
        [aapl] = [q for q in quotes if q.symbol == "AAPL"]
        expected = data.quotes.quote("AAPL", at)
        assert (aapl.bid, aapl.ask, aapl.bid_size, aapl.ask_size) == (
            expected.bid,
            expected.ask,
            expected.bid_size,
            expected.ask_size,
        )
        [trade] = [e for e in step_events if isinstance(e, MarketTrade)]
        assert trade.price == expected.last
        assert trade.size > 0
        [greeks] = [e for e in step_events if isinstance(e, GreeksUpdate)]
        model = data.options.quote(OptionContract.parse(option), at)
        assert greeks.greeks == model.greeks
        assert greeks.underlying_price == model.underlying_price
        [oq] = [q for q in quotes if q.symbol == option]
        assert (oq.bid, oq.ask) == (model.bid, model.ask)


async def test_the_same_seed_and_clock_give_the_same_events() -> None:
    async def run() -> list[MarketEvent]:
        clock = ManualClock(START)
        session = PaperMarketDataSession(market(), clock)
        await session.update(
            MarketDataSubscription(
                quotes=frozenset({"MSFT", "ETH-USD"}),
                trades=frozenset({"MSFT"}),
                bars=frozenset({(BarInterval.m1, "MSFT")}),
            )
        )
        async with reading(session) as reader:
            clock.advance(90 * SECOND)
            return await reader.take(90 * 3 + 1)

    first, second = await run(), await run()
    assert first == second
    assert any(isinstance(e, Bar) for e in first)


async def test_a_final_minute_bar_at_each_boundary_equal_to_the_bar_of_its_trades() -> None:
    data = market()
    clock = ManualClock(START - SECOND)  # so the step at START is streamed
    session = PaperMarketDataSession(data, clock)
    await session.update(
        MarketDataSubscription(
            trades=frozenset({"NVDA"}), bars=frozenset({(BarInterval.m1, "NVDA")})
        )
    )
    async with reading(session) as reader:
        clock.advance(2 * MINUTE + SECOND)
        events = await reader.take(121 + 3)
    bars = [e for e in events if isinstance(e, Bar)]
    # The step at START ends 14:29's minute (whose bar comes from the path, streamed or not).
    assert [b.start for b in bars] == [START - MINUTE, START, START + MINUTE]
    assert all(b.final and b.source is MarketDataSource.stream for b in bars)
    # The bar comes right after the first trade of the next minute (its boundary step).
    before = events[events.index(bars[1]) - 1]
    assert isinstance(before, MarketTrade)
    assert before.ts == START + MINUTE
    builder = BarBuilder("NVDA")
    built = [b for e in events if isinstance(e, MarketTrade) for b in builder.add(e) if b.final]
    for mine, streamed in zip(built, bars[1:], strict=True):
        assert (mine.open, mine.high, mine.low, mine.close, mine.volume, mine.trade_count) == (
            streamed.open,
            streamed.high,
            streamed.low,
            streamed.close,
            streamed.volume,
            streamed.trade_count,
        )
        assert mine.vwap == streamed.vwap
        assert streamed.low <= min(streamed.open, streamed.close)
        assert max(streamed.open, streamed.close) <= streamed.high
    assert len(built) == 2


async def test_history_agrees_with_the_live_bars_and_stitches_without_a_seam() -> None:
    data = market()
    now = START + 20 * MINUTE + 30 * SECOND
    history = data.history("AAPL", BarInterval.m1, START, now, 1000, now)
    # Only windows that ended by now: 14:30 .. 14:49.
    assert [b.start for b in history] == [START + MINUTE * i for i in range(20)]
    assert all(b.final and b.source is MarketDataSource.history for b in history)
    live = data.minute_bar("AAPL", START + 5 * MINUTE)
    assert live is not None
    assert (live.open, live.high, live.low, live.close, live.volume, live.vwap) == (
        history[5].open,
        history[5].high,
        history[5].low,
        history[5].close,
        history[5].volume,
        history[5].vwap,
    )
    fives = data.history("AAPL", BarInterval.m5, START, now, 1000, now)
    assert [b.start for b in fives] == [START + 5 * MINUTE * i for i in range(4)]
    again = aggregate(history, BarInterval.m5)
    assert [(b.open, b.high, b.low, b.close, b.volume, b.vwap) for b in again] == [
        (b.open, b.high, b.low, b.close, b.volume, b.vwap) for b in fives
    ]
    # Backfill to now, then the live session from (just before) now: one bar per minute.
    clock = ManualClock(now - 45 * SECOND)
    session = PaperMarketDataSession(data, clock)
    await session.update(MarketDataSubscription(bars=frozenset({(BarInterval.m1, "AAPL")})))
    async with reading(session) as reader:
        clock.set(START + 23 * MINUTE)
        live_bars = [e for e in await reader.take(4) if isinstance(e, Bar)]
    stitched = stitch(history, live_bars)
    assert [b.start for b in stitched] == [START + MINUTE * i for i in range(23)]


async def test_history_limit_range_and_options() -> None:
    data = market()
    now = START + 3 * 60 * MINUTE
    assert len(data.history("MSFT", BarInterval.m1, START, now, 7, now)) == 7
    hours = data.history("MSFT", BarInterval.h1, START - 30 * MINUTE, now, 10, now)
    assert [b.start for b in hours] == [START - 30 * MINUTE + 60 * MINUTE * i for i in range(3)]
    # A start inside a window begins at the next one; 17:00's hour has not ended at 17:30.
    hours = data.history("MSFT", BarInterval.h1, START, now, 10, now)
    assert [b.start for b in hours] == [START + 30 * MINUTE, START + 90 * MINUTE]
    assert data.history("MSFT", BarInterval.m1, now, now + MINUTE, 10, now) == []
    option = an_option(data)
    [ob] = data.history(option, BarInterval.m1, START, START + MINUTE, 5, now)
    assert ob.trade_count == 60
    # An option's day bar takes every step of the model: more than one request computes.
    with pytest.raises(errors.NotSupported, match="at most"):
        data.history(option, BarInterval.d1, START - timedelta(days=5), START, 5, START)
    with pytest.raises(errors.UnknownSymbol):
        data.history("NOPE", BarInterval.m1, START, now, 5, now)


@settings(max_examples=5, deadline=None)
@given(
    st.sampled_from(["AAPL", "TSLA", "BTC-USD", "ETH-USD"]),
    st.integers(0, 10_000),
    st.sampled_from([1000, 250]),
)
def test_hour_bars_found_by_bounds_equal_the_aggregate_of_every_minute(
    symbol: str, hours: int, step_ms: int
) -> None:
    data = market(step_ms=step_ms)
    start = START + timedelta(hours=hours)  # half past: the first whole hour is next
    now = start + 2 * timedelta(hours=1)
    [hour] = data.history(symbol, BarInterval.h1, start, now, 5, now)
    minutes = data.history(symbol, BarInterval.m1, hour.start, hour.start + 60 * MINUTE, 60, now)
    [again] = aggregate(minutes, BarInterval.h1)
    assert (hour.open, hour.high, hour.low, hour.close, hour.volume, hour.trade_count) == (
        again.open,
        again.high,
        again.low,
        again.close,
        again.volume,
        again.trade_count,
    )
    assert hour.vwap is None
    assert hour.source is MarketDataSource.history


def test_a_month_of_day_bars_in_one_request() -> None:
    data = market()
    days = data.history("SPY", BarInterval.d1, START - timedelta(days=31), START, 30, START)
    assert len(days) == 30
    assert all(d.trade_count == 86_400 for d in days)
    for d in days:
        assert d.low <= min(d.open, d.close)
        assert max(d.open, d.close) <= d.high


async def test_bad_subscriptions_are_refused_and_change_nothing() -> None:
    data = market()
    clock = ManualClock(START)
    session = PaperMarketDataSession(data, clock)
    await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
    with pytest.raises(errors.UnknownSymbol):
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL", "NOPE"})))
    with pytest.raises(errors.MarketDataLimit, match="1m"):
        await session.update(MarketDataSubscription(bars=frozenset({(BarInterval.m5, "AAPL")})))
    with pytest.raises(errors.UnknownSymbol, match="option"):
        await session.update(MarketDataSubscription(greeks=frozenset({"AAPL"})))
    expired = OptionContract(
        underlying="AAPL",
        root="AAPL",
        expiration=START.date() - timedelta(days=3),
        right=OptionRight.put,
        strike=data.options.strikes("AAPL")[20],
    ).symbol
    with pytest.raises(errors.UnknownSymbol):
        await session.update(MarketDataSubscription(quotes=frozenset({expired})))
    async with reading(session) as reader:
        clock.advance(SECOND)
        [only] = await reader.take(1)
        assert await reader.idle()
    assert isinstance(only, MarketQuote)
    assert only.symbol == "AAPL"


async def test_a_padded_option_symbol_streams_under_its_canonical_symbol() -> None:
    data = market()
    option = an_option(data)
    padded = OptionContract.parse(option).occ_padded
    clock = ManualClock(START)
    session = PaperMarketDataSession(data, clock)
    await session.update(MarketDataSubscription(quotes=frozenset({padded})))
    async with reading(session) as reader:
        clock.advance(SECOND)
        [quote] = await reader.take(1)
    assert isinstance(quote, MarketQuote)
    assert quote.symbol == option


async def test_a_clock_jump_is_a_gap_then_resubscribed_not_a_replay() -> None:
    clock = ManualClock(START)
    session = PaperMarketDataSession(market(), clock)
    await session.update(MarketDataSubscription(quotes=frozenset({"QQQ"})))
    async with reading(session) as reader:
        clock.advance((MAX_CATCH_UP + 10) * SECOND)
        gap, back, quote = await reader.take(3)
        assert await reader.idle()
    assert isinstance(gap, MarketGap)
    assert gap.since == START + SECOND
    assert isinstance(back, MarketResubscribed)
    assert isinstance(quote, MarketQuote)
    assert quote.ts == clock.now()


async def test_an_update_while_streaming_takes_effect_at_the_next_step() -> None:
    clock = ManualClock(START)
    session = PaperMarketDataSession(market(), clock)
    await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
    async with reading(session) as reader:
        clock.advance(SECOND)
        [a] = await reader.take(1)
        await session.update(MarketDataSubscription(quotes=frozenset({"MSFT"})))
        clock.advance(SECOND)
        [b] = await reader.take(1)
        await session.update(MarketDataSubscription())
        clock.advance(SECOND)
        assert await reader.idle()
    assert (a.symbol, b.symbol) == ("AAPL", "MSFT")  # type: ignore[union-attr]


async def test_the_benchmark_market_gives_2000_quotes_a_second_over_100_symbols() -> None:
    data = market(step_ms=50, synthetic_symbols=100)
    symbols = frozenset(f"SYM{i:03d}" for i in range(100))
    assert symbols <= set(data.quotes.symbols())
    clock = ManualClock(START)
    session = PaperMarketDataSession(data, clock)
    await session.update(MarketDataSubscription(quotes=symbols))
    async with reading(session) as reader:
        clock.advance(SECOND)
        events = await reader.take(2000)
        assert await reader.idle()
    assert {e.ts for e in events} == {START + timedelta(milliseconds=50 * i) for i in range(1, 21)}  # type: ignore[union-attr]
    assert len({(e.symbol, e.ts) for e in events}) == 2000  # type: ignore[union-attr]
    # A minute at a 50 ms step is 1,200 trades.
    bar = data.minute_bar("SYM042", START)
    assert bar is not None
    assert bar.trade_count == 1200
    # The default market lists no synthetic symbol.
    with pytest.raises(errors.UnknownSymbol):
        market().resolve("SYM000", START)


async def test_real_time_on_the_system_clock() -> None:
    from app.paper.clock import SystemClock

    data = market(step_ms=20)
    session = PaperMarketDataSession(data, SystemClock())
    await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
    async with reading(session) as reader:
        events = await reader.take(5)
    steps = [data.step_at(e.ts) for e in events]  # type: ignore[union-attr]
    assert steps == list(range(steps[0], steps[0] + 5))


async def test_the_paper_adapter_offers_market_data_and_history(
    sessionmaker: SessionMaker,
) -> None:
    clock = ManualClock(START + 10 * MINUTE)
    quotes = SeededQuoteSource(SEED)
    engine = PaperEngine(sessionmaker, quotes, clock)
    adapter = PaperAdapter(engine, owner="someone")
    assert isinstance(adapter, SupportsMarketData)
    assert isinstance(adapter, SupportsBarHistory)
    caps = adapter.capabilities.market_data
    assert caps.quotes is Support.native
    assert caps.greeks is Support.native
    assert caps.bar_intervals == frozenset({BarInterval.m1})
    assert caps.history_intervals == frozenset(BarInterval)
    assert caps.max_symbols is None
    assert caps.max_sessions is None
    bars = await adapter.get_bars("AAPL", BarInterval.m5, START, START + MINUTE * 60, 100)
    assert [b.start for b in bars] == [START, START + 5 * MINUTE]
    session = adapter.market_data_session()
    await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
    async with reading(session) as reader:  # type: ignore[arg-type]
        clock.advance(SECOND)
        [quote] = await reader.take(1)
    got = await adapter.get_quotes(["AAPL"])
    assert isinstance(quote, MarketQuote)
    assert (quote.bid, quote.ask) == (got["AAPL"].bid, got["AAPL"].ask)
    assert quote.bid is not None
    assert quote.bid > Decimal(0)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["AAPL", "SPY", "BTC-USD", "ETH-USD"]),
    st.integers(10**9, 2 * 10**9),
    st.integers(0, 200),
)
def test_the_trend_bounds_hold_every_last_price(symbol: str, first: int, length: int) -> None:
    quotes = SeededQuoteSource(SEED)
    instrument = quotes.instrument(symbol)
    runs = quotes.last_bounds(instrument, first, first + length)
    assert runs[0][0] == first
    assert runs[-1][1] == first + length
    for (_, end, _, _), (start, _, _, _) in itertools.pairwise(runs):
        assert start == end + 1
    for run_first, run_last, lower, upper in runs:
        for step in range(run_first, run_last + 1):
            assert lower <= quotes.quote_at_step(instrument, step).last <= upper


def test_the_bench_settings_make_the_fast_market_and_are_off_by_default() -> None:
    from app.config import Settings

    plain = SeededQuoteSource.from_settings(Settings())
    assert plain.step == SECOND
    assert not plain.is_known("SYM000")
    fast = SeededQuoteSource.from_settings(
        Settings(paper_market_step_ms=50, paper_bench_symbols=100)
    )
    assert fast.step == timedelta(milliseconds=50)
    assert fast.is_known("SYM099")
    assert not fast.is_known("SYM100")
    assert fast.asset_class("SYM042").value == "equity"


async def test_the_app_builds_the_bench_market_from_its_settings(sqlite_url: str) -> None:
    from tests.harness import running_app, settings_for_tests

    settings = settings_for_tests(sqlite_url, paper_bench_symbols=100, paper_market_step_ms=50)
    async with running_app(settings) as harness:
        source = harness.state.ctx.paper_engine.quote_source
        assert source.step == timedelta(milliseconds=50)
        response = await harness.client.get(
            "/v1/quotes?symbols=SYM007", headers=harness.auth("bench-user")
        )
        assert response.status_code == 200, response.text
        assert "SYM007" in response.json()["quotes"]

"""The polling session with a real adapter (Robinhood crypto) against its fake over HTTP:
quotes by ``best_bid_ask`` once per interval for all symbols, marked ``poll``; refusals;
a failing broker is a gap, then ``resubscribed`` when polling works again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from app.brokers import errors
from app.brokers.base import (
    BarInterval,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    Support,
)
from app.brokers.market_data.polling import PollingMarketDataSession, polling_capabilities
from tests.brokers.market_data.clock import START, Clock
from tests.brokers.robinhood.support import Running
from tests.fakes.robinhood import FakeRobinhood, serve_asgi

PAIRS = frozenset({"BTC-USD", "ETH-USD"})


@contextlib.asynccontextmanager
async def robinhood(clock: Clock) -> AsyncIterator[Running]:
    fake = FakeRobinhood(clock=clock)
    account = fake.add_account()
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, account=account)
        try:
            yield running
        finally:
            await running.close_adapters()


class Reader:
    def __init__(self, session: PollingMarketDataSession) -> None:
        self.queue: asyncio.Queue[MarketEvent | BaseException] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(session))

    async def _run(self, session: PollingMarketDataSession) -> None:
        try:
            async for event in session.events():
                await self.queue.put(event)
        except Exception as exc:
            await self.queue.put(exc)

    async def take(self, count: int) -> list[MarketEvent | BaseException]:
        return [await asyncio.wait_for(self.queue.get(), 10) for _ in range(count)]


@contextlib.asynccontextmanager
async def reading(session: PollingMarketDataSession) -> AsyncIterator[Reader]:
    reader = Reader(session)
    try:
        yield reader
    finally:
        await session.close()
        await asyncio.wait_for(reader.task, 5)


def quote_polls(running: Running) -> list[str]:
    return [path for _, path in running.fake.requests if "best_bid_ask" in path]


async def test_quotes_are_polled_once_per_interval_for_every_symbol_and_marked_poll() -> None:
    clock = Clock()
    async with robinhood(clock) as running:
        adapter = running.adapter()
        session = PollingMarketDataSession(adapter, capabilities=polling_capabilities(0.05))
        await session.update(MarketDataSubscription(quotes=PAIRS))
        async with reading(session) as reader:
            first = await reader.take(2)
            clock.now += timedelta(seconds=1)  # the fake's next quotes
            second = await reader.take(2)
        for event in [*first, *second]:
            assert isinstance(event, MarketQuote)
            assert event.source is MarketDataSource.poll
            assert event.bid is not None
            assert event.ask is not None
            assert event.bid < event.ask
            assert event.bid_size is None
        assert {e.symbol for e in first} == PAIRS  # type: ignore[union-attr]
        assert {e.ts for e in first} == {START}  # type: ignore[union-attr]
        assert {e.ts for e in second} == {START + timedelta(seconds=1)}  # type: ignore[union-attr]
        expected = running.fake.quotes.quote("BTC-USD", START)
        [btc] = [e for e in first if isinstance(e, MarketQuote) and e.symbol == "BTC-USD"]
        assert (btc.bid, btc.ask) == (expected.bid, expected.ask)
        # One call per poll, both pairs in it (the broker takes a list).
        polls = quote_polls(running)
        assert polls
        assert all("symbol=BTC-USD" in p and "symbol=ETH-USD" in p for p in polls)
        assert session.polls == len(polls)


async def test_an_unchanged_quote_is_not_delivered_again() -> None:
    clock = Clock()
    async with robinhood(clock) as running:
        session = PollingMarketDataSession(
            running.adapter(), capabilities=polling_capabilities(0.02)
        )
        await session.update(MarketDataSubscription(quotes=frozenset({"BTC-USD"})))
        async with reading(session) as reader:
            [quote] = await reader.take(1)
            await asyncio.sleep(0.2)  # ten intervals
            assert len(quote_polls(running)) >= 5
            assert reader.queue.empty()  # four more polls, the same quote: nothing new
        assert isinstance(quote, MarketQuote)


async def test_channels_it_cannot_poll_and_too_many_symbols_are_refused_changing_nothing() -> None:
    clock = Clock()
    async with robinhood(clock) as running:
        caps = polling_capabilities(0.05, max_symbols=2)
        assert caps.quotes is Support.emulated
        assert caps.trades is Support.unsupported
        session = PollingMarketDataSession(running.adapter(), capabilities=caps)
        await session.update(MarketDataSubscription(quotes=frozenset({"ETH-USD"})))
        with pytest.raises(errors.MarketDataLimit, match="no trades stream"):
            await session.update(
                MarketDataSubscription(quotes=PAIRS, trades=frozenset({"BTC-USD"}))
            )
        with pytest.raises(errors.MarketDataLimit, match="no bars stream"):
            await session.update(
                MarketDataSubscription(bars=frozenset({(BarInterval.m1, "BTC-USD")}))
            )
        with pytest.raises(errors.MarketDataLimit, match="at most 2 symbols"):
            await session.update(
                MarketDataSubscription(quotes=frozenset({"BTC-USD", "ETH-USD", "DOGE-USD"}))
            )
        async with reading(session) as reader:
            [only] = await reader.take(1)
        assert isinstance(only, MarketQuote)
        assert only.symbol == "ETH-USD"
        assert all("symbol=BTC-USD" not in p for p in quote_polls(running))


async def test_a_failing_broker_is_a_gap_then_resubscribed_then_quotes_again() -> None:
    clock = Clock()
    async with robinhood(clock) as running:
        session = PollingMarketDataSession(
            running.adapter(), capabilities=polling_capabilities(0.05), max_backoff=0.2
        )
        await session.update(MarketDataSubscription(quotes=frozenset({"BTC-USD"})))
        async with reading(session) as reader:
            [before] = await reader.take(1)
            # Two polls' worth of 5xx (the adapter retries a read three times).
            running.fake.faults.server_errors = 6
            clock.now += timedelta(seconds=5)
            gap, back, after = await reader.take(3)
        assert isinstance(before, MarketQuote)
        assert isinstance(gap, MarketGap)
        assert "poll failed" in gap.reason
        assert gap.since <= datetime.now(UTC)
        assert isinstance(back, MarketResubscribed)
        assert isinstance(after, MarketQuote)
        assert after.ts == START + timedelta(seconds=5)
        assert running.fake.faults.server_errors == 0


async def test_a_revoked_key_is_a_gap_and_ends_the_session() -> None:
    clock = Clock()
    async with robinhood(clock) as running:
        session = PollingMarketDataSession(
            running.adapter(), capabilities=polling_capabilities(0.05)
        )
        await session.update(MarketDataSubscription(quotes=frozenset({"BTC-USD"})))
        async with reading(session) as reader:
            await reader.take(1)
            running.fake.revoke(running.account.api_key)
            clock.now += timedelta(seconds=1)
            gap, ended = await reader.take(2)
        assert isinstance(gap, MarketGap)
        assert isinstance(ended, errors.AuthenticationFailed)


async def test_symbols_are_polled_in_batches_where_the_broker_caps_a_call() -> None:
    clock = Clock()
    async with robinhood(clock) as running:
        session = PollingMarketDataSession(
            running.adapter(), capabilities=polling_capabilities(0.05), batch_size=1
        )
        assert session.requests_per_minute(2) == 2 * 60 / 0.05
        await session.update(MarketDataSubscription(quotes=PAIRS))
        async with reading(session) as reader:
            events = await reader.take(2)
        assert {e.symbol for e in events if isinstance(e, MarketQuote)} == PAIRS
        first_two = quote_polls(running)[:2]
        assert sorted(first_two) == sorted([p for p in first_two if p.count("symbol=") == 1])


async def test_an_adapter_without_a_poll_interval_has_no_polling_session() -> None:
    async with robinhood(Clock()) as running:
        adapter = running.adapter()
        streaming = MarketDataCapabilities(quotes=Support.native)  # a stream: no interval
        with pytest.raises(ValueError, match="no poll interval"):
            PollingMarketDataSession(adapter, capabilities=streaming)

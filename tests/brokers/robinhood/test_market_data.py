"""Robinhood crypto market data: no stream, so quotes are polled from ``best_bid_ask``
behind the same subscription (``market_data_session``), within the account's budget of 100
requests a minute shared with orders; over HTTP against the fake."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from app.brokers import errors
from app.brokers.base import (
    MarketDataSource,
    MarketDataSubscription,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    Support,
)
from app.brokers.market_data.polling import PollingMarketDataSession, polling_capabilities
from app.brokers.robinhood.adapter import ROBINHOOD_CAPABILITIES, RobinhoodAdapter
from tests.brokers.market_data.clock import START, Clock
from tests.brokers.market_data.reader import reading
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


def fast(adapter: RobinhoodAdapter, seconds: float = 0.05) -> RobinhoodAdapter:
    """The adapter polling every ``seconds`` (its other capabilities unchanged)."""
    adapter.capabilities = dataclasses.replace(
        ROBINHOOD_CAPABILITIES, market_data=polling_capabilities(seconds, max_symbols=20)
    )
    return adapter


def test_quotes_are_polled_within_the_account_budget_and_nothing_else_is_offered() -> None:
    caps = ROBINHOOD_CAPABILITIES.market_data
    assert caps.quotes is Support.emulated
    assert caps.trades is caps.bars is caps.greeks is Support.unsupported
    assert caps.poll_seconds is not None
    assert caps.max_symbols is not None
    # All symbols in one best_bid_ask call: at most an eighth of the 100 a minute.
    assert 60 / caps.poll_seconds <= 100 / 8


async def test_the_session_polls_best_bid_ask_and_delivers_quotes_marked_poll() -> None:
    clock = Clock()
    async with robinhood(clock) as running:
        session = fast(running.adapter()).market_data_session()
        assert isinstance(session, PollingMarketDataSession)
        assert session.requests_per_minute(20) == 60 / 0.05  # one call for every symbol
        await session.update(MarketDataSubscription(quotes=PAIRS))
        async with reading(session) as reader:
            first = await reader.take(2)
            clock.now += timedelta(seconds=1)
            second = await reader.take(2)
        for event in [*first, *second]:
            assert isinstance(event, MarketQuote)
            assert event.source is MarketDataSource.poll
            expected = running.fake.quotes.quote(event.symbol, event.ts)
            assert (event.bid, event.ask) == (expected.bid, expected.ask)
        assert {e.ts for e in first} == {START}  # type: ignore[union-attr]
        assert {e.ts for e in second} == {START + timedelta(seconds=1)}  # type: ignore[union-attr]
        polls = [p for _, p in running.fake.requests if "best_bid_ask" in p]
        assert all("symbol=BTC-USD" in p and "symbol=ETH-USD" in p for p in polls)


async def test_trades_and_too_many_symbols_are_refused_changing_nothing() -> None:
    async with robinhood(Clock()) as running:
        session = running.adapter().market_data_session()
        await session.update(MarketDataSubscription(quotes=frozenset({"BTC-USD"})))
        with pytest.raises(errors.MarketDataLimit, match="no trades stream"):
            await session.update(MarketDataSubscription(trades=PAIRS))
        many = frozenset(f"C{i}-USD" for i in range(21))
        with pytest.raises(errors.MarketDataLimit, match="at most 20 symbols"):
            await session.update(MarketDataSubscription(quotes=many))
        async with reading(session) as reader:
            [only] = await reader.take(1)
        assert isinstance(only, MarketQuote)
        assert only.symbol == "BTC-USD"


async def test_a_failing_poll_is_a_gap_then_resubscribed() -> None:
    clock = Clock()
    async with robinhood(clock) as running:
        session = fast(running.adapter()).market_data_session()
        await session.update(MarketDataSubscription(quotes=frozenset({"BTC-USD"})))
        async with reading(session) as reader:
            await reader.take(1)
            running.fake.faults.server_errors = 6  # two polls' worth (reads retry thrice)
            clock.now += timedelta(seconds=2)
            gap, back, after = await reader.take(3)
        assert isinstance(gap, MarketGap)
        assert isinstance(back, MarketResubscribed)
        assert isinstance(after, MarketQuote)
        assert after.ts == START + timedelta(seconds=2)

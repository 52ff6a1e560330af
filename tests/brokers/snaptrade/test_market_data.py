"""SnapTrade market data: no stream (webhooks only), so quotes are polled from
``/accounts/{id}/quotes`` (10 symbols a call) behind the same subscription, conservatively
within the 250 requests a minute per clientId that every user shares; over HTTP against
the fake."""

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
from app.brokers.snaptrade.adapter import SNAPTRADE_CAPABILITIES, SnaptradeAdapter
from tests.brokers.market_data.clock import START, Clock
from tests.brokers.market_data.reader import reading
from tests.brokers.snaptrade.support import Running
from tests.fakes.snaptrade import FakeSnapTrade, serve_asgi

SYMBOLS = frozenset({"AAPL", "MSFT"})


@contextlib.asynccontextmanager
async def snaptrade(clock: Clock) -> AsyncIterator[Running]:
    fake = FakeSnapTrade(clock=clock)
    user = fake.add_user()
    authorization = fake.link(user, "SCHWAB")
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, user=user, authorization=authorization)
        try:
            yield running
        finally:
            await running.close_adapters()


def fast(adapter: SnaptradeAdapter, seconds: float = 0.05) -> SnaptradeAdapter:
    adapter.capabilities = dataclasses.replace(
        SNAPTRADE_CAPABILITIES, market_data=polling_capabilities(seconds, max_symbols=10)
    )
    return adapter


def quote_calls(running: Running) -> list[str]:
    return [path for _, path in running.fake.requests if path.endswith("/quotes")]


def test_a_session_spends_a_small_share_of_the_budget_every_user_shares() -> None:
    caps = SNAPTRADE_CAPABILITIES.market_data
    assert caps.quotes is Support.emulated
    assert caps.trades is caps.bars is caps.greeks is Support.unsupported
    assert caps.poll_seconds is not None
    assert caps.max_symbols == 10  # "Returns a maximum of 10 quotes": one call a poll
    assert 60 / caps.poll_seconds <= 250 / 100  # a hundred users polling fit the 250


async def test_quotes_are_polled_through_the_users_account_and_marked_poll() -> None:
    clock = Clock()
    async with snaptrade(clock) as running:
        session = fast(running.adapter()).market_data_session()
        assert isinstance(session, PollingMarketDataSession)
        await session.update(MarketDataSubscription(quotes=SYMBOLS))
        async with reading(session) as reader:
            first = await reader.take(2)
            clock.now += timedelta(seconds=1)
            second = await reader.take(2)
        for event, at in [(e, START) for e in first] + [(e, clock.now) for e in second]:
            assert isinstance(event, MarketQuote)
            assert event.source is MarketDataSource.poll
            assert event.ts.tzinfo is not None
            expected = running.fake.quotes.quote(event.symbol, at)
            assert (event.bid, event.ask) == (expected.bid, expected.ask)
        assert {e.symbol for e in first} == SYMBOLS  # type: ignore[union-attr]
        calls = quote_calls(running)
        assert calls  # one call a poll for both symbols
        assert session.polls == len(calls)


async def test_more_than_ten_symbols_or_a_trades_stream_are_refused_changing_nothing() -> None:
    async with snaptrade(Clock()) as running:
        session = running.adapter().market_data_session()
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
        eleven = frozenset(f"S{i}" for i in range(11))
        with pytest.raises(errors.MarketDataLimit, match="at most 10 symbols"):
            await session.update(MarketDataSubscription(quotes=eleven))
        with pytest.raises(errors.MarketDataLimit, match="no trades stream"):
            await session.update(MarketDataSubscription(trades=SYMBOLS))
        async with reading(session) as reader:
            [only] = await reader.take(1)
        assert isinstance(only, MarketQuote)
        assert only.symbol == "AAPL"


async def test_a_failing_poll_is_a_gap_then_resubscribed() -> None:
    clock = Clock()
    async with snaptrade(clock) as running:
        session = fast(running.adapter()).market_data_session()
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
        async with reading(session) as reader:
            await reader.take(1)
            running.fake.faults.server_errors = 6
            running.fake.faults.server_errors_path = "/quotes$"
            clock.now += timedelta(seconds=2)
            gap, back, after = await reader.take(3)
        assert isinstance(gap, MarketGap)
        assert isinstance(back, MarketResubscribed)
        assert isinstance(after, MarketQuote)
        assert after.bid == running.fake.quotes.quote("AAPL", clock.now).bid

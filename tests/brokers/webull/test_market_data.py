"""Webull market data: its quote push (MQTT/gRPC) is not reachable here, so snapshots are
polled behind the same subscription within the query pacer's budget (stocks and crypto in
one call each); over HTTP against the fake."""

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
from app.brokers.webull.adapter import WEBULL_CAPABILITIES, WebullAdapter
from app.config import Settings
from tests.brokers.market_data.clock import START, Clock
from tests.brokers.market_data.reader import reading
from tests.brokers.webull.support import Running
from tests.fakes.webull import FakeWebull, serve_asgi

SYMBOLS = frozenset({"AAPL", "BTC-USD"})


@contextlib.asynccontextmanager
async def webull(clock: Clock) -> AsyncIterator[Running]:
    fake = FakeWebull(clock=clock)
    app = fake.add_app(two_factor=False)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, app=app)
        try:
            yield running
        finally:
            await running.close_adapters()


def fast(adapter: WebullAdapter, seconds: float = 0.05) -> WebullAdapter:
    adapter.capabilities = dataclasses.replace(
        WEBULL_CAPABILITIES, market_data=polling_capabilities(seconds, max_symbols=20)
    )
    return adapter


def test_polling_stays_within_the_query_budget() -> None:
    caps = WEBULL_CAPABILITIES.market_data
    assert caps.quotes is Support.emulated
    assert caps.trades is caps.bars is caps.greeks is Support.unsupported
    assert caps.poll_seconds is not None
    # At most three snapshot calls a poll (stocks, crypto, 20 options) against the default
    # read pacer, shared with the order sweep: under a third of it.
    per_minute = Settings.model_fields["webull_queries_per_second"].default * 60
    assert 3 * 60 / caps.poll_seconds <= per_minute / 3
    assert caps.max_symbols == 20


async def test_snapshots_are_polled_and_delivered_as_quotes_marked_poll() -> None:
    clock = Clock()
    async with webull(clock) as running:
        session = fast(await running.adapter()).market_data_session()
        assert isinstance(session, PollingMarketDataSession)
        await session.update(MarketDataSubscription(quotes=SYMBOLS))
        async with reading(session) as reader:
            first = await reader.take(2)
            clock.now += timedelta(seconds=1)
            second = await reader.take(2)
        for event in [*first, *second]:
            assert isinstance(event, MarketQuote)
            assert event.source is MarketDataSource.poll
            expected = running.fake.quotes.quote(event.symbol, event.ts)
            assert (event.bid, event.ask) == (expected.bid, expected.ask)
        assert {e.symbol for e in first} == SYMBOLS  # type: ignore[union-attr]
        assert {e.ts for e in first} == {START}  # type: ignore[union-attr]
        assert {e.ts for e in second} == {START + timedelta(seconds=1)}  # type: ignore[union-attr]


async def test_bars_and_too_many_symbols_are_refused_changing_nothing() -> None:
    async with webull(Clock()) as running:
        session = (await running.adapter()).market_data_session()
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
        with pytest.raises(errors.MarketDataLimit, match="no greeks stream"):
            await session.update(MarketDataSubscription(greeks=frozenset({"AAPL"})))
        many = frozenset(f"S{i}" for i in range(21))
        with pytest.raises(errors.MarketDataLimit, match="at most 20 symbols"):
            await session.update(MarketDataSubscription(quotes=many))
        async with reading(session) as reader:
            [only] = await reader.take(1)
        assert isinstance(only, MarketQuote)
        assert only.symbol == "AAPL"


async def test_a_failing_poll_is_a_gap_then_resubscribed() -> None:
    clock = Clock()
    async with webull(clock) as running:
        session = fast(await running.adapter()).market_data_session()
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
        async with reading(session) as reader:
            await reader.take(1)
            running.fake.faults.server_errors = 6
            clock.now += timedelta(seconds=2)
            gap, back, after = await reader.take(3)
        assert isinstance(gap, MarketGap)
        assert isinstance(back, MarketResubscribed)
        assert isinstance(after, MarketQuote)
        assert after.ts == START + timedelta(seconds=2)

"""IBKR market data over a real socket against the fake gateway's WebSocket: the tickle
session cookie, ``smd``/``umd`` per conid, field deltas merged into the last-known state,
option greeks (IV percent to a fraction), ``tic`` keepalive, ``smd`` re-issued before the
expiry, gaps and resubscription."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    BarInterval,
    GreeksUpdate,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    SupportsMarketData,
)
from app.brokers.ibkr.market_data import IbkrMarketSession
from tests.brokers.ibkr import option_support
from tests.brokers.ibkr.support import Running, running_fake
from tests.brokers.market_data.reader import Reader, reading


@contextlib.asynccontextmanager
async def session_of(running: Running, **timing: float) -> AsyncIterator[IbkrMarketSession]:
    adapter = running.adapter()
    assert isinstance(adapter, SupportsMarketData)
    session = adapter.market_data_session()
    assert isinstance(session, IbkrMarketSession)
    for name, value in timing.items():
        setattr(session, name, value)
    try:
        yield session
    finally:
        await session.close()


async def until(reader: Reader, wanted: type, count: int = 1) -> list[MarketEvent]:
    seen: list[MarketEvent] = []
    while sum(isinstance(e, wanted) for e in seen) < count:
        [event] = await reader.take(1)
        assert not isinstance(event, BaseException), event
        seen.append(event)
    return seen


def smd(running: Running) -> list[str]:
    return [t for t in running.fake.market.received if t.startswith(("smd+", "umd+"))]


async def test_quotes_arrive_merged_from_deltas_with_the_tickle_cookie() -> None:
    async with running_fake() as running, session_of(running) as session:
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL", "MSFT"})))
        async with reading(session) as reader:
            seen = await until(reader, MarketQuote, 6)
            held = running.fake.market.subscribed()
        conids = running.fake.conids
        assert set(held) == {conids["AAPL"], conids["MSFT"]}
        assert sorted(smd(running)) == sorted(
            f'smd+{conids[s]}+{{"fields": ["31", "84", "85", "86", "88"]}}'
            for s in ("AAPL", "MSFT")
        )
        for quote in [e for e in seen if isinstance(e, MarketQuote)]:
            # Every quote is whole although later messages carry only changed fields.
            assert quote.source is MarketDataSource.stream
            assert isinstance(quote.bid, Decimal)
            assert isinstance(quote.ask, Decimal)
            assert quote.bid < quote.ask
            assert isinstance(quote.bid_size, Decimal)
            assert quote.ts.utcoffset() is not None
        assert running.fake.market.refused == 0


async def test_option_greeks_stream_with_iv_as_a_fraction() -> None:
    async with running_fake() as running, session_of(running) as session:
        call = option_support.contract(running.fake, 0)
        await session.update(MarketDataSubscription(greeks=frozenset({call.symbol})))
        async with reading(session) as reader:
            [update] = [e for e in await until(reader, GreeksUpdate) if isinstance(e, GreeksUpdate)]
        expected = running.fake.options.snapshot_fields(call, update.ts)
        assert update.symbol == call.symbol
        assert update.greeks.delta == Decimal(expected["7308"])
        iv = update.greeks.iv
        assert iv is not None
        assert iv == Decimal(expected["7633"].rstrip("%")) / 100
        assert Decimal(0) < iv < Decimal(5)
        assert update.greeks.rho is None


async def test_updates_are_additive_per_conid() -> None:
    async with running_fake() as running, session_of(running) as session:
        conids = running.fake.conids
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
        async with reading(session) as reader:
            await until(reader, MarketQuote)
            before = len(smd(running))
            await session.update(MarketDataSubscription(quotes=frozenset({"AAPL", "MSFT"})))
            await session.update(MarketDataSubscription(quotes=frozenset({"MSFT"})))
            for _ in range(500):
                if set(running.fake.market.subscribed()) == {conids["MSFT"]}:
                    break
                await reader.take(1)
        changes = smd(running)[before:]
        assert changes == [
            f'smd+{conids["MSFT"]}+{{"fields": ["31", "84", "85", "86", "88"]}}',
            f"umd+{conids['AAPL']}+{{}}",
        ]


async def test_an_unknown_symbol_or_a_channel_it_lacks_changes_nothing() -> None:
    async with running_fake() as running, session_of(running) as session:
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
        with pytest.raises(errors.UnknownSymbol):
            await session.update(MarketDataSubscription(quotes=frozenset({"AAPL", "NOPE"})))
        with pytest.raises(errors.MarketDataLimit, match="no bars stream"):
            await session.update(MarketDataSubscription(bars=frozenset({(BarInterval.m1, "AAPL")})))
        assert session.wanted == MarketDataSubscription(quotes=frozenset({"AAPL"}))
        async with reading(session) as reader:
            [quote] = [e for e in await until(reader, MarketQuote) if isinstance(e, MarketQuote)]
        assert quote.symbol == "AAPL"


async def test_tic_keepalive_and_smd_reissued_before_expiry() -> None:
    async with (
        running_fake() as running,
        session_of(running, tic_seconds=0.1, renew_seconds=0.3) as session,
    ):
        running.fake.market.expiry_seconds = 0.5
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
        async with reading(session) as reader:
            for _ in range(2000):  # about a second of quotes: two expiries' worth
                await reader.take(1)
                if session.renewals >= 3:
                    break
            await until(reader, MarketQuote)
        assert session.renewals >= 3
        assert "tic" in running.fake.market.received
        assert running.fake.market.expired == 0  # re-issued in time, never expired


async def test_a_drop_is_a_gap_then_everything_resubscribed_with_a_new_session() -> None:
    async with running_fake() as running, session_of(running) as session:
        call = option_support.contract(running.fake, 1)
        wanted = MarketDataSubscription(quotes=frozenset({"AAPL"}), greeks=frozenset({call.symbol}))
        await session.update(wanted)
        async with reading(session) as reader:
            await until(reader, GreeksUpdate)
            running.fake.market.drop()
            seen = await until(reader, MarketResubscribed)
            await until(reader, MarketQuote)
            held = running.fake.market.subscribed()
        assert sum(isinstance(e, MarketGap) for e in seen) == 1
        assert running.fake.market.connections_opened == 2
        # The tickle's session id is reused while fresh: one tickle, two connections.
        assert [p for _, p in running.fake.requests].count("/v1/api/tickle") == 1
        assert len(held) == 2


async def test_silence_reconnects_and_a_logged_out_gateway_ends_the_session() -> None:
    async with running_fake() as running, session_of(running) as session:
        session.idle_timeout = 0.3
        await session.update(MarketDataSubscription(quotes=frozenset({"AAPL"})))
        async with reading(session) as reader:
            await until(reader, MarketQuote)
            running.fake.market.faults.silent = True
            [gap] = await reader.take(1)
            running.fake.market.faults.silent = False
            await until(reader, MarketResubscribed)
            assert isinstance(gap, MarketGap)
            assert session.silences >= 1
            running.fake.authenticated = False
            running.fake.market.drop()
            events = await reader.take(2)
        assert isinstance(events[0], MarketGap)
        assert isinstance(events[-1], errors.AuthenticationFailed)


async def test_history_bars_come_from_rest_in_pages_walking_forward() -> None:
    async with running_fake() as running:
        adapter = running.adapter()
        now = datetime.now(UTC)
        end = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
        start = end - timedelta(minutes=600)
        bars = await adapter.get_bars("AAPL", BarInterval.m1, start, end, 1000)
        expected = running.fake.market.data.history("AAPL", BarInterval.m1, start, end, 1000, now)
        assert [(b.start, b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
            (b.start, b.open, b.high, b.low, b.close, b.volume) for b in expected
        ]
        assert len(bars) == 600
        assert all(b.final and b.source is MarketDataSource.history for b in bars)
        calls = [p for _, p in running.fake.requests if p.endswith("/marketdata/history")]
        assert len(calls) == 2  # 8 hours of 1-minute bars a request
        first = await adapter.get_bars("AAPL", BarInterval.m1, start, end, 5)
        assert [b.start for b in first] == [b.start for b in bars[:5]]
        with pytest.raises(errors.UnknownSymbol):
            await adapter.get_bars("NOPE", BarInterval.m1, start, end, 5)

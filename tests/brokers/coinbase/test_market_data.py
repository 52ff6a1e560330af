"""Coinbase market data over a real socket against the fake's market WebSocket (ticker,
market_trades, candles, heartbeats, sequence numbers) and REST candles."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    Bar,
    BarInterval,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    MarketTrade,
    SupportsBarHistory,
    SupportsMarketData,
)
from app.brokers.coinbase.adapter import CoinbaseAdapter
from app.brokers.coinbase.market_data import CoinbaseMarketSession
from tests.brokers.coinbase.support import Running, running_fake
from tests.brokers.market_data.reader import Reader, reading
from tests.fakes.coinbase.market_stream import MARKET_PATH

BTC, ETH = "BTC-USD", "ETH-USD"


def market_adapter(running: Running, **overrides: object) -> CoinbaseAdapter:
    return running.adapter(coinbase_market_ws_url=running.ws_url + MARKET_PATH, **overrides)


@contextlib.asynccontextmanager
async def session_of(running: Running, idle: float = 15.0) -> AsyncIterator[CoinbaseMarketSession]:
    adapter = market_adapter(running, coinbase_stream_idle_seconds=idle)
    assert isinstance(adapter, SupportsMarketData)
    session = adapter.market_data_session()
    try:
        yield session
    finally:
        await session.close()


async def until(reader: Reader, wanted: type, count: int = 1) -> list[MarketEvent]:
    """Events until ``count`` of type ``wanted`` arrived (the others are returned too)."""
    seen: list[MarketEvent] = []
    while sum(isinstance(e, wanted) for e in seen) < count:
        [event] = await reader.take(1)
        assert not isinstance(event, BaseException), event
        seen.append(event)
    return seen


async def test_quotes_trades_and_bars_arrive_normalised_from_each_channel() -> None:
    async with running_fake() as running, session_of(running) as session:
        wanted = MarketDataSubscription(
            quotes=frozenset({BTC}),
            trades=frozenset({BTC}),
            bars=frozenset({(BarInterval.m5, BTC)}),
        )
        await session.update(wanted)
        async with reading(session) as reader:
            seen = await until(reader, MarketTrade, 2)
            seen += await until(reader, Bar, 2)
            seen += await until(reader, MarketQuote)
        quotes = [e for e in seen if isinstance(e, MarketQuote)]
        trades = [e for e in seen if isinstance(e, MarketTrade)]
        bars = [e for e in seen if isinstance(e, Bar)]
        data = running.fake.market.data
        for quote in quotes:
            assert quote.symbol == BTC
            assert quote.source is MarketDataSource.stream
            assert quote.ts.tzinfo is UTC or quote.ts.utcoffset() == timedelta(0)
            assert isinstance(quote.bid, Decimal)
            assert quote.bid is not None
            assert quote.ask is not None
            assert quote.bid < quote.ask
            assert isinstance(quote.bid_size, Decimal)
        for trade in trades:
            expected = data.trade(BTC, data.step_at(trade.ts))
            assert (trade.price, trade.size) == (expected.price, expected.size)
        # The bucket being updated is forming; it turns final only once a later bucket
        # arrives, which happens here when the test runs across a 5-minute boundary.
        assert any(not bar.final for bar in bars)
        for bar in bars:
            assert bar.interval is BarInterval.m5
            assert not bar.final or bar.start + timedelta(minutes=5) <= datetime.now(UTC)
            assert bar.start.minute % 5 == 0
            assert bar.low <= bar.close <= bar.high
        # Heartbeats first, then one subscribe per channel, each with a JWT signed by the
        # connection's key (no ``uri`` claim).
        messages = running.fake.market.messages
        assert [m["channel"] for m in messages] == [
            "heartbeats",
            "ticker",
            "market_trades",
            "candles",
        ]
        assert all(m["type"] == "subscribe" and m["jwt"] for m in messages)
        assert {"BTC-USD"} == set(messages[1]["product_ids"])
        assert running.fake.claims
        assert all("uri" not in c for c in running.fake.claims)


async def test_one_minute_bars_are_built_from_market_trades() -> None:
    async with running_fake() as running, session_of(running) as session:
        await session.update(MarketDataSubscription(bars=frozenset({(BarInterval.m1, ETH)})))
        async with reading(session) as reader:
            [bar] = [e for e in await until(reader, Bar) if isinstance(e, Bar)]
            held = running.fake.market.subscribed()
        assert bar.interval is BarInterval.m1
        assert bar.source is MarketDataSource.aggregated
        assert not bar.final
        # market_trades carries the trades; nothing asked the ticker or candles.
        assert held == {"ticker": set(), "market_trades": {ETH}, "candles": set()}


async def test_updates_are_additive_per_channel_and_product() -> None:
    async with running_fake() as running, session_of(running) as session:
        await session.update(MarketDataSubscription(quotes=frozenset({BTC})))
        async with reading(session) as reader:
            await until(reader, MarketQuote)
            market = running.fake.market
            sent = len(market.messages)
            await session.update(
                MarketDataSubscription(quotes=frozenset({BTC, ETH}), trades=frozenset({ETH}))
            )
            await session.update(
                MarketDataSubscription(quotes=frozenset({ETH}), trades=frozenset({ETH}))
            )
            for _ in range(500):  # until the fake applied the unsubscribe
                if market.subscribed()["ticker"] == {ETH}:
                    break
                await reader.take(1)
            later = await until(reader, MarketQuote, 3)
            held = market.subscribed()
        changes = [(m["type"], m["channel"], m["product_ids"]) for m in market.messages[sent:]]
        assert changes == [
            ("subscribe", "ticker", [ETH]),
            ("subscribe", "market_trades", [ETH]),
            ("unsubscribe", "ticker", [BTC]),
        ]
        assert held == {"ticker": {ETH}, "market_trades": {ETH}, "candles": set()}
        assert {e.symbol for e in later[-1:] if isinstance(e, MarketQuote)} == {ETH}


async def test_a_sequence_gap_is_a_gap_then_everything_is_resubscribed() -> None:
    async with running_fake() as running, session_of(running) as session:
        wanted = MarketDataSubscription(quotes=frozenset({BTC, ETH}), trades=frozenset({ETH}))
        await session.update(wanted)
        async with reading(session) as reader:
            await until(reader, MarketQuote)
            running.fake.market.faults.skip_messages = 1
            seen = await until(reader, MarketResubscribed)
            after = await until(reader, MarketQuote)
            held = running.fake.market.subscribed()
        gaps = [e for e in seen if isinstance(e, MarketGap)]
        assert len(gaps) == 1
        assert seen.index(gaps[0]) < len(seen) - 1
        assert session.sequence_gaps == 1
        assert running.fake.market.connections_opened == 2
        assert held == {
            "ticker": {BTC, ETH},
            "market_trades": {ETH},
            "candles": set(),
        }
        assert isinstance(after[-1], MarketQuote)


async def test_a_dropped_connection_is_a_gap_then_resubscribed() -> None:
    async with running_fake() as running, session_of(running) as session:
        await session.update(MarketDataSubscription(quotes=frozenset({BTC})))
        async with reading(session) as reader:
            await until(reader, MarketQuote)
            running.fake.market.drop()
            seen = await until(reader, MarketResubscribed)
            await until(reader, MarketQuote)
            held = running.fake.market.subscribed()
        assert sum(isinstance(e, MarketGap) for e in seen) == 1
        assert held["ticker"] == {BTC}
        assert running.fake.market.connections_opened == 2


async def test_silence_past_the_heartbeat_timeout_reconnects() -> None:
    async with running_fake() as running, session_of(running, idle=0.3) as session:
        running.fake.market.heartbeat_seconds = 0.05
        await session.update(MarketDataSubscription(quotes=frozenset({BTC})))
        async with reading(session) as reader:
            await until(reader, MarketQuote)
            running.fake.market.faults.silent = True
            [gap] = await reader.take(1)
            running.fake.market.faults.silent = False
            seen = await until(reader, MarketResubscribed)
        assert isinstance(gap, MarketGap)
        assert session.silences >= 1
        assert all(not isinstance(e, MarketGap) for e in seen)  # one gap for the outage


async def test_channels_and_intervals_it_lacks_are_refused_changing_nothing() -> None:
    async with running_fake() as running, session_of(running) as session:
        await session.update(MarketDataSubscription(quotes=frozenset({BTC})))
        async with reading(session) as reader:
            await until(reader, MarketQuote)
            sent = len(running.fake.market.messages)
            with pytest.raises(errors.MarketDataLimit, match="no greeks stream"):
                await session.update(MarketDataSubscription(greeks=frozenset({BTC})))
            with pytest.raises(errors.MarketDataLimit, match="streams no 15m bars"):
                await session.update(
                    MarketDataSubscription(bars=frozenset({(BarInterval.m15, BTC)}))
                )
        assert len(running.fake.market.messages) == sent
        assert session.wanted == MarketDataSubscription(quotes=frozenset({BTC}))


async def test_history_bars_come_from_rest_candles_in_pages_of_350() -> None:
    async with running_fake() as running:
        adapter = market_adapter(running)
        assert isinstance(adapter, SupportsBarHistory)
        now = datetime.now(UTC)
        end = now.replace(second=0, microsecond=0)
        start = end - timedelta(minutes=400)
        bars = await adapter.get_bars(BTC, BarInterval.m1, start, end, 1000)
        expected = running.fake.market.data.history(BTC, BarInterval.m1, start, end, 1000, now)
        assert [(b.start, b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
            (b.start, b.open, b.high, b.low, b.close, b.volume) for b in expected
        ]
        assert len(bars) == 400
        assert all(b.final and b.source is MarketDataSource.history for b in bars)
        assert all(b.vwap is None and b.trade_count is None for b in bars)
        calls = [p for _, p in running.fake.requests if p.endswith("/candles")]
        assert calls == ["/api/v3/brokerage/products/BTC-USD/candles"] * 2
        limited = await adapter.get_bars(BTC, BarInterval.h1, start, end, 3)
        assert len(limited) == 3
        assert [b.start for b in limited] == sorted(b.start for b in limited)


async def test_a_candle_is_forming_until_a_later_bucket_arrives_then_final() -> None:
    # Wire messages as the candles channel sends them (the session is not connected: the
    # codec alone, fed in order).
    session = CoinbaseMarketSession("ws://unused", jwt=None)
    await session.update(MarketDataSubscription(bars=frozenset({(BarInterval.m5, BTC)})))
    now = datetime(2026, 12, 4, 15, 7, tzinfo=UTC)

    def candle(start: int, close: str, number: int) -> dict[str, object]:
        row = {"start": str(start), "open": "100", "high": "102", "low": "99",
               "close": close, "volume": "1.5", "product_id": BTC}  # fmt: skip
        events = [{"type": "update", "candles": [row]}]
        return {"channel": "candles", "timestamp": "2026-12-04T15:07:00.123456789Z",
                "sequence_num": number, "events": events}  # fmt: skip

    first = int(datetime(2026, 12, 4, 15, 5, tzinfo=UTC).timestamp())
    [forming] = session._events(candle(first, "101", 1), now)
    [again] = session._events(candle(first, "101.5", 2), now)
    final, nxt = session._events(candle(first + 300, "103", 3), now)
    assert isinstance(forming, Bar)
    assert not forming.final
    assert isinstance(again, Bar)
    assert again.close == Decimal("101.5")
    assert isinstance(final, Bar)
    assert final.final
    assert final.close == Decimal("101.5")
    assert final.start == forming.start
    assert isinstance(nxt, Bar)
    assert not nxt.final
    assert session._events(candle(first, "90", 4), now) == []  # an older bucket: ignored


async def test_a_slow_connection_delays_but_loses_nothing() -> None:
    async with running_fake() as running, session_of(running) as session:
        running.fake.market.faults.slow = 0.02
        await session.update(MarketDataSubscription(quotes=frozenset({BTC, ETH})))
        async with reading(session) as reader:
            seen = await until(reader, MarketQuote, 10)
        assert not any(isinstance(e, MarketGap) for e in seen)
        assert session.sequence_gaps == 0
        assert running.fake.market.connections_opened == 1

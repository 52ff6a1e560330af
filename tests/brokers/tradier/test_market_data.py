"""Tradier market data over a real WebSocket to the fake (set-replacing payloads, a new
session per connection, bars built from trades) and REST bars from the fake's history."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    Bar,
    BarInterval,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    MarketTrade,
    Support,
    SupportsBarHistory,
    SupportsMarketData,
)
from app.brokers.market_data.bars import window_start
from app.brokers.tradier.adapter import TRADIER_CAPABILITIES
from app.brokers.tradier.market_data import TradierMarketSession, lines
from tests.brokers.tradier.support import Running, running_fake

WAIT = 20.0
NEW_YORK = ZoneInfo("America/New_York")


def session(run: Running, **options: Any) -> TradierMarketSession:
    adapter = run.adapter()
    timing: dict[str, Any] = {"max_backoff": 0.2, "handshake_timeout": 5.0}
    timing.update(options)
    url = "ws" + run.url.removeprefix("http") + "/v1/markets/events"
    return TradierMarketSession(url, adapter.create_market_session, **timing)


@contextlib.asynccontextmanager
async def consumed(md: TradierMarketSession) -> AsyncIterator[asyncio.Queue[object]]:
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pull() -> None:
        try:
            async for event in md.events():
                queue.put_nowait(event)
        except Exception as exc:
            queue.put_nowait(exc)

    task = asyncio.create_task(pull())
    try:
        yield queue
    finally:
        await md.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_matching(
    queue: asyncio.Queue[object], check: Callable[[object], bool]
) -> MarketEvent:
    async with asyncio.timeout(WAIT):
        while True:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if check(item):
                return item  # type: ignore[return-value]


async def eventually(check: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def subs(**kwargs: Any) -> MarketDataSubscription:
    return MarketDataSubscription(**{k: frozenset(v) for k, v in kwargs.items()})


async def test_events_normalised_and_bars_built_from_trades() -> None:
    async with running_fake() as run:
        md = session(run)
        await md.update(subs(quotes={"AAPL"}, trades={"MSFT"}, bars={(BarInterval.m1, "MSFT")}))
        async with consumed(md) as queue:
            quote = await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            trade = await next_matching(queue, lambda e: isinstance(e, MarketTrade))
            bar = await next_matching(queue, lambda e: isinstance(e, Bar))
        [payload] = run.fake.market.payloads
        assert payload["symbols"] == ["AAPL", "MSFT"]
        assert sorted(payload["filter"]) == ["quote", "trade"]
        assert payload["linebreak"] is True
        assert payload["sessionid"] in run.fake.market.sessions
        assert isinstance(quote, MarketQuote)
        assert quote.symbol == "AAPL"
        assert isinstance(quote.bid, Decimal)
        assert isinstance(quote.ask_size, Decimal)
        assert quote.ts.tzinfo is UTC
        assert quote.source is MarketDataSource.stream
        assert isinstance(trade, MarketTrade)
        assert trade.symbol == "MSFT"
        assert isinstance(trade.price, Decimal)
        assert trade.ts.tzinfo is UTC
        assert isinstance(bar, Bar)
        assert bar.symbol == "MSFT"
        assert bar.interval is BarInterval.m1
        assert bar.source is MarketDataSource.aggregated  # Tradier streams no bars
        assert bar.start == window_start(trade.ts, BarInterval.m1)
        assert not bar.final


async def test_update_resends_the_whole_set() -> None:
    async with running_fake() as run:
        md = session(run)
        await md.update(subs(quotes={"AAPL", "MSFT"}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            await md.update(subs(quotes={"AAPL", "SPY"}))
            await eventually(lambda: len(run.fake.market.payloads) == 2)
            await next_matching(queue, lambda e: isinstance(e, MarketQuote) and e.symbol == "SPY")
            for _ in range(6):
                event = await next_matching(queue, lambda e: isinstance(e, MarketQuote))
                assert isinstance(event, MarketQuote)
                assert event.symbol in {"AAPL", "SPY"}
        first, second = run.fake.market.payloads
        assert second["symbols"] == ["AAPL", "SPY"]  # the whole set, not a diff
        assert second["sessionid"] == first["sessionid"]
        assert second["filter"] == ["quote"]


async def test_caps_refuse_and_change_nothing() -> None:
    async with running_fake() as run:
        caps = MarketDataCapabilities(
            quotes=Support.native,
            trades=Support.native,
            bars=Support.emulated,
            bar_intervals=frozenset({BarInterval.m1}),
            max_symbols=2,
        )
        md = session(run, capabilities=caps)
        await md.update(subs(quotes={"AAPL", "MSFT"}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            with pytest.raises(errors.MarketDataLimit):
                await md.update(subs(quotes={"AAPL", "MSFT", "SPY"}))
            with pytest.raises(errors.MarketDataLimit):
                await md.update(subs(greeks={"AAPL261218C00150000"}))  # no greeks stream
            with pytest.raises(errors.MarketDataLimit):
                await md.update(subs(bars={(BarInterval.m5, "AAPL")}))  # 1m only
            await asyncio.sleep(0.2)
        assert len(run.fake.market.payloads) == 1
        assert md.wanted == subs(quotes={"AAPL", "MSFT"})


async def test_drop_gives_gap_then_resubscribed_on_a_new_session() -> None:
    async with running_fake() as run:
        md = session(run)
        await md.update(subs(quotes={"AAPL"}, bars={(BarInterval.m1, "SPY")}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            run.fake.market.drop()
            gap = await next_matching(
                queue, lambda e: isinstance(e, MarketGap | MarketResubscribed)
            )
            assert isinstance(gap, MarketGap)
            back = await next_matching(
                queue, lambda e: not isinstance(e, MarketQuote | MarketTrade | Bar)
            )
            assert isinstance(back, MarketResubscribed)
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
        first, second = run.fake.market.payloads[:2]
        assert second["sessionid"] != first["sessionid"]  # a new session per connection
        assert second["symbols"] == first["symbols"] == ["AAPL", "SPY"]
        assert md.sessions_created == 2


async def test_silence_is_detected() -> None:
    async with running_fake() as run:
        md = session(run, idle_timeout=0.5)
        await md.update(subs(quotes={"AAPL"}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            run.fake.market.faults.silent = True
            await next_matching(queue, lambda e: isinstance(e, MarketGap))
            assert md.silences >= 1
            run.fake.market.faults.silent = False
            await next_matching(queue, lambda e: isinstance(e, MarketResubscribed))
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))


async def test_refused_token_is_fatal() -> None:
    async with running_fake() as run:
        md = session(run)
        run.fake.revoke(run.user.token)
        await md.update(subs(quotes={"AAPL"}))
        async with consumed(md) as queue:
            assert isinstance(await next_matching(queue, lambda e: True), MarketGap)
            failure = await asyncio.wait_for(queue.get(), WAIT)
        assert isinstance(failure, errors.AuthenticationFailed)
        assert run.fake.market.connections_opened == 0


def test_lines_split_payloads_and_skip_keepalive_newlines() -> None:
    frame = (
        '{"type":"quote","symbol":"SPY","bid":281.84}\n'
        "\n"  # a bare newline (keepalive)
        '{"type":"trade","symbol":"SPY","price":"281.85"}\n'
    )
    parsed = list(lines(frame))
    assert [p["type"] for p in parsed] == ["quote", "trade"]
    assert parsed[0]["bid"] == Decimal("281.84")
    assert list(lines("\n")) == []


async def test_adapter_offers_market_data_and_bars() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsMarketData)
        assert isinstance(adapter, SupportsBarHistory)
        caps = TRADIER_CAPABILITIES.market_data
        assert caps.max_sessions == 1
        assert caps.bar_intervals == frozenset({BarInterval.m1})
        assert caps.history_intervals == frozenset(
            {BarInterval.m1, BarInterval.m5, BarInterval.m15, BarInterval.d1}
        )
        md = adapter.market_data_session()
        await md.close()


async def test_rest_bars_from_timesales_and_history() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        now = datetime.now(UTC)
        end = window_start(now, BarInterval.m5)
        start = end - timedelta(minutes=30)
        bars = await adapter.get_bars("AAPL", BarInterval.m5, start, end, 100)
        expected = run.fake.market.data.history("AAPL", BarInterval.m5, start, end, 100, now)
        assert [b.start for b in bars] == [b.start for b in expected]
        assert len(bars) == 6
        for got, want in zip(bars, expected, strict=True):
            assert (got.open, got.high, got.low, got.close) == (
                want.open,
                want.high,
                want.low,
                want.close,
            )
            assert got.volume == want.volume
            assert got.final
            assert got.source is MarketDataSource.history
            assert got.start.tzinfo is UTC
        request = [r for r in run.fake.recorded if r.path == "/v1/markets/timesales"][-1]
        assert request.query["interval"] == "5min"
        assert request.query["session_filter"] == "all"
        # start/end are New York wall-clock minutes
        assert request.query["start"] == start.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M")

        few = await adapter.get_bars("AAPL", BarInterval.m5, start, end, 2)
        assert [b.start for b in few] == [b.start for b in bars[:2]]

        day_end = window_start(now, BarInterval.d1)
        days = await adapter.get_bars(
            "AAPL", BarInterval.d1, day_end - timedelta(days=3), day_end, 10
        )
        assert [d.start for d in days] == [day_end - timedelta(days=n) for n in (3, 2, 1)]
        assert all(d.vwap is None and d.final for d in days)

        with pytest.raises(errors.NotSupported):
            await adapter.get_bars("AAPL", BarInterval.m1, now - timedelta(days=30), now, 10)
        with pytest.raises(errors.NotSupported):
            await adapter.get_bars("AAPL", BarInterval.h1, start, end, 10)


def test_trades_make_forming_then_final_bars() -> None:
    md = TradierMarketSession("ws://unused", _no_session)
    md._wanted = subs(trades={"SPY"}, bars={(BarInterval.m1, "SPY")})

    def trade(second: int, price: str, size: str = "100") -> dict[str, Any]:
        at = datetime(2026, 1, 2, 15, 0, tzinfo=UTC) + timedelta(seconds=second)
        ms = str(int(at.timestamp() * 1000))
        return {"type": "trade", "symbol": "SPY", "exch": "Q", "price": price, "size": size,
                "cvol": "1000", "date": ms, "last": price}  # fmt: skip

    received = datetime(2026, 1, 2, 15, 0, 59, tzinfo=UTC)
    first = md._events(trade(5, "10.00"), received)
    second = md._events(trade(50, "10.50", "300"), received)
    turned = md._events(trade(65, "10.25"), received)
    bars = [e for e in first + second + turned if isinstance(e, Bar)]
    assert [(b.start.minute, b.final) for b in bars] == [
        (0, False),
        (0, False),
        (0, True),
        (1, False),
    ]
    final = bars[2]
    assert (final.open, final.high, final.low, final.close) == (
        Decimal("10.00"),
        Decimal("10.50"),
        Decimal("10.00"),
        Decimal("10.50"),
    )
    assert final.volume == Decimal(400)
    assert final.vwap == Decimal("10.375")
    assert final.trade_count == 2
    # The clock finalises the forming bar without another trade.
    closed = md._close_bars(datetime(2026, 1, 2, 15, 2, tzinfo=UTC))
    assert [(b.start.minute, b.final) for b in closed if isinstance(b, Bar)] == [(1, True)]
    # Trades of a symbol only wanted as bars are not delivered as trades.
    md._wanted = subs(bars={(BarInterval.m1, "SPY")})
    assert all(isinstance(e, Bar) for e in md._events(trade(130, "10.30"), received))


def test_unknown_event_types_are_refused_and_errors_logged() -> None:
    md = TradierMarketSession("ws://unused", _no_session)
    md._wanted = subs(quotes={"SPY"})
    assert md._events({"error": "1234 is not a valid symbol"}, datetime.now(UTC)) == []
    assert md._events({"type": "summary", "symbol": "SPY"}, datetime.now(UTC)) == []
    with pytest.raises(errors.UnknownBrokerValue):
        md._events({"type": "orderbook", "symbol": "SPY"}, datetime.now(UTC))


@given(
    wanted=st.builds(
        MarketDataSubscription,
        quotes=st.frozensets(st.sampled_from(["AAPL", "MSFT", "SPY"])),
        trades=st.frozensets(st.sampled_from(["AAPL", "QQQ"])),
        bars=st.frozensets(st.tuples(st.just(BarInterval.m1), st.sampled_from(["SPY", "IWM"]))),
    )
)
def test_payload_names_the_whole_wanted_set(wanted: MarketDataSubscription) -> None:
    md = TradierMarketSession("ws://unused", _no_session)
    payload = md.payload(wanted)
    assert payload["symbols"] == sorted(wanted.symbols)
    assert ("quote" in payload["filter"]) == bool(wanted.quotes)
    assert ("trade" in payload["filter"]) == bool(wanted.trades or wanted.bars)


async def _no_session() -> str:
    raise AssertionError("not connected in this test")


async def test_an_invalid_symbol_is_refused_and_the_rest_streams() -> None:
    async with running_fake() as run:
        md = session(run)
        await md.update(subs(quotes={"AAPL", "NOSUCH"}))
        async with consumed(md) as queue:
            for _ in range(4):
                quote = await next_matching(queue, lambda e: isinstance(e, MarketQuote))
                assert isinstance(quote, MarketQuote)
                assert quote.symbol == "AAPL"
        assert md.gaps == 0
        assert run.fake.market.connections_opened == 1


async def test_a_slow_feed_still_delivers_in_order() -> None:
    async with running_fake() as run:
        run.fake.market.faults.slow = 0.05
        md = session(run)
        await md.update(subs(trades={"AAPL"}))
        async with consumed(md) as queue:
            first = await next_matching(queue, lambda e: isinstance(e, MarketTrade))
            second = await next_matching(queue, lambda e: isinstance(e, MarketTrade))
        assert isinstance(first, MarketTrade)
        assert isinstance(second, MarketTrade)
        assert first.ts <= second.ts
        assert md.gaps == 0

"""tastytrade market data over a real DXLink WebSocket to the fake: handshake, COMPACT
events normalised, additive updates, caps, drops, silence, refused tokens."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    Bar,
    BarInterval,
    GreeksUpdate,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    MarketTrade,
    OptionRight,
    Support,
    SupportsMarketData,
)
from app.brokers.tastytrade.adapter import TASTYTRADE_CAPABILITIES
from app.brokers.tastytrade.market_data import (
    EVENT_FIELDS,
    TASTYTRADE_MARKET_DATA,
    TastytradeMarketSession,
    candle_symbol,
    decode_compact,
    wire_symbol,
)
from tests.brokers.tastytrade.options_support import contract
from tests.brokers.tastytrade.support import Running, running_fake

WAIT = 20.0


def session(run: Running, **options: Any) -> TastytradeMarketSession:
    timing: dict[str, Any] = {"max_backoff": 0.2, "handshake_timeout": 5.0}
    timing.update(options)
    return TastytradeMarketSession(run.adapter().quote_token, **timing)


@contextlib.asynccontextmanager
async def consumed(md: TastytradeMarketSession) -> AsyncIterator[asyncio.Queue[object]]:
    """Pull events in a task (the session only runs while pulled), into a queue."""
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
    """Wait (bounded) for what another task does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def subs(**kwargs: Any) -> MarketDataSubscription:
    return MarketDataSubscription(**{k: frozenset(v) for k, v in kwargs.items()})


def adds(run: Running) -> list[dict[str, Any]]:
    return [e for m in run.fake.dxlink.sent("FEED_SUBSCRIPTION") for e in m.get("add", [])]


def removes(run: Running) -> list[dict[str, Any]]:
    return [e for m in run.fake.dxlink.sent("FEED_SUBSCRIPTION") for e in m.get("remove", [])]


def aware(at: datetime) -> bool:
    return at.tzinfo is not None and at.utcoffset() == UTC.utcoffset(at)


async def test_handshake_and_events_normalised() -> None:
    async with running_fake() as run:
        option = contract(run.fake, OptionRight.call, 0).symbol
        md = session(run)
        await md.update(
            subs(
                quotes={"AAPL", option},
                trades={"AAPL"},
                greeks={option},
                bars={(BarInterval.m1, "AAPL")},
            )
        )
        async with consumed(md) as queue:
            quote = await next_matching(
                queue, lambda e: isinstance(e, MarketQuote) and e.symbol == "AAPL"
            )
            option_quote = await next_matching(
                queue, lambda e: isinstance(e, MarketQuote) and e.symbol == option
            )
            trade = await next_matching(queue, lambda e: isinstance(e, MarketTrade))
            greeks = await next_matching(queue, lambda e: isinstance(e, GreeksUpdate))
            bar = await next_matching(queue, lambda e: isinstance(e, Bar))

        # The protocol as DXLink wants it (asyncapi.yml), in order.
        kinds = [m["type"] for m in run.fake.dxlink.messages]
        assert kinds[:5] == ["SETUP", "AUTH", "CHANNEL_REQUEST", "FEED_SETUP", "FEED_SUBSCRIPTION"]
        setup = run.fake.dxlink.messages[0]
        assert setup["keepaliveTimeout"] == 60
        assert setup["acceptKeepaliveTimeout"] == 60
        feed_setup = run.fake.dxlink.sent("FEED_SETUP")[0]
        assert feed_setup["acceptDataFormat"] == "COMPACT"
        assert set(feed_setup["acceptEventFields"]) == {"Quote", "Trade", "Greeks", "Candle"}
        entries = {(e["type"], e["symbol"]) for e in adds(run)}
        streamer = wire_symbol(option)
        assert streamer.startswith(".AAPL")
        assert " " not in streamer
        assert entries == {
            ("Quote", "AAPL"),
            ("Quote", streamer),
            ("Trade", "AAPL"),
            ("Greeks", streamer),
            ("Candle", "AAPL{=1m}"),
        }
        [candle_entry] = [e for e in adds(run) if e["type"] == "Candle"]
        assert candle_entry["fromTime"] % 60_000 == 0  # the current minute's start

        assert isinstance(quote, MarketQuote)
        assert isinstance(option_quote, MarketQuote)
        expected = run.fake.dxlink.data.quote("AAPL", run.fake.dxlink.data.step_at(quote.ts))
        assert (quote.bid, quote.ask) == (expected.bid, expected.ask)
        for q in (quote, option_quote):
            assert isinstance(q.bid, Decimal)
            assert isinstance(q.ask, Decimal)
            assert q.bid < q.ask
            assert aware(q.ts)
            assert q.source is MarketDataSource.stream
        assert isinstance(quote.bid_size, Decimal)
        assert option_quote.bid_size is None  # "NaN" on the wire: unknown
        assert isinstance(trade, MarketTrade)
        assert isinstance(trade.price, Decimal)
        assert trade.symbol == "AAPL"
        assert aware(trade.ts)
        assert isinstance(greeks, GreeksUpdate)
        assert greeks.symbol == option
        assert isinstance(greeks.greeks.delta, Decimal)
        assert 0 < greeks.greeks.delta < 1
        assert isinstance(bar, Bar)
        assert bar.interval is BarInterval.m1
        assert not bar.final
        assert bar.symbol == "AAPL"
        assert bar.low <= bar.close <= bar.high
        assert bar.source is MarketDataSource.stream
        assert aware(bar.start)


async def test_update_sends_only_the_diff() -> None:
    async with running_fake() as run:
        md = session(run)
        await md.update(subs(quotes={"AAPL", "MSFT"}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote) and e.symbol == "MSFT")
            before = len(run.fake.dxlink.sent("FEED_SUBSCRIPTION"))
            await md.update(subs(quotes={"AAPL", "SPY"}, bars={(BarInterval.m5, "SPY")}))
            await eventually(lambda: len(run.fake.dxlink.sent("FEED_SUBSCRIPTION")) > before + 1)
            later = run.fake.dxlink.sent("FEED_SUBSCRIPTION")[before:]
            added = [(e["type"], e["symbol"]) for m in later for e in m.get("add", [])]
            removed = [(e["type"], e["symbol"]) for m in later for e in m.get("remove", [])]
            assert sorted(added) == [("Candle", "SPY{=5m}"), ("Quote", "SPY")]
            assert removed == [("Quote", "MSFT")]  # AAPL is never sent again (additive)
            await next_matching(queue, lambda e: isinstance(e, MarketQuote) and e.symbol == "SPY")
            await eventually(
                lambda: (
                    run.fake.dxlink.subscribed()
                    == {("Quote", "AAPL"), ("Quote", "SPY"), ("Candle", "SPY{=5m}")}
                )
            )
            # Removing a candle names its fromTime too (mandatory on remove).
            await md.update(subs(quotes={"AAPL", "SPY"}))
            await eventually(lambda: any(e["type"] == "Candle" for e in removes(run)))
            [gone] = [e for e in removes(run) if e["type"] == "Candle"]
            assert gone["symbol"] == "SPY{=5m}"
            assert isinstance(gone["fromTime"], int)
            # A MSFT quote still in flight is not delivered once MSFT is removed.
            for _ in range(5):
                event = await next_matching(queue, lambda e: isinstance(e, MarketQuote))
                assert isinstance(event, MarketQuote)
                assert event.symbol != "MSFT"


async def test_caps_refuse_and_change_nothing() -> None:
    async with running_fake() as run:
        caps = MarketDataCapabilities(
            quotes=Support.native,
            trades=Support.native,
            bars=Support.native,
            greeks=Support.native,
            bar_intervals=frozenset({BarInterval.m1}),
            max_symbols=2,
        )
        md = session(run, capabilities=caps)
        await md.update(subs(quotes={"AAPL", "MSFT"}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            sent = len(run.fake.dxlink.sent("FEED_SUBSCRIPTION"))
            with pytest.raises(errors.MarketDataLimit):
                await md.update(subs(quotes={"AAPL", "MSFT", "SPY"}))
            with pytest.raises(errors.MarketDataLimit):
                await md.update(subs(bars={(BarInterval.h1, "AAPL")}))
            with pytest.raises(errors.UnknownSymbol):
                await md.update(subs(greeks={"AAPL"}))  # greeks are for options
            assert md.wanted == subs(quotes={"AAPL", "MSFT"})
            await asyncio.sleep(0.2)
            assert len(run.fake.dxlink.sent("FEED_SUBSCRIPTION")) == sent
            assert run.fake.dxlink.subscribed() == {("Quote", "AAPL"), ("Quote", "MSFT")}


async def test_drop_gives_gap_then_resubscribed_with_everything() -> None:
    async with running_fake() as run:
        md = session(run)
        wanted = subs(quotes={"AAPL"}, trades={"MSFT"}, bars={(BarInterval.m1, "SPY")})
        await md.update(wanted)
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketTrade))
            run.fake.dxlink.drop()
            gap = await next_matching(
                queue, lambda e: isinstance(e, MarketGap | MarketResubscribed)
            )
            assert isinstance(gap, MarketGap)
            back = await next_matching(
                queue, lambda e: not isinstance(e, MarketQuote | MarketTrade | Bar)
            )
            assert isinstance(back, MarketResubscribed)
            await next_matching(queue, lambda e: isinstance(e, MarketTrade))
        assert run.fake.dxlink.connections_opened == 2
        assert md.connects == 2
        assert md.gaps == 1
        assert md.token_fetches == 1  # the 24-hour token is reused across the reconnect
        second = adds(run)[3:]
        assert {(e["type"], e["symbol"]) for e in second} == {
            ("Quote", "AAPL"),
            ("Trade", "MSFT"),
            ("Candle", "SPY{=1m}"),
        }


async def test_silence_is_detected_and_the_session_reconnects() -> None:
    async with running_fake() as run:
        md = session(run, idle_timeout=0.5)
        await md.update(subs(quotes={"AAPL"}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            run.fake.dxlink.faults.silent = True
            gap = await next_matching(queue, lambda e: isinstance(e, MarketGap))
            assert isinstance(gap, MarketGap)
            assert md.silences >= 1
            run.fake.dxlink.faults.silent = False
            await next_matching(queue, lambda e: isinstance(e, MarketResubscribed))
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))


async def test_keepalives_are_sent_on_channel_zero() -> None:
    async with running_fake() as run:
        md = session(run, keepalive_interval=0.05)
        await md.update(subs(quotes={"AAPL"}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            await eventually(lambda: len(run.fake.dxlink.sent("KEEPALIVE")) >= 3)
        assert all(m["channel"] == 0 for m in run.fake.dxlink.sent("KEEPALIVE"))


async def test_a_slow_feed_still_delivers_in_order() -> None:
    async with running_fake() as run:
        run.fake.dxlink.faults.slow = 0.05
        md = session(run)
        await md.update(subs(trades={"AAPL"}))
        async with consumed(md) as queue:
            first = await next_matching(queue, lambda e: isinstance(e, MarketTrade))
            second = await next_matching(queue, lambda e: isinstance(e, MarketTrade))
        assert isinstance(first, MarketTrade)
        assert isinstance(second, MarketTrade)
        assert first.ts <= second.ts
        assert md.gaps == 0


async def test_refused_token_is_fetched_again_then_fatal() -> None:
    async with running_fake() as run:
        run.fake.dxlink.faults.refuse_auth = True
        md = session(run)
        await md.update(subs(quotes={"AAPL"}))
        async with consumed(md) as queue:
            gap = await next_matching(queue, lambda e: True)
            assert isinstance(gap, MarketGap)
            failure = await asyncio.wait_for(queue.get(), WAIT)
        assert isinstance(failure, errors.AuthenticationFailed)
        assert md.token_fetches == 2  # a refused token is never offered twice
        tokens = [m["token"] for m in run.fake.dxlink.sent("AUTH")]
        assert len(set(tokens)) == 2
        assert all(t not in repr(md) for t in tokens)


async def test_revoked_grant_is_fatal_before_connecting() -> None:
    async with running_fake() as run:
        md = session(run)
        run.fake.revoke(run.customer)
        await md.update(subs(quotes={"AAPL"}))
        async with consumed(md) as queue:
            assert isinstance(await next_matching(queue, lambda e: True), MarketGap)
            assert isinstance(
                await asyncio.wait_for(queue.get(), WAIT), errors.AuthenticationFailed
            )
        assert run.fake.dxlink.connections_opened == 0


async def test_candles_turn_final_when_a_newer_one_starts() -> None:
    md = TastytradeMarketSession(_no_token)
    md._wanted = subs(bars={(BarInterval.m1, "AAPL")})
    md._entries(md._wanted, datetime(2026, 1, 2, tzinfo=UTC))

    def row(minute: int, close: str) -> dict[str, Any]:
        start = int(datetime(2026, 1, 2, 15, minute, tzinfo=UTC).timestamp() * 1000)
        return {"eventType": "Candle", "eventSymbol": "AAPL{=1m}", "time": start,
                "open": Decimal(10), "high": Decimal(12), "low": Decimal(9),
                "close": Decimal(close), "volume": 300, "vwap": "NaN", "count": 3}  # fmt: skip

    now = datetime(2026, 1, 2, 15, 1, tzinfo=UTC)
    first = list(md._event(row(0, "11"), now))
    update = list(md._event(row(0, "11.5"), now))
    turned = list(md._event(row(1, "12"), now))
    stale = list(md._event(row(0, "10"), now))
    assert [b.final for b in first + update] == [False, False]  # type: ignore[union-attr]
    assert [(b.start.minute, b.close, b.final) for b in turned] == [  # type: ignore[union-attr]
        (0, Decimal("11.5"), True),
        (1, Decimal("12"), False),
    ]
    assert stale == []
    assert isinstance(turned[0], Bar)
    assert turned[0].vwap is None
    assert turned[0].trade_count == 3


async def _no_token() -> tuple[str, str]:
    raise AssertionError("not connected in this test")


_VALUE = st.one_of(
    st.integers(min_value=0, max_value=10**9),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.just("NaN"),
)


@given(
    order=st.permutations(EVENT_FIELDS["Quote"]),
    events=st.lists(st.lists(_VALUE, min_size=6, max_size=6), min_size=1, max_size=5),
)
def test_compact_rows_decode_by_the_servers_field_order(
    order: list[str], events: list[list[object]]
) -> None:
    """Whatever order FEED_CONFIG names the fields in, every event gets its own values."""
    rows = [dict(zip(EVENT_FIELDS["Quote"], [f"S{i}", *values], strict=True))
            for i, values in enumerate(events)]  # fmt: skip
    flat = [r[name] for r in rows for name in order]
    decoded = list(decode_compact(["Quote", flat], {"Quote": list(order)}))
    assert decoded == [{**r, "eventType": "Quote"} for r in rows]


def test_compact_refuses_a_short_row_and_an_unknown_type() -> None:
    fields = {"Quote": ["eventSymbol", "bidPrice"]}
    with pytest.raises(errors.UnknownBrokerValue):
        list(decode_compact(["Quote", ["AAPL", 1, "MSFT"]], fields))
    with pytest.raises(errors.UnknownBrokerValue):
        list(decode_compact(["Order", ["AAPL", 1]], fields))


def test_symbols_and_capabilities() -> None:
    assert wire_symbol("AAPL261218C00150000") == ".AAPL261218C150"
    assert wire_symbol("SPXW261218P04012500") == ".SPXW261218P4012.5"
    assert candle_symbol("AAPL", BarInterval.h1) == "AAPL{=1h}"
    assert TASTYTRADE_MARKET_DATA.history is Support.unsupported
    assert TASTYTRADE_MARKET_DATA.bar_intervals == frozenset(BarInterval)
    assert TASTYTRADE_CAPABILITIES.market_data is TASTYTRADE_MARKET_DATA


async def test_adapter_offers_a_dxlink_session() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsMarketData)
        md = adapter.market_data_session()
        await md.update(subs(quotes={"AAPL"}))
        async with consumed(md) as queue:
            quote = await next_matching(queue, lambda e: isinstance(e, MarketQuote))
        assert isinstance(quote, MarketQuote)
        assert quote.symbol == "AAPL"


async def test_an_old_quote_token_is_replaced_on_the_open_connection() -> None:
    async with running_fake() as run:
        md = session(run, keepalive_interval=0.05, token_reuse=0.2)
        await md.update(subs(quotes={"AAPL"}))
        async with consumed(md) as queue:
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
            await eventually(lambda: md.reauths >= 2)
            await next_matching(queue, lambda e: isinstance(e, MarketQuote))
        tokens = [m["token"] for m in run.fake.dxlink.sent("AUTH")]
        assert len(set(tokens)) == len(tokens) >= 3
        assert run.fake.dxlink.connections_opened == 1
        assert md.gaps == 0

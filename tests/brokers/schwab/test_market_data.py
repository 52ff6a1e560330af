"""Schwab market data over a real socket: the streamer's level-one and chart services against
the fake (tests/fakes/schwab/market_stream.py), delta merging, and price history."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

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
    SupportsBarHistory,
    SupportsMarketData,
)
from app.brokers.schwab import market_data
from app.brokers.schwab.adapter import SchwabAdapter
from app.brokers.schwab.market_data import SchwabMarketSession
from tests.brokers.schwab.support import Running, running_fake


def option_symbol(run: Running) -> str:
    """A listed AAPL call a few weeks out (canonical, unpadded)."""
    expiration = run.fake.options.expirations("AAPL", run.fake.today())[2].expiration
    contract = OptionContract(
        underlying="AAPL",
        root="AAPL",
        expiration=expiration,
        right=OptionRight.call,
        strike=Decimal("190"),
    )
    return contract.symbol


def sub(**channels: Any) -> MarketDataSubscription:
    bars = channels.pop("bars", ())
    return MarketDataSubscription(
        **{k: frozenset(v) for k, v in channels.items()},
        bars=frozenset((BarInterval.m1, s) for s in bars),
    )


class Reader:
    def __init__(self, s: SchwabMarketSession) -> None:
        self.events: list[MarketEvent] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run(s))

    async def _run(self, s: SchwabMarketSession) -> None:
        try:
            async for event in s.events():
                self.events.append(event)
        except Exception as exc:
            self.error = exc

    async def until(self, found: Callable[[list[MarketEvent]], bool], seconds: float = 5) -> None:
        async with asyncio.timeout(seconds):
            while not found(self.events):
                if self.error is not None:
                    raise self.error
                await asyncio.sleep(0.01)

    async def finished(self) -> None:
        async with asyncio.timeout(5):
            await self._task

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def streaming(
    run: Running, *, idle_timeout: float = 30.0
) -> AsyncIterator[tuple[SchwabMarketSession, Reader]]:
    adapter = run.track(SchwabAdapter(run.settings(), run.credentials()))
    s = SchwabMarketSession(
        adapter.streamer_info,
        run.credentials(),
        run.url,
        streamer_url_override=adapter.streamer_url_override,
        idle_timeout=idle_timeout,
        handshake_timeout=1.0,
        max_backoff=0.5,
    )
    reader = Reader(s)
    try:
        yield s, reader
    finally:
        await s.close()
        await reader.stop()


async def holds(run: Running, service: str, keys: set[str]) -> None:
    async with asyncio.timeout(5):
        while True:
            if run.fake.market.subscribed(service) == keys:
                return
            await asyncio.sleep(0.01)


def of(kind: type, events: list[MarketEvent]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_level_one_and_chart_events_are_full_snapshots_from_deltas() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsMarketData)
        option = option_symbol(run)
        padded = OptionContract.parse(option).occ_padded
        async with streaming(run) as (s, reader):
            await s.update(
                sub(quotes={"AAPL", option}, trades={"AAPL"}, greeks={option}, bars={"MSFT"})
            )
            await holds(run, "LEVELONE_EQUITIES", {"AAPL"})
            await holds(run, "LEVELONE_OPTIONS", {padded})
            await holds(run, "CHART_EQUITY", {"MSFT"})
            run.fake.market.publish(130)  # two minute boundaries
            await reader.until(lambda ev: any(isinstance(e, Bar) and e.final for e in ev))
        assert not of(MarketGap, reader.events)
        data = run.fake.market.data
        quotes = [q for q in of(MarketQuote, reader.events) if q.symbol == "AAPL"]
        assert len(quotes) > 100
        for q in quotes:  # merged: every quote whole although most updates are partial
            expected = data.quote("AAPL", data.step_at(q.ts))
            assert (q.bid, q.ask, q.bid_size, q.ask_size) == (
                expected.bid,
                expected.ask,
                expected.bid_size,
                expected.ask_size,
            )
            assert q.source is MarketDataSource.stream
        trades = of(MarketTrade, reader.events)
        assert trades
        assert all(t.symbol == "AAPL" and isinstance(t.size, Decimal) for t in trades)
        greeks = of(GreeksUpdate, reader.events)
        assert greeks
        last = greeks[-1]
        model = run.fake.options.quote(OptionContract.parse(option), last.ts)
        assert last.greeks.iv is not None
        assert model.greeks.iv is not None
        assert abs(last.greeks.iv - model.greeks.iv) < Decimal("0.000001")  # percent / 100
        assert last.greeks.delta == model.greeks.delta
        assert last.underlying_price == model.underlying_price
        option_quotes = [q for q in of(MarketQuote, reader.events) if q.symbol == option]
        assert option_quotes
        assert all(q.bid is not None and q.ask is not None for q in option_quotes)
        bars = of(Bar, reader.events)
        forming = [b for b in bars if not b.final]
        final = [b for b in bars if b.final]
        assert final
        assert forming[0].start == final[0].start  # forming first, final once a later one came
        paper = data.minute_bar("MSFT", final[0].start)
        assert paper is not None
        assert (final[0].open, final[0].close, final[0].volume) == (
            paper.open,
            paper.close,
            paper.volume,
        )


async def test_update_uses_subs_then_add_and_unsubs() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        await s.update(sub(quotes={"AAPL"}))
        await holds(run, "LEVELONE_EQUITIES", {"AAPL"})
        await s.update(sub(quotes={"AAPL", "MSFT"}))
        await holds(run, "LEVELONE_EQUITIES", {"AAPL", "MSFT"})
        await s.update(sub(quotes={"MSFT"}))
        await holds(run, "LEVELONE_EQUITIES", {"MSFT"})
        assert [r for r in run.fake.market.requests if r[0] == "LEVELONE_EQUITIES"] == [
            ("LEVELONE_EQUITIES", "SUBS", "AAPL"),
            ("LEVELONE_EQUITIES", "ADD", "MSFT"),
            ("LEVELONE_EQUITIES", "UNSUBS", "AAPL"),
        ]
        assert reader.error is None


async def test_what_no_service_carries_is_refused_before_anything_changes() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        option = option_symbol(run)
        await s.update(sub(quotes={"AAPL"}))
        await holds(run, "LEVELONE_EQUITIES", {"AAPL"})
        sent = list(run.fake.market.requests)
        for wanted in (
            sub(quotes={"AAPL"}, greeks={"MSFT"}),  # greeks of an equity
            sub(quotes={"AAPL"}, bars={option}),  # bars of an option
            MarketDataSubscription(bars=frozenset({(BarInterval.m5, "AAPL")})),
        ):
            with pytest.raises(errors.MarketDataLimit):
                await s.update(wanted)
        await asyncio.sleep(0.1)
        assert run.fake.market.requests == sent
        assert s.wanted == sub(quotes={"AAPL"})
        assert reader.error is None


async def test_a_drop_is_a_gap_then_everything_is_subscribed_again() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        option = option_symbol(run)
        padded = OptionContract.parse(option).occ_padded
        await s.update(sub(quotes={"AAPL"}, greeks={option}, bars={"SPY"}))
        await holds(run, "LEVELONE_OPTIONS", {padded})
        run.fake.drop_streams()
        await reader.until(lambda ev: bool(of(MarketResubscribed, ev)))
        await holds(run, "LEVELONE_EQUITIES", {"AAPL"})
        await holds(run, "LEVELONE_OPTIONS", {padded})
        await holds(run, "CHART_EQUITY", {"SPY"})
        kinds = [type(e) for e in reader.events if isinstance(e, MarketGap | MarketResubscribed)]
        assert kinds == [MarketGap, MarketResubscribed]
        count = len(of(MarketQuote, reader.events))
        run.fake.market.publish(1)
        await reader.until(lambda ev: len(of(MarketQuote, ev)) > count)


async def test_a_slow_reader_is_closed_then_resubscribed() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        await s.update(sub(quotes={"AAPL"}))
        await holds(run, "LEVELONE_EQUITIES", {"AAPL"})
        run.fake.market.buffer = 3
        run.fake.market.publish(10)  # queued faster than sent
        await reader.until(lambda ev: bool(of(MarketResubscribed, ev)))
        run.fake.market.buffer = 100_000
        await holds(run, "LEVELONE_EQUITIES", {"AAPL"})
        assert [type(e) for e in reader.events if isinstance(e, MarketGap)] == [MarketGap]


async def test_heartbeats_keep_a_quiet_stream_alive_and_silence_reconnects() -> None:
    async with running_fake() as run:
        run.fake.faults.heartbeat_seconds = 0.05
        async with streaming(run, idle_timeout=0.4) as (s, reader):
            await s.update(sub(quotes={"AAPL"}))
            await holds(run, "LEVELONE_EQUITIES", {"AAPL"})
            await asyncio.sleep(1.0)  # no market data, heartbeats only
            assert not of(MarketGap, reader.events)
            assert s.silences == 0
            run.fake.faults.stream_silent = True
            await reader.until(lambda ev: bool(of(MarketGap, ev)))
            assert s.silences >= 1
            run.fake.faults.stream_silent = False
            await reader.until(lambda ev: bool(of(MarketResubscribed, ev)))
            await holds(run, "LEVELONE_EQUITIES", {"AAPL"})


async def test_a_denied_login_ends_the_session_after_a_gap() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        run.fake.faults.login_denied = True
        await s.update(sub(quotes={"AAPL"}))
        await reader.finished()
        assert isinstance(reader.error, errors.AuthenticationFailed)
        assert of(MarketGap, reader.events)


async def test_an_expired_token_ends_the_session_instead_of_retrying() -> None:
    async with running_fake() as run:
        adapter = run.track(SchwabAdapter(run.settings(), run.credentials()))
        expired = run.credentials(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        s = SchwabMarketSession(adapter.streamer_info, expired, run.url, handshake_timeout=1.0)
        reader = Reader(s)
        try:
            await s.update(sub(quotes={"AAPL"}))
            await reader.finished()
        finally:
            await s.close()
        assert isinstance(reader.error, errors.AuthenticationFailed)
        assert "expired" in reader.error.reason


def test_a_plain_streamer_url_is_refused_for_a_tls_api() -> None:
    assert market_data.check_streamer_url("wss://streamer-api.schwab.com/ws", "https://a") == (
        "wss://streamer-api.schwab.com/ws"
    )
    assert market_data.check_streamer_url("ws://127.0.0.1:5/ws", "http://127.0.0.1:5")
    with pytest.raises(errors.UnknownBrokerValue):
        market_data.check_streamer_url("ws://streamer-api.schwab.com/ws", "https://api.schwab")


# --- delta merging, as a property -----------------------------------------------------------

FIELD_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "1": st.decimals("1", "500", places=2),
        "2": st.decimals("1", "500", places=2),
        "4": st.integers(1, 900),
        "5": st.integers(1, 900),
        "34": st.integers(1_700_000_000_000, 1_800_000_000_000),
    },
)


@settings(max_examples=60, deadline=None)
@given(st.lists(FIELD_VALUES, min_size=1, max_size=12))
def test_each_quote_is_the_merge_of_every_delta_so_far(deltas: list[dict[str, Any]]) -> None:
    state = market_data.MarketState()
    wanted = sub(quotes={"AAPL"})
    merged: dict[str, Any] = {}
    at = datetime(2026, 1, 5, 15, tzinfo=UTC)
    for delta in deltas:
        events = state.apply("LEVELONE_EQUITIES", {"key": "AAPL", **delta}, at, wanted)
        merged.update(delta)
        if not delta:
            assert events == []
            continue
        [quote] = events
        assert isinstance(quote, MarketQuote)
        assert quote.bid == merged.get("1")
        assert quote.ask == merged.get("2")
        assert quote.bid_size == (None if "4" not in merged else Decimal(merged["4"]))
        expected_ts = datetime.fromtimestamp(merged["34"] / 1000, UTC) if "34" in merged else at
        assert quote.ts == expected_ts


# --- history ----------------------------------------------------------------------------------


async def test_price_history_bars_match_the_paper_market() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsBarHistory)
        now = datetime.now(UTC)
        end = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
        start = end - timedelta(minutes=30)
        bars = await adapter.get_bars("AAPL", BarInterval.m5, start, end, 100)
        assert bars
        assert all(start <= b.start < end and b.final for b in bars)
        assert all(b.source is MarketDataSource.history for b in bars)
        expected = run.fake.market.data.history("AAPL", BarInterval.m5, start, end, 100, now)
        assert [(b.start, b.open, b.high, b.low, b.close) for b in bars] == [
            (e.start, e.open, e.high, e.low, e.close) for e in expected
        ]
        assert len(await adapter.get_bars("AAPL", BarInterval.m1, start, end, 7)) == 7
        with pytest.raises(errors.NotSupported):
            await adapter.get_bars("AAPL", BarInterval.h1, start, end, 10)

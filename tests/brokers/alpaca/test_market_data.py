"""Alpaca market data over a real socket: the stock and crypto streams against the fake
(tests/fakes/alpaca/market_stream.py), and history bars over REST."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.alpaca import market_data
from app.brokers.alpaca.market_data import AlpacaEndpointSession, AlpacaMarketDataSession, Endpoint
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
    OptionContract,
    OptionRight,
    SupportsBarHistory,
    SupportsMarketData,
)
from app.security.credentials import Credentials
from tests.brokers.alpaca.support import Running, running_fake

SPEC = Path(__file__).resolve().parents[4] / "shared" / "specs" / "alpaca-market-data-api.json"
OPTION = "AAPL261218C00190000"


def listed_option(run: Running) -> str:
    """A listed AAPL call a few weeks out (canonical, unpadded OCC)."""
    expiration = run.fake.options.expirations("AAPL", run.fake.clock().date())[2].expiration
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


def session(
    run: Running,
    *,
    max_symbols: int | None = 30,
    idle_timeout: float = 30.0,
    credentials: Credentials | None = None,
) -> AlpacaMarketDataSession:
    caps = market_data.market_data_capabilities(max_symbols)
    base = market_data.stream_base(run.url, None)
    creds = credentials or run.credentials()

    def endpoint(kind: Endpoint) -> AlpacaEndpointSession:
        return AlpacaEndpointSession(
            market_data.endpoint_url(base, kind, "iex"),
            kind,
            creds,
            caps,
            idle_timeout=idle_timeout,
            handshake_timeout=1.0,
            max_backoff=0.5,
        )

    return AlpacaMarketDataSession(caps, endpoint)


class Reader:
    """The session's events, read in the background, waited for by predicate."""

    def __init__(self, s: AlpacaMarketDataSession) -> None:
        self.events: list[MarketEvent] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run(s))

    async def _run(self, s: AlpacaMarketDataSession) -> None:
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
async def streaming(run: Running, **kw: Any) -> AsyncIterator[tuple[Any, Reader]]:
    s = session(run, **kw)
    reader = Reader(s)
    try:
        yield s, reader
    finally:
        await s.close()
        await reader.stop()


async def subscribed(run: Running, endpoint: str, wanted: dict[str, set[str]]) -> None:
    """Wait until the fake holds exactly ``wanted`` on one live connection."""
    async with asyncio.timeout(5):
        while True:
            live = run.fake.market.live(endpoint)
            if live and {k: v for k, v in live[0].subs.items() if v} == wanted:
                return
            await asyncio.sleep(0.01)


def of(kind: type, events: list[MarketEvent]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_quotes_trades_and_bars_arrive_normalised_from_both_endpoints() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsMarketData)
        s = adapter.market_data_session()
        reader = Reader(s)
        try:
            await s.update(sub(quotes={"AAPL", "BTC-USD"}, trades={"AAPL"}, bars={"MSFT"}))
            await subscribed(
                run, "stocks", {"quotes": {"AAPL"}, "trades": {"AAPL"}, "bars": {"MSFT"}}
            )
            await subscribed(run, "crypto", {"quotes": {"BTC/USD"}})
            run.fake.market.publish(61)  # crosses a minute: one final bar
            await reader.until(lambda ev: bool(of(Bar, ev)) and len(of(MarketQuote, ev)) >= 122)
        finally:
            await s.close()
            await reader.stop()
        quotes = of(MarketQuote, reader.events)
        assert {q.symbol for q in quotes} == {"AAPL", "BTC-USD"}
        data = run.fake.market.data
        for q in quotes:
            assert q.source is MarketDataSource.stream
            assert q.ts.tzinfo is UTC or q.ts.utcoffset() == timedelta(0)
            assert isinstance(q.bid, Decimal)
            assert isinstance(q.ask_size, Decimal)
            expected = data.quote(q.symbol, data.step_at(q.ts))
            assert (q.bid, q.ask) == (expected.bid, expected.ask)
        trades = of(MarketTrade, reader.events)
        assert trades
        assert {t.symbol for t in trades} == {"AAPL"}
        assert all(isinstance(t.size, Decimal) and t.price > 0 for t in trades)
        [bar] = of(Bar, reader.events)
        assert bar.symbol == "MSFT"
        assert bar.final
        assert bar.interval is BarInterval.m1
        paper = data.minute_bar("MSFT", bar.start)
        assert paper is not None
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == (
            paper.open,
            paper.high,
            paper.low,
            paper.close,
            paper.volume,
            paper.trade_count,
        )
        assert not of(MarketGap, reader.events)


async def test_option_quotes_and_trades_arrive_over_msgpack() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        option = listed_option(run)
        await s.update(sub(quotes={option, "AAPL"}, trades={option}))
        await subscribed(run, "options", {"quotes": {option}, "trades": {option}})
        await subscribed(run, "stocks", {"quotes": {"AAPL"}})
        headers = run.fake.market.handshake_headers
        assert any(h.get("content-type") == "application/msgpack" for h in headers)
        run.fake.market.publish(3)
        await reader.until(
            lambda ev: (
                len([q for q in of(MarketQuote, ev) if q.symbol == option]) >= 3
                and len(of(MarketTrade, ev)) >= 3
            )
        )
        model = run.fake.options
        for q in of(MarketQuote, reader.events):
            if q.symbol != option:
                continue
            expected = model.quote(OptionContract.parse(option), q.ts)
            assert (q.bid, q.ask) == (expected.bid, expected.ask)
            assert isinstance(q.bid_size, Decimal)
            assert q.ts.utcoffset() == timedelta(0)
        for t in of(MarketTrade, reader.events):
            assert t.symbol == option
            assert isinstance(t.price, Decimal)
            assert (
                t.price
                == run.fake.market.data.trade(option, run.fake.market.data.step_at(t.ts)).price
            )
        run.fake.market.drop()
        await reader.until(lambda ev: bool(of(MarketResubscribed, ev)))
        await subscribed(run, "options", {"quotes": {option}, "trades": {option}})


async def test_update_sends_only_the_diff_and_the_server_holds_the_union() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        await s.update(sub(quotes={"AAPL", "MSFT"}))
        await subscribed(run, "stocks", {"quotes": {"AAPL", "MSFT"}})
        run.fake.market.received.clear()
        await s.update(sub(quotes={"MSFT", "SPY"}, trades={"SPY"}))
        await subscribed(run, "stocks", {"quotes": {"MSFT", "SPY"}, "trades": {"SPY"}})
        # Additive protocol: only what changed goes on the wire.
        assert run.fake.market.received == [
            {"action": "unsubscribe", "quotes": ["AAPL"]},
            {"action": "subscribe", "trades": ["SPY"], "quotes": ["SPY"]},
        ]
        await s.update(MarketDataSubscription())
        await subscribed(run, "stocks", {})
        assert reader.error is None


async def test_caps_refuse_before_anything_changes() -> None:
    async with running_fake() as run, streaming(run, max_symbols=2) as (s, reader):
        await s.update(sub(quotes={"AAPL", "MSFT"}))
        await subscribed(run, "stocks", {"quotes": {"AAPL", "MSFT"}})
        sent = list(run.fake.market.received)
        refusals: list[MarketDataSubscription] = [
            sub(quotes={"AAPL", "MSFT", "SPY"}),  # beyond the plan's cap
            sub(quotes={"AAPL"}, bars={OPTION}),  # the option feed has no bars
            sub(greeks={"AAPL"}),  # Alpaca streams no greeks
            MarketDataSubscription(bars=frozenset({(BarInterval.m5, "AAPL")})),  # 1m only
        ]
        for wanted in refusals:
            with pytest.raises(errors.MarketDataLimit):
                await s.update(wanted)
        await asyncio.sleep(0.1)
        assert run.fake.market.received == sent
        assert run.fake.market.live("stocks")[0].subs["quotes"] == {"AAPL", "MSFT"}
        assert s.endpoints[Endpoint.stocks].wanted == sub(quotes={"AAPL", "MSFT"})
        assert reader.error is None


async def test_a_drop_is_a_gap_then_everything_is_resubscribed() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        await s.update(sub(quotes={"AAPL"}, trades={"BTC-USD"}, bars={"SPY"}))
        await subscribed(run, "stocks", {"quotes": {"AAPL"}, "bars": {"SPY"}})
        await subscribed(run, "crypto", {"trades": {"BTC/USD"}})
        run.fake.market.drop()
        await reader.until(lambda ev: bool(of(MarketResubscribed, ev)))
        await subscribed(run, "stocks", {"quotes": {"AAPL"}, "bars": {"SPY"}})
        await subscribed(run, "crypto", {"trades": {"BTC/USD"}})
        kinds = [type(e) for e in reader.events]
        # Both endpoints dropped: one gap, one resubscribed once both are back.
        assert kinds == [MarketGap, MarketResubscribed]
        run.fake.market.publish(1)
        await reader.until(lambda ev: bool(of(MarketQuote, ev)) and bool(of(MarketTrade, ev)))


async def test_silence_is_detected_and_reconnected() -> None:
    async with running_fake() as run, streaming(run, idle_timeout=0.3) as (s, reader):
        await s.update(sub(quotes={"AAPL"}))
        await subscribed(run, "stocks", {"quotes": {"AAPL"}})
        run.fake.market.faults.silent = True
        await reader.until(lambda ev: bool(of(MarketGap, ev)))
        assert s.endpoints[Endpoint.stocks].silences >= 1
        run.fake.market.faults.silent = False
        await reader.until(lambda ev: bool(of(MarketResubscribed, ev)))
        await subscribed(run, "stocks", {"quotes": {"AAPL"}})


async def test_a_slow_client_is_cut_off_then_resubscribed() -> None:
    async with running_fake() as run, streaming(run) as (s, reader):
        await s.update(sub(quotes={"AAPL"}))
        await subscribed(run, "stocks", {"quotes": {"AAPL"}})
        run.fake.market.faults.buffer = 3
        run.fake.market.publish(10)  # queued faster than sent: the buffer overflows (407)
        await reader.until(lambda ev: bool(of(MarketResubscribed, ev)))
        gap = of(MarketGap, reader.events)[0]
        assert "StreamRefused" in gap.reason


async def test_a_second_connection_per_endpoint_is_refused_and_retried() -> None:
    async with running_fake() as run, streaming(run) as (first, one):
        await first.update(sub(quotes={"AAPL"}))
        await subscribed(run, "stocks", {"quotes": {"AAPL"}})
        async with streaming(run) as (second, two):
            await second.update(sub(quotes={"MSFT"}))
            await two.until(lambda ev: bool(of(MarketGap, ev)))  # 406, retried with backoff
            assert len(run.fake.market.live("stocks")) == 1
        await first.close()
        await asyncio.sleep(0.2)
        assert one.error is None
        assert not of(MarketGap, one.events)


async def test_a_bad_key_ends_the_session_after_a_gap() -> None:
    async with running_fake() as run:
        bad = Credentials(api_key_id=run.account.key_id, api_secret_key="wrong")
        async with streaming(run, credentials=bad) as (s, reader):
            await s.update(sub(quotes={"AAPL"}))
            await reader.finished()
            assert isinstance(reader.error, errors.AuthenticationFailed)
            assert of(MarketGap, reader.events)
            assert run.account.secret not in str(reader.error)


async def test_the_fake_wants_auth_within_its_timeout() -> None:
    async with running_fake() as run:
        run.fake.market.auth_timeout = 0.2
        url = market_data.stream_base(run.url, None) + "/v2/iex"
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv()) == [{"T": "success", "msg": "connected"}]
            refused = json.loads(await ws.recv())
        assert refused == [{"T": "error", "code": 404, "msg": "auth timeout"}]


async def test_oauth_credentials_cannot_stream() -> None:
    with pytest.raises(errors.NotSupported, match="API keys only"):
        market_data.require_api_key(Credentials(access_token="tok", refresh_token="r"))


def test_stream_hosts() -> None:
    assert market_data.stream_base("https://data.alpaca.markets", None) == (
        "wss://stream.data.alpaca.markets"
    )
    assert market_data.stream_base("https://data.sandbox.alpaca.markets", None) == (
        "wss://stream.data.sandbox.alpaca.markets"
    )
    assert market_data.stream_base("http://127.0.0.1:9", None) == "ws://127.0.0.1:9"
    assert market_data.endpoint_url("wss://h", Endpoint.crypto, "iex") == (
        "wss://h/v1beta3/crypto/us"
    )


# --- history ----------------------------------------------------------------------------------


async def test_get_bars_follows_pages_and_matches_the_paper_market() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsBarHistory)
        now = datetime.now(UTC)
        end = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
        start = end - timedelta(minutes=10)
        run.fake.market.bars_page = 3
        bars = await adapter.get_bars("AAPL", BarInterval.m1, start, end, 100)
        assert [b.start for b in bars] == [start + timedelta(minutes=i) for i in range(10)]
        assert all(b.final and b.source is MarketDataSource.history for b in bars)
        expected = run.fake.market.data.history("AAPL", BarInterval.m1, start, end, 100, now)
        assert [(b.open, b.close, b.volume, b.vwap) for b in bars] == [
            (e.open, e.close, e.volume, e.vwap) for e in expected
        ]
        paged = [p for p in run.fake.requests if p[1] == "/v2/stocks/AAPL/bars"]
        assert len(paged) == 4
        limited = await adapter.get_bars("AAPL", BarInterval.m1, start, end, 4)
        assert limited == bars[:4]
        crypto = await adapter.get_bars("BTC-USD", BarInterval.m5, start, end, 100)
        assert crypto
        assert all(b.symbol == "BTC-USD" for b in crypto)
        assert all(start <= b.start < end for b in crypto)


@pytest.mark.skipif(not SPEC.exists(), reason=f"the Alpaca data spec is not at {SPEC}")
async def test_fake_bars_and_stream_messages_conform_to_the_data_spec() -> None:
    from tests.brokers.alpaca.test_fake_conforms import check, response_schema

    async with running_fake() as run:
        now = datetime.now(UTC)
        params = {
            "timeframe": "1Min",
            "start": (now - timedelta(minutes=30)).isoformat(),
            "end": now.isoformat(),
            "limit": "5",
        }
        headers = {"APCA-API-KEY-ID": run.account.key_id, "APCA-API-SECRET-KEY": run.account.secret}
        async with httpx.AsyncClient(base_url=run.url, headers=headers) as client:
            single = (await client.get("/v2/stocks/AAPL/bars", params=params)).json()
            multi = (
                await client.get("/v2/stocks/bars", params={**params, "symbols": "AAPL"})
            ).json()
            crypto = (
                await client.get("/v1beta3/crypto/us/bars", params={**params, "symbols": "BTC/USD"})
            ).json()
        check(single, response_schema("/v2/stocks/{symbol}/bars", "get", document=SPEC), SPEC)
        check(multi, response_schema("/v2/stocks/bars", "get", document=SPEC), SPEC)
        check(crypto, response_schema("/v1beta3/crypto/{loc}/bars", "get", document=SPEC), SPEC)
        assert single["next_page_token"]
        market = run.fake.market
        step = market.data.step_at(now)
        for symbol, kind, schema in (
            ("AAPL", market._quote, "stock_quote"),
            ("BTC/USD", market._quote, "crypto_quote"),
        ):
            body = kind(market.data.quote(symbol.replace("/", "-"), step), symbol)
            body = {k: v for k, v in body.items() if k not in ("T", "S")}
            check(body, {"$ref": f"#/components/schemas/{schema}"}, SPEC)
        option = listed_option(run)
        body = market._quote(market.data.quote(option, step), option)
        body = {k: v for k, v in body.items() if k not in ("T", "S")}
        body.update({"bs": 1, "as": 1})  # sizes: the model quotes none; the stream adds them
        check(body, {"$ref": "#/components/schemas/option_quote"}, SPEC)
        trade = market.data.trade(option, step)
        body = {k: v for k, v in market._trade(trade, option, step).items() if k not in "TS"}
        check(body, {"$ref": "#/components/schemas/option_trade"}, SPEC)
        for symbol, schema in (("AAPL", "stock_trade"), ("BTC/USD", "crypto_trade")):
            trade = market.data.trade(symbol.replace("/", "-"), step)
            body = {k: v for k, v in market._trade(trade, symbol, step).items() if k not in "TS"}
            check(body, {"$ref": f"#/components/schemas/{schema}"}, SPEC)


# --- one gap over several endpoints, as a property ---------------------------------------------


@st.composite
def endpoint_histories(draw: st.DrawFn) -> list[tuple[Endpoint, bool]]:
    """Interleaved (endpoint, is_gap) events, each endpoint alternating gap / resubscribed."""
    per = {e: draw(st.integers(0, 3)) * 2 - draw(st.integers(0, 1)) for e in list(Endpoint)}
    streams = {e: [(e, i % 2 == 0) for i in range(max(n, 0))] for e, n in per.items()}
    out: list[tuple[Endpoint, bool]] = []
    while any(streams.values()):
        choice = draw(st.sampled_from([e for e, s in streams.items() if s]))
        out.append(streams[choice].pop(0))
    return out


@settings(max_examples=80, deadline=None)
@given(endpoint_histories())
def test_one_gap_until_every_endpoint_is_back(history: list[tuple[Endpoint, bool]]) -> None:
    async def run() -> list[MarketEvent]:
        s = AlpacaMarketDataSession(market_data.market_data_capabilities(None), _no_endpoint)
        at = datetime(2026, 1, 5, tzinfo=UTC)
        for endpoint, is_gap in history:
            event = MarketGap("drop", at) if is_gap else MarketResubscribed(at)
            s._queue.put_nowait((endpoint, event))
        s._queue.put_nowait(None)
        return [e async for e in s.events()]

    out = asyncio.run(run())
    down: set[Endpoint] = set()
    expected: list[type] = []
    for endpoint, is_gap in history:
        if is_gap:
            if not down:
                expected.append(MarketGap)
            down.add(endpoint)
        else:
            down.discard(endpoint)
            if not down:
                expected.append(MarketResubscribed)
    assert [type(e) for e in out] == expected
    # Never two gaps without a resubscribed between them, never a resubscribed first.
    assert all(a is not b for a, b in itertools.pairwise(expected))


def _no_endpoint(kind: Endpoint) -> AlpacaEndpointSession:
    raise AssertionError("no connection in this test")

"""Market data pieces on their own: a connection's feed (conflation, bounded queue, resync,
control ordering), subscribe-message parsing, and whose licence an upstream is under."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers.base import (
    BarInterval,
    MarketChannel,
    MarketDataSource,
    MarketDataSubscription,
    MarketQuote,
)
from app.db.models import Connection
from app.services.market_data import (
    MarketDataError,
    canonical_symbol,
    parse_request,
    upstream_key,
)
from app.streaming.market import MarketFeed, quote_frame
from app.streaming.protocol import format_timestamp

T0 = datetime(2026, 5, 22, 14, 30, tzinfo=UTC)


def _quote(symbol: str, bid: str) -> str:
    q = MarketQuote(
        symbol, Decimal(bid), Decimal(bid) + 1, Decimal(1), Decimal(2), T0, MarketDataSource.stream
    )
    return quote_frame(q, "2026-05-22T14:30:00.000001Z")


def test_quotes_conflate_to_the_latest_per_symbol_and_are_counted() -> None:
    feed = MarketFeed(max_queue=4)
    assert feed.offer_quote(("up", "AAPL"), _quote("AAPL", "1")) is False
    assert feed.offer_quote(("up", "MSFT"), _quote("MSFT", "5")) is False
    assert feed.offer_quote(("up", "AAPL"), _quote("AAPL", "2")) is True
    assert feed.offer_quote(("up", "AAPL"), _quote("AAPL", "3")) is True
    assert feed.conflations == 2
    sent = [json.loads(f) for f in feed.take()]
    assert [(m["symbol"], m["bid"]) for m in sent] == [("AAPL", "3"), ("MSFT", "5")]
    assert feed.take() == []


def test_the_same_symbol_through_two_upstreams_is_not_merged() -> None:
    feed = MarketFeed(max_queue=4)
    feed.offer_quote(("paper:con_a", "AAPL"), _quote("AAPL", "1"))
    feed.offer_quote(("alpaca:platform", "AAPL"), _quote("AAPL", "2"))
    assert len(feed.take()) == 2
    assert feed.conflations == 0


def test_trades_overflow_into_one_resync_that_says_what_was_dropped() -> None:
    feed = MarketFeed(max_queue=3)
    for i in range(3):
        assert feed.offer(f'{{"type":"trade","received_at":"t{i}","n":{i}}}', f"t{i}") == 0
    # Full: this one and what was queued are dropped, and counted.
    assert feed.offer('{"type":"trade","received_at":"t3","n":3}', "t3") == 4
    assert feed.offer('{"type":"trade","received_at":"t4","n":4}', "t4") == 1
    frames = [json.loads(f) for f in feed.take()]
    assert frames[0] == {
        "type": "market.resync",
        "reason": "slow_consumer",
        "dropped": 5,
        "since": "t0",
    }
    assert len(frames) == 1
    # Afterwards it queues again, and nothing is dropped without another resync.
    assert feed.offer('{"type":"trade","received_at":"t5","n":5}', "t5") == 0
    assert [json.loads(f)["n"] for f in feed.take()] == [5]
    assert feed.overflows == 1


@given(st.lists(st.sampled_from(["q", "t", "c"]), max_size=60), st.integers(1, 8))
def test_nothing_is_lost_without_a_resync(ops: list[str], size: int) -> None:
    """Every trade offered is either sent or counted in a market.resync; quotes conflate;
    control frames always arrive, after the quotes offered before them."""
    feed = MarketFeed(max_queue=size)
    offered_trades = 0
    controls = 0
    reported_lost = 0
    for n, op in enumerate(ops):
        if op == "q":
            feed.offer_quote(("u", "S"), _quote("S", str(n)))
        elif op == "t":
            offered_trades += 1
            reported_lost += feed.offer(f'{{"type":"trade","received_at":"x","n":{n}}}', "x")
        else:
            controls += 1
            feed.control(f'{{"type":"market.gap","n":{n}}}')
    frames = [json.loads(f) for f in feed.take()]
    sent_trades = sum(1 for f in frames if f["type"] == "trade")
    dropped = sum(f["dropped"] for f in frames if f["type"] == "market.resync")
    assert sent_trades + dropped == offered_trades
    assert reported_lost == dropped  # what the metrics count is what the client is told
    assert sum(1 for f in frames if f["type"] == "market.gap") == controls
    # A quote offered before a control frame is sent before it.
    last_gap = max((i for i, f in enumerate(frames) if f["type"] == "market.gap"), default=-1)
    if last_gap >= 0 and "q" in ops[: len(ops) - ops[::-1].index("c")]:
        assert any(f["type"] == "quote" for f in frames[:last_gap])


def test_subscribe_messages_are_canonicalised() -> None:
    wanted = parse_request(
        [" aapl ", "btc/usd"],
        ["MSFT"],
        {"5m": ["spy"], "1m": ["SPY"]},
        ["AAPL  261218C00150000"],
    )
    assert wanted == MarketDataSubscription(
        quotes=frozenset({"AAPL", "BTC-USD"}),
        trades=frozenset({"MSFT"}),
        bars=frozenset({(BarInterval.m5, "SPY"), (BarInterval.m1, "SPY")}),
        greeks=frozenset({"AAPL261218C00150000"}),
    )


@pytest.mark.parametrize(
    ("quotes", "bars", "greeks", "code"),
    [
        (["AAPL;DROP"], {}, [], "invalid_symbol"),
        ([""], {}, [], "invalid_symbol"),
        (["X" * 40], {}, [], "invalid_symbol"),
        ([], {"2m": ["AAPL"]}, [], "invalid_interval"),
        ([], {}, ["AAPL"], "invalid_symbol"),  # greeks are for options
        ([], {}, ["AAPL261399C00150000"], "invalid_symbol"),  # no such date
    ],
)
def test_bad_subscribe_messages_are_refused(
    quotes: list[str], bars: dict[str, list[str]], greeks: list[str], code: str
) -> None:
    with pytest.raises(MarketDataError) as caught:
        parse_request(quotes, [], bars, greeks)
    assert caught.value.code == code


@given(st.text(max_size=40))
def test_canonical_symbols_are_accepted_again_unchanged(text: str) -> None:
    try:
        symbol = canonical_symbol(text, MarketChannel.quotes)
    except MarketDataError:
        return
    assert canonical_symbol(symbol, MarketChannel.quotes) == symbol
    assert symbol == symbol.strip().upper()


def _connection(ownership: str, connection_id: str, user: str) -> Connection:
    return Connection(
        id=connection_id,
        user_id=user,
        broker_slug="alpaca",
        tier="A" if ownership != "paper" else "paper",
        ownership=ownership,
        status="active",
        display="x",
        created_at=T0,
        updated_at=T0,
    )


def test_a_users_own_connection_is_its_own_licence_and_the_platform_is_shared() -> None:
    mine = upstream_key(_connection("byob", "con_1", "u1"))
    theirs = upstream_key(_connection("byob", "con_2", "u2"))
    assert mine != theirs
    assert upstream_key(_connection("platform", "con_3", "u1")) == upstream_key(
        _connection("platform", "con_4", "u2")
    )
    assert upstream_key(_connection("platform", "con_3", "u1")) not in (mine, theirs)


_DECIMALS = st.one_of(
    st.none(),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-(10**9), max_value=10**9
    ),
)


@given(
    symbol=st.text(min_size=1, max_size=12),
    bid=_DECIMALS,
    ask=_DECIMALS,
    bid_size=_DECIMALS,
    ask_size=_DECIMALS,
    source=st.sampled_from(list(MarketDataSource)),
    micros=st.integers(min_value=0, max_value=999_999),
)
def test_the_quote_frame_is_the_json_of_its_fields_byte_for_byte(
    symbol: str,
    bid: Decimal | None,
    ask: Decimal | None,
    bid_size: Decimal | None,
    ask_size: Decimal | None,
    source: MarketDataSource,
    micros: int,
) -> None:
    """Built by hand for speed, the frame is exactly the compact JSON of its fields (any
    symbol escaped, None as null, decimals as strings)."""
    ts = datetime(2026, 11, 23, 14, 30, 1, micros, tzinfo=UTC)
    quote = MarketQuote(symbol, bid, ask, bid_size, ask_size, ts, source)
    received_at = "2026-11-23T14:30:02.123456Z"
    expected = {
        "type": "quote",
        "symbol": symbol,
        "bid": None if bid is None else str(bid),
        "ask": None if ask is None else str(ask),
        "bid_size": None if bid_size is None else str(bid_size),
        "ask_size": None if ask_size is None else str(ask_size),
        "ts": format_timestamp(ts),
        "received_at": received_at,
        "source": source.value,
    }
    frame = quote_frame(quote, received_at)
    assert frame == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(frame) == expected

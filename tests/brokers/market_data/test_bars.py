"""Bar aggregation, bars from trades and the backfill/live seam."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.brokers.base import Bar, BarInterval, MarketDataSource, MarketTrade
from app.brokers.market_data.bars import (
    BarBuilder,
    BarSeam,
    aggregate,
    stitch,
    window_start,
)

T0 = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def bar(
    minute: int,
    o: str,
    h: str,
    low: str,
    c: str,
    v: str = "10",
    *,
    vwap: str | None = None,
    count: int | None = 1,
    final: bool = True,
    interval: BarInterval = BarInterval.m1,
    symbol: str = "AAPL",
) -> Bar:
    return Bar(
        symbol=symbol,
        interval=interval,
        start=T0 + MINUTE * minute,
        open=Decimal(o),
        high=Decimal(h),
        low=Decimal(low),
        close=Decimal(c),
        volume=Decimal(v),
        vwap=Decimal(vwap) if vwap is not None else Decimal(c),
        trade_count=count,
        final=final,
        source=MarketDataSource.stream,
    )


def trade(second: int, price: str, size: str = "1", symbol: str = "AAPL") -> MarketTrade:
    return MarketTrade(
        symbol=symbol,
        price=Decimal(price),
        size=Decimal(size),
        ts=T0 + timedelta(seconds=second),
        source=MarketDataSource.stream,
    )


# --- aggregation -------------------------------------------------------------------------


def test_five_final_minutes_make_one_final_five_minute_bar() -> None:
    minutes = [
        bar(0, "10", "12", "9", "11", "100", vwap="10.5", count=3),
        bar(1, "11", "13", "10", "12", "200", vwap="12", count=4),
        bar(2, "12", "12", "8", "9", "100", vwap="9", count=1),
        bar(3, "9", "10", "9", "10", "0", vwap="10", count=0),
        bar(4, "10", "11", "10", "10.5", "100", vwap="10.5", count=2),
    ]
    [five] = aggregate(minutes, BarInterval.m5)
    assert five.start == T0
    assert (five.open, five.high, five.low, five.close) == (
        Decimal("10"),
        Decimal("13"),
        Decimal("8"),
        Decimal("10.5"),
    )
    assert five.volume == Decimal("500")
    assert five.trade_count == 10
    # (10.5*100 + 12*200 + 9*100 + 10.5*100) / 500
    assert five.vwap == Decimal("10.8000")
    assert five.final is True
    assert five.source is MarketDataSource.aggregated


def test_a_window_missing_a_minute_or_holding_a_forming_one_is_not_final() -> None:
    four = [bar(m, "1", "1", "1", "1") for m in range(4)]
    assert aggregate(four, BarInterval.m5)[0].final is False
    forming = [*four, bar(4, "1", "2", "1", "2", final=False)]
    assert aggregate(forming, BarInterval.m5)[0].final is False
    # A source that sends no bar for a minute without trades: complete once past the end.
    done = aggregate(four, BarInterval.m5, complete_until=T0 + 5 * MINUTE)
    assert done[0].final is True
    early = aggregate(four, BarInterval.m5, complete_until=T0 + 4 * MINUTE)
    assert early[0].final is False


def test_a_final_bar_wins_over_a_forming_one_with_the_same_start() -> None:
    bars = [bar(0, "1", "5", "1", "5"), bar(0, "1", "2", "1", "2", final=False)]
    [m] = aggregate(bars, BarInterval.m1)
    assert m.high == Decimal("5")
    assert m.final


def test_unknown_vwap_or_count_makes_the_aggregate_unknown() -> None:
    bars = [bar(0, "1", "1", "1", "1", count=None), bar(1, "1", "1", "1", "1")]
    assert aggregate(bars, BarInterval.m5)[0].trade_count is None
    plain = Bar(**{**_fields(bar(1, "1", "1", "1", "1")), "vwap": None})
    assert aggregate([bar(0, "1", "1", "1", "1"), plain], BarInterval.m5)[0].vwap is None


def _fields(b: Bar) -> dict[str, object]:
    return {name: getattr(b, name) for name in Bar.__slots__}


def test_mixed_symbols_or_a_non_dividing_interval_are_refused() -> None:
    with pytest.raises(ValueError, match="one symbol"):
        aggregate(
            [bar(0, "1", "1", "1", "1"), bar(1, "1", "1", "1", "1", symbol="MSFT")], BarInterval.m5
        )
    with pytest.raises(ValueError, match="do not aggregate"):
        aggregate([bar(0, "1", "1", "1", "1", interval=BarInterval.m15)], BarInterval.m5)


def test_windows_are_utc_aligned() -> None:
    at = datetime(2026, 12, 4, 23, 59, 59, tzinfo=UTC)
    assert window_start(at, BarInterval.d1) == datetime(2026, 12, 4, tzinfo=UTC)
    assert window_start(at, BarInterval.h1) == datetime(2026, 12, 4, 23, tzinfo=UTC)
    assert window_start(at, BarInterval.m15) == datetime(2026, 12, 4, 23, 45, tzinfo=UTC)


# --- properties ----------------------------------------------------------------------------

prices = st.integers(min_value=1, max_value=100_000)


@st.composite
def minute_bars(draw: st.DrawFn) -> list[Bar]:
    """Valid 1-minute bars over up to three hours, some minutes missing, some forming."""
    minutes = draw(st.lists(st.integers(0, 179), min_size=1, max_size=120, unique=True))
    out = []
    for m in sorted(minutes):
        points = draw(st.lists(prices, min_size=2, max_size=4))
        o, c = points[0], points[-1]
        hi, lo = max(points), min(points)
        volume = draw(st.integers(0, 10_000))
        vwap = draw(st.integers(lo, hi))
        out.append(
            Bar(
                symbol="AAPL",
                interval=BarInterval.m1,
                start=T0 + MINUTE * m,
                open=Decimal(o) / 100,
                high=Decimal(hi) / 100,
                low=Decimal(lo) / 100,
                close=Decimal(c) / 100,
                volume=Decimal(volume),
                vwap=Decimal(vwap) / 100,
                trade_count=draw(st.integers(0, 50)),
                final=draw(st.booleans()) if m == max(minutes) else True,
                source=MarketDataSource.stream,
            )
        )
    return out


def _ohlcv(b: Bar) -> tuple[object, ...]:
    return (b.start, b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.final)


@settings(max_examples=150, deadline=None)
@given(minute_bars())
def test_aggregating_in_steps_equals_aggregating_at_once(bars: list[Bar]) -> None:
    direct = aggregate(bars, BarInterval.h1)
    via_5 = aggregate(aggregate(bars, BarInterval.m5), BarInterval.h1)
    via_15 = aggregate(aggregate(aggregate(bars, BarInterval.m5), BarInterval.m15), BarInterval.h1)
    assert [_ohlcv(b) for b in direct] == [_ohlcv(b) for b in via_5] == [_ohlcv(b) for b in via_15]
    for a, b in zip(direct, via_15, strict=True):
        if a.vwap is None or b.vwap is None:
            assert a.vwap == b.vwap
        else:  # vwap is rounded to 1e-4 at each level
            assert abs(a.vwap - b.vwap) <= Decimal("0.0002")


@settings(max_examples=150, deadline=None)
@given(minute_bars(), st.sampled_from([BarInterval.m5, BarInterval.m15, BarInterval.h1]))
def test_aggregated_bars_keep_the_ohlc_invariants_and_the_totals(
    bars: list[Bar], interval: BarInterval
) -> None:
    out = aggregate(bars, interval)
    for b in out:
        assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
        if b.vwap is not None:
            assert b.low <= b.vwap <= b.high
        assert b.start == window_start(b.start, interval)
    assert sum(b.volume for b in out) == sum(b.volume for b in bars)
    assert [b.start for b in out] == sorted({window_start(b.start, interval) for b in bars})
    assert max(b.high for b in out) == max(b.high for b in bars)
    assert min(b.low for b in out) == min(b.low for b in bars)


# --- bars from trades ------------------------------------------------------------------------


def test_trades_make_a_forming_bar_then_a_final_one_at_the_boundary() -> None:
    builder = BarBuilder("AAPL")
    [first] = builder.add(trade(5, "10", "2"))
    assert (first.open, first.close, first.final, first.trade_count) == (
        Decimal("10"),
        Decimal("10"),
        False,
        1,
    )
    [second] = builder.add(trade(30, "12", "2"))
    assert second.high == Decimal("12")
    assert second.vwap == Decimal("11.0000")
    assert builder.close_until(T0 + timedelta(seconds=59)) == []
    closed, opened = builder.add(trade(61, "11"))
    assert closed.final
    assert closed.start == T0
    assert closed.close == Decimal("12")
    assert closed.volume == Decimal("4")
    assert closed.trade_count == 2
    assert opened.start == T0 + MINUTE
    assert not opened.final
    # The clock alone finalises the forming bar.
    [by_clock] = builder.close_until(T0 + 2 * MINUTE)
    assert by_clock.final
    assert by_clock.start == T0 + MINUTE


def test_a_late_trade_never_reopens_a_final_bar() -> None:
    builder = BarBuilder("AAPL")
    builder.add(trade(5, "10"))
    builder.add(trade(65, "11"))  # finalises minute 0
    assert builder.add(trade(50, "99")) == []
    assert builder.late_trades == 1
    builder.close_until(T0 + 2 * MINUTE)
    assert builder.add(trade(100, "99")) == []
    assert builder.late_trades == 2


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1799), prices, st.integers(1, 500)),
        min_size=1,
        max_size=200,
    )
)
def test_bars_from_trades_match_the_trades(raw: list[tuple[int, int, int]]) -> None:
    trades = [trade(s, str(Decimal(p) / 100), str(z)) for s, p, z in sorted(raw)]
    builder = BarBuilder("AAPL")
    finals = [b for t in trades for b in builder.add(t) if b.final]
    finals += builder.close_until(T0 + timedelta(hours=1))
    by_minute: dict[datetime, list[MarketTrade]] = {}
    for t in trades:
        by_minute.setdefault(window_start(t.ts, BarInterval.m1), []).append(t)
    assert [b.start for b in finals] == sorted(by_minute)
    for b in finals:
        ts = by_minute[b.start]
        assert b.open == ts[0].price
        assert b.close == ts[-1].price
        assert b.high == max(t.price for t in ts)
        assert b.low == min(t.price for t in ts)
        assert b.volume == sum(t.size for t in ts)
        assert b.trade_count == len(ts)
        assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
    # Re-aggregating the built bars equals building 5-minute bars from the same trades
    # (minutes without trades have no bar: the builder's output is complete up to the hour).
    five = BarBuilder("AAPL", BarInterval.m5)
    direct = [b for t in trades for b in five.add(t) if b.final]
    direct += five.close_until(T0 + timedelta(hours=1))
    again = aggregate(finals, BarInterval.m5, complete_until=T0 + timedelta(hours=1))
    assert [_ohlcv(b) for b in again] == [_ohlcv(b) for b in direct]


# --- the seam ------------------------------------------------------------------------------


def test_backfill_and_live_meet_without_gap_or_duplicate() -> None:
    backfill = [bar(m, "1", "2", "1", "2") for m in range(0, 5)]
    live = [
        bar(4, "1", "2", "1", "2"),  # the last backfilled minute again
        bar(5, "2", "3", "2", "3", final=False),
        bar(5, "2", "4", "2", "4", final=False),
        bar(5, "2", "4", "2", "3"),
        bar(5, "2", "2", "2", "2", final=False),  # a forming update after its final bar
        bar(6, "3", "3", "3", "3"),
    ]
    out = stitch(backfill, live)
    finals = [b.start for b in out if b.final]
    assert finals == [T0 + MINUTE * m for m in range(7)]
    assert [(b.start, b.final) for b in out if b.start == T0 + 5 * MINUTE] == [
        (T0 + 5 * MINUTE, False),
        (T0 + 5 * MINUTE, False),
        (T0 + 5 * MINUTE, True),
    ]


def test_the_seam_keeps_symbols_and_intervals_apart() -> None:
    seam = BarSeam()
    assert seam.offer(bar(0, "1", "1", "1", "1"))
    assert seam.offer(bar(0, "1", "1", "1", "1", symbol="MSFT"))
    assert seam.offer(bar(0, "1", "1", "1", "1", interval=BarInterval.m5))
    assert not seam.offer(bar(0, "1", "1", "1", "1"))
    assert seam.dropped == 1


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(0, 40),
    st.integers(0, 5),
    st.lists(st.booleans(), max_size=60),
)
def test_any_overlap_stitches_to_each_minute_once_and_final(
    backfilled: int, live_from: int, live_len: int, forming_noise: list[bool]
) -> None:
    """The backfill covers [0, backfilled); live starts at or before its end (held live bars
    start no later than the history's end), with forming updates sprinkled in."""
    live_from = min(live_from, backfilled)
    backfill = [bar(m, "1", "2", "1", "2") for m in range(backfilled)]
    live: list[Bar] = []
    noise = iter(forming_noise)
    for m in range(live_from, backfilled + live_len):
        if next(noise, False):
            live.append(bar(m, "1", "3", "1", "3", final=False))
        live.append(bar(m, "1", "2", "1", "2"))
        if next(noise, False):
            live.append(bar(m, "1", "3", "1", "3", final=False))
    out = stitch(backfill, live)
    finals = [b.start for b in out if b.final]
    assert finals == [T0 + MINUTE * m for m in range(backfilled + live_len)]
    seen_final: set[datetime] = set()
    for b in out:
        assert b.start not in seen_final  # nothing after its final bar
        if b.final:
            seen_final.add(b.start)

"""Bars the gateway makes itself: larger intervals from smaller bars, 1-minute bars from
trades, and the seam between a backfill and the live stream.

Windows are aligned on the Unix epoch (so ``1d`` is the UTC day, ``1h`` the UTC hour).

* ``aggregate`` turns bars of one interval into bars of a larger one (OHLC, summed volume
  and trade count, volume-weighted vwap), marked ``aggregated``. A larger bar is final only
  when every bar of its window is there and final, or, for sources that send no bar for a
  minute without trades (Alpaca, Schwab), when the caller says the source is complete up to
  ``complete_until`` past the window's end.
* ``BarBuilder`` makes bars from trades (brokers that stream no bars: Tradier, Webull): each
  trade updates the forming bar; the bar is final once a trade or the clock passes its end.
  A trade for a window already finalised is dropped and counted, never reopening it.
* ``BarSeam`` delivers each (interval, start) at most once as final, lets a final bar
  replace a forming one and never lets a forming bar follow its final one. The way to stitch
  a backfill without a gap: start the live stream first and hold its bars, fetch the
  history up to now, offer the history (oldest first), then the held and later live bars.
  ``stitch`` does that for two lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from app.brokers.base import Bar, BarInterval, MarketDataSource, MarketTrade

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VWAP_PLACES = Decimal("0.0001")


def window_start(at: datetime, interval: BarInterval) -> datetime:
    """The start of the ``interval`` window containing ``at`` (epoch-aligned, UTC)."""
    if at.tzinfo is None:
        raise ValueError("bars need timezone-aware datetimes")
    seconds = (at - EPOCH) // timedelta(seconds=1)
    return EPOCH + timedelta(seconds=seconds - seconds % interval.seconds)


def window_end(start: datetime, interval: BarInterval) -> datetime:
    return start + timedelta(seconds=interval.seconds)


def _vwap(bars: Sequence[Bar]) -> Decimal | None:
    """Volume-weighted: Σ vwap·volume / Σ volume; unknown if a part that traded has none
    (a part without volume weighs nothing), or if nothing traded."""
    traded = [b for b in bars if b.volume > 0]
    volume = sum((b.volume for b in traded), Decimal(0))
    if volume <= 0 or any(b.vwap is None for b in traded):
        return None
    notional = sum((b.vwap * b.volume for b in traded if b.vwap is not None), Decimal(0))
    return (notional / volume).quantize(VWAP_PLACES)


def _trade_count(bars: Sequence[Bar]) -> int | None:
    counts = [b.trade_count for b in bars]
    if any(c is None for c in counts):
        return None
    return sum(c for c in counts if c is not None)


def _combine(
    symbol: str, interval: BarInterval, start: datetime, parts: Sequence[Bar], final: bool
) -> Bar:
    return Bar(
        symbol=symbol,
        interval=interval,
        start=start,
        open=parts[0].open,
        high=max(b.high for b in parts),
        low=min(b.low for b in parts),
        close=parts[-1].close,
        volume=sum((b.volume for b in parts), Decimal(0)),
        vwap=_vwap(parts),
        trade_count=_trade_count(parts),
        final=final,
        source=MarketDataSource.aggregated,
    )


def aggregate(
    bars: Iterable[Bar], interval: BarInterval, *, complete_until: datetime | None = None
) -> list[Bar]:
    """Bars of one symbol and one smaller interval as ``interval`` bars, oldest first.

    Raises ``ValueError`` for mixed symbols or intervals, or an interval that does not
    divide ``interval``. Several bars with the same start: a final one wins, else the last.
    """
    chosen: dict[datetime, Bar] = {}
    symbol: str | None = None
    child: BarInterval | None = None
    for bar in bars:
        if symbol is None:
            symbol, child = bar.symbol, bar.interval
        elif bar.symbol != symbol or bar.interval is not child:
            raise ValueError("aggregate takes the bars of one symbol and one interval")
        held = chosen.get(bar.start)
        if held is None or not (held.final and not bar.final):
            chosen[bar.start] = bar
    if symbol is None or child is None:
        return []
    if interval.seconds % child.seconds or interval.seconds < child.seconds:
        raise ValueError(f"{child.value} bars do not aggregate into {interval.value}")
    per_window = interval.seconds // child.seconds
    windows: dict[datetime, list[Bar]] = {}
    for start in sorted(chosen):
        windows.setdefault(window_start(start, interval), []).append(chosen[start])
    result = []
    for start, parts in windows.items():
        all_final = all(b.final for b in parts)
        covered = len(parts) == per_window or (
            complete_until is not None and window_end(start, interval) <= complete_until
        )
        result.append(_combine(symbol, interval, start, parts, all_final and covered))
    return result


@dataclass
class BarBuilder:
    """1-minute (or other) bars of one symbol from its trades, marked ``aggregated``.

    ``add`` returns what to deliver: the finished previous bar (final) when the trade opens
    a new window, then the forming bar as updated by the trade. ``close_until`` finalises
    the forming bar once the clock passes its end, with no trade needed.
    """

    symbol: str
    interval: BarInterval = BarInterval.m1
    late_trades: int = 0  # trades for a window already final: dropped, counted
    _forming: Bar | None = field(default=None, repr=False)
    _notional: Decimal = field(default=Decimal(0), repr=False)
    _finalised_before: datetime | None = field(default=None, repr=False)

    def add(self, trade: MarketTrade) -> list[Bar]:
        if trade.symbol != self.symbol:
            raise ValueError(f"a {trade.symbol} trade offered to the {self.symbol} bars")
        start = window_start(trade.ts, self.interval)
        if self._finalised_before is not None and start < self._finalised_before:
            self.late_trades += 1
            return []
        out: list[Bar] = []
        forming = self._forming
        if forming is not None and start < forming.start:
            self.late_trades += 1
            return []
        if forming is not None and start > forming.start:
            out.append(self._finalise())
            forming = None
        if forming is None:
            self._notional = trade.price * trade.size
            forming = Bar(
                symbol=self.symbol,
                interval=self.interval,
                start=start,
                open=trade.price,
                high=trade.price,
                low=trade.price,
                close=trade.price,
                volume=trade.size,
                vwap=trade.price,
                trade_count=1,
                final=False,
                source=MarketDataSource.aggregated,
            )
        else:
            self._notional += trade.price * trade.size
            volume = forming.volume + trade.size
            forming = replace(
                forming,
                high=max(forming.high, trade.price),
                low=min(forming.low, trade.price),
                close=trade.price,
                volume=volume,
                vwap=(self._notional / volume).quantize(VWAP_PLACES) if volume > 0 else None,
                trade_count=(forming.trade_count or 0) + 1,
            )
        self._forming = forming
        out.append(forming)
        return out

    def close_until(self, now: datetime) -> list[Bar]:
        """The forming bar as final if ``now`` is at or past its end, else nothing."""
        forming = self._forming
        if forming is None or now < window_end(forming.start, self.interval):
            return []
        return [self._finalise()]

    def _finalise(self) -> Bar:
        assert self._forming is not None
        final = replace(self._forming, final=True)
        self._finalised_before = window_end(final.start, self.interval)
        self._forming = None
        self._notional = Decimal(0)
        return final


@dataclass
class BarSeam:
    """Per (symbol, interval): each start delivered final at most once, a final bar wins
    over a forming one, nothing older than the last final bar gets through.

    ``offer`` says whether to deliver the bar. Duplicates and stale bars are counted.
    """

    dropped: int = 0
    _last_final: dict[tuple[str, BarInterval], datetime] = field(default_factory=dict)
    _forming: dict[tuple[str, BarInterval], Bar] = field(default_factory=dict)

    def offer(self, bar: Bar) -> bool:
        key = (bar.symbol, bar.interval)
        last_final = self._last_final.get(key)
        if last_final is not None and bar.start <= last_final:
            self.dropped += 1
            return False
        forming = self._forming.get(key)
        if bar.final:
            self._last_final[key] = bar.start
            if forming is not None and forming.start <= bar.start:
                del self._forming[key]
            return True
        if forming is not None and (
            bar.start < forming.start or (bar.start == forming.start and bar == forming)
        ):
            self.dropped += 1
            return False
        self._forming[key] = bar
        return True


def stitch(backfill: Iterable[Bar], live: Iterable[Bar]) -> list[Bar]:
    """The backfill (sorted oldest first) then the live bars, through one ``BarSeam``."""
    seam = BarSeam()
    ordered = sorted(backfill, key=lambda b: (b.symbol, b.interval.seconds, b.start, b.final))
    return [bar for bar in [*ordered, *live] if seam.offer(bar)]

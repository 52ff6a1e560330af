"""``GET /v1/accounts/{id}/bars``: historical bars through the account's broker.

An interval the broker serves (``MarketDataCapabilities.history_intervals``) is read as it
is (``source: history``); another is built by the gateway from the largest smaller interval
the broker serves that divides it (``source: aggregated``), with the seam rules of
``app.brokers.market_data.bars``. Pages are bounded (``MAX_LIMIT`` bars, and at most
``MAX_SOURCE_BARS`` smaller bars read for one page); the cursor carries the next page's
start together with the symbol and interval it belongs to.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import (
    Bar,
    BarInterval,
    MarketChannel,
    MarketDataCapabilities,
    Support,
    SupportsBarHistory,
)
from app.brokers.market_data.bars import aggregate, window_start
from app.db.repositories.connections import AccountRepository
from app.schemas.common import decode_cursor, encode_cursor
from app.schemas.market_data import BarOut, BarPage
from app.services.broker_errors import to_app_error
from app.services.context import ServiceContext
from app.services.market_data import MarketDataError, canonical_symbol

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
MAX_SOURCE_BARS = 10_000


def source_interval(wanted: BarInterval, available: frozenset[BarInterval]) -> BarInterval | None:
    """The largest served interval below ``wanted`` that divides it, or None."""
    candidates = [
        i for i in available if i.seconds < wanted.seconds and wanted.seconds % i.seconds == 0
    ]
    return max(candidates, key=lambda i: i.seconds) if candidates else None


class BarHistoryService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def page(
        self,
        *,
        user_id: str,
        account_id: str,
        symbol: str,
        interval: BarInterval,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> BarPage:
        try:
            canonical = canonical_symbol(symbol, MarketChannel.bars)
        except MarketDataError as exc:
            raise errors.ValidationFailed(exc.detail) from None
        end = end or self._ctx.clock()
        if cursor is not None:
            cursor_symbol, cursor_interval, cursor_start = decode_cursor(cursor, size=3)
            if cursor_symbol != canonical or cursor_interval != interval.value:
                raise errors.InvalidCursor("the cursor belongs to another symbol or interval")
            try:
                start = datetime.fromisoformat(cursor_start).astimezone(UTC)
            except ValueError:
                raise errors.InvalidCursor() from None
        if start is None:
            try:
                start = end - interval.seconds * timedelta(seconds=limit)
            except OverflowError:
                raise errors.ValidationFailed("end is too early for this interval") from None
        if start >= end:
            raise errors.ValidationFailed("start must be before end")
        return await self._ctx.with_fresh_tokens(
            lambda: self._read(user_id, account_id, canonical, interval, start, end, limit)
        )

    async def _read(
        self,
        user_id: str,
        account_id: str,
        symbol: str,
        interval: BarInterval,
        start: datetime,
        end: datetime,
        limit: int,
    ) -> BarPage:
        async with self._ctx.sessionmaker() as session:
            found = await AccountRepository.for_user(session, user_id).get_with_connection(
                account_id
            )
            if found is None:
                raise errors.NotFound("no such account")
            _, connection = found
            if connection.status == "revoked":
                raise errors.ConnectionBroken("the connection was disconnected")
            caps = self._ctx.spec_for(connection).capabilities.market_data
            if caps.history is Support.unsupported:
                raise errors.MarketDataUnsupported(
                    f"{connection.broker_slug} offers no historical bars through the gateway"
                )
            adapter = await self._ctx.adapter_for(session, connection, for_order=False)
        if not isinstance(adapter, SupportsBarHistory):
            raise errors.MarketDataUnsupported(
                f"{connection.broker_slug} offers no historical bars through the gateway"
            )
        try:
            if interval in caps.history_intervals:
                bars = await adapter.get_bars(symbol, interval, start, end, limit + 1)
                return _page(symbol, interval, bars, limit)
            return await self._aggregated(adapter, caps, symbol, interval, start, end, limit)
        except broker_errors.NotSupported as exc:
            raise errors.RangeUnavailable(exc.reason) from None
        except broker_errors.BrokerError as exc:
            raise to_app_error(exc) from exc
        finally:
            close = getattr(adapter, "close", None)
            if close is not None:
                await close()

    async def _aggregated(
        self,
        adapter: SupportsBarHistory,
        caps: MarketDataCapabilities,
        symbol: str,
        interval: BarInterval,
        start: datetime,
        end: datetime,
        limit: int,
    ) -> BarPage:
        base = source_interval(interval, caps.history_intervals)
        if base is None:
            raise errors.RangeUnavailable(
                f"the broker serves {', '.join(sorted(i.value for i in caps.history_intervals))}"
                f" bars, from which {interval.value} cannot be built"
            )
        ratio = interval.seconds // base.seconds
        per_page = max(1, min(limit, MAX_SOURCE_BARS // ratio))
        # Bars start in [start, end): the first whole window at or after ``start``.
        aligned = window_start(start, interval)
        start = aligned if aligned == start else aligned + timedelta(seconds=interval.seconds)
        if start >= end:
            return BarPage(symbol=symbol, interval=interval.value, items=[], next_cursor=None)
        window_end = min(end, start + timedelta(seconds=interval.seconds * per_page))
        source = await adapter.get_bars(symbol, base, start, window_end, per_page * ratio)
        # The broker's history is complete up to the current (forming) source bar; brokers
        # that send no bar for a minute without trades leave holes that are not gaps.
        complete_until = min(window_end, window_start(self._ctx.clock(), base))
        built = [
            b
            for b in aggregate(source, interval, complete_until=complete_until)
            if start <= b.start < window_end
        ]
        if len(built) > per_page:
            built = built[:per_page]
        next_cursor = None
        if window_end < end:
            next_cursor = encode_cursor(symbol, interval.value, window_end.isoformat())
        return BarPage(
            symbol=symbol,
            interval=interval.value,
            items=[_bar_out(b) for b in built],
            next_cursor=next_cursor,
        )


def _page(symbol: str, interval: BarInterval, bars: list[Bar], limit: int) -> BarPage:
    items = bars[:limit]
    next_cursor = None
    if len(bars) > limit:
        following = bars[limit].start
        next_cursor = encode_cursor(symbol, interval.value, following.isoformat())
    return BarPage(
        symbol=symbol,
        interval=interval.value,
        items=[_bar_out(b) for b in items],
        next_cursor=next_cursor,
    )


def _bar_out(bar: Bar) -> BarOut:
    return BarOut(
        start=bar.start,
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        vwap=bar.vwap,
        trade_count=bar.trade_count,
        final=bar.final,
        source=bar.source.value,
    )

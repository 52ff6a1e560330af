"""REST market data: historical bars (API.md "Market data")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.schemas.common import DecimalStr, ResponseModel, UTCTimestamp


class BarOut(ResponseModel):
    start: UTCTimestamp = Field(description="The bar covers [start, start + interval)")
    open: DecimalStr
    high: DecimalStr
    low: DecimalStr
    close: DecimalStr
    volume: DecimalStr
    vwap: DecimalStr | None = Field(description="Null where the broker does not report it")
    trade_count: int | None = Field(description="Null where the broker does not report it")
    final: bool = Field(description="False while the bar is still forming (it may change)")
    source: Literal["history", "aggregated", "stream", "poll"] = Field(
        description="`history`: the broker's own bars at this interval; `aggregated`: built "
        "by the gateway from the broker's smaller bars (an interval the broker lacks)"
    )


class BarPage(ResponseModel):
    symbol: str
    interval: Literal["1m", "5m", "15m", "1h", "1d"]
    items: list[BarOut]
    next_cursor: str | None = Field(
        description="Set when more bars follow in the requested range: pass it as `cursor` "
        "with the same symbol, interval and end"
    )

"""Historical bars: ``GET /v1/accounts/{account_id}/bars`` (live data is on ``/v1/stream``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.brokers.base import BarInterval
from app.schemas.common import as_utc
from app.schemas.market_data import BarPage
from app.services.bar_history import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=API_PREFIX, tags=["market data"])

BARS = """
OHLCV bars of `symbol` through the account's broker, oldest first, with `start <= bar.start
< end` (`end` defaults to now, `start` to `limit` intervals before `end`). Each bar says
whether it is `final` (a forming bar may still change) and its `source`: `history` (the
broker's own bars at this interval) or `aggregated` (built by the gateway from the broker's
smaller bars, for an interval the broker lacks). `vwap` and `trade_count` are null where the
broker does not report them. Pages hold at most `limit` bars; `next_cursor` continues the
range (pass it as `cursor` with the same symbol, interval and end).

Problems: 422 `market_data_unsupported` (the broker has no bar history through the
gateway), 422 `range_unavailable` (an interval or range the broker cannot serve), 422
`validation_error`, 404 `not_found` (not your account), 400 `invalid_cursor`.
"""


@router.get(
    "/accounts/{account_id}/bars",
    name="list_bars",
    description=BARS,
    responses=problem_responses(400, 401, 404, 409, 422, 429, 503),
)
async def list_bars(
    account_id: str,
    user: CurrentUser,
    state: State,
    symbol: Annotated[str, Query(min_length=1, max_length=32)],
    interval: BarInterval = BarInterval.m1,
    start: AwareDatetime | None = None,
    end: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> BarPage:
    """Historical bars, oldest first."""
    return await state.bars.page(
        user_id=user.user_id,
        account_id=account_id,
        symbol=symbol,
        interval=interval,
        start=as_utc(start, "start"),
        end=as_utc(end, "end"),
        limit=limit,
        cursor=cursor,
    )

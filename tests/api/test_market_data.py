"""``GET /v1/accounts/{id}/bars``: the paper market's history, an interval aggregated by the
gateway (a broker with 1-minute history only), paging, and every problem."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio

from app.brokers.base import OptionContract, OptionRight
from tests.conftest import new_user
from tests.harness import CLOCK_START, Harness, running_app, settings_for_tests
from tests.streaming.market_support import market_registry

HOUR_AGO = (CLOCK_START - timedelta(hours=1)).isoformat()
NOW = CLOCK_START.isoformat()


@pytest_asyncio.fixture
async def h(postgres_url: str) -> AsyncIterator[Harness]:
    async with running_app(settings_for_tests(postgres_url), market_registry()) as harness:
        yield harness


async def _bars(h: Harness, user: str, account: str, **params: Any) -> Any:
    return await h.client.get(f"/v1/accounts/{account}/bars", params=params, headers=h.auth(user))


async def _connect(h: Harness, user: str, broker: str) -> str:
    response = await h.client.post(
        "/v1/connections",
        json={"broker": broker, "credentials": {"key": f"key-of-{user}"}},
        headers=h.auth(user),
    )
    assert response.status_code == 201, response.text
    account: str = response.json()["accounts"][0]
    return account


async def test_one_minute_bars_of_the_paper_market(h: Harness) -> None:
    user = new_user("bars")
    _, account = await h.paper_account(user)
    response = await _bars(
        h, user, account, symbol="aapl", interval="1m", start=HOUR_AGO, end=NOW, limit=1000
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["symbol"] == "AAPL"
    assert page["interval"] == "1m"
    assert page["next_cursor"] is None
    items = page["items"]
    assert len(items) == 60
    starts = [item["start"] for item in items]
    assert starts == sorted(starts)
    assert starts[0] == HOUR_AGO.replace("+00:00", "Z")
    for bar in items:
        low, high = Decimal(bar["low"]), Decimal(bar["high"])
        assert low <= Decimal(bar["open"]) <= high
        assert low <= Decimal(bar["close"]) <= high
        assert bar["final"] is True
        assert bar["source"] == "history"


async def test_pages_follow_the_cursor_without_gap_or_overlap(h: Harness) -> None:
    user = new_user("bars-pages")
    _, account = await h.paper_account(user)
    whole = (
        await _bars(h, user, account, symbol="MSFT", start=HOUR_AGO, end=NOW, limit=1000)
    ).json()["items"]
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"symbol": "MSFT", "end": NOW, "limit": 7}
        if cursor is None:
            params["start"] = HOUR_AGO
        else:
            params["cursor"] = cursor
        page = (await _bars(h, user, account, **params)).json()
        assert len(page["items"]) <= 7
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == whole
    # A cursor is bound to its symbol and interval.
    first = (await _bars(h, user, account, symbol="MSFT", start=HOUR_AGO, end=NOW, limit=7)).json()
    wrong = await _bars(h, user, account, symbol="AAPL", cursor=first["next_cursor"], end=NOW)
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_cursor"


async def test_an_interval_the_broker_lacks_is_aggregated_and_marked_so(h: Harness) -> None:
    user = new_user("bars-agg")
    _, paper = await h.paper_account(user)
    one_minute_only = await _connect(h, user, "papermd")  # the paper market, 1m history only
    params = {"symbol": "AAPL", "interval": "5m", "start": HOUR_AGO, "end": NOW}
    native = (await _bars(h, user, paper, **params)).json()["items"]
    built = await _bars(h, user, one_minute_only, **params)
    assert built.status_code == 200, built.text
    items = built.json()["items"]
    assert len(items) == len(native) == 12
    for ours, theirs in zip(items, native, strict=True):
        assert ours["source"] == "aggregated"
        assert theirs["source"] == "history"
        for field in ("start", "open", "high", "low", "close", "volume", "final"):
            assert ours[field] == theirs[field], field
    # Hourly, in pages bounded by what one page may read.
    hourly = await _bars(
        h,
        user,
        one_minute_only,
        symbol="AAPL",
        interval="1h",
        start=(CLOCK_START - timedelta(hours=3)).isoformat(),
        end=NOW,
    )
    assert hourly.status_code == 200, hourly.text
    hours = hourly.json()["items"]
    assert [b["source"] for b in hours] == ["aggregated"] * 3
    # The window the range ends in is not over: that bar is forming, the others final.
    assert [b["final"] for b in hours] == [True, True, False]


def _an_option(h: Harness) -> str:
    options = h.state.ctx.paper_engine.options
    return OptionContract(
        underlying="AAPL",
        root="AAPL",
        expiration=options.expirations("AAPL", CLOCK_START.date())[1].expiration,
        right=OptionRight.call,
        strike=options.strikes("AAPL")[20],
    ).symbol


async def test_problems(h: Harness) -> None:
    user, other = new_user("bars-problems"), new_user("bars-other")
    _, account = await h.paper_account(user)
    _, others = await h.paper_account(other)
    no_market = await _connect(h, user, "papernomd")
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (no_market, {"symbol": "AAPL"}, 422, "market_data_unsupported"),
        (others, {"symbol": "AAPL"}, 404, "not_found"),
        (account, {"symbol": "AAPL", "start": NOW, "end": HOUR_AGO}, 422, "validation_error"),
        (account, {"symbol": "AAPL;X"}, 422, "validation_error"),
        (account, {"symbol": "AAPL", "interval": "2m"}, 422, "validation_error"),
        (account, {"symbol": "AAPL", "limit": 100000}, 422, "validation_error"),
        (account, {"symbol": "AAPL", "cursor": "garbage"}, 400, "invalid_cursor"),
        (
            # The paper market builds an option's day bars from every step: refused
            # beyond what one request may compute.
            account,
            {
                "symbol": _an_option(h),
                "interval": "1d",
                "start": (CLOCK_START - timedelta(days=60)).isoformat(),
                "end": NOW,
            },
            422,
            "range_unavailable",
        ),
    ]
    for target, params, status, code in cases:
        response = await _bars(h, user, target, **params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["code"] == code, (params, response.text)

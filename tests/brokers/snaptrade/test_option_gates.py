"""Through the whole gateway: an option order to a SnapTrade account whose linked brokerage
takes no options through SnapTrade is 422 ``unsupported_order`` (the broker supports options,
this account does not), with nothing written and no trading request; the same body to an
account whose brokerage takes options is placed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from app.brokers.base import OptionContract, OptionRight
from app.db.models import IdempotencyKey, Order
from tests.brokers.snaptrade.gateway import Gateway, gateway
from tests.conftest import new_user

TRADING_PATHS = ("/trading/", "/trade/")


def _call(gw: Gateway, offset: int) -> str:
    options = gw.fake.options
    today = datetime.now(UTC).date()
    expiration = next(
        e.expiration
        for e in options.expirations("AAPL", today)
        if e.expiration >= today + timedelta(days=21)
    )
    strikes = options.strikes("AAPL")
    strike = strikes[len(strikes) // 2 + offset]
    return OptionContract("AAPL", "AAPL", expiration, OptionRight.call, strike).symbol


def _bodies(gw: Gateway) -> list[dict[str, Any]]:
    single = {
        "symbol": _call(gw, 0),
        "side": "buy",
        "quantity": "1",
        "order_type": "limit",
        "limit_price": "0.05",
        "time_in_force": "day",
        "position_effect": "open",
    }
    vertical = {
        "legs": [
            {"symbol": _call(gw, 0), "side": "buy", "ratio": 1, "position_effect": "open"},
            {"symbol": _call(gw, 2), "side": "sell", "ratio": 1, "position_effect": "open"},
        ],
        "quantity": "1",
        "order_type": "limit",
        "limit_price": "0.05",
        "price_effect": "debit",
        "time_in_force": "day",
    }
    return [single, vertical]


async def _written(gw: Gateway, user: str) -> tuple[int, int]:
    async with gw.harness.state.ctx.sessionmaker() as session:
        orders = await session.scalar(select(func.count()).where(Order.user_id == user))
        keys = await session.scalar(select(func.count()).where(IdempotencyKey.user_id == user))
    return int(orders or 0), int(keys or 0)


async def test_an_account_without_options_refuses_them_with_nothing_written(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, account = await gw.linked(user, "ALPACA")
        before = [r for r in gw.fake.requests if any(p in r[1] for p in TRADING_PATHS)]
        for body in _bodies(gw):
            refused = await h.client.post(
                f"/v1/accounts/{account}/orders",
                json=body,
                headers=h.auth(user, **{"Idempotency-Key": uuid.uuid4().hex}),
            )
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["code"] == "unsupported_order"
        after = [r for r in gw.fake.requests if any(p in r[1] for p in TRADING_PATHS)]
        assert after == before
        assert await _written(gw, user) == (0, 0)

        # The same orders to an account whose brokerage trades options are placed.
        other = new_user()
        _, options_account = await gw.linked(other, "SCHWAB")
        for body in _bodies(gw):
            placed = await h.client.post(
                f"/v1/accounts/{options_account}/orders",
                json=body,
                headers=h.auth(other, **{"Idempotency-Key": uuid.uuid4().hex}),
            )
            assert placed.status_code == 201, placed.text

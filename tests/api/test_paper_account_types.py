"""``POST /v1/connections`` for the paper broker takes ``account_type`` (cash by default)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from app.brokers import errors as broker_errors
from app.brokers.base import OrderRequest, OrderSide, OrderType, PositionEffect, TimeInForce
from tests.conftest import new_user
from tests.harness import Harness


def _short() -> OrderRequest:
    return OrderRequest(
        client_order_id="c" + uuid.uuid4().hex,
        symbol="AAPL",
        side=OrderSide.sell,
        quantity=Decimal(1),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        position_effect=PositionEffect.open,
    )


async def _connect(harness: Harness, user: str, options: dict[str, str]) -> int:
    response = await harness.client.post(
        "/v1/connections",
        json={"broker": "paper", "options": options},
        headers=harness.auth(user),
    )
    return response.status_code


@pytest.mark.parametrize(("options", "shorts"), [({}, False), ({"account_type": "margin"}, True)])
async def test_the_account_type_decides_whether_the_paper_account_sells_short(
    harness: Harness, options: dict[str, str], shorts: bool
) -> None:
    user = new_user()
    assert await _connect(harness, user, {"starting_cash": "100000", **options}) == 201
    engine = harness.state.ctx.paper_engine
    [account] = await engine.list_accounts(user)
    if shorts:
        order = await engine.place(user, account.broker_account_id, _short())
        assert order.filled_quantity == 1
    else:
        with pytest.raises(broker_errors.UnsupportedOrder, match="margin account"):
            await engine.place(user, account.broker_account_id, _short())


async def test_an_unknown_account_type_is_refused(harness: Harness) -> None:
    user = new_user()
    response = await harness.client.post(
        "/v1/connections",
        json={"broker": "paper", "options": {"account_type": "portfolio"}},
        headers=harness.auth(user),
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"

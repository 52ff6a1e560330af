"""Short stock and options together: short shares never cover a short call, and an account
short the underlying settles its expiring options in cash."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.brokers import errors as broker_errors
from app.brokers.base import (
    OptionContract,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    TimeInForce,
)
from app.db.models import PaperOrder
from app.db.session import SessionMaker
from tests.conftest import new_user
from tests.paper.test_options import (
    EXPIRY,
    HUNDRED,
    call,
    make_engine,
    single,
    spot,
    strike_near,
)


def _short_shares(quantity: str) -> OrderRequest:
    return OrderRequest(
        client_order_id="c" + uuid.uuid4().hex,
        symbol="AAPL",
        side=OrderSide.sell,
        quantity=Decimal(quantity),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        position_effect=PositionEffect.open,
    )


async def test_a_short_call_is_not_covered_by_short_shares(sessionmaker: SessionMaker) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner = new_user("opt")
    account = (
        await engine.create_account(owner, Decimal(20000), account_type="margin")
    ).broker_account_id
    await engine.place(owner, account, _short_shares("100"))

    with pytest.raises(broker_errors.UncoveredOption):
        await engine.place(owner, account, single(call("200"), OrderSide.sell, PositionEffect.open))

    [position] = await engine.positions(owner, account)
    assert position.quantity == Decimal(-100)


async def test_a_long_call_in_the_money_settles_in_cash_when_the_account_is_short_the_stock(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner = new_user("opt")
    account = (
        await engine.create_account(owner, Decimal(1000000), account_type="margin")
    ).broker_account_id
    settle_price = spot(EXPIRY)
    symbol = call(strike_near(settle_price - 5, above=False))
    strike = OptionContract.parse(symbol).strike
    await engine.place(owner, account, _short_shares("100"))
    bought = await engine.place(owner, account, single(symbol, OrderSide.buy, PositionEffect.open))
    assert bought.status is OrderStatus.filled
    before = await engine.balances(owner, account)

    clock.set(EXPIRY)
    await engine.tick()

    positions = await engine.positions(owner, account)
    assert [(p.symbol, p.quantity) for p in positions] == [("AAPL", Decimal(-100))]
    after = await engine.balances(owner, account)
    assert after.cash == before.cash + (settle_price - strike) * HUNDRED
    async with sessionmaker() as session:
        kinds = (
            await session.scalars(select(PaperOrder.kind).where(PaperOrder.kind.isnot(None)))
        ).all()
    assert "option_cash_settlement" in kinds


async def test_a_notional_order_in_the_callers_transaction_is_rolled_back_with_it(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner = new_user("opt")
    account = (await engine.create_account(owner, Decimal(10000))).broker_account_id
    request = OrderRequest(
        client_order_id="notional-1",
        symbol="AAPL",
        side=OrderSide.buy,
        quantity=Decimal(0),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        notional=Decimal(1000),
    )
    async with sessionmaker() as session:
        order = await engine.place(owner, account, request, session=session)
        assert order.status is OrderStatus.filled
        await session.rollback()
    assert await engine.list_orders(owner, account, "all", 10) == []
    assert (await engine.balances(owner, account)).cash == Decimal(10000)

    async with sessionmaker() as session:
        placed = await engine.place(owner, account, request, session=session)
        await session.commit()
    assert placed.notional == Decimal(1000)
    with pytest.raises(broker_errors.Rejected, match="client_order_id"):
        await engine.place(owner, account, request)
    found = await engine.find_by_client_id(owner, account, "notional-1")
    assert found is not None
    assert (found.filled_quantity, found.avg_fill_price) == (
        placed.filled_quantity,
        placed.avg_fill_price,
    )

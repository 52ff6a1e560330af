"""IBKR short sales and covers over HTTP: stock orders carry no open/close at IBKR, so the
adapter checks ``position_effect`` against the position before sending anything."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    Support,
    TimeInForce,
)
from app.brokers.ibkr.adapter import IBKR_CAPABILITIES
from tests.brokers.ibkr.support import Running, running_fake
from tests.fakes.ibkr.server import _traded


def stock_order(
    side: OrderSide, effect: PositionEffect | None, quantity: int, coid: str | None = None
) -> OrderRequest:
    return OrderRequest(
        client_order_id=coid or "bg" + uuid.uuid4().hex,
        symbol="AAPL",
        side=side,
        quantity=Decimal(quantity),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        position_effect=effect,
    )


def order_posts(ib: Running) -> int:
    path = f"/iserver/account/{ib.account.account_id}/orders"
    return sum(1 for method, p in ib.fake.requests if method == "POST" and p.endswith(path))


def test_short_selling_is_declared_native() -> None:
    assert IBKR_CAPABILITIES.short_selling is Support.native


async def test_a_short_sale_and_its_cover_in_a_margin_account() -> None:
    async with running_fake(margin=True) as ib:
        adapter = ib.adapter()
        ref = ib.account.account_id
        short = await adapter.place_order(ref, stock_order(OrderSide.sell, PositionEffect.open, 5))
        await ib.fake.match()
        assert (await adapter.get_order(ref, short.broker_order_id)).status is OrderStatus.filled
        held = await adapter.get_position(ref, "AAPL")
        assert held is not None
        assert held.quantity == -5
        assert held.avg_cost > 0
        # A cover larger than the short would open a long: refused, nothing sent.
        posts = order_posts(ib)
        with pytest.raises(errors.UnsupportedOrder, match="no short position of 6"):
            await adapter.place_order(ref, stock_order(OrderSide.buy, PositionEffect.close, 6))
        assert order_posts(ib) == posts
        cover = stock_order(OrderSide.buy, PositionEffect.close, 5)
        covered = await adapter.place_order(ref, cover)
        await ib.fake.match()
        assert (await adapter.get_order(ref, covered.broker_order_id)).status is OrderStatus.filled
        assert await adapter.get_position(ref, "AAPL") is None
        # A retried cover (its answer lost, say) finds its order instead of being refused
        # for the flat position it left behind, and sends nothing.
        posts = order_posts(ib)
        again = await adapter.place_order(ref, cover)
        assert again.broker_order_id == covered.broker_order_id
        assert order_posts(ib) == posts


async def test_a_cover_without_a_short_is_refused_before_any_order_request() -> None:
    async with running_fake(margin=True) as ib:
        adapter = ib.adapter()
        ref = ib.account.account_id
        with pytest.raises(errors.UnsupportedOrder, match="no short position"):
            await adapter.place_order(ref, stock_order(OrderSide.buy, PositionEffect.close, 1))
        bought = await adapter.place_order(ref, stock_order(OrderSide.buy, None, 3))
        await ib.fake.match()
        assert (await adapter.get_order(ref, bought.broker_order_id)).status is OrderStatus.filled
        posts = order_posts(ib)
        # Long 3: a "cover" would add to the long, a "short sale" would close it instead.
        with pytest.raises(errors.UnsupportedOrder, match="no short position"):
            await adapter.place_order(ref, stock_order(OrderSide.buy, PositionEffect.close, 1))
        with pytest.raises(errors.UnsupportedOrder, match="a long position in AAPL is held"):
            await adapter.place_order(ref, stock_order(OrderSide.sell, PositionEffect.open, 1))
        assert order_posts(ib) == posts
        assert len(ib.fake.orders) == 1
        held = await adapter.get_position(ref, "AAPL")
        assert held is not None
        assert held.quantity == 3


async def test_a_short_sale_in_a_cash_account_is_refused_by_ibkr_and_places_nothing() -> None:
    # The account type (margin/cash) could not be read from a confirmed IBKR field, so the
    # adapter checks the position only and IBKR's own refusal answers a cash account.
    async with running_fake() as ib:
        adapter = ib.adapter()
        ref = ib.account.account_id
        with pytest.raises(errors.Rejected, match="short selling is not allowed"):
            await adapter.place_order(ref, stock_order(OrderSide.sell, PositionEffect.open, 2))
        assert ib.fake.orders == {}
        assert await adapter.get_position(ref, "AAPL") is None


@given(
    held=st.integers(-50, 50),
    avg=st.integers(1, 500),
    trade=st.integers(-50, 50).filter(bool),
    price=st.integers(1, 500),
)
def test_the_fake_keeps_average_cost_on_reductions_and_prices_additions(
    held: int, avg: int, trade: int, price: int
) -> None:
    cost = Decimal(held * avg)
    quantity, after = _traded(Decimal(held), cost, Decimal(trade), Decimal(price))
    assert quantity == held + trade
    if quantity == 0:
        assert after == 0
    elif held != 0 and (held > 0) == (quantity > 0) and abs(quantity) < abs(held):
        assert after == quantity * avg  # a reduction keeps the average cost
    else:
        assert after / quantity > 0  # the average price is positive, long or short

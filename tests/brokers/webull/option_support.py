"""Plain helpers for the Webull option tests: contracts of the fake's market, orders on them."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from app.brokers.base import (
    OptionContract,
    OptionRight,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderType,
    PositionEffect,
    PriceEffect,
    TimeInForce,
)
from tests.fakes.webull import FakeWebull

UNDERLYING = "AAPL"


def expiration(fake: FakeWebull, index: int = 2) -> date:
    """A listed expiration of the fake's market (the third by default: a few days out)."""
    return fake.options.expirations(UNDERLYING, fake.clock().date())[index].expiration


def contract(
    fake: FakeWebull, offset: int, right: OptionRight = OptionRight.call, index: int = 2
) -> OptionContract:
    """The contract ``offset`` strikes from the middle of the listed range."""
    listed = fake.options.strikes(UNDERLYING)
    return OptionContract.parse(
        OptionContract(
            underlying=UNDERLYING,
            root=UNDERLYING,
            expiration=expiration(fake, index),
            right=right,
            strike=listed[len(listed) // 2 + offset],
        ).symbol
    )


def mark(fake: FakeWebull, c: OptionContract) -> Decimal:
    return fake.options.quote(c, fake.clock()).mark


def single(
    c: OptionContract,
    side: OrderSide,
    effect: PositionEffect,
    *,
    price: Decimal,
    quantity: int = 1,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol=c.symbol,
        side=side,
        quantity=Decimal(quantity),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=price,
        position_effect=effect,
    )


def vertical(
    buy: OptionContract,
    sell: OptionContract,
    *,
    price: Decimal,
    effect: PriceEffect,
    quantity: int = 1,
) -> OrderRequest:
    """A two-leg spread: buy one contract, sell the other, opening."""
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol=buy.underlying,
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=Decimal(quantity),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=price,
        legs=(
            OrderLeg(buy.symbol, OrderSide.buy, 1, PositionEffect.open),
            OrderLeg(sell.symbol, OrderSide.sell, 1, PositionEffect.open),
        ),
        price_effect=effect,
    )

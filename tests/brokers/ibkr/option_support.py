"""Plain helpers for the IBKR option tests: contracts of the fake's market, orders on them."""

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
from tests.fakes.ibkr import FakeIbkrGateway

UNDERLYING = "AAPL"


def expiration(fake: FakeIbkrGateway, index: int = 2) -> date:
    """A listed expiration of the fake's market (the third by default: a few days out)."""
    today = fake.clock().date()
    return fake.options.market.expirations(UNDERLYING, today)[index].expiration


def strikes(fake: FakeIbkrGateway) -> list[Decimal]:
    return fake.options.market.strikes(UNDERLYING)


def contract(
    fake: FakeIbkrGateway, offset: int, right: OptionRight = OptionRight.call, index: int = 2
) -> OptionContract:
    """The contract ``offset`` strikes from the middle of the listed range."""
    listed = strikes(fake)
    strike = listed[len(listed) // 2 + offset]
    return OptionContract.parse(
        OptionContract(
            underlying=UNDERLYING,
            root=UNDERLYING,
            expiration=expiration(fake, index),
            right=right,
            strike=strike,
        ).symbol
    )


def net_ask(fake: FakeIbkrGateway, buy: OptionContract, sell: OptionContract) -> Decimal:
    at = fake.clock()
    return fake.options.quote(buy, at).ask - fake.options.quote(sell, at).bid


def vertical(
    buy: OptionContract,
    sell: OptionContract,
    *,
    price: Decimal,
    effect: PriceEffect,
    quantity: int = 1,
    order_type: OrderType = OrderType.limit,
    tif: TimeInForce = TimeInForce.day,
) -> OrderRequest:
    """A two-leg spread: buy one contract, sell the other, opening."""
    return OrderRequest(
        client_order_id="opt" + uuid.uuid4().hex[:20],
        symbol=buy.underlying,
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=Decimal(quantity),
        order_type=order_type,
        time_in_force=tif,
        limit_price=price if order_type is OrderType.limit else None,
        legs=(
            OrderLeg(buy.symbol, OrderSide.buy, 1, PositionEffect.open),
            OrderLeg(sell.symbol, OrderSide.sell, 1, PositionEffect.open),
        ),
        price_effect=effect if order_type is OrderType.limit else None,
    )


def single(
    contract_: OptionContract,
    side: OrderSide,
    quantity: Decimal,
    price: Decimal,
    effect: PositionEffect,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="opt" + uuid.uuid4().hex[:20],
        symbol=contract_.symbol,
        side=side,
        quantity=quantity,
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=price,
        position_effect=effect,
    )

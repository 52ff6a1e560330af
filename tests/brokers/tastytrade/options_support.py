"""Option orders for the tastytrade tests, on contracts the fake (the paper market) lists."""

from __future__ import annotations

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
from tests.fakes.tastytrade import FakeTastytrade


def expiration(fake: FakeTastytrade, underlying: str = "AAPL", index: int = 2) -> date:
    """A listed expiration a few weeks out (the paper market's weeklies and monthlies)."""
    return fake.options.expirations(underlying, fake.clock().date())[index].expiration


def contract(
    fake: FakeTastytrade, right: OptionRight, offset: int, underlying: str = "AAPL"
) -> OptionContract:
    """The listed contract ``offset`` strikes from the middle of the strike ladder."""
    strikes = fake.options.strikes(underlying)
    strike = strikes[len(strikes) // 2 + offset]
    return OptionContract(underlying, underlying, expiration(fake, underlying), right, strike)


def single(
    client_order_id: str,
    symbol: str,
    side: OrderSide,
    effect: PositionEffect,
    *,
    qty: str = "1",
    price: str | None = None,
    time_in_force: TimeInForce = TimeInForce.day,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.market if price is None else OrderType.limit,
        time_in_force=time_in_force,
        limit_price=None if price is None else Decimal(price),
        position_effect=effect,
    )


def iron_condor_legs(fake: FakeTastytrade) -> tuple[OrderLeg, ...]:
    """Sell the 4-strikes-out put and call, buy the 6-strikes-out wings: a credit."""
    o = PositionEffect.open
    return (
        OrderLeg(contract(fake, OptionRight.put, -6).symbol, OrderSide.buy, 1, o),
        OrderLeg(contract(fake, OptionRight.put, -4).symbol, OrderSide.sell, 1, o),
        OrderLeg(contract(fake, OptionRight.call, 4).symbol, OrderSide.sell, 1, o),
        OrderLeg(contract(fake, OptionRight.call, 6).symbol, OrderSide.buy, 1, o),
    )


def spread(
    client_order_id: str,
    legs: tuple[OrderLeg, ...],
    *,
    qty: str = "2",
    price: str | None = "0.01",
    effect: PriceEffect | None = PriceEffect.credit,
    time_in_force: TimeInForce = TimeInForce.day,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=OptionContract.parse(legs[0].symbol).underlying,
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=Decimal(qty),
        order_type=OrderType.market if price is None else OrderType.limit,
        time_in_force=time_in_force,
        limit_price=None if price is None else Decimal(price),
        legs=legs,
        price_effect=effect,
    )

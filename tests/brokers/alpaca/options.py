"""Option order requests and contracts for the Alpaca tests (plain functions).

Contracts are taken from the fake's own listing (the paper option market), a few weeks out,
so the tests hold whatever day they run on.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
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
from tests.fakes.alpaca import FakeAlpaca

UNDERLYING = "AAPL"


def expiration(fake: FakeAlpaca, underlying: str = UNDERLYING) -> date:
    """A listed expiration at least two weeks away."""
    today = datetime.now(UTC).date()
    return next(
        e.expiration
        for e in fake.options.expirations(underlying, today)
        if e.expiration >= today + timedelta(days=14)
    )


def contract(
    fake: FakeAlpaca, right: OptionRight, offset: int, underlying: str = UNDERLYING
) -> OptionContract:
    """The contract ``offset`` strikes above (below, if negative) the centre strike."""
    strikes = fake.options.strikes(underlying)
    strike = strikes[len(strikes) // 2 + offset]
    return OptionContract(underlying, underlying, expiration(fake, underlying), right, strike)


def single(
    client_order_id: str,
    symbol: str,
    side: OrderSide = OrderSide.buy,
    effect: PositionEffect = PositionEffect.open,
    *,
    qty: str = "1",
    order_type: OrderType = OrderType.market,
    limit_price: str | None = None,
    time_in_force: TimeInForce = TimeInForce.day,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        order_type=order_type,
        time_in_force=time_in_force,
        limit_price=None if limit_price is None else Decimal(limit_price),
        position_effect=effect,
    )


def iron_condor_legs(
    fake: FakeAlpaca, effect: PositionEffect = PositionEffect.open
) -> tuple[OrderLeg, ...]:
    """Buy a put 4 strikes down, sell one 2 down, sell a call 2 up, buy one 4 up."""
    buy, sell = OrderSide.buy, OrderSide.sell
    if effect is PositionEffect.close:
        buy, sell = sell, buy
    return (
        OrderLeg(contract(fake, OptionRight.put, -4).symbol, buy, 1, effect),
        OrderLeg(contract(fake, OptionRight.put, -2).symbol, sell, 1, effect),
        OrderLeg(contract(fake, OptionRight.call, 2).symbol, sell, 1, effect),
        OrderLeg(contract(fake, OptionRight.call, 4).symbol, buy, 1, effect),
    )


def combo(
    client_order_id: str,
    legs: tuple[OrderLeg, ...],
    *,
    qty: str = "1",
    limit_price: str | None = "0.01",
    effect: PriceEffect | None = PriceEffect.credit,
    time_in_force: TimeInForce = TimeInForce.day,
) -> OrderRequest:
    """A multi-leg order (our convention: symbol = the underlying, side sell for a credit)."""
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=OptionContract.parse(legs[0].symbol).underlying,
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=Decimal(qty),
        order_type=OrderType.market if limit_price is None else OrderType.limit,
        time_in_force=time_in_force,
        limit_price=None if limit_price is None else Decimal(limit_price),
        legs=legs,
        price_effect=effect,
    )

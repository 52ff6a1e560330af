"""A multi-leg order's fingerprint (reconciliation at brokers without client order ids)
includes its legs: two combos alike in everything but one leg are different orders."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

from app.brokers.base import (
    BrokerOrder,
    BrokerOrderLeg,
    OrderFingerprint,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
    TimeInForce,
)

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
LONG, SHORT = "AAPL300118C00200000", "AAPL300118C00210000"


def _request(short: str = SHORT) -> OrderRequest:
    return OrderRequest(
        client_order_id="c1",
        symbol="AAPL",
        side=OrderSide.buy,
        quantity=Decimal(1),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=Decimal("3"),
        legs=(
            OrderLeg(LONG, OrderSide.buy, 1, PositionEffect.open),
            OrderLeg(short, OrderSide.sell, 1, PositionEffect.open),
        ),
        price_effect=PriceEffect.debit,
    )


def _reported(short: str = SHORT) -> BrokerOrder:
    return BrokerOrder(
        broker_order_id="b1",
        client_order_id=None,
        symbol="AAPL",
        side=OrderSide.buy,
        quantity=Decimal(1),
        filled_quantity=Decimal(0),
        avg_fill_price=None,
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        status=OrderStatus.accepted,
        limit_price=Decimal("3"),
        stop_price=None,
        created_at=NOW,
        updated_at=NOW,
        legs=(
            BrokerOrderLeg(short, OrderSide.sell, 1, None, Decimal(0), None),
            BrokerOrderLeg(LONG, OrderSide.buy, 1, None, Decimal(0), None),
        ),
    )


def test_legs_tell_combos_apart() -> None:
    fingerprint = OrderFingerprint.of(_request(), NOW)
    assert fingerprint.matches(_reported())  # leg order does not matter
    assert not fingerprint.matches(_reported(short="AAPL300118C00215000"))
    assert not fingerprint.matches(dataclasses.replace(_reported(), legs=()))
    equity = dataclasses.replace(_request(), symbol="MSFT", legs=(), price_effect=None)
    assert OrderFingerprint.of(equity, NOW).matches(
        dataclasses.replace(_reported(), symbol="MSFT", legs=())
    )

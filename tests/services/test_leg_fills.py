"""Leg fills are counted once, whether a broker reports a leg's total, its fills, or both in
the same update (app/services/order_updates.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from app.brokers.base import BrokerOrderLeg, Fill, OrderSide, PositionEffect
from app.services.order_updates import apply_leg_fills, merge_broker_legs, new_leg_state

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
LONG, SHORT = "AAPL261218C00190000", "AAPL261218C00195000"


def stored() -> list[dict[str, object]]:
    return [new_leg_state(LONG, "buy", 1, "open"), new_leg_state(SHORT, "sell", 1, "open")]


def fills(quantity: str) -> tuple[Fill, ...]:
    return (
        Fill("f-long", Decimal(quantity), Decimal("4.10"), NOW, leg_symbol=LONG),
        Fill("f-short", Decimal(quantity), Decimal("2.00"), NOW, leg_symbol=SHORT),
    )


def totals(quantity: str) -> tuple[BrokerOrderLeg, ...]:
    return (
        BrokerOrderLeg(
            LONG, OrderSide.buy, 1, PositionEffect.open, Decimal(quantity), Decimal("4.10")
        ),
        BrokerOrderLeg(
            SHORT, OrderSide.sell, 1, PositionEffect.open, Decimal(quantity), Decimal("2.00")
        ),
    )


def filled(legs: list[dict[str, object]]) -> list[str]:
    return [str(leg["filled_quantity"]) for leg in legs]


def test_totals_and_fills_in_one_update_count_once() -> None:
    """A 2-lot spread whose update carries both the legs' totals and their fills."""
    legs = merge_broker_legs(stored(), totals("2"))
    applied = apply_leg_fills(legs, fills("2"), reported=frozenset({LONG, SHORT}))
    assert applied is not None
    legs, news = applied
    assert filled(legs) == ["2", "2"]
    assert news is False  # the totals already said it
    # A later update with only the same fills changes nothing: they are remembered.
    assert apply_leg_fills(legs, fills("2")) is None


def test_fills_alone_are_counted_once_each() -> None:
    applied = apply_leg_fills(stored(), fills("1"))
    assert applied is not None
    legs, news = applied
    assert (filled(legs), news) == (["1", "1"], True)
    assert apply_leg_fills(legs, fills("1")) is None

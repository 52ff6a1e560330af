"""Webull option mapping: the strategy named from the legs, legs decomposed and read back."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
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
from app.brokers.webull import mapping, options
from app.brokers.webull.options import Leg, infer_strategy

EXP = date(2026, 12, 18)
LATER = date(2027, 1, 15)
B, S = OrderSide.buy, OrderSide.sell
C, P = OptionRight.call, OptionRight.put


def c(strike: int, right: OptionRight = C, exp: date = EXP) -> OptionContract:
    return OptionContract("AAPL", "AAPL", exp, right, Decimal(strike))


CASES = {
    "VERTICAL": [Leg(c(190), B, 1), Leg(c(195), S, 1)],
    "CALENDAR": [Leg(c(190), S, 1), Leg(c(190, exp=LATER), B, 1)],
    "STRADDLE": [Leg(c(190, P), B, 1), Leg(c(190), B, 1)],
    "STRANGLE": [Leg(c(185, P), S, 1), Leg(c(195), S, 1)],
    "BUTTERFLY": [Leg(c(185), B, 1), Leg(c(190), S, 2), Leg(c(195), B, 1)],
    "CONDOR": [Leg(c(180), B, 1), Leg(c(185), S, 1), Leg(c(195), S, 1), Leg(c(200), B, 1)],
    "IRON_CONDOR": [
        Leg(c(180, P), B, 1),
        Leg(c(185, P), S, 1),
        Leg(c(195), S, 1),
        Leg(c(200), B, 1),
    ],
    "IRON_BUTTERFLY": [
        Leg(c(180, P), B, 1),
        Leg(c(190, P), S, 1),
        Leg(c(190), S, 1),
        Leg(c(200), B, 1),
    ],
}


@pytest.mark.parametrize(("name", "legs"), CASES.items())
def test_each_strategy_is_named_whatever_the_leg_order(name: str, legs: list[Leg]) -> None:
    assert name in options.STRATEGIES
    for order in itertools.permutations(legs):
        assert infer_strategy(order) == name


@pytest.mark.parametrize(
    "legs",
    [
        [Leg(c(190), B, 1), Leg(c(195), B, 1)],  # two longs of one right: no strategy
        [Leg(c(190), B, 1), Leg(c(195), S, 2)],  # a ratio spread
        [Leg(c(190), B, 1), Leg(c(190, exp=LATER), B, 1)],
        [Leg(c(195, P), S, 1), Leg(c(185), S, 1)],  # put above the call: not a strangle
        [
            Leg(c(185), B, 1),
            Leg(c(190), S, 2),
            Leg(c(200), B, 1),
        ],  # broken-wing butterfly
        [
            Leg(OptionContract("MSFT", "MSFT", EXP, C, Decimal(400)), B, 1),
            Leg(c(190), S, 1),
        ],
    ],
)
def test_legs_that_form_no_named_strategy_are_refused(legs: list[Leg]) -> None:
    with pytest.raises(errors.UnsupportedOrder):
        infer_strategy(legs)


@given(
    low=st.integers(min_value=1, max_value=500),
    width=st.integers(min_value=1, max_value=50),
    right=st.sampled_from([C, P]),
    long_low=st.booleans(),
)
def test_any_one_by_one_spread_of_one_right_and_expiry_is_a_vertical(
    low: int, width: int, right: OptionRight, long_low: bool
) -> None:
    first, second = (B, S) if long_low else (S, B)
    legs = [Leg(c(low, right), first, 1), Leg(c(low + width, right), second, 1)]
    assert infer_strategy(legs) == infer_strategy(legs[::-1]) == "VERTICAL"


def spread() -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + "a" * 32,
        symbol="AAPL",
        side=OrderSide.sell,
        quantity=Decimal(3),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=Decimal("1.10"),
        legs=(
            OrderLeg(c(185, P).symbol, B, 1, PositionEffect.open),
            OrderLeg(c(190, P).symbol, S, 1, PositionEffect.open),
        ),
        price_effect=PriceEffect.credit,
    )


def test_a_spread_goes_on_the_wire_decomposed_with_its_strategy() -> None:
    body = mapping.order_to_wire(spread())
    assert body == {
        "client_order_id": "a" * 32,
        "order_type": "LIMIT",
        "time_in_force": "DAY",
        "limit_price": "1.10",
        "combo_type": "NORMAL",
        "option_strategy": "VERTICAL",
        "side": "SELL",
        "quantity": "3",
        "entrust_type": "QTY",
        "legs": [
            {
                "side": "BUY",
                "quantity": "3",
                "symbol": "AAPL",
                "strike_price": "185",
                "option_expire_date": "2026-12-18",
                "instrument_type": "OPTION",
                "option_type": "PUT",
                "market": "US",
            },
            {
                "side": "SELL",
                "quantity": "3",
                "symbol": "AAPL",
                "strike_price": "190",
                "option_expire_date": "2026-12-18",
                "instrument_type": "OPTION",
                "option_type": "PUT",
                "market": "US",
            },
        ],
    }


def test_an_option_order_read_back_keeps_its_legs_and_direction() -> None:
    wire_legs = [
        {**leg, "id": f"L{i}", "option_contract_multiplier": "100"}
        for i, leg in enumerate(mapping.order_to_wire(spread())["legs"])
    ]
    item = {
        "client_order_id": "a" * 32,
        "order_id": "O1",
        "symbol": "AAPL",
        "side": "SELL",
        "status": "FILLED",
        "order_type": "LIMIT",
        "instrument_type": "OPTION",
        "option_strategy": "VERTICAL",
        "total_quantity": "3",
        "filled_quantity": "3",
        "filled_price": "1.12",
        "limit_price": "1.10",
        "time_in_force": "DAY",
        "entrust_type": "QTY",
        "place_time_at": "2026-12-01T15:00:00.000Z",
        "legs": wire_legs,
    }
    order = mapping.order_from_wire({"combo_type": "NORMAL", "orders": [item]})
    assert order.symbol == "AAPL"
    assert order.price_effect is PriceEffect.credit
    assert [(leg.symbol, leg.side, leg.ratio, leg.broker_leg_id) for leg in order.legs] == [
        ("AAPL261218P00185000", B, 1, "L0"),
        ("AAPL261218P00190000", S, 1, "L1"),
    ]
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(
            {"combo_type": "NORMAL", "orders": [{**item, "option_strategy": "JADE_LIZARD"}]}
        )


def test_a_single_leg_order_needs_its_position_effect() -> None:
    single = OrderRequest(
        client_order_id="bg" + "b" * 32,
        symbol=c(190).symbol,
        side=OrderSide.sell,
        quantity=Decimal(1),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.gtc,
        limit_price=Decimal("2.00"),
        position_effect=PositionEffect.close,
    )
    body = mapping.order_to_wire(single)
    assert (body["option_strategy"], body["position_intent"]) == ("SINGLE", "SELL_TO_CLOSE")
    with pytest.raises(errors.UnsupportedOrder, match="position_effect"):
        mapping.order_to_wire(dataclasses.replace(single, position_effect=None))

"""Alpaca option mapping on the spec's own examples, and the signed net price as a property."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.alpaca import chain, mapping
from app.brokers.base import (
    AssetClass,
    ExpirationType,
    OptionRight,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
    TimeInForce,
)
from tests.brokers.alpaca.payloads import MLEG_ORDER, OPTION_ORDER, OPTION_SNAPSHOTS

prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)


@given(prices, st.sampled_from([PriceEffect.debit, PriceEffect.credit]))
def test_a_net_price_round_trips_through_its_sign(price: Decimal, effect: PriceEffect) -> None:
    signed = mapping.signed_limit_price(price, effect)
    assert (signed > 0) is (effect is PriceEffect.debit)
    assert mapping.unsigned_limit_price(signed) == (price, effect)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_a_signed_price_is_read_back_to_the_same_signed_price(signed: Decimal) -> None:
    price, effect = mapping.unsigned_limit_price(signed)
    assert price >= 0
    assert mapping.signed_limit_price(price, effect) == signed


@pytest.mark.parametrize(
    ("price", "effect"),
    [
        (Decimal("-1"), PriceEffect.debit),  # a caller's sign is refused, not passed on
        (Decimal("-1"), PriceEffect.credit),
        (Decimal("1"), PriceEffect.even),
        (Decimal("0"), PriceEffect.credit),
        (Decimal("NaN"), PriceEffect.debit),
    ],
)
def test_prices_that_do_not_agree_with_their_direction_are_refused(
    price: Decimal, effect: PriceEffect
) -> None:
    with pytest.raises(errors.UnsupportedOrder):
        mapping.signed_limit_price(price, effect)


def leg(symbol: str, side: OrderSide, ratio: int, effect: PositionEffect) -> OrderLeg:
    return OrderLeg(symbol, side, ratio, effect)


def test_the_spec_multileg_example_is_what_we_send() -> None:
    # ALP-T requestBody example "MultilegOptions", a 3:1 call ratio spread for 3 units.
    order = OrderRequest(
        client_order_id="bg-1",
        symbol="AAPL",
        side=OrderSide.buy,
        quantity=Decimal(3),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=Decimal(10),
        legs=(
            leg("AAPL  241213C00250000", OrderSide.buy, 3, PositionEffect.open),  # padded in
            leg("AAPL241213C00260000", OrderSide.sell, 1, PositionEffect.open),
        ),
        price_effect=PriceEffect.debit,
    )
    assert mapping.order_to_wire(order) == {
        "order_class": "mleg",
        "qty": "3",
        "type": "limit",
        "limit_price": "10",
        "time_in_force": "day",
        "client_order_id": "bg-1",
        "legs": [
            {
                "symbol": "AAPL241213C00250000",
                "ratio_qty": "3",
                "side": "buy",
                "position_intent": "buy_to_open",
            },
            {
                "symbol": "AAPL241213C00260000",
                "ratio_qty": "1",
                "side": "sell",
                "position_intent": "sell_to_open",
            },
        ],
    }


def test_a_single_leg_option_order_is_the_spec_options_example_with_its_intent() -> None:
    order = OrderRequest(
        client_order_id="bg-2",
        symbol="AAPL  250620C00100000",
        side=OrderSide.sell,
        quantity=Decimal(2),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=Decimal(10),
        position_effect=PositionEffect.close,
    )
    assert mapping.order_to_wire(order) == {
        "symbol": "AAPL250620C00100000",
        "qty": "2",
        "side": "sell",
        "type": "limit",
        "limit_price": "10",
        "time_in_force": "day",
        "client_order_id": "bg-2",
        "position_intent": "sell_to_close",
    }


def test_the_spec_option_order_response() -> None:
    order = mapping.order_from_wire(OPTION_ORDER)
    assert (order.symbol, order.quantity, order.status) == (
        "AAPL250620C00100000",
        Decimal(2),
        OrderStatus.submitted,
    )
    assert order.legs == ()
    assert order.price_effect is None
    assert order.position_effect is None  # the example has no position_intent
    with_intent = mapping.order_from_wire({**OPTION_ORDER, "position_intent": "buy_to_open"})
    assert with_intent.position_effect is PositionEffect.open
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire({**OPTION_ORDER, "position_intent": "buy_to_hold"})


def test_the_spec_multileg_response_has_its_legs_and_their_fills() -> None:
    order = mapping.order_from_wire(MLEG_ORDER)
    assert order.symbol == "AAPL"  # the parent's symbol is "" at Alpaca
    assert (order.side, order.price_effect, order.limit_price) == (
        OrderSide.buy,
        PriceEffect.debit,
        Decimal(10),
    )
    assert (order.quantity, order.filled_quantity, order.status) == (
        Decimal(1),
        Decimal(1),
        OrderStatus.filled,
    )
    assert order.avg_fill_price == Decimal("1.28")
    first, second = order.legs
    assert (first.symbol, first.side, first.ratio, first.position_effect) == (
        "AAPL241213C00250000",
        OrderSide.buy,
        3,
        PositionEffect.open,
    )
    assert (first.filled_quantity, first.avg_fill_price) == (Decimal(3), Decimal("0.43"))
    assert first.broker_leg_id == "df4ff24a-c58a-4e37-8b9f-ef32b83a11f2"
    assert (second.side, second.ratio, second.avg_fill_price) == (
        OrderSide.sell,
        1,
        Decimal("0.01"),
    )


def test_a_credit_comes_back_unsigned_with_its_direction() -> None:
    order = mapping.order_from_wire({**MLEG_ORDER, "limit_price": "-1.25"})
    assert (order.side, order.limit_price, order.price_effect) == (
        OrderSide.sell,
        Decimal("1.25"),
        PriceEffect.credit,
    )
    market = mapping.order_from_wire({**MLEG_ORDER, "limit_price": None, "type": "market"})
    assert (market.order_type, market.price_effect) == (OrderType.market, None)


def test_an_mleg_leg_with_an_unknown_intent_or_ratio_is_refused() -> None:
    for field, value in [("position_intent", "roll"), ("ratio_qty", "1.5"), ("side", "")]:
        broken = copy.deepcopy(MLEG_ORDER)
        broken["legs"][0][field] = value
        with pytest.raises(errors.UnknownBrokerValue):
            mapping.order_from_wire(broken)


def test_an_mleg_fill_event_is_one_fill_per_leg() -> None:
    event = {"event": "fill", "execution_id": "ex-1", "order": MLEG_ORDER, "qty": "1"}
    event["timestamp"] = "2024-12-10T16:15:53.694Z"
    update = mapping.update_from_event(event, "acct")
    assert update is not None
    assert [(f.leg_symbol, f.quantity, f.price) for f in update.fills] == [
        ("AAPL241213C00250000", Decimal(3), Decimal("0.43")),
        ("AAPL241213C00260000", Decimal(1), Decimal("0.01")),
    ]
    assert len({f.fill_id for f in update.fills}) == 2
    # A leg's own event names no parent: it is passed over, not misfiled.
    leg_event = {**event, "order": MLEG_ORDER["legs"][0]}
    assert mapping.update_from_event(leg_event, "acct") is None


def test_an_option_position_carries_its_contract_and_a_signed_value() -> None:
    now = datetime(2026, 1, 5, tzinfo=UTC)
    wire: dict[str, Any] = {
        "asset_class": "us_option",
        "asset_id": "98359ef7-5124-49f3-85ea-5cf02df6defa",
        "avg_entry_price": "2.3",
        "cost_basis": "-460",
        "current_price": "2.1",
        "market_value": "-420",
        "qty": "-2",
        "side": "short",
        "symbol": "AAPL250620P00100000",
        "unrealized_pl": "40",
    }
    position = mapping.position_from_wire(wire, now)
    assert position.asset_class is AssetClass.option
    assert position.quantity == Decimal(-2)
    assert position.market_value == Decimal(-420)  # 2.1 x -2 x 100
    assert position.contract is not None
    assert (position.contract.right, position.contract.strike) == (OptionRight.put, 100)
    # Unsigned qty with side short (as some accounts report): the same position.
    unsigned = mapping.position_from_wire({**wire, "qty": "2", "market_value": "420"}, now)
    assert (unsigned.quantity, unsigned.market_value) == (Decimal(-2), Decimal(-420))


def test_the_spec_snapshot_example_is_a_quote_with_greeks() -> None:
    snapshots = chain.snapshots_from_wire(OPTION_SNAPSHOTS["snapshots"])
    [(symbol, snapshot)] = snapshots.items()
    contract = mapping.option_contract(symbol)
    quote = chain.quote_from_snapshot(contract, snapshot, 12, datetime.now(UTC))
    assert (quote.bid, quote.ask, quote.last) == (Decimal("4.15"), Decimal("4.3"), Decimal("4.1"))
    assert quote.greeks is not None
    assert quote.greeks.delta == Decimal("0.7521304109871954")
    assert quote.greeks.iv == Decimal("0.3372405712050441")
    assert quote.as_of == datetime(2024, 4, 22, 19, 59, 59, 992734, tzinfo=UTC)
    assert quote.open_interest == 12


def test_expiration_types_by_the_calendar() -> None:
    assert chain.expiration_type(date(2026, 1, 16)) is ExpirationType.standard  # 3rd Friday
    assert chain.expiration_type(date(2026, 1, 9)) is ExpirationType.weekly
    assert chain.expiration_type(date(2026, 1, 7)) is ExpirationType.other  # a Wednesday


def test_a_contract_whose_terms_disagree_with_its_symbol_is_refused() -> None:
    good = {
        "symbol": "AAPL250620C00100000",
        "underlying_symbol": "AAPL",
        "root_symbol": "AAPL",
        "expiration_date": "2025-06-20",
        "type": "call",
        "style": "american",
        "strike_price": "100",
        "multiplier": "100",
        "open_interest": "237",
        "tradable": True,
    }
    listed = chain.contract_from_wire(good)
    assert (listed.contract.symbol, listed.open_interest) == ("AAPL250620C00100000", 237)
    for field, value in [("type", "put"), ("strike_price", "105"), ("style", "bermudan")]:
        with pytest.raises(errors.UnknownBrokerValue):
            chain.contract_from_wire({**good, field: value})

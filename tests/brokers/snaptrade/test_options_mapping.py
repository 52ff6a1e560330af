"""SnapTrade option records into the unified model: strict on the V2 vocabulary, and the legs'
ratios, fills and net price read back as they were sent (a property over the fake's records)."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    OptionContract,
    OptionRight,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
)
from app.brokers.snaptrade import mapping, options
from tests.fakes.snaptrade import options as fake

D = Decimal
AT = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)
DAY = date(2027, 1, 15)


def contract(strike: int, right: OptionRight = OptionRight.call) -> OptionContract:
    return OptionContract("AAPL", "AAPL", DAY, right, D(strike))


def record(**changes: Any) -> dict[str, Any]:
    """A filled call vertical as ``AccountOrderRecordV2`` (the fake's shape, from the spec)."""
    order = fake.FakeOptionOrder(
        id="ord-1",
        account_id="acct",
        legs=[
            fake.FakeLeg(contract(200), "BUY_TO_OPEN", 2, "ord-1-1", 2, D("7.10")),
            fake.FakeLeg(contract(210), "SELL_TO_OPEN", 2, "ord-1-2", 2, D("3.05")),
        ],
        order_type="LIMIT",
        time_in_force="Day",
        limit_price=D("4.2"),
        stop_price=None,
        price_effect="DEBIT",
        time_placed=AT,
        status="EXECUTED",
        time_executed=AT,
    )
    wire = mapping.loads(json_bytes(fake.order_record_v2(order)))
    wire.update(changes)
    return dict(wire)


def json_bytes(body: object) -> bytes:
    return json.dumps(body).encode()


def test_a_filled_vertical_reads_back_with_its_legs() -> None:
    order = options.order_v2_from_wire(record())
    assert (order.symbol, order.quantity, order.filled_quantity) == ("AAPL", 2, 2)
    assert order.status is OrderStatus.filled
    assert (order.order_type, order.limit_price, order.price_effect) == (
        OrderType.limit,
        D("4.2"),
        PriceEffect.debit,
    )
    assert order.side is OrderSide.buy
    assert order.avg_fill_price == D("4.05")
    assert [(g.symbol, g.side, g.ratio, g.position_effect) for g in order.legs] == [
        ("AAPL270115C00200000", OrderSide.buy, 1, PositionEffect.open),
        ("AAPL270115C00210000", OrderSide.sell, 1, PositionEffect.open),
    ]
    assert [g.broker_leg_id for g in order.legs] == ["ord-1-1", "ord-1-2"]


@pytest.mark.parametrize(
    "change",
    [
        {"order_type": "Limit"},  # the V1 spelling is not the V2 one
        {"time_in_force": "GTD"},
        {"price_effect": "SIDEWAYS"},
        {"status": "NONE"},
        {"legs": []},
    ],
)
def test_unknown_order_values_raise(change: dict[str, Any]) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        options.order_v2_from_wire(record(**change))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("action", "BUY_TO_WHATEVER"),
        ("status", "PARTIAL"),  # AccountOrderRecordStatusV2 says PARTIALLY_EXECUTED
        ("total_quantity", "1.5"),
        ("instrument", {"symbol": "AAPL", "asset_type": "EQUITY"}),  # not read here
        ("instrument", {"symbol": "AAPL 270115C200", "asset_type": "OPTION"}),
    ],
)
def test_unknown_leg_values_raise(field: str, value: object) -> None:
    body = record()
    legs = copy.deepcopy(body["legs"])
    legs[0][field] = value
    with pytest.raises(errors.UnknownBrokerValue):
        options.order_v2_from_wire({**body, "legs": legs})


def test_lists_keep_option_orders_only() -> None:
    equity = {
        **record(brokerage_order_id="eq-1"),
        "legs": [
            {
                "leg_id": None,
                "instrument": {"symbol": "AAPL", "asset_type": "EQUITY"},
                "action": "BUY",
                "total_quantity": "10",
                "filled_quantity": "0",
                "status": "PENDING",
            }
        ],
    }
    found = options.orders_v2_from_wire({"orders": [equity, record()]})
    assert [o.broker_order_id for o in found] == ["ord-1"]


@given(
    ratios=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    units=st.integers(1, 20),
    buys=st.lists(st.booleans(), min_size=4, max_size=4),
    cents=st.lists(st.integers(1, 5000), min_size=4, max_size=4),
    filled=st.booleans(),
)
def test_ratios_fills_and_net_price_read_back_as_sent(
    ratios: list[int], units: int, buys: list[bool], cents: list[int], filled: bool
) -> None:
    if math.gcd(*ratios) != 1:
        ratios = [*ratios[:-1], 1]
    legs = [
        fake.FakeLeg(
            contract(100 + 5 * i, OptionRight.put if i % 2 else OptionRight.call),
            "BUY_TO_OPEN" if buys[i] else "SELL_TO_CLOSE",
            ratio * units,
            f"leg-{i}",
            ratio * units if filled else 0,
            D(cents[i]) / 100 if filled else None,
        )
        for i, ratio in enumerate(ratios)
    ]
    order = fake.FakeOptionOrder(
        id="ord-p",
        account_id="acct",
        legs=legs,
        order_type="MARKET",
        time_in_force="Day",
        limit_price=None,
        stop_price=None,
        price_effect=None,
        time_placed=AT,
        status="EXECUTED" if filled else "ACCEPTED",
        time_executed=AT if filled else None,
    )
    read = options.order_v2_from_wire(mapping.loads(json_bytes(fake.order_record_v2(order))))
    assert read.quantity == units
    assert [g.ratio for g in read.legs] == ratios
    sides = [OrderSide.buy if b else OrderSide.sell for b in buys[: len(ratios)]]
    assert [g.side for g in read.legs] == sides
    assert read.filled_quantity == (units if filled else 0)
    if filled:
        net = sum(
            (
                D(c) / 100 * r * (1 if b else -1)
                for c, r, b in zip(cents, ratios, buys, strict=False)
            ),
            D(0),
        )
        assert read.avg_fill_price == abs(net)
        expected = (
            PriceEffect.debit if net > 0 else PriceEffect.credit if net < 0 else PriceEffect.even
        )
        assert read.price_effect is expected
    else:
        assert read.avg_fill_price is None
        assert read.status is OrderStatus.accepted

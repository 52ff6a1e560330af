"""IBKR wire <-> normalized: ibind's recorded answers, every status, strictness."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import OrderRequest, OrderSide, OrderStatus, OrderType, TimeInForce
from app.brokers.ibkr import mapping
from tests.brokers.ibkr.payloads import (
    LIVE_ORDER,
    ORDER_STATUS,
    POSITION,
    SNAPSHOT,
    SNAPSHOT_PRIMING,
    SUMMARY,
    TRADES,
)

NOW = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


def test_the_recorded_live_order_maps_field_for_field() -> None:
    order = mapping.order_from_live(LIVE_ORDER)
    assert (order.broker_order_id, order.client_order_id) == (
        "1210386759",
        "240103-SPY-1-BUY-L@457-bxv8",
    )
    assert (order.symbol, order.side, order.order_type, order.time_in_force) == (
        "SPY",
        OrderSide.buy,
        OrderType.limit,
        TimeInForce.gtc,
    )
    assert (order.quantity, order.filled_quantity, order.limit_price, order.stop_price) == (
        Decimal(1),
        Decimal(0),
        Decimal("457.00"),
        None,
    )
    assert order.status is OrderStatus.accepted
    assert order.created_at == datetime(2024, 1, 3, 20, 10, 41, tzinfo=UTC)


def test_the_recorded_order_status_maps_and_carries_no_client_id() -> None:
    order = mapping.order_from_status(ORDER_STATUS)
    assert (order.broker_order_id, order.client_order_id, order.side) == (
        "1210386759",
        None,
        OrderSide.buy,
    )
    assert (order.quantity, order.limit_price, order.status) == (
        Decimal(1),
        Decimal("457.00"),
        OrderStatus.accepted,
    )
    assert order.created_at == datetime(2024, 1, 3, 20, 10, 41, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("PendingSubmit", "0", OrderStatus.submitted),
        ("ApiPending", "0", OrderStatus.submitted),
        ("PreSubmitted", "0", OrderStatus.accepted),
        ("Submitted", "0", OrderStatus.accepted),
        ("Submitted", "0.5", OrderStatus.partially_filled),
        ("WarnState", "0", OrderStatus.accepted),
        ("Filled", "1", OrderStatus.filled),
        ("PendingCancel", "0", OrderStatus.pending_cancel),
        ("Cancelled", "0", OrderStatus.canceled),
        ("ApiCancelled", "0", OrderStatus.canceled),
        ("Inactive", "0", OrderStatus.rejected),
        ("Inactive", "0.5", OrderStatus.canceled),
        ("ValidationError", "0", OrderStatus.rejected),
    ],
)
def test_every_status_maps(status: str, filled: str, expected: OrderStatus) -> None:
    body = {**ORDER_STATUS, "order_status": status, "cum_fill": filled}
    assert mapping.order_from_status(body).status is expected
    live = {**LIVE_ORDER, "status": status, "filledQuantity": Decimal(filled)}
    assert mapping.order_from_live(live).status is expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_status", "Working"),
        ("order_status", "submitted"),
        ("order_type", "TRAIL"),
        ("tif", "OPG"),
        ("side", "X"),
        ("order_time", "yesterday"),
        ("total_size", "many"),
    ],
)
def test_unknown_values_raise_never_guess(field: str, value: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_status({**ORDER_STATUS, field: value})


def test_stop_prices_come_from_price_and_aux_price() -> None:
    stop = mapping.order_from_live({**LIVE_ORDER, "orderType": "Stop", "price": "450"})
    assert (stop.limit_price, stop.stop_price) == (None, Decimal(450))
    stop_limit = mapping.order_from_live(
        {**LIVE_ORDER, "orderType": "Stop Limit", "price": "449", "auxPrice": "450"}
    )
    assert (stop_limit.limit_price, stop_limit.stop_price) == (Decimal(449), Decimal(450))


def request(**changes: object) -> OrderRequest:
    values: dict[str, object] = {
        "client_order_id": "bg" + "1" * 32,
        "symbol": "SPY",
        "side": OrderSide.buy,
        "quantity": Decimal(2),
        "order_type": OrderType.stop_limit,
        "time_in_force": TimeInForce.day,
        "limit_price": Decimal("449.5"),
        "stop_price": Decimal("450"),
    }
    values.update(changes)
    return OrderRequest(**values)  # type: ignore[arg-type]


def test_orders_go_out_with_conid_cOID_and_ibkr_prices() -> None:
    assert mapping.order_to_wire(request(), "DU1", 756733) == {
        "acctId": "DU1",
        "conid": 756733,
        "secType": "756733:STK",
        "cOID": "bg" + "1" * 32,
        "orderType": "STOP_LIMIT",
        "side": "BUY",
        "quantity": 2,
        "tif": "DAY",
        "outsideRTH": False,
        "price": 449.5,
        "auxPrice": 450,
    }
    stop = mapping.order_to_wire(request(order_type=OrderType.stop, limit_price=None), "DU1", 1)
    assert (stop["orderType"], stop["price"]) == ("STP", 450)
    assert "auxPrice" not in stop
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request(time_in_force=TimeInForce.fok), "DU1", 1)
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request(order_type=OrderType.limit, limit_price=None), "DU1", 1)


def test_numbers_go_out_exactly_or_not_at_all() -> None:
    assert mapping.number(Decimal("457.10")) == 457.1
    assert mapping.number(Decimal(3)) == 3
    with pytest.raises(errors.UnsupportedOrder):
        mapping.number(Decimal("0.12345678901234567890"))


def test_summary_positions_snapshots_and_trades() -> None:
    balances = mapping.balances_from_summary(SUMMARY, NOW)
    assert (balances.cash, balances.equity, balances.buying_power) == (
        Decimal("985376.94"),
        Decimal("1034222.25"),
        Decimal("3941507.76"),
    )
    position = mapping.position_from_wire(POSITION, NOW)
    assert (position.symbol, position.quantity, position.avg_cost, position.unrealized_pl) == (
        "SPY",
        Decimal(100),
        Decimal("437.43"),
        Decimal(1701),
    )
    assert mapping.quote_from_snapshot(SNAPSHOT_PRIMING[0], "SPY") is None
    quote = mapping.quote_from_snapshot(SNAPSHOT[0], "SPY")
    assert quote is not None
    assert (quote.bid, quote.ask, quote.last) == (
        Decimal("454.43"),
        Decimal("454.45"),
        Decimal("454.44"),
    )
    [trade] = [mapping.trade_from_execution(t) for t in TRADES]
    assert (trade.type, trade.quantity, trade.amount) == ("buy", Decimal(1), Decimal("-456.990"))
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.balances_from_summary({**SUMMARY, "netliquidation": None}, NOW)
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.position_from_wire({**copy.deepcopy(POSITION), "assetClass": "WAR"}, NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Order couldn't be submitted: Local order ID=bg1 is already registered.",
            mapping.DuplicateClientOrderId,
        ),
        ("Order rejected: insufficient buying power for this order.", errors.InsufficientFunds),
        ("The market is closed for this contract", errors.MarketClosed),
        ("Order rejected: short selling is not allowed.", errors.Rejected),
    ],
)
def test_refusals_are_told_apart_by_their_words(text: str, expected: type[errors.Rejected]) -> None:
    found = mapping.refusal(text)
    assert type(found) is expected
    assert found.reason == text


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (401, "GET", errors.AuthenticationFailed),
        (404, "GET", errors.OrderNotFound),
        (400, "DELETE", errors.OrderNotModifiable),
        (400, "POST", errors.Rejected),
    ],
)
def test_error_statuses_classify_once(
    status: int, method: str, expected: type[errors.BrokerError]
) -> None:
    response = httpx.Response(status, json={"error": "no", "statusCode": status})
    found = mapping.classify(response, method)
    assert type(found) is expected
    assert found is not None
    assert found.reason == "no"

"""Webull wire <-> normalized: the SDK-shaped payloads, every status, strictness."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.brokers.webull import mapping
from tests.brokers.webull.payloads import (
    BALANCE,
    ORDER,
    ORDER_ITEM,
    POSITIONS,
    SNAPSHOT,
    TOKEN_PENDING,
)

NOW = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


def with_item(**changes: object) -> dict[str, object]:
    body = copy.deepcopy(ORDER)
    body["orders"][0].update(changes)
    return body


def test_an_order_combo_maps_field_for_field() -> None:
    order = mapping.order_from_wire(ORDER)
    assert order.broker_order_id == ORDER_ITEM["client_order_id"]
    assert order.client_order_id == "bg" + ORDER_ITEM["client_order_id"]
    assert (order.symbol, order.side, order.order_type, order.time_in_force) == (
        "AAPL",
        OrderSide.buy,
        OrderType.limit,
        TimeInForce.day,
    )
    assert (order.quantity, order.filled_quantity, order.avg_fill_price) == (
        Decimal(10),
        Decimal(4),
        Decimal("187.9500"),
    )
    assert (order.limit_price, order.stop_price) == (Decimal("188.00"), None)
    assert order.status is OrderStatus.partially_filled
    assert order.created_at == datetime(2025, 11, 26, 12, 50, tzinfo=UTC)
    assert order.updated_at == datetime(2025, 11, 26, 12, 51, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("SUBMITTED", "0", OrderStatus.accepted),
        ("SUBMITTED", "4", OrderStatus.partially_filled),
        ("PARTIAL_FILLED", "4", OrderStatus.partially_filled),
        ("FILLED", "10", OrderStatus.filled),
        ("CANCELLED", "0", OrderStatus.canceled),
        ("FAILED", "0", OrderStatus.rejected),
        ("FAILED", "4", OrderStatus.canceled),
    ],
)
def test_every_status_maps(status: str, filled: str, expected: OrderStatus) -> None:
    order = mapping.order_from_wire(with_item(status=status, filled_quantity=filled))
    assert order.status is expected
    assert (order.avg_fill_price is None) is (filled == "0")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "PARTIAL FILLED"),  # the SDK enum's description, not its wire value
        ("status", "PENDING_CANCEL"),
        ("order_type", "TRAILING_STOP_LOSS"),
        ("time_in_force", "GTD"),
        ("side", "HOLD"),
        ("total_quantity", "lots"),
        ("place_time_at", "yesterday"),
    ],
)
def test_unknown_values_raise_never_guess(field: str, value: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(with_item(**{field: value}))


def test_only_single_normal_combos_are_orders() -> None:
    combo = copy.deepcopy(ORDER)
    combo["combo_type"] = "OTO"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(combo)
    two = copy.deepcopy(ORDER)
    two["orders"] = [ORDER_ITEM, ORDER_ITEM]
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(two)


def test_times_are_epoch_milliseconds_or_iso() -> None:
    assert mapping.ts("1764161400000", "t") == datetime(2025, 11, 26, 12, 50, tzinfo=UTC)
    assert mapping.ts("2025-11-26T12:50:00.000+0000", "t") == datetime(
        2025, 11, 26, 12, 50, tzinfo=UTC
    )


def request(**changes: object) -> OrderRequest:
    values: dict[str, object] = {
        "client_order_id": "bg" + "ab" * 16,
        "symbol": "AAPL",
        "side": OrderSide.sell,
        "quantity": Decimal(3),
        "order_type": OrderType.stop_limit,
        "time_in_force": TimeInForce.gtc,
        "limit_price": Decimal("180.5"),
        "stop_price": Decimal("181"),
    }
    values.update(changes)
    return OrderRequest(**values)  # type: ignore[arg-type]


def test_orders_go_out_as_the_docs_simple_stock_order() -> None:
    assert mapping.order_to_wire(request()) == {
        "client_order_id": "ab" * 16,
        "combo_type": "NORMAL",
        "symbol": "AAPL",
        "instrument_type": "EQUITY",
        "market": "US",
        "side": "SELL",
        "order_type": "STOP_LOSS_LIMIT",
        "quantity": "3",
        "support_trading_session": "CORE",
        "entrust_type": "QTY",
        "time_in_force": "GTC",
        "limit_price": "180.5",
        "stop_price": "181",
    }
    extended = mapping.order_to_wire(request(extended_hours=True))
    assert extended["support_trading_session"] == "ALL"
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request(time_in_force=TimeInForce.fok))
    assert mapping.changes_to_wire("w1", OrderChanges(limit_price=Decimal(2))) == {
        "client_order_id": "w1",
        "limit_price": "2",
    }


def test_client_order_ids_are_32_characters_on_the_wire() -> None:
    ours = "bg" + "0123456789abcdef" * 2
    wire = mapping.client_order_id_to_wire(ours)
    assert (len(wire), wire.isalnum()) == (32, True)
    assert mapping.client_order_id_from_wire(wire) == ours


def test_balances_positions_quotes_and_tokens() -> None:
    balances = mapping.balances_from_wire(BALANCE, NOW)
    assert (balances.cash, balances.equity, balances.buying_power) == (
        Decimal("10000.50"),
        Decimal("11900.50"),
        Decimal("20001.00"),
    )
    [position] = [q for p in POSITIONS for q in mapping.positions_from_wire(p, NOW)]
    assert (position.quantity, position.avg_cost, position.unrealized_pl) == (
        Decimal(10),
        Decimal("188.7660"),
        Decimal("12.34"),
    )
    quote = mapping.quote_from_snapshot(SNAPSHOT[0], NOW)
    assert (quote.bid, quote.ask, quote.last) == (
        Decimal("189.98"),
        Decimal("190.02"),
        Decimal("190.00"),
    )
    _token, expires, status = mapping.token_from_wire(TOKEN_PENDING)
    assert (status, mapping.token_expiry(expires)) == (
        "PENDING",
        datetime(2025, 12, 11, 12, 50, tzinfo=UTC),
    )
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.token_from_wire({**TOKEN_PENDING, "status": "ACTIVE"})
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.positions_from_wire({**POSITIONS[0], "instrument_type": "FUTURES"}, NOW)


def test_fills_become_trades() -> None:
    trade = mapping.trade_from_order(mapping.order_from_wire(ORDER))
    assert trade is not None
    assert (trade.type, trade.quantity, trade.amount) == (
        "buy",
        Decimal(4),
        Decimal("-751.8000"),
    )


def response(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error_code": code, "message": message})


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (401, "ACCESS_TOKEN_NOT_VERIFIED", "pending", errors.AuthenticationFailed),
        (404, "ORDER_NOT_FOUND", "order not found", errors.OrderNotFound),
        (400, "INSUFFICIENT_BUYING_POWER", "insufficient", errors.InsufficientFunds),
        (400, "INVALID_SYMBOL", "invalid symbol X", errors.UnknownSymbol),
        (400, "ORDER_STATUS_NOT_SUPPORT", "status FILLED", errors.OrderNotModifiable),
        (400, "DUPLICATE_CLIENT_ORDER_ID", "exists", mapping.DuplicateClientOrderId),
        (400, "INVALID_PARAMETER", "invalid time_in_force", errors.Rejected),
    ],
)
def test_error_bodies_classify_once(
    status: int, code: str, message: str, expected: type[errors.BrokerError]
) -> None:
    found = mapping.classify(response(status, code, message), "POST")
    assert type(found) is expected
    assert found is not None
    assert found.reason == message


@given(st.from_regex(r"[A-Z0-9]{2,10}", fullmatch=True))
def test_crypto_symbols_map_to_webull_and_back(base: str) -> None:
    pair = f"{base}-USD"
    assert mapping.is_crypto_symbol(pair)
    assert mapping.crypto_symbol_to_wire(pair) == f"{base}USD"
    assert mapping.crypto_symbol_from_wire(mapping.crypto_symbol_to_wire(pair)) == pair

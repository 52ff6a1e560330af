"""Robinhood wire <-> normalized: the documentation's payloads, every state, strictness."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import OrderRequest, OrderSide, OrderStatus, OrderType, TimeInForce
from app.brokers.robinhood import mapping
from tests.brokers.robinhood.payloads import (
    ACCOUNT,
    BEST_BID_ASK,
    HOLDINGS,
    LIMIT_ORDER,
    MARKET_ORDER,
    STOP_LIMIT_ORDER,
    VALIDATION_ERROR,
)

NOW = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


def test_the_docs_limit_order_maps_field_for_field() -> None:
    order = mapping.order_from_wire(LIMIT_ORDER)
    assert order.broker_order_id == "497f6eca-6276-4993-bfeb-53cbbbba6f08"
    assert order.client_order_id == "bg11299b2b61e343e7b9f7dee77210bb29"
    assert (order.symbol, order.side, order.order_type) == (
        "BTC-USD",
        OrderSide.buy,
        OrderType.limit,
    )
    assert (order.quantity, order.filled_quantity) == (Decimal("0.25"), Decimal("0.1"))
    assert order.avg_fill_price == Decimal("60000.00")
    assert order.limit_price == Decimal("60000.00")
    assert order.stop_price is None
    assert order.time_in_force is TimeInForce.gtc
    assert order.status is OrderStatus.partially_filled
    assert order.created_at == datetime(2019, 8, 24, 14, 10, tzinfo=UTC)
    assert order.updated_at == datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)
    [fill] = mapping.fills_from_wire(LIMIT_ORDER)
    assert (fill.quantity, fill.price) == (Decimal("0.1"), Decimal("60000.00"))


def test_market_and_stop_limit_orders() -> None:
    market = mapping.order_from_wire(MARKET_ORDER)
    assert (market.order_type, market.time_in_force, market.status) == (
        OrderType.market,
        TimeInForce.gtc,
        OrderStatus.accepted,
    )
    assert market.avg_fill_price is None
    stop = mapping.order_from_wire(STOP_LIMIT_ORDER)
    assert (stop.order_type, stop.limit_price, stop.stop_price, stop.status) == (
        OrderType.stop_limit,
        Decimal(58000),
        Decimal(58500),
        OrderStatus.canceled,
    )


@pytest.mark.parametrize(
    ("state", "filled", "expected"),
    [
        ("open", "0", OrderStatus.accepted),
        ("open", "0.1", OrderStatus.partially_filled),
        ("partially_filled", "0.1", OrderStatus.partially_filled),
        ("filled", "0.25", OrderStatus.filled),
        ("canceled", "0", OrderStatus.canceled),
        ("failed", "0", OrderStatus.rejected),
        ("failed", "0.1", OrderStatus.canceled),
    ],
)
def test_every_documented_state_maps(state: str, filled: str, expected: OrderStatus) -> None:
    body = copy.deepcopy(LIMIT_ORDER)
    body["state"], body["filled_asset_quantity"] = state, Decimal(filled)
    order = mapping.order_from_wire(body)
    assert order.status is expected
    assert (order.reject_reason is not None) is (expected is OrderStatus.rejected)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("state", "cancelled"),  # the community client's spelling is not the documented one
        ("state", "queued"),
        ("type", "trailing_stop"),
        ("side", "short"),
        ("id", None),
        ("created_at", "yesterday"),
        ("filled_asset_quantity", "NaN"),
    ],
)
def test_unknown_values_raise_never_guess(field: str, value: object) -> None:
    body = copy.deepcopy(LIMIT_ORDER)
    body[field] = value
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(body)


def test_unknown_time_in_force_and_sizeless_orders_raise() -> None:
    body = copy.deepcopy(LIMIT_ORDER)
    body["limit_order_config"]["time_in_force"] = "gfw"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(body)
    sizeless = copy.deepcopy(MARKET_ORDER)
    sizeless["market_order_config"] = {}
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(sizeless)
    gfd = copy.deepcopy(LIMIT_ORDER)
    gfd["limit_order_config"]["time_in_force"] = "gfd"
    assert mapping.order_from_wire(gfd).time_in_force is TimeInForce.day


def test_client_order_ids_map_to_uuids_and_back_exactly() -> None:
    ours = "bg" + uuid.uuid4().hex
    wire = mapping.client_order_id_to_wire(ours)
    assert uuid.UUID(wire).hex == ours[2:]
    assert mapping.client_order_id_from_wire(wire) == ours
    other = mapping.client_order_id_to_wire("bgc-short")
    assert uuid.UUID(other).version == 5
    assert other == mapping.client_order_id_to_wire("bgc-short")
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.client_order_id_from_wire("not-a-uuid")


def request(order_type: OrderType, **extra: object) -> OrderRequest:
    values: dict[str, object] = {
        "client_order_id": "bg" + "0" * 31 + "1",
        "symbol": "BTC-USD",
        "side": OrderSide.buy,
        "quantity": Decimal("0.1"),
        "order_type": order_type,
        "time_in_force": TimeInForce.gtc,
    }
    values.update(extra)
    return OrderRequest(**values)  # type: ignore[arg-type]


def test_orders_go_out_with_their_type_config_only() -> None:
    assert mapping.order_to_wire(request(OrderType.market)) == {
        "client_order_id": "00000000-0000-0000-0000-000000000001",
        "side": "buy",
        "type": "market",
        "symbol": "BTC-USD",
        "market_order_config": {"asset_quantity": "0.1"},
    }
    stop_limit = mapping.order_to_wire(
        request(OrderType.stop_limit, limit_price=Decimal("58000"), stop_price=Decimal("58500"))
    )
    assert stop_limit["type"] == "stop_limit"
    assert stop_limit["stop_limit_order_config"] == {
        "asset_quantity": "0.1",
        "limit_price": "58000",
        "stop_price": "58500",
        "time_in_force": "gtc",
    }
    stop = mapping.order_to_wire(request(OrderType.stop, stop_price=Decimal(1)))
    assert stop["type"] == "stop_loss"
    assert set(stop) == {"client_order_id", "side", "type", "symbol", "stop_loss_order_config"}


def test_what_the_api_cannot_express_is_refused_before_sending() -> None:
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request(OrderType.limit, time_in_force=TimeInForce.day))
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request(OrderType.market, extended_hours=True))
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request(OrderType.limit))  # no limit price


def test_account_holdings_and_quotes() -> None:
    account = mapping.account_from_wire(ACCOUNT)
    balances = mapping.balances_from_account(account, Decimal("100"), NOW)
    assert (balances.cash, balances.buying_power, balances.equity) == (
        Decimal("2500.75"),
        Decimal("2500.75"),
        Decimal("2600.75"),
    )
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.account_from_wire({**ACCOUNT, "status": "frozen"})
    assert mapping.holding_quantity(HOLDINGS["results"][0]) == ("BTC", Decimal("0.5"))
    quote = mapping.quote_from_wire(BEST_BID_ASK["results"][0])
    assert (quote.bid, quote.ask, quote.last) == (
        Decimal("64900.25"),
        Decimal("65100.75"),
        Decimal("65000.5"),
    )
    position = mapping.position("BTC-USD", Decimal("0.5"), Decimal(60000), quote.last, NOW)
    assert position.unrealized_pl == Decimal("0.5") * (Decimal("65000.5") - 60000)


def test_fills_become_trades() -> None:
    [trade] = mapping.trades_from_order(LIMIT_ORDER)
    assert (trade.type, trade.symbol, trade.quantity, trade.amount) == (
        "buy",
        "BTC-USD",
        Decimal("0.1"),
        Decimal("-6000.000"),
    )


def response(status: int, body: object = None, path: str = "/x/", text: str = "") -> httpx.Response:
    req = httpx.Request("POST", f"https://trading.robinhood.com{path}")
    if body is None:
        return httpx.Response(status, text=text, request=req)
    return httpx.Response(status, json=body, request=req)


def errors_body(detail: str, attr: str | None) -> dict[str, object]:
    kind = "validation_error" if attr else "client_error"
    return {"type": kind, "errors": [{"detail": detail, "attr": attr}]}


@pytest.mark.parametrize(
    ("status", "body", "path", "expected"),
    [
        (401, errors_body("Invalid signature.", None), "/x/", errors.AuthenticationFailed),
        (403, errors_body("Forbidden.", None), "/x/", errors.AuthenticationFailed),
        (404, errors_body("Not found.", None), "/x/", errors.OrderNotFound),
        (400, VALIDATION_ERROR, "/x/", mapping.DuplicateClientOrderId),
        (400, errors_body("Invalid symbol.", "symbol"), "/x/", errors.UnknownSymbol),
        (
            400,
            errors_body("Insufficient buying power.", "non_field_errors"),
            "/x/",
            errors.InsufficientFunds,
        ),
        (400, errors_body("Order is filled.", "non_field_errors"), "/o/1/cancel/", None),
        (400, errors_body("Bad.", "non_field_errors"), "/x/", errors.Rejected),
    ],
)
def test_error_bodies_classify_once(
    status: int, body: object, path: str, expected: type[errors.BrokerError] | None
) -> None:
    found = mapping.classify(response(status, body, path), "POST")
    if expected is None:
        assert isinstance(found, errors.OrderNotModifiable)
        return
    assert type(found) is expected
    assert found.reason  # the broker's own words


def test_plain_text_bodies_are_read_as_the_reason() -> None:
    kind, message, attr = mapping.error_body(response(400, text="Request missing headers."))
    assert (kind, message, attr) == (None, "Request missing headers.", None)
    assert mapping.classify(response(405, errors_body("Method not allowed.", None)), "GET") is None


def test_a_quote_amount_order_reads_its_size_as_robinhood_reports_it() -> None:
    """``quote_amount`` instead of ``asset_quantity``: the notional is the amount, the
    quantity and average price what Robinhood reports filled."""
    body = copy.deepcopy(LIMIT_ORDER)
    body["limit_order_config"] = {
        "quote_amount": Decimal("50.00"),
        "limit_price": Decimal("60000.00"),
        "time_in_force": "gtc",
    }
    order = mapping.order_from_wire(body)
    assert order.notional == Decimal("50.00")
    assert order.quantity == order.filled_quantity == Decimal("0.1")
    assert order.avg_fill_price == Decimal("60000.00")
    assert order.status is OrderStatus.partially_filled
    placed_elsewhere = copy.deepcopy(MARKET_ORDER)  # a market order by amount (the app)
    placed_elsewhere["market_order_config"] = {"quote_amount": Decimal(100)}
    read = mapping.order_from_wire(placed_elsewhere)
    assert (read.notional, read.quantity) == (Decimal(100), Decimal(0))


def test_a_dollar_amount_is_quote_amount_on_limit_and_stop_orders_only() -> None:
    base: dict[str, Any] = {
        "client_order_id": "bg" + "0" * 32,
        "symbol": "BTC-USD",
        "side": OrderSide.buy,
        "quantity": Decimal(0),
        "time_in_force": TimeInForce.gtc,
        "notional": Decimal("25.5"),
    }
    limit = mapping.order_to_wire(
        OrderRequest(**base, order_type=OrderType.limit, limit_price=Decimal(60000))
    )
    assert limit["limit_order_config"] == {
        "quote_amount": "25.5",
        "limit_price": "60000",
        "time_in_force": "gtc",
    }
    stop = mapping.order_to_wire(
        OrderRequest(**base, order_type=OrderType.stop, stop_price=Decimal(50000))
    )
    assert stop["stop_loss_order_config"]["quote_amount"] == "25.5"
    with pytest.raises(errors.NotSupported):
        mapping.order_to_wire(OrderRequest(**base, order_type=OrderType.market))

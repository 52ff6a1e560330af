"""Alpaca wire <-> normalized mapping, on payloads from the official spec and docs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.brokers import errors
from app.brokers.alpaca import auth, mapping
from app.brokers.base import (
    AssetClass,
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from tests.brokers.alpaca.payloads import CRYPTO_ORDER, EQUITY_ORDER, FILL_EVENT

S = OrderStatus
# Every value of the spec's OrderStatus enum, with nothing filled and with a partial fill.
EXPECTED: dict[str, tuple[OrderStatus, OrderStatus]] = {
    "new": (S.accepted, S.partially_filled),
    "partially_filled": (S.partially_filled, S.partially_filled),
    "filled": (S.filled, S.filled),
    "done_for_day": (S.accepted, S.partially_filled),
    "canceled": (S.canceled, S.canceled),
    "expired": (S.expired, S.expired),
    "replaced": (S.replaced, S.replaced),
    "pending_cancel": (S.pending_cancel, S.pending_cancel),
    "pending_replace": (S.pending_replace, S.pending_replace),
    "accepted": (S.accepted, S.partially_filled),
    "pending_new": (S.submitted, S.submitted),
    "accepted_for_bidding": (S.accepted, S.partially_filled),
    "stopped": (S.accepted, S.partially_filled),
    "rejected": (S.rejected, S.rejected),
    "suspended": (S.accepted, S.partially_filled),
    "calculated": (S.accepted, S.partially_filled),
    "held": (S.accepted, S.partially_filled),
}


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_every_alpaca_status_is_mapped(status: str) -> None:
    unfilled, partial = EXPECTED[status]
    assert mapping.order_status(status, Decimal(10), Decimal(0)) is unfilled
    assert mapping.order_status(status, Decimal(10), Decimal(4)) is partial


def test_calculated_with_everything_filled_is_filled() -> None:
    assert mapping.order_status("calculated", Decimal(10), Decimal(10)) is S.filled


@pytest.mark.parametrize("status", ["", "NEW", "partial", "teleported", None, 3])
def test_an_unknown_status_raises(status: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_status(status, Decimal(1), Decimal(0))


def test_the_spec_equity_order_example() -> None:
    order = mapping.order_from_wire(EQUITY_ORDER)
    assert order.broker_order_id == "7b08df51-c1ac-453c-99f9-323a5f075f0d"
    assert order.client_order_id == "5680c4bc-9ac1-4a12-a44c-df427ba53032"
    assert (order.symbol, order.side, order.order_type) == ("AAPL", OrderSide.buy, OrderType.limit)
    assert (order.quantity, order.filled_quantity) == (Decimal(2), Decimal(0))
    assert order.limit_price == Decimal(150)
    assert order.avg_fill_price is None
    assert order.status is S.accepted
    assert order.time_in_force is TimeInForce.gtc
    assert order.created_at == datetime(2023, 12, 12, 22, 31, 24, 668464, tzinfo=UTC)


def test_the_spec_crypto_order_example() -> None:
    order = mapping.order_from_wire(CRYPTO_ORDER)
    assert order.symbol == "ETH-USD"
    assert order.quantity == Decimal("0.02")
    assert order.status is S.submitted


@pytest.mark.parametrize(
    ("field", "value"),
    [("type", "trailing_stop"), ("time_in_force", "opg"), ("side", "short"), ("qty", None)],
)
def test_order_values_we_do_not_model_raise(field: str, value: Any) -> None:
    body = {**EQUITY_ORDER, field: value}
    if field == "type":
        body["order_type"] = value
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(body)


def test_a_fill_event() -> None:
    update = mapping.update_from_event(FILL_EVENT, "acct-1")
    assert update.account_ref == "acct-1"
    assert update.order.status is S.filled
    assert update.order.avg_fill_price == Decimal("149.98")
    [fill] = update.fills
    assert (fill.fill_id, fill.quantity, fill.price) == (
        "2f63ea93-423d-4169-b3f6-3fdafc10c418",
        Decimal(2),
        Decimal("149.98"),
    )


def test_an_unknown_event_raises() -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.update_from_event({**FILL_EVENT, "event": "beamed_up"}, "acct-1")


def test_order_request_body() -> None:
    request = OrderRequest(
        client_order_id="bg01",
        symbol="BTC-USD",
        side=OrderSide.sell,
        quantity=Decimal("0.5"),
        order_type=OrderType.stop_limit,
        time_in_force=TimeInForce.gtc,
        limit_price=Decimal("60000.10"),
        stop_price=Decimal("60100"),
    )
    assert mapping.order_to_wire(request) == {
        "symbol": "BTC/USD",
        "qty": "0.5",
        "side": "sell",
        "type": "stop_limit",
        "time_in_force": "gtc",
        "client_order_id": "bg01",
        "limit_price": "60000.10",
        "stop_price": "60100",
    }
    changes = OrderChanges(quantity=Decimal(3), time_in_force=TimeInForce.day)
    assert mapping.changes_to_wire(changes) == {"qty": "3", "time_in_force": "day"}


def test_positions_and_symbols() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    short = {
        "asset_class": "us_equity",
        "avg_entry_price": "100.5",
        "qty": "-3",
        "side": "short",
        "current_price": "99",
        "market_value": "-297",
        "unrealized_pl": "4.5",
        "symbol": "TSLA",
    }
    position = mapping.position_from_wire(short, now)
    assert (position.quantity, position.asset_class) == (Decimal(-3), AssetClass.equity)
    crypto = {**short, "asset_class": "crypto", "symbol": "BTCUSD", "side": "long", "qty": "1"}
    assert mapping.position_from_wire(crypto, now).symbol == "BTC-USD"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.position_from_wire({**short, "asset_class": "ipo"}, now)


def response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("POST", "http://x/v2/orders"))


@pytest.mark.parametrize(
    ("status", "message", "method", "expected"),
    [
        (401, "request is not authorized", "GET", errors.AuthenticationFailed),
        (403, "insufficient buying power", "POST", errors.InsufficientFunds),
        (403, "insufficient qty available for order", "POST", errors.InsufficientFunds),
        (403, "forbidden", "GET", errors.AuthenticationFailed),
        (403, "trading is suspended", "POST", errors.Rejected),
        (404, "order not found", "GET", errors.OrderNotFound),
        (404, "asset not found", "GET", errors.UnknownSymbol),
        (422, 'order is already in "filled" state', "DELETE", errors.OrderNotModifiable),
        (422, "order is not replaceable", "PATCH", errors.OrderNotModifiable),
        (422, "asset FOO not found", "POST", errors.UnknownSymbol),
        (422, "asset is not tradable", "POST", errors.UnsupportedOrder),
        (
            422,
            "fractional orders are not supported for this asset",
            "POST",
            errors.UnsupportedOrder,
        ),
        (422, "client_order_id must be unique", "POST", errors.Rejected),
        (400, "request body format is invalid", "POST", errors.Rejected),
    ],
)
def test_alpaca_error_bodies(
    status: int, message: str, method: str, expected: type[errors.BrokerError]
) -> None:
    mapped = mapping.classify(
        response(status, {"code": status * 100000, "message": message}), method
    )
    assert type(mapped) is expected
    assert mapped is not None
    assert mapped.reason == message


def test_credentials_are_checked_by_name_without_echoing_values() -> None:
    good = auth.check_credentials({"api_key_id": "PKTEST", "api_secret_key": "s3cr3t"})
    assert "s3cr3t" not in repr(good)
    with pytest.raises(ValueError, match="missing credentials: api_secret_key"):
        auth.check_credentials({"api_key_id": "PKTEST"})
    with pytest.raises(ValueError, match="unknown credentials: password") as caught:
        auth.check_credentials({"api_key_id": "PK", "api_secret_key": "x", "password": "hunter2"})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="api_secret_key is not a valid"):
        auth.check_credentials({"api_key_id": "PK", "api_secret_key": " padded "})
    assert auth.headers(good) == {"APCA-API-KEY-ID": "PKTEST", "APCA-API-SECRET-KEY": "s3cr3t"}

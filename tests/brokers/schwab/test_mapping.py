"""Schwab wire <-> normalized: payloads from the docs, every status, strict refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.brokers.schwab import mapping
from tests.brokers.schwab import payloads

NOW = datetime(2024, 3, 19, 15, 0, tzinfo=UTC)

# Every value of the spec's apiOrderStatus enum, with what it means for us (no fills).
STATUS_TABLE = {
    "AWAITING_PARENT_ORDER": OrderStatus.accepted,
    "AWAITING_CONDITION": OrderStatus.accepted,
    "AWAITING_STOP_CONDITION": OrderStatus.accepted,
    "AWAITING_MANUAL_REVIEW": OrderStatus.submitted,
    "ACCEPTED": OrderStatus.accepted,
    "AWAITING_UR_OUT": OrderStatus.pending_cancel,
    "PENDING_ACTIVATION": OrderStatus.accepted,
    "QUEUED": OrderStatus.accepted,
    "WORKING": OrderStatus.accepted,
    "REJECTED": OrderStatus.rejected,
    "PENDING_CANCEL": OrderStatus.pending_cancel,
    "CANCELED": OrderStatus.canceled,
    "PENDING_REPLACE": OrderStatus.pending_replace,
    "REPLACED": OrderStatus.replaced,
    "FILLED": OrderStatus.filled,
    "EXPIRED": OrderStatus.expired,
    "NEW": OrderStatus.submitted,
    "AWAITING_RELEASE_TIME": OrderStatus.accepted,
    "PENDING_ACKNOWLEDGEMENT": OrderStatus.submitted,
    "PENDING_RECALL": OrderStatus.pending_cancel,
    "UNKNOWN": OrderStatus.unknown,
}


def test_the_status_table_covers_the_whole_vocabulary() -> None:
    assert set(STATUS_TABLE) == mapping.STATUSES
    assert len(STATUS_TABLE) == 21


@pytest.mark.parametrize(("raw", "expected"), sorted(STATUS_TABLE.items()))
def test_every_status_maps_explicitly(raw: str, expected: OrderStatus) -> None:
    body = payloads.order(status=raw, filledQuantity=0, orderActivityCollection=[])
    assert mapping.order_from_wire(body).status is expected


@pytest.mark.parametrize("raw", ["WORKING", "QUEUED", "ACCEPTED", "AWAITING_STOP_CONDITION"])
def test_a_live_order_with_fills_is_partially_filled(raw: str) -> None:
    assert (
        mapping.order_from_wire(payloads.order(status=raw)).status is OrderStatus.partially_filled
    )


@pytest.mark.parametrize("raw", ["working", "OPEN", "PARTIALLY_FILLED", "", None, 3])
def test_an_unknown_status_is_an_error_never_a_guess(raw: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(payloads.order(status=raw))


def test_a_live_order_payload() -> None:
    order = mapping.order_from_wire(payloads.order())
    assert order.broker_order_id == "1000847123456"
    assert order.client_order_id is None
    assert (order.symbol, order.side, order.order_type) == ("AAPL", OrderSide.buy, OrderType.limit)
    assert order.time_in_force is TimeInForce.day
    assert order.quantity == Decimal(10)
    assert order.filled_quantity == Decimal(4)
    assert order.limit_price == Decimal("187.25")
    assert order.stop_price is None
    # (3 * 187.2 + 1 * 187.25) / 4
    assert order.avg_fill_price == Decimal("187.2125")
    assert order.created_at == datetime(2024, 3, 19, 14, 30, tzinfo=UTC)
    assert order.updated_at == datetime(2024, 3, 19, 14, 30, 2, tzinfo=UTC)
    assert isinstance(order.limit_price, Decimal)


def test_the_spec_example_shape() -> None:
    order = mapping.order_from_wire(payloads.spec_order_example())
    assert order.broker_order_id == "42"
    assert (order.side, order.order_type) == (OrderSide.sell, OrderType.stop_limit)
    assert order.time_in_force is TimeInForce.gtc
    assert (order.limit_price, order.stop_price) == (Decimal(170), Decimal("170.5"))
    assert order.created_at == datetime(2024, 3, 29, 15, 24, 37, 954000, tzinfo=UTC)
    assert order.status is OrderStatus.accepted


def test_a_rejected_order_carries_schwab_reason() -> None:
    body = payloads.order(
        status="REJECTED",
        filledQuantity=0,
        orderActivityCollection=[],
        statusDescription="Order rejected: stop price on the wrong side of the market",
        closeTime="2024-03-19T14:30:05+0000",
    )
    order = mapping.order_from_wire(body)
    assert order.reject_reason == "Order rejected: stop price on the wrong side of the market"
    assert order.updated_at == datetime(2024, 3, 19, 14, 30, 5, tzinfo=UTC)


def test_a_replaced_order_names_its_replacement() -> None:
    body = payloads.order(status="REPLACED", replacingOrderCollection=[{"orderId": 1000847123999}])
    assert mapping.order_from_wire(body).replaced_by == "1000847123999"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("orderType", "TRAILING_STOP"),
        ("duration", "END_OF_WEEK"),
        ("orderStrategyType", "OCO"),
        ("orderId", None),
        ("quantity", "ten"),
    ],
)
def test_orders_we_cannot_represent_are_refused(field: str, value: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(payloads.order(**{field: value}))


def test_an_option_without_an_occ_symbol_or_shares_with_an_option_instruction_is_refused() -> None:
    option = payloads.order()
    option["orderLegCollection"][0]["instrument"]["assetType"] = "OPTION"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(option)
    opening = payloads.order()
    opening["orderLegCollection"][0]["instruction"] = "BUY_TO_OPEN"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(opening)


def test_a_list_leaves_out_what_it_cannot_represent(caplog: pytest.LogCaptureFixture) -> None:
    listed = mapping.orders_from_wire(
        [payloads.order(), payloads.order(orderType="TRAILING_STOP", orderId=7)]
    )
    assert [o.broker_order_id for o in listed] == ["1000847123456"]
    assert "cannot represent" in caplog.text


def test_an_order_request_body() -> None:
    body = mapping.order_to_wire(
        OrderRequest(
            client_order_id="ignored",
            symbol="XYZ",
            side=OrderSide.buy,
            quantity=Decimal(4),
            order_type=OrderType.limit,
            time_in_force=TimeInForce.day,
            limit_price=Decimal("6.45"),
        )
    )
    assert body == payloads.order_request_limit()
    assert "ignored" not in json.dumps(body)  # Schwab has no client order id field


def test_stop_limit_extended_hours_request() -> None:
    body = mapping.order_to_wire(
        OrderRequest(
            client_order_id="x",
            symbol="AAPL",
            side=OrderSide.sell,
            quantity=Decimal(2),
            order_type=OrderType.stop_limit,
            time_in_force=TimeInForce.gtc,
            limit_price=Decimal("170.00"),
            stop_price=Decimal("170.50"),
            extended_hours=True,
        )
    )
    assert body["session"] == "SEAMLESS"
    assert body["duration"] == "GOOD_TILL_CANCEL"
    assert (body["price"], body["stopPrice"]) == ("170.00", "170.50")
    assert body["orderLegCollection"][0]["instruction"] == "SELL"


def test_a_replacement_keeps_what_does_not_change() -> None:
    current = mapping.order_from_wire(payloads.order())
    request = mapping.replacement_request(current, OrderChanges(limit_price=Decimal("186")))
    assert (request.quantity, request.limit_price) == (Decimal(10), Decimal(186))
    assert (request.symbol, request.side, request.time_in_force) == (
        "AAPL",
        OrderSide.buy,
        TimeInForce.day,
    )


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            "https://api.schwabapi.com/trader/v1/accounts/ABC123/orders/1000847123456",
            "1000847123456",
        ),
        ("http://127.0.0.1:9/trader/v1/accounts/ABC123/orders/77", "77"),
        ("https://api.schwabapi.com/trader/v1/accounts/OTHER/orders/77", None),
        ("https://api.schwabapi.com/trader/v1/accounts/ABC123/orders", None),
        (None, None),
        ("", None),
    ],
)
def test_the_order_id_comes_from_location(location: str | None, expected: str | None) -> None:
    assert mapping.order_id_from_location(location, "ABC123") == expected


def test_account_numbers_and_hashes() -> None:
    numbers = mapping.account_numbers(json.loads(payloads.account_numbers()))
    assert numbers == {"123": "zxV23", "456": "maspod2"}
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.account_numbers([{"accountNumber": "123"}])


def test_cash_account_balances_and_positions() -> None:
    body = payloads.cash_account()
    balances = mapping.balances_from_account(body, NOW)
    assert (balances.cash, balances.equity, balances.buying_power) == (
        Decimal("4627.62"),
        Decimal("6500.12"),
        Decimal(4500),
    )
    [position] = mapping.positions_from_account(body, NOW)
    assert (position.symbol, position.asset_class) == ("AAPL", AssetClass.equity)
    assert position.quantity == Decimal(10)
    assert position.avg_cost == Decimal("180.1")
    assert position.current_price == Decimal("187.25")
    assert position.unrealized_pl == Decimal("71.5")


def test_margin_account_buying_power() -> None:
    balances = mapping.balances_from_account(payloads.margin_account(), NOW)
    assert balances.buying_power == Decimal(36000)


def test_an_unknown_account_type_is_refused() -> None:
    body = payloads.cash_account()
    body["securitiesAccount"]["type"] = "IRA"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.balances_from_account(body, NOW)


def test_quotes_and_invalid_symbols() -> None:
    body = payloads.quotes()
    quotes = mapping.quotes_from_wire(body, ["AAPL", "NOSUCHSYM"])
    assert set(quotes) == {"AAPL"}
    quote = quotes["AAPL"]
    assert (quote.bid, quote.ask, quote.last) == (
        Decimal("168.4"),
        Decimal("168.41"),
        Decimal("168.405"),
    )
    assert quote.as_of == datetime.fromtimestamp(1715877338.885, tz=UTC)
    assert mapping.invalid_symbols(body) == {"NOSUCHSYM"}


def test_transactions() -> None:
    trade = mapping.transaction_from_wire(payloads.trade_transaction())
    assert trade is not None
    assert (trade.type, trade.symbol, trade.quantity, trade.price) == (
        "buy",
        "AAPL",
        Decimal(3),
        Decimal("187.2"),
    )
    assert trade.amount == Decimal("-561.6")
    memo = payloads.trade_transaction() | {"type": "MEMORANDUM"}
    assert mapping.transaction_from_wire(memo) is None
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.transaction_from_wire(payloads.trade_transaction() | {"type": "GIFT"})


@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("REMOVAL OF OPTION DUE TO EXPIRATION", "option_expiration"),
        ("Removal of Option due to assignment", "option_assignment"),
        ("REMOVAL OF OPTION DUE TO EXERCISE", "option_exercise"),
    ],
)
def test_an_option_removal_is_a_lifecycle_transaction(description: str, kind: str) -> None:
    for amount in (2.0, -2.0):  # the sign is not documented: reported unsigned
        tx = mapping.transaction_from_wire(payloads.option_removal(description, amount))
        assert tx is not None
        assert (tx.transaction_id, tx.type, tx.symbol, tx.quantity) == (
            "71813790001",
            kind,
            "SPY240315P00500000",
            Decimal(2),
        )


def test_other_receive_and_deliver_rows_and_malformed_removals() -> None:
    acat = payloads.option_removal("TRANSFER OF SECURITY OR OPTION IN", 1.0)
    transfer = mapping.transaction_from_wire(acat)
    assert transfer is not None
    assert (transfer.type, transfer.symbol) == ("transfer", None)
    removal = payloads.option_removal("REMOVAL OF OPTION DUE TO EXPIRATION", 1.0)
    item = removal["transferItems"][0]
    for items in ([], [item, item], [item | {"instrument": {"assetType": "EQUITY"}}]):
        with pytest.raises(errors.UnknownBrokerValue):
            mapping.transaction_from_wire(removal | {"transferItems": items})
    not_occ = item | {"instrument": item["instrument"] | {"symbol": "SPY"}}
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.transaction_from_wire(removal | {"transferItems": [not_occ]})


def test_streamer_info_from_user_preference() -> None:
    info = mapping.streamer_info(json.loads(payloads.user_preference()))
    assert info["streamerSocketUrl"] == "wss://streamer-api.schwab.com/ws"
    assert info["schwabClientCorrelId"] == "client-correlation-id"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-19T14:30:00+0000", datetime(2024, 3, 19, 14, 30, tzinfo=UTC)),
        ("2024-03-19T10:30:00-0400", datetime(2024, 3, 19, 14, 30, tzinfo=UTC)),
        ("2024-03-29T15:24:37.954Z", datetime(2024, 3, 29, 15, 24, 37, 954000, tzinfo=UTC)),
    ],
)
def test_timestamps(value: str, expected: datetime) -> None:
    assert mapping.ts(value) == expected


def test_query_times_have_milliseconds_and_z() -> None:
    at = datetime(2024, 3, 19, 14, 30, 5, 123456, tzinfo=UTC)
    assert mapping.query_time(at) == "2024-03-19T14:30:05.123Z"


def _response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("POST", "https://x/y"))


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, {"message": "Client not authorized", "errors": []}, errors.AuthenticationFailed),
        (
            403,
            {"errors": [{"id": "1", "status": "403", "title": "Forbidden"}]},
            errors.AuthenticationFailed,
        ),
        (404, {"message": "Order not found", "errors": []}, errors.OrderNotFound),
        (
            400,
            {"message": "Order rejected", "errors": ["Insufficient buying power"]},
            errors.InsufficientFunds,
        ),
        (
            400,
            {"message": "A validation error occurred", "errors": ["Symbol FOO is invalid"]},
            errors.UnknownSymbol,
        ),
        (
            400,
            {"message": "A validation error occurred", "errors": ["price is required"]},
            errors.Rejected,
        ),
        (422, {"message": "Unprocessable"}, errors.Rejected),
    ],
)
def test_errors_are_classified(status: int, body: object, kind: type[errors.BrokerError]) -> None:
    found = mapping.classify(_response(status, body), "POST")
    assert type(found) is kind


def test_a_rejection_keeps_schwab_words() -> None:
    found = mapping.classify(
        _response(400, {"message": "A validation error occurred", "errors": ["price is required"]}),
        "POST",
    )
    assert found is not None
    assert found.reason == "A validation error occurred; price is required"

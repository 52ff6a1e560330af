"""Wire <-> normalized, from the reference's examples: strict, explicit, nothing guessed."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from itertools import product as combinations
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.brokers.coinbase import mapping
from app.brokers.coinbase.adapter import CoinbaseAdapter
from tests.brokers.coinbase.payloads import (
    ACCOUNTS_DOC,
    BEST_BID_ASK,
    BREAKDOWN,
    CANCEL_DOC,
    CREATE_ERROR_DOC,
    CREATE_FAILURE,
    CREATE_SUCCESS_DOC,
    EDIT_DOC,
    EDIT_REFUSED,
    EDIT_SUCCESS,
    ERROR_400_RECORDED,
    FILLS_DOC,
    ORDER_DOC,
    PORTFOLIO,
    PRODUCTS,
    USER_SNAPSHOT_RECORDED,
    USER_UPDATE_DOC,
    V2_TRANSACTIONS_DOC,
    order,
    wallet,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def request(order_type: OrderType, tif: TimeInForce, **kwargs: Any) -> OrderRequest:
    values: dict[str, Any] = {
        "client_order_id": "bg0123456789",
        "symbol": "BTC-USD",
        "side": OrderSide.buy,
        "quantity": Decimal("0.0100"),
        "order_type": order_type,
        "time_in_force": tif,
        "limit_price": Decimal("65000.00") if order_type is not OrderType.market else None,
        "stop_price": Decimal("64000") if order_type is OrderType.stop_limit else None,
    }
    values.update(kwargs)
    return OrderRequest(**values)


# --- status vocabulary -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "filled", "expected"),
    [
        ("PENDING", "0", OrderStatus.submitted),
        ("QUEUED", "0", OrderStatus.submitted),
        ("OPEN", "0", OrderStatus.accepted),
        ("OPEN", "0.4", OrderStatus.partially_filled),
        ("CANCEL_QUEUED", "0", OrderStatus.pending_cancel),
        ("EDIT_QUEUED", "0", OrderStatus.pending_replace),
        ("FILLED", "1", OrderStatus.filled),
        ("CANCELLED", "0.4", OrderStatus.canceled),
        ("EXPIRED", "0", OrderStatus.expired),
        ("FAILED", "0", OrderStatus.rejected),
        ("UNKNOWN_ORDER_STATUS", "0", OrderStatus.unknown),
    ],
)
def test_every_documented_status_maps_explicitly(
    wire: str, filled: str, expected: OrderStatus
) -> None:
    assert mapping.order_status(wire, Decimal(1), Decimal(filled)) is expected


def test_an_open_order_being_cancelled_is_pending_cancel() -> None:
    assert mapping.order_status("OPEN", Decimal(1), Decimal(0), True) is OrderStatus.pending_cancel


@pytest.mark.parametrize("wire", ["open", "DONE", "PARTIALLY_FILLED", "", None, 3])
def test_an_unknown_status_is_an_error_never_a_guess(wire: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_status(wire, Decimal(1), Decimal(0))
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(order(status=wire))


# --- the order object --------------------------------------------------------------------


def test_the_reference_order_example() -> None:
    got = mapping.order_from_wire(ORDER_DOC["order"])
    assert got.broker_order_id == "0000-000000-000000"
    assert got.client_order_id == "11111-000000-000000"
    assert (got.symbol, got.side, got.order_type, got.time_in_force) == (
        "BTC-USD",
        OrderSide.buy,
        OrderType.limit,
        TimeInForce.gtc,
    )
    assert (got.quantity, got.limit_price, got.stop_price) == (
        Decimal("0.001"),
        Decimal("10000.00"),
        None,
    )
    # The example is OPEN with its whole size filled: the fill decides.
    assert (got.filled_quantity, got.avg_fill_price, got.status) == (
        Decimal("0.001"),
        Decimal(50),
        OrderStatus.filled,
    )
    assert got.created_at == datetime(2021, 5, 31, 9, 59, 59, tzinfo=UTC)
    assert got.updated_at == datetime(2021, 5, 31, 10, 30, tzinfo=UTC)  # last_fill_time


def test_a_resting_order_an_edited_one_and_a_failed_one() -> None:
    resting = mapping.order_from_wire(order())
    assert (resting.status, resting.filled_quantity, resting.avg_fill_price) == (
        OrderStatus.accepted,
        Decimal(0),
        None,
    )
    edited = mapping.order_from_wire(
        order(
            edit_history=[
                {
                    "price": "19000.00",
                    "size": "0.001",
                    "replace_accept_timestamp": "2021-06-01T00:00:00.5Z",
                }
            ]
        )
    )
    assert edited.updated_at == datetime(2021, 6, 1, 0, 0, 0, 500000, tzinfo=UTC)
    failed = mapping.order_from_wire(order(status="FAILED", reject_message="post only would cross"))
    assert (failed.status, failed.reject_reason) == (OrderStatus.rejected, "post only would cross")
    bare = mapping.order_from_wire(order(status="FAILED"))
    assert bare.reject_reason == "Coinbase failed the order"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"market_market_ioc": {"base_size": "0.5"}}, (OrderType.market, TimeInForce.ioc)),
        (
            {"sor_limit_ioc": {"base_size": "0.5", "limit_price": "10"}},
            (OrderType.limit, TimeInForce.ioc),
        ),
        (
            {"limit_limit_fok": {"base_size": "0.5", "limit_price": "10"}},
            (OrderType.limit, TimeInForce.fok),
        ),
        (
            {
                "stop_limit_stop_limit_gtc": {
                    "base_size": "0.5",
                    "limit_price": "10",
                    "stop_price": "11",
                    "stop_direction": "STOP_DIRECTION_STOP_UP",
                }
            },
            (OrderType.stop_limit, TimeInForce.gtc),
        ),
    ],
)
def test_each_modelled_configuration_reads_back(
    config: dict[str, Any], expected: tuple[OrderType, TimeInForce]
) -> None:
    got = mapping.order_from_wire(order(order_configuration=config))
    assert (got.order_type, got.time_in_force) == expected
    assert got.quantity == Decimal("0.5")


@pytest.mark.parametrize(
    "item",
    [
        order(order_configuration={"limit_limit_gtc": {"quote_size": "10.00"}}),
        order(
            order_configuration={
                "limit_limit_gtd": {
                    "base_size": "1",
                    "limit_price": "1",
                    "end_time": "2021-05-31T09:59:59Z",
                    "post_only": False,
                }
            }
        ),
        order(
            order_configuration={
                "trigger_bracket_gtc": {
                    "base_size": "1",
                    "limit_price": "1",
                    "stop_trigger_price": "2",
                }
            }
        ),
        order(product_type="FUTURE"),
        order(order_configuration={}),
    ],
)
def test_orders_outside_the_model_are_recognized(item: dict[str, Any]) -> None:
    assert not mapping.is_modelled(item)
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(item)


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("OPEN", "0", OrderStatus.accepted),
        ("OPEN", "0.0001", OrderStatus.partially_filled),
        ("FILLED", "0.00015", OrderStatus.filled),
        ("CANCELLED", "0.0001", OrderStatus.canceled),
    ],
)
def test_a_dollar_amount_order_reads_its_size_as_coinbase_reports_it(
    status: str, filled: str, expected: OrderStatus
) -> None:
    """A market order by ``quote_size``: the notional is the amount asked, the quantity and
    the average price what Coinbase reports filled (an OPEN one is never "filled" early)."""
    item = order(
        order_configuration={"market_market_ioc": {"quote_size": "10.00"}},
        status=status,
        filled_size=filled,
        average_filled_price="66666.66",
    )
    assert mapping.is_modelled(item)
    parsed = mapping.order_from_wire(item)
    assert parsed.notional == Decimal("10.00")
    assert parsed.quantity == parsed.filled_quantity == Decimal(filled)
    assert parsed.status is expected
    assert parsed.order_type is OrderType.market
    assert parsed.avg_fill_price == (Decimal("66666.66") if Decimal(filled) else None)


def test_a_dollar_amount_becomes_quote_size_on_market_orders_only() -> None:
    body = mapping.order_to_wire(
        request(OrderType.market, TimeInForce.ioc, quantity=Decimal(0), notional=Decimal("25.50"))
    )
    assert body["order_configuration"] == {"market_market_ioc": {"quote_size": "25.5"}}
    with pytest.raises(errors.NotSupported):
        mapping.order_to_wire(
            request(OrderType.limit, TimeInForce.gtc, quantity=Decimal(0), notional=Decimal(5))
        )
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(
            request(OrderType.market, TimeInForce.ioc, quantity=Decimal(0), notional=Decimal(0))
        )


def test_a_preview_maps_totals_errors_and_warnings() -> None:
    buy = mapping.preview_from_wire(
        {
            "order_total": "101.00",
            "commission_total": "1.00",
            "errs": [],
            "warning": ["UNKNOWN", "BIG_ORDER"],
        },
        OrderSide.buy,
    )
    assert buy.estimated_cash_change == Decimal("-101.00")
    assert buy.fees == Decimal("1.00")
    assert buy.direction.value == "debit"
    assert buy.warnings == ("BIG_ORDER",)
    assert buy.rejections == ()
    assert buy.source.value == "broker"
    sell = mapping.preview_from_wire(
        {"order_total": "99", "commission_total": "1", "errs": ["PREVIEW_INSUFFICIENT_FUND"]},
        OrderSide.sell,
    )
    assert sell.estimated_cash_change == Decimal(99)
    assert sell.direction.value == "credit"
    assert sell.rejections == ("PREVIEW_INSUFFICIENT_FUND",)
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.preview_from_wire({"commission_total": "1"}, OrderSide.buy)


def test_a_modelled_order_is_recognized() -> None:
    assert mapping.is_modelled(order())
    assert not mapping.is_modelled("not an order")


# --- placing -------------------------------------------------------------------------------


def test_each_supported_combination_becomes_its_configuration() -> None:
    bodies = {
        key: mapping.order_to_wire(request(*key))["order_configuration"]
        for key in mapping.ORDER_CONFIGURATIONS
    }
    assert bodies == {
        (OrderType.market, TimeInForce.ioc): {"market_market_ioc": {"base_size": "0.01"}},
        (OrderType.limit, TimeInForce.gtc): {
            "limit_limit_gtc": {"base_size": "0.01", "limit_price": "65000", "post_only": False}
        },
        (OrderType.limit, TimeInForce.ioc): {
            "sor_limit_ioc": {"base_size": "0.01", "limit_price": "65000"}
        },
        (OrderType.limit, TimeInForce.fok): {
            "limit_limit_fok": {"base_size": "0.01", "limit_price": "65000"}
        },
        (OrderType.stop_limit, TimeInForce.gtc): {
            "stop_limit_stop_limit_gtc": {
                "base_size": "0.01",
                "limit_price": "65000",
                "stop_price": "64000",
                "stop_direction": "STOP_DIRECTION_STOP_UP",
            }
        },
    }
    body = mapping.order_to_wire(request(OrderType.market, TimeInForce.ioc, symbol="eth/usd"))
    assert {k: v for k, v in body.items() if k != "order_configuration"} == {
        "client_order_id": "bg0123456789",
        "product_id": "ETH-USD",
        "side": "BUY",
    }
    sell = mapping.order_to_wire(
        request(OrderType.stop_limit, TimeInForce.gtc, side=OrderSide.sell)
    )
    assert sell["side"] == "SELL"
    terms = sell["order_configuration"]["stop_limit_stop_limit_gtc"]
    assert terms["stop_direction"] == "STOP_DIRECTION_STOP_DOWN"


UNSUPPORTED = [
    key for key in combinations(OrderType, TimeInForce) if key not in mapping.ORDER_CONFIGURATIONS
]


@pytest.mark.parametrize(("order_type", "tif"), UNSUPPORTED)
def test_every_other_combination_is_not_supported(order_type: OrderType, tif: TimeInForce) -> None:
    with pytest.raises(errors.NotSupported, match=f"{order_type.value} orders with time_in_force"):
        mapping.order_to_wire(request(order_type, tif))


def test_extended_hours_and_missing_prices_are_refused_before_sending() -> None:
    with pytest.raises(errors.NotSupported):
        mapping.order_to_wire(request(OrderType.limit, TimeInForce.gtc, extended_hours=True))
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request(OrderType.limit, TimeInForce.gtc, limit_price=None))
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request(OrderType.stop_limit, TimeInForce.gtc, stop_price=None))


def test_decimals_travel_as_plain_strings() -> None:
    assert mapping.plain(Decimal("1E+1")) == "10"
    assert mapping.plain(Decimal("0.00000100")) == "0.000001"


def test_a_created_order_answer_gives_its_id() -> None:
    assert mapping.placed_order_id(CREATE_SUCCESS_DOC) == "11111-00000-000000"


def test_a_refusal_inside_a_200_is_a_rejection_with_coinbases_words() -> None:
    with pytest.raises(errors.InsufficientFunds) as poor:
        mapping.placed_order_id(CREATE_FAILURE)
    assert poor.value.reason == "Insufficient balance in source account (PREVIEW_INSUFFICIENT_FUND)"
    doc = {"success": False, "error_response": CREATE_ERROR_DOC}
    with pytest.raises(errors.Rejected) as generic:
        mapping.placed_order_id(doc)
    assert type(generic.value) is errors.Rejected
    assert generic.value.reason == (
        "The order configuration was invalid: Market orders cannot be placed with empty order sizes"
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("INSUFFICIENT_FUNDS", errors.InsufficientFunds),
        ("INVALID_PRODUCT_ID", errors.UnknownSymbol),
        ("UNSUPPORTED_ORDER_CONFIGURATION", errors.UnsupportedOrder),
        ("INVALID_LIMIT_PRICE_POST_ONLY", errors.Rejected),
        ("ORDER_ENTRY_DISABLED", errors.Rejected),
    ],
)
def test_refusal_codes_are_classified(code: str, kind: type[errors.Rejected]) -> None:
    error = {"error": code, "message": "", "new_order_failure_reason": code}
    rejected = mapping.rejection(error)
    assert type(rejected) is kind
    assert code in rejected.reason
    assert mapping.rejection(None).reason == "Coinbase refused the order (no reason given)"


@pytest.mark.parametrize(
    "body",
    [{}, {"success": "yes"}, {"success": True}, {"success": True, "success_response": {}}, []],
)
def test_a_malformed_create_answer_is_unknown(body: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.placed_order_id(body)


# --- cancel and edit -----------------------------------------------------------------------


def test_batch_cancel_results_are_read_per_order() -> None:
    assert mapping.cancel_result(CANCEL_DOC, "0000-00000") == mapping.CancelResult(
        True, "UNKNOWN_CANCEL_FAILURE_REASON"
    )
    refused = {
        "results": [{"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": "a"}]
    }
    assert mapping.cancel_result(refused, "a") == mapping.CancelResult(
        False, "UNKNOWN_CANCEL_ORDER"
    )
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.cancel_result(CANCEL_DOC, "another")
    odd = copy.deepcopy(refused)
    odd["results"][0]["failure_reason"] = "BECAUSE"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.cancel_result(odd, "a")
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.cancel_result({"cancelled": []}, "a")


def test_edit_answers() -> None:
    assert mapping.edit_result(EDIT_SUCCESS) == mapping.EditResult(True, ())
    assert mapping.edit_result(EDIT_REFUSED) == mapping.EditResult(
        False, ("ONLY_OPEN_ORDERS_CAN_BE_EDITED",)
    )
    assert mapping.edit_result(EDIT_DOC) == mapping.EditResult(True, ())
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.edit_result({"errors": []})


# --- the user channel ------------------------------------------------------------------------


def test_the_documented_user_update_is_a_whole_order() -> None:
    [item] = USER_UPDATE_DOC["events"][0]["orders"]
    entry = mapping.event_order(item)
    assert (entry.order_id, entry.client_order_id, entry.status) == ("YYY", "XXX", "FILLED")
    got = entry.order
    assert got is not None
    assert (got.status, got.quantity, got.filled_quantity, got.avg_fill_price) == (
        OrderStatus.filled,
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal(50000),
    )
    assert (got.order_type, got.time_in_force, got.limit_price, got.stop_price) == (
        OrderType.limit,
        TimeInForce.gtc,
        Decimal(50000),
        None,
    )
    assert got.created_at == datetime(2024, 6, 21, 18, 29, 13, 909347, tzinfo=UTC)


def test_entries_without_the_whole_order_are_read_over_rest() -> None:
    [recorded] = USER_SNAPSHOT_RECORDED["events"][0]["orders"]
    entry = mapping.event_order(recorded)  # a Limit order without its limit price
    assert (entry.status, entry.order) == ("OPEN", None)
    cancelled = {**USER_UPDATE_DOC["events"][0]["orders"][0], "status": "CANCELLED"}
    assert mapping.event_order(cancelled).order is None  # its size is not known
    gtd = {**recorded, "limit_price": "1", "time_in_force": "GOOD_UNTIL_DATE_TIME"}
    assert mapping.event_order(gtd).order is None


def test_a_user_channel_entry_with_an_unknown_status_is_an_error() -> None:
    item = {**USER_UPDATE_DOC["events"][0]["orders"][0], "status": "SETTLED"}
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.event_order(item)
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.event_order({"status": "OPEN"})


# --- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-02-09T20:33:57.609931463Z", datetime(2023, 2, 9, 20, 33, 57, 609931, tzinfo=UTC)),
        ("2015-03-26T23:44:08-07:00", datetime(2015, 3, 27, 6, 44, 8, tzinfo=UTC)),
        ("2021-05-31T09:59:59Z", datetime(2021, 5, 31, 9, 59, 59, tzinfo=UTC)),
        ("2026-06-01T12:00:00.5Z", datetime(2026, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    assert mapping.ts(text, "t") == expected


def test_unset_and_bad_timestamps() -> None:
    assert mapping.opt_ts("0001-01-01T00:00:00Z", "end_time") is None
    assert mapping.opt_ts("", "t") is None
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.ts("yesterday", "t")


# --- wallets, quotes, positions -----------------------------------------------------------------


def test_wallets_of_the_accounts_answer() -> None:
    assert mapping.wallet_from_wire(ACCOUNTS_DOC["accounts"][0]) is None  # the example is deleted
    got = mapping.wallet_from_wire(wallet("USD", "950.00", "50.00"))
    assert got is not None
    assert (got.currency, got.available, got.hold, got.total, got.portfolio) == (
        "USD",
        Decimal(950),
        Decimal(50),
        Decimal(1000),
        PORTFOLIO,
    )
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.wallet_from_wire({**wallet("USD", "1"), "retail_portfolio_id": None})
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.wallet_from_wire({**wallet("USD", "1"), "available_balance": {"value": 1.5}})
    page = mapping.page_of(ACCOUNTS_DOC, "accounts")
    assert page.cursor == "789100"


def test_books_prices_and_quotes() -> None:
    books = mapping.books_from_wire(BEST_BID_ASK)
    assert books["BTC-USD"].mid == Decimal("65000.00")
    prices = mapping.prices_from_products(PRODUCTS)
    quotes = mapping.quotes_from(books, prices, ["BTC-USD", "ETH-USD", "SOL-USD"], NOW)
    assert set(quotes) == {"BTC-USD", "ETH-USD"}
    btc = quotes["BTC-USD"]
    assert (btc.bid, btc.ask, btc.last) == (
        Decimal("64999.50"),
        Decimal("65000.50"),
        Decimal(65000),
    )
    assert btc.as_of == datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    one_sided = {"pricebooks": [{"product_id": "BTC-USD", "bids": [], "asks": [], "time": ""}]}
    assert mapping.quotes_from(mapping.books_from_wire(one_sided), {}, ["BTC-USD"], NOW) == {}


def test_a_position_is_valued_at_the_mid_with_the_breakdowns_cost_basis() -> None:
    basis = mapping.cost_basis_from_breakdown(BREAKDOWN)
    assert basis == {"BTC": (Decimal("0.01"), Decimal(600))}  # cash is not a position
    btc = mapping.wallet_from_wire(wallet("BTC", "0.008", "0.002"))
    assert btc is not None
    position = mapping.position_from(btc, Decimal(65000), basis["BTC"], NOW)
    assert (position.symbol, position.asset_class, position.quantity) == (
        "BTC-USD",
        AssetClass.crypto,
        Decimal("0.010"),
    )
    assert (position.avg_cost, position.market_value, position.unrealized_pl) == (
        Decimal(60000),
        Decimal(650),
        Decimal(50),
    )
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.position_from(btc, Decimal(65000), None, NOW)


# --- transactions ------------------------------------------------------------------------------


def test_a_fill_is_a_cash_movement_with_its_commission() -> None:
    [fill] = FILLS_DOC["fills"]
    buy = mapping.transaction_from_fill(fill)
    assert (buy.type, buy.symbol, buy.quantity, buy.price, buy.amount) == (
        "buy",
        "BTC-USD",
        Decimal("0.001"),
        Decimal(10000),
        Decimal("-11.25"),
    )
    assert buy.transaction_id == "22222-2222222-22222222"
    sell = mapping.transaction_from_fill({**fill, "side": "SELL"})
    assert sell.amount == Decimal("8.75")
    quoted = mapping.transaction_from_fill({**fill, "size": "10.00", "size_in_quote": True})
    assert quoted.quantity == Decimal("0.001")
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.transaction_from_fill({**fill, "trade_type": "GIFT"})


def test_v2_cash_transactions_only() -> None:
    mapped = [mapping.transaction_from_v2(t) for t in V2_TRANSACTIONS_DOC["data"]]
    assert mapped[0] is None  # a buy: trades come from fills
    deposit = mapped[1]
    assert deposit is not None
    assert (deposit.type, deposit.amount, deposit.description) == (
        "deposit",
        Decimal(10),
        "Deposited funds",
    )
    euro = copy.deepcopy(V2_TRANSACTIONS_DOC["data"][1])
    euro["amount"]["currency"] = "EUR"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.transaction_from_v2(euro)


# --- errors ------------------------------------------------------------------------------------


def response(status: int, **kwargs: Any) -> httpx.Response:
    return httpx.Response(
        status, request=httpx.Request("GET", "https://api.coinbase.com/x"), **kwargs
    )


def test_error_answers_are_classified() -> None:
    unauthorized = mapping.classify(response(401, text="Unauthorized\n"), "GET")
    assert isinstance(unauthorized, errors.AuthenticationFailed)
    assert unauthorized.reason == "Coinbase refused the API key: Unauthorized"
    scopes = mapping.classify(
        response(
            403,
            json={
                "error": "PERMISSION_DENIED",
                "error_details": "Missing required scopes",
                "message": "Missing required scopes",
            },
        ),
        "POST",
    )
    assert type(scopes) is errors.Rejected
    assert "lacks a permission" in scopes.reason
    missing = mapping.classify(
        response(
            404, json={"error": "NOT_FOUND", "message": "order with this orderID was not found"}
        ),
        "GET",
    )
    assert isinstance(missing, errors.OrderNotFound)
    bad = mapping.classify(response(400, json=ERROR_400_RECORDED), "GET")
    assert type(bad) is errors.Rejected
    assert bad.reason == "cannot pass order_ids with other filters"
    v2 = mapping.classify(
        response(404, json={"errors": [{"id": "not_found", "message": "Not found"}]}), "GET"
    )
    assert v2 is not None
    assert v2.reason == "Not found"


@given(st.lists(st.sampled_from(["ok", "quote", "gtd", "odd_status", "futures"]), max_size=12))
def test_a_list_keeps_every_representable_order_and_counts_the_rest(kinds: list[str]) -> None:
    """Whatever the mix, the orders the gateway can represent (base- or quote-sized) come
    back in the broker's order and every other row is counted as skipped, never raised."""
    rows = {
        "ok": lambda i: order(order_id=f"o-{i}"),
        "quote": lambda i: order(
            order_id=f"o-{i}", order_configuration={"market_market_ioc": {"quote_size": "5"}}
        ),
        "gtd": lambda i: order(
            order_id=f"o-{i}",
            order_configuration={"limit_limit_gtd": {"base_size": "1", "limit_price": "1"}},
        ),
        "odd_status": lambda i: order(order_id=f"o-{i}", status="SETTLING"),
        "futures": lambda i: order(order_id=f"o-{i}", product_type="FUTURE"),
    }
    items = [rows[kind](i) for i, kind in enumerate(kinds)]
    listed = CoinbaseAdapter._modelled(items)
    kept = [f"o-{i}" for i, kind in enumerate(kinds) if kind in ("ok", "quote")]
    assert [o.broker_order_id for o in listed] == kept
    assert listed.skipped == len(kinds) - len(kept)

"""tastytrade wire <-> normalized mapping, on recorded answers and the docs' examples."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    AuthKind,
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
    TimeInForce,
)
from app.brokers.tastytrade import auth, mapping, tastytrade_spec
from tests.brokers.tastytrade.payloads import (
    ACCOUNTS,
    BALANCES,
    ERRORS,
    FILLED_NOTIFICATION,
    LIVE_ORDERS_DOC,
    MARKET_DATA,
    POSITIONS,
    SUBMIT_ANSWER,
    TRANSACTIONS,
    order,
)

S = OrderStatus
NOW = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)

# Every documented status, with nothing filled and with a partial fill.
EXPECTED: dict[str, tuple[OrderStatus, OrderStatus]] = {
    "Received": (S.accepted, S.partially_filled),
    "Routed": (S.submitted, S.submitted),
    "In Flight": (S.submitted, S.submitted),
    "Contingent": (S.accepted, S.partially_filled),
    "Live": (S.accepted, S.partially_filled),
    "Cancel Requested": (S.pending_cancel, S.pending_cancel),
    "Replace Requested": (S.pending_replace, S.pending_replace),
    "Filled": (S.filled, S.filled),
    "Cancelled": (S.canceled, S.canceled),
    "Expired": (S.expired, S.expired),
    "Rejected": (S.rejected, S.rejected),
    "Removed": (S.canceled, S.canceled),
    "Partially Removed": (S.canceled, S.canceled),
}


def test_the_expected_table_covers_the_documented_vocabulary() -> None:
    # tastyware/tastytrade OrderStatus and developer.tastytrade.com/order-flow: 13 values.
    assert len(EXPECTED) == 13


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_every_tastytrade_status_is_mapped(status: str) -> None:
    unfilled, partial = EXPECTED[status]
    assert mapping.order_status(status, Decimal(10), Decimal(0), False) is unfilled
    assert mapping.order_status(status, Decimal(10), Decimal(4), False) is partial


def test_a_cancelled_original_of_a_replace_is_replaced() -> None:
    assert mapping.order_status("Cancelled", Decimal(1), Decimal(0), True) is S.replaced
    assert mapping.order_status("Live", Decimal(1), Decimal(0), True) is S.accepted


@pytest.mark.parametrize(
    "status", ["", "live", "LIVE", "Dead", "Remove Pending", "teleported", None, 3]
)
def test_an_unknown_status_raises(status: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_status(status, Decimal(1), Decimal(0), False)


def test_the_recorded_submit_answer() -> None:
    placed = mapping.order_from_wire(SUBMIT_ANSWER["data"]["order"])
    assert placed.broker_order_id == "270561"
    assert placed.client_order_id is None
    assert (placed.symbol, placed.side, placed.order_type) == (
        "AAPL",
        OrderSide.buy,
        OrderType.market,
    )
    assert (placed.quantity, placed.filled_quantity) == (Decimal(1), Decimal(0))
    assert placed.status is S.submitted
    assert placed.time_in_force is TimeInForce.day
    assert placed.created_at == datetime(2025, 5, 28, 13, 38, 47, 851000, tzinfo=UTC)
    # "updated-at": 1748439528049 is epoch milliseconds.
    assert placed.updated_at == datetime(2025, 5, 28, 13, 38, 48, 49000, tzinfo=UTC)
    assert placed.limit_price is None
    assert placed.avg_fill_price is None


def test_a_limit_order_with_our_identifier() -> None:
    limit = mapping.order_from_wire(
        order(
            **{
                "order-type": "Stop Limit",
                "price": "175.25",
                "price-effect": "Debit",
                "stop-trigger": "176",
                "time-in-force": "GTC Ext",
                "external-identifier": "bgabc",
                "status": "Live",
            }
        )
    )
    assert (limit.limit_price, limit.stop_price) == (Decimal("175.25"), Decimal(176))
    assert limit.time_in_force is TimeInForce.gtc
    assert limit.client_order_id == "bgabc"
    assert limit.status is S.accepted


def test_a_replacement_and_its_original() -> None:
    replacement = mapping.order_from_wire(
        order(**{"id": 270562, "status": "Contingent", "replaces-order-id": 270561})
    )
    assert (replacement.status, replacement.replaces) == (S.accepted, "270561")
    original = mapping.order_from_wire(
        order(**{"status": "Cancelled", "replacing-order-id": 270562})
    )
    assert (original.status, original.replaced_by) == (S.replaced, "270562")


def test_a_rejection_carries_the_reason() -> None:
    rejected = mapping.order_from_wire(
        order(**{"status": "Rejected", "reject-reason": "Not enough buying power"})
    )
    assert (rejected.status, rejected.reject_reason) == (S.rejected, "Not enough buying power")


def test_the_recorded_fill_notification() -> None:
    update = mapping.update_from_notification(FILLED_NOTIFICATION, "5WX06827")
    assert update is not None
    assert update.account_ref == "5WX06827"
    assert update.order.status is S.filled
    assert (update.order.filled_quantity, update.order.avg_fill_price) == (
        Decimal(1),
        Decimal("1.0"),
    )
    [fill] = update.fills
    assert fill.fill_id == "2_TW::TEST_A1::20250528.135-TEST_FILL"
    assert (fill.quantity, fill.price) == (Decimal(1), Decimal("1.0"))
    assert update.occurred_at == datetime(2025, 5, 28, 16, 0, 2, 620000, tzinfo=UTC)


def test_filled_before_every_fill_is_published_trusts_remaining_quantity() -> None:
    body = order(
        **{"status": "Filled", "size": 3},
        legs={
            "quantity": 3,
            "remaining-quantity": 0,
            "fills": [FILLED_NOTIFICATION["data"]["legs"][0]["fills"][0]],
        },
    )
    filled = mapping.order_from_wire(body)
    assert (filled.status, filled.quantity, filled.filled_quantity) == (
        S.filled,
        Decimal(3),
        Decimal(3),
    )
    assert filled.avg_fill_price == Decimal("1.0")


def test_other_notifications_and_unmodelled_orders_are_not_updates() -> None:
    assert mapping.update_from_notification({"type": "AccountBalance", "data": {}}, "a") is None
    future = order(legs={"instrument-type": "Future", "symbol": "/ESZ6", "action": "Buy"})
    assert mapping.update_from_notification({"type": "Order", "data": future}, "a") is None


def test_an_order_without_updated_at_uses_its_other_timestamps() -> None:
    body = order(**{"terminal-at": "2025-05-28T13:39:00.000+00:00"})
    del body["updated-at"]
    mapped = mapping.order_from_wire(body)
    assert mapped.updated_at == datetime(2025, 5, 28, 13, 39, tzinfo=UTC)
    assert mapped.created_at == datetime(2025, 5, 28, 13, 38, 47, 851000, tzinfo=UTC)
    del body["terminal-at"], body["received-at"]
    with pytest.raises(errors.UnknownBrokerValue, match="timestamps"):
        mapping.order_from_wire(body)


def documented_live_orders() -> list[dict[str, Any]]:
    """The docs' two option orders, with the ``received-at`` their abbreviated example
    leaves out (every real order has it)."""
    items = copy.deepcopy(mapping.items_of(LIVE_ORDERS_DOC))
    for item in items:
        item["received-at"] = "2019-10-01T14:00:00.000+00:00"
    return items


def test_the_docs_live_orders_example_maps_a_single_option_and_a_spread() -> None:
    single_raw, spread_raw = documented_live_orders()
    assert mapping.is_modelled(single_raw)
    assert mapping.is_modelled(spread_raw)
    single = mapping.order_from_wire(single_raw)
    # "QQQ 191115C00187000": the page collapses the padding; the symbol is still OCC.
    assert (single.symbol, single.side, single.position_effect) == (
        "QQQ191115C00187000",
        OrderSide.buy,
        PositionEffect.close,
    )
    assert (single.quantity, single.limit_price, single.price_effect) == (
        Decimal(1),
        Decimal("3.0"),
        PriceEffect.debit,
    )
    assert single.legs == ()
    spread = mapping.order_from_wire(spread_raw)
    assert (spread.symbol, spread.side, spread.quantity, spread.status) == (
        "SPY",
        OrderSide.buy,
        Decimal(1),
        S.canceled,
    )
    assert [(leg.symbol, leg.side, leg.ratio, leg.position_effect) for leg in spread.legs] == [
        ("SPY191018P00300000", OrderSide.buy, 1, PositionEffect.close),
        ("SPY191018P00270000", OrderSide.sell, 1, PositionEffect.close),
    ]
    five = copy.deepcopy(spread_raw)
    five["legs"] = five["legs"] * 3  # 6 legs: more than tastytrade allows
    assert not mapping.is_modelled(five)
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(five)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order-type", "Notional Market"),
        ("order-type", "Marketable Limit"),
        ("time-in-force", "GTD"),
        ("time-in-force", "Ext Overnight"),
        ("id", None),
        ("updated-at", "yesterday"),
    ],
)
def test_order_values_we_do_not_model_raise(field: str, value: Any) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(order(**{field: value}))


@pytest.mark.parametrize(
    ("leg", "value"), [("action", "Allocate"), ("instrument-type", "Spaceship"), ("quantity", None)]
)
def test_leg_values_we_do_not_model_raise(leg: str, value: Any) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(order(legs={leg: value}))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-05-28T13:38:47.851+00:00", datetime(2025, 5, 28, 13, 38, 47, 851000, tzinfo=UTC)),
        ("2025-05-28T13:38:47Z", datetime(2025, 5, 28, 13, 38, 47, tzinfo=UTC)),
        ("2025-05-28T09:38:47.1234567-0400", datetime(2025, 5, 28, 13, 38, 47, 123456, tzinfo=UTC)),
        (1748439528049, datetime(2025, 5, 28, 13, 38, 48, 49000, tzinfo=UTC)),
    ],
)
def test_timestamps(raw: object, expected: datetime) -> None:
    assert mapping.ts(raw) == expected


def request(**overrides: Any) -> OrderRequest:
    values: dict[str, Any] = {
        "client_order_id": "bg0123456789abcdef0123456789abcdef",
        "symbol": "AAPL",
        "side": OrderSide.buy,
        "quantity": Decimal(100),
        "order_type": OrderType.limit,
        "time_in_force": TimeInForce.day,
        "limit_price": Decimal("175.25"),
    }
    values.update(overrides)
    return OrderRequest(**values)


def test_the_order_body_follows_the_equity_order_guide() -> None:
    # https://developer.tastytrade.com/docs/guides/place-an-equity-order/ (limit buy, Debit)
    assert mapping.order_to_wire(request(), "brokerage-gateway") == {
        "time-in-force": "Day",
        "order-type": "Limit",
        "price": "175.25",
        "price-effect": "Debit",
        "source": "brokerage-gateway",
        "external-identifier": "bg0123456789abcdef0123456789abcdef",
        "legs": [
            {
                "instrument-type": "Equity",
                "symbol": "AAPL",
                "quantity": "100",
                "action": "Buy to Open",
            }
        ],
    }


def test_sells_stops_and_extended_hours() -> None:
    body = mapping.order_to_wire(
        request(
            side=OrderSide.sell,
            order_type=OrderType.stop_limit,
            stop_price=Decimal(170),
            limit_price=Decimal("169.5"),
            time_in_force=TimeInForce.gtc,
            extended_hours=True,
        ),
        "s",
    )
    assert body["legs"][0]["action"] == "Sell to Close"
    assert (body["price"], body["price-effect"], body["stop-trigger"]) == ("169.5", "Credit", "170")
    assert body["time-in-force"] == "GTC Ext"
    market = mapping.order_to_wire(
        request(order_type=OrderType.market, limit_price=None, time_in_force=TimeInForce.ioc), "s"
    )
    assert "price" not in market
    assert "price-effect" not in market
    assert market["time-in-force"] == "IOC"
    assert mapping.tif_to_wire(TimeInForce.day, True) == "Ext"


@pytest.mark.parametrize(
    ("tif", "extended"),
    [(TimeInForce.fok, False), (TimeInForce.ioc, True), (TimeInForce.fok, True)],
)
def test_time_in_force_tastytrade_does_not_have(tif: TimeInForce, extended: bool) -> None:
    with pytest.raises(errors.UnsupportedOrder):
        mapping.tif_to_wire(tif, extended)


def test_the_replacement_body_keeps_the_terms_and_legs_out() -> None:
    current = order(
        **{
            "order-type": "Limit",
            "price": "150",
            "price-effect": "Debit",
            "time-in-force": "GTC Ext",
            "status": "Live",
        }
    )
    body = mapping.replacement_to_wire(
        current, OrderChanges(limit_price=Decimal("151.5")), "bgr-270561", "s"
    )
    assert body == {
        "order-type": "Limit",
        "time-in-force": "GTC Ext",
        "price": "151.5",
        "price-effect": "Debit",
        "external-identifier": "bgr-270561",
        "source": "s",
    }
    retimed = mapping.replacement_to_wire(
        current, OrderChanges(time_in_force=TimeInForce.day), "x", "s"
    )
    assert (retimed["time-in-force"], retimed["price"]) == ("Ext", "150")
    with pytest.raises(errors.UnsupportedOrder, match="quantity"):
        mapping.replacement_to_wire(current, OrderChanges(quantity=Decimal(5)), "x", "s")


def test_accounts() -> None:
    accounts = [mapping.account_from_wire(i) for i in mapping.items_of(ACCOUNTS)]
    assert [(a.number, a.name, a.closed) for a in accounts] == [
        ("5WX06827", "Individual", False),
        ("5WX09999", "Old IRA", True),
    ]


def test_recorded_balances() -> None:
    balances = mapping.balances_from_wire(mapping.data_of(BALANCES), NOW)
    assert (balances.cash, balances.equity, balances.buying_power) == (Decimal(0),) * 3
    assert balances.currency == "USD"
    assert balances.as_of == datetime(2025, 5, 13, 17, 9, 41, 714000, tzinfo=UTC)


def test_recorded_positions() -> None:
    [item] = mapping.items_of(POSITIONS)
    position = mapping.position_from_wire(item, NOW)
    assert position is not None
    assert (position.symbol, position.asset_class, position.quantity) == (
        "AAPL",
        AssetClass.equity,
        Decimal(100),
    )
    assert (position.avg_cost, position.current_price) == (Decimal("288.7"), Decimal("282.48"))
    assert position.market_value == Decimal("28248.00")
    assert position.unrealized_pl == Decimal("-622.00")


def test_short_positions_marks_and_unmodelled_instruments() -> None:
    [item] = mapping.items_of(POSITIONS)
    short = mapping.position_from_wire(
        {**item, "quantity-direction": "Short", "mark-price": "280"}, NOW
    )
    assert short is not None
    assert (short.quantity, short.current_price) == (Decimal(-100), Decimal(280))
    assert short.unrealized_pl == Decimal("870.0")  # (280 - 288.7) * -100
    future = {**item, "instrument-type": "Future", "symbol": "/ESZ5"}
    assert mapping.position_from_wire(future, NOW) is None
    option = {**item, "instrument-type": "Equity Option", "symbol": "AAPL  240119C00150000"}
    mapped = mapping.position_from_wire({**option, "multiplier": 100}, NOW)
    assert mapped is not None
    assert (mapped.symbol, mapped.asset_class) == ("AAPL240119C00150000", AssetClass.option)
    assert mapped.contract is not None
    assert (mapped.contract.strike, mapped.contract.multiplier) == (Decimal(150), Decimal(100))
    # market value = price x quantity x multiplier (the prices are per share)
    assert mapped.market_value == Decimal("282.48") * 100 * 100
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.position_from_wire({**item, "instrument-type": "Spaceship"}, NOW)
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.position_from_wire({**item, "quantity-direction": "Sideways"}, NOW)


def test_transactions_are_signed_by_their_effect() -> None:
    trade, deposit, acat = (
        mapping.transaction_from_wire(i) for i in mapping.items_of(TRANSACTIONS)
    )
    assert (trade.type, trade.amount, trade.symbol, trade.quantity, trade.price) == (
        "buy",
        Decimal("-1.001"),
        "AAPL",
        Decimal("1.0"),
        Decimal("1.0"),
    )
    assert (deposit.type, deposit.amount) == ("deposit", Decimal("2500.0"))
    assert (acat.type, acat.amount, acat.description) == ("other", Decimal(0), "ACAT transfer in")
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.signed("1", "Sideways", "net-value")


def test_quotes_skip_symbols_without_a_two_sided_market() -> None:
    quotes = mapping.quotes_from_wire(mapping.items_of(MARKET_DATA), ["AAPL", "HALT", "NONE"])
    assert set(quotes) == {"AAPL"}
    quote = quotes["AAPL"]
    assert (quote.bid, quote.ask, quote.last) == (
        Decimal("199.95"),
        Decimal("200.05"),
        Decimal("200.01"),
    )


def test_the_data_wrapper_is_required() -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.data_of({"items": []})
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.items_of({"data": {"order": {}}})


def answer(
    status: int, body: object, method: str = "POST", path: str = "/accounts/5WT/orders"
) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request(method, "https://x" + path))


def test_errors_are_classified_once() -> None:
    unauthorized = {"error": {"code": "unauthorized", "message": "Token is invalid or expired"}}
    assert isinstance(mapping.classify(answer(401, unauthorized), "GET"), mapping.TokenRejected)
    forbidden = mapping.classify(answer(403, ERRORS["not_permitted"]), "GET")
    assert type(forbidden) is errors.AuthenticationFailed
    assert forbidden.reason == "User not permitted access"
    margin = mapping.classify(answer(422, ERRORS["margin"]), "POST")
    assert isinstance(margin, errors.InsufficientFunds)
    assert "sufficient buying power" in margin.reason
    gtc = mapping.classify(answer(422, ERRORS["gtc_market"]), "POST")
    assert type(gtc) is errors.Rejected
    assert gtc.reason == (
        "One or more preflight checks failed: GTC/GTD Market orders are not supported."
    )
    finished = {"error": {"code": "cannot_update_order", "message": "Order is Filled"}}
    assert isinstance(mapping.classify(answer(422, finished), "DELETE"), errors.OrderNotModifiable)
    missing = {"error": {"code": "not_found", "message": "nope"}}
    assert isinstance(mapping.classify(answer(404, missing, "GET"), "GET"), errors.OrderNotFound)
    symbol = mapping.classify(answer(404, missing, "GET", "/instruments/equities/X"), "GET")
    assert isinstance(symbol, errors.UnknownSymbol)
    assert mapping.classify(answer(418, {}), "GET") is None
    domain = {"error": {"message": "Bad", "errors": [{"domain": "order", "reason": "Broken"}]}}
    assert mapping.classify(answer(400, domain), "POST").reason == "Bad: Broken"  # type: ignore[union-attr]


def test_an_error_body_that_is_not_json_keeps_the_status_text() -> None:
    response = httpx.Response(
        400, content=b"<html>", request=httpx.Request("GET", "https://x/accounts")
    )
    assert mapping.error_of(response).message == "Bad Request"


def test_credentials_are_checked_by_name_only() -> None:
    good = auth.check_credentials({"client_secret": "s3cr3t-value", "refresh_token": "eyJ.tok"})
    assert sorted(good) == ["client_secret", "refresh_token"]
    assert "s3cr3t" not in repr(good)
    for bad in (
        {"client_secret": "x"},
        {"client_secret": "x", "refresh_token": "y", "password": "hunter2"},
        {"client_secret": " x", "refresh_token": "y"},
        {"client_secret": "", "refresh_token": "y"},
    ):
        with pytest.raises(ValueError, match=r"credentials|client secret") as caught:
            auth.check_credentials(bad)
        assert "hunter2" not in str(caught.value)


def test_oauth_facts_are_data() -> None:
    assert auth.TOKEN_PATH == "/oauth/token"
    assert auth.ACCESS_TOKEN_SECONDS == 900
    spec = tastytrade_spec()
    # A personal grant pasted as an api_key connection; its tokens never reach the lifecycle.
    assert (spec.auth, spec.oauth) == (AuthKind.api_key, None)


def _receive_deliver(sub_type: str, **extra: object) -> dict[str, object]:
    """A Receive Deliver of an option contract, as tastytrade answers an assignment."""
    return {
        "id": 2454865989,
        "account-number": "5YZ55555",
        "symbol": "RIVN  230609P00014000",
        "instrument-type": "Equity Option",
        "underlying-symbol": "RIVN",
        "transaction-type": "Receive Deliver",
        "transaction-sub-type": sub_type,
        "description": "Removal of option due to assignment",
        "quantity": "40.0",
        "executed-at": "2023-06-09T21:00:00.000+00:00",
        "transaction-date": "2023-06-09",
        "value": "0.0",
        "value-effect": "None",
        "net-value": "0.0",
        "net-value-effect": "None",
        **extra,
    }


@pytest.mark.parametrize(
    ("sub_type", "ours"),
    [
        ("Assignment", "option_assignment"),
        ("Exercise", "option_exercise"),
        ("Expiration", "option_expiration"),
    ],
)
def test_an_options_end_of_life_is_its_own_type(sub_type: str, ours: str) -> None:
    tx = mapping.transaction_from_wire(_receive_deliver(sub_type))
    assert (tx.type, tx.symbol, tx.quantity, tx.amount, tx.transaction_id) == (
        ours,
        "RIVN230609P00014000",
        Decimal(40),
        Decimal(0),
        "2454865989",
    )


def test_an_action_signs_a_lifecycle_quantity_as_the_positions_change() -> None:
    long_gone = mapping.transaction_from_wire(
        _receive_deliver("Expiration", action="Sell to Close")
    )
    short_gone = mapping.transaction_from_wire(
        _receive_deliver("Expiration", action="Buy to Close")
    )
    assert (long_gone.quantity, short_gone.quantity) == (Decimal(-40), Decimal(40))
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.transaction_from_wire(_receive_deliver("Expiration", action="Sideways"))


def test_other_receive_delivers_stay_other() -> None:
    shares = _receive_deliver("Buy to Open", symbol="RIVN", **{"instrument-type": "Equity"})
    split = _receive_deliver("Forward Split")
    assert mapping.transaction_from_wire(shares).type == "other"
    assert mapping.transaction_from_wire(split).type == "other"

"""Tradier wire <-> normalized mapping, on payloads from the official docs."""

from __future__ import annotations

from dataclasses import replace
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
    TimeInForce,
)
from app.brokers.tradier import auth, mapping, tradier_spec
from tests.brokers.tradier.payloads import (
    BALANCES_MARGIN,
    BUYING_POWER,
    CASH_DETAIL,
    EXPIRED_LIMIT,
    FILLED_MARKET,
    HISTORY,
    INVALID_TOKEN,
    ORDERS,
    POSITIONS,
    PROFILE,
    QUOTES,
    STREAM_FILLED,
)

S = OrderStatus
NOW = datetime(2026, 1, 2, tzinfo=UTC)
# Every documented status, with nothing filled and with a partial fill.
EXPECTED: dict[str, tuple[OrderStatus, OrderStatus]] = {
    "open": (S.accepted, S.partially_filled),
    "partially_filled": (S.partially_filled, S.partially_filled),
    "filled": (S.filled, S.filled),
    "expired": (S.expired, S.expired),
    "canceled": (S.canceled, S.canceled),
    "pending": (S.submitted, S.submitted),
    "rejected": (S.rejected, S.rejected),
    "error": (S.rejected, S.rejected),
    "submitted": (S.submitted, S.submitted),
    "calculated": (S.accepted, S.partially_filled),
    "accepted_for_bidding": (S.accepted, S.partially_filled),
    "held": (S.accepted, S.partially_filled),
}


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_every_tradier_status_is_mapped(status: str) -> None:
    unfilled, partial = EXPECTED[status]
    assert mapping.order_status(status, Decimal(10), Decimal(0)) is unfilled
    assert mapping.order_status(status, Decimal(10), Decimal(4)) is partial
    mapping.check_status(status)


def test_calculated_with_everything_filled_is_filled() -> None:
    assert mapping.order_status("calculated", Decimal(10), Decimal(10)) is S.filled


@pytest.mark.parametrize("status", ["", "OPEN", "ok", "pending_cancel", "teleported", None, 3])
def test_an_unknown_status_raises(status: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_status(status, Decimal(1), Decimal(0))
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.check_status(status)


def test_the_documented_filled_market_order() -> None:
    order = mapping.order_from_wire(FILLED_MARKET)
    assert order.broker_order_id == "228176"
    assert order.client_order_id is None  # no tag
    assert (order.symbol, order.side, order.order_type) == ("AAPL", OrderSide.buy, OrderType.market)
    assert (order.quantity, order.filled_quantity) == (Decimal(50), Decimal(50))
    assert order.avg_fill_price == Decimal("187.93")
    assert order.status is S.filled
    assert order.time_in_force is TimeInForce.day  # "pre": a day order for the pre-market
    assert (order.limit_price, order.stop_price) == (None, None)
    assert order.created_at == datetime(2018, 6, 1, 12, 2, 37, 377000, tzinfo=UTC)
    assert order.updated_at == datetime(2018, 6, 1, 13, 45, 13, 340000, tzinfo=UTC)


def test_the_documented_order_list_with_an_option() -> None:
    expired, option = [mapping.order_from_wire(o) for o in mapping.items(ORDERS, "orders", "order")]
    assert (expired.status, expired.limit_price, expired.avg_fill_price) == (
        S.expired,
        Decimal(22),
        None,
    )
    assert option.symbol == "SPY180720C00274000"
    assert option.side is OrderSide.buy


def test_a_tag_maps_back_to_the_client_order_id() -> None:
    ours = "bg" + "0123456789abcdef" * 2
    assert mapping.to_tag(ours) == ours
    tagged = mapping.order_from_wire({**EXPIRED_LIMIT, "tag": ours})
    assert tagged.client_order_id == ours
    for odd in ("bg_under_score", "x-looks-encoded", "ümlaut", "a" * 64):
        tag = mapping.to_tag(odd)
        assert len(tag) <= 255
        assert set(tag) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
        assert mapping.from_tag(tag) == odd
    with pytest.raises(errors.UnsupportedOrder):
        mapping.to_tag("é" * 100)
    assert mapping.from_tag("x-zz") == "x-zz"
    assert mapping.from_tag(None) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "debit"),
        ("duration", "gtc_pre"),
        ("side", "short"),
        ("quantity", None),
        ("quantity", True),
        ("id", None),
        ("create_date", "yesterday"),
        ("class", "crypto"),
    ],
)
def test_order_values_we_do_not_know_raise(field: str, value: Any) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire({**EXPIRED_LIMIT, field: value})


def test_combo_and_bracket_classes_are_unmodeled_not_unknown() -> None:
    for kind in ("combo", "oto", "oco", "otoco"):
        with pytest.raises(mapping.UnmodeledOrder):
            mapping.order_from_wire({**EXPIRED_LIMIT, "class": kind})


def test_a_rejected_order_carries_its_reason() -> None:
    order = mapping.order_from_wire(
        {**EXPIRED_LIMIT, "status": "rejected", "reason_description": "Undefined symbol"}
    )
    assert (order.status, order.reject_reason) == (S.rejected, "Undefined symbol")


def test_collections_are_lists_objects_or_null() -> None:
    assert mapping.items({"positions": "null"}, "positions", "position") == []
    assert mapping.items({"positions": None}, "positions", "position") == []
    one = {"positions": {"position": {"symbol": "AAPL"}}}
    assert mapping.items(one, "positions", "position") == [{"symbol": "AAPL"}]
    assert len(mapping.items(POSITIONS, "positions", "position")) == 2
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.items({"positions": 3}, "positions", "position")
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.items({"positions": {"position": "AAPL"}}, "positions", "position")


def test_the_documented_profile() -> None:
    accounts = mapping.profile_accounts(PROFILE)
    assert [a["account_number"] for a in accounts] == ["VA000001", "VA000002", "VA000003"]
    single = {"profile": {**PROFILE["profile"], "account": PROFILE["profile"]["account"][0]}}
    assert len(mapping.profile_accounts(single)) == 1


def test_the_documented_balances_for_each_account_type() -> None:
    margin = mapping.balances_from_wire(BALANCES_MARGIN, NOW)
    assert margin.cash == Decimal("6363.86")
    assert margin.equity == Decimal("17798.36")
    assert margin.buying_power == Decimal("12727.72")
    cash_body = {
        "balances": {**BALANCES_MARGIN["balances"], "account_type": "cash", "cash": CASH_DETAIL}
    }
    assert mapping.balances_from_wire(cash_body, NOW).buying_power == Decimal("4343.38")
    pdt = {
        "balances": {
            **BALANCES_MARGIN["balances"],
            "account_type": "pdt",
            "pdt": BALANCES_MARGIN["balances"]["margin"],
        }
    }
    assert mapping.balances_from_wire(pdt, NOW).buying_power == Decimal("12727.72")
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.balances_from_wire(
            {"balances": {**BALANCES_MARGIN["balances"], "account_type": "ira"}}, NOW
        )


def test_the_documented_positions_priced_by_a_quote() -> None:
    quotes = mapping.quotes_from_wire(QUOTES, ["AAPL"])
    aapl, amzn = mapping.items(POSITIONS, "positions", "position")
    priced = mapping.position_from_wire(aapl, quotes["AAPL"], NOW)
    assert (priced.symbol, priced.quantity, priced.avg_cost) == (
        "AAPL",
        Decimal(1),
        Decimal("207.01"),
    )
    assert priced.current_price == Decimal("208.21")
    assert priced.unrealized_pl == Decimal("208.21") - Decimal("207.01")
    assert priced.asset_class is AssetClass.equity
    unpriced = mapping.position_from_wire(amzn, None, NOW)
    assert unpriced.current_price == Decimal("1870.70")
    assert unpriced.unrealized_pl == 0


def test_the_documented_history() -> None:
    events = mapping.items(HISTORY, "history", "event")
    sale, dividend, expiry, purchase = [
        mapping.transaction_from_event(i, e) for i, e in enumerate(events)
    ]
    assert (sale.type, sale.amount, sale.quantity, sale.price, sale.symbol) == (
        "sell",
        Decimal("10.06"),
        Decimal(1),
        Decimal("10.06"),
        "GE",
    )
    assert (dividend.type, dividend.amount, dividend.description) == (
        "dividend",
        Decimal("0.12"),
        "GENERAL ELECTRIC COMPANY",
    )
    # An expiration, but of no named contract (the documented row has no symbol).
    assert (expiry.type, expiry.description, expiry.symbol) == (
        "option_expiration",
        "Expired",
        None,
    )
    assert (purchase.type, purchase.amount) == ("buy", Decimal("-13.05"))
    assert sale.occurred_at == datetime(2018, 10, 31, tzinfo=UTC)
    deposit = {"amount": 100, "date": "2018-05-08T00:00:00Z", "type": "ach", "ach": {}}
    assert mapping.transaction_from_event(0, deposit).type == "deposit"
    assert mapping.transaction_from_event(0, {**deposit, "amount": -5}).type == "withdrawal"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.transaction_from_event(0, {**deposit, "type": "airdrop"})


def test_the_documented_quotes() -> None:
    quotes = mapping.quotes_from_wire(QUOTES, ["AAPL", "VXX190517P00016000", "MSFT"])
    aapl = quotes["AAPL"]
    assert (aapl.bid, aapl.ask, aapl.last) == (
        Decimal("208.19"),
        Decimal("208.21"),
        Decimal("208.21"),
    )
    assert aapl.as_of == datetime.fromtimestamp(1557168406, tz=UTC)
    option = quotes["VXX190517P00016000"]
    assert option.last == Decimal("0.005")  # no last trade: the midpoint
    assert "MSFT" not in quotes
    unmatched = {"quotes": {"unmatched_symbols": {"symbol": "SEFDF"}}}
    assert mapping.quotes_from_wire(unmatched, ["SEFDF"]) == {}
    assert mapping.unmatched_symbols(unmatched) == {"SEFDF"}


D2 = Decimal("2.0")


def test_the_documented_stream_event_and_its_fill() -> None:
    event = mapping.stream_event(STREAM_FILLED)
    filled = {
        **EXPIRED_LIMIT,
        "id": 1107075,
        "status": "filled",
        "exec_quantity": D2,
        "quantity": D2,
        "avg_fill_price": Decimal("10.0"),
    }
    order = mapping.order_from_wire(filled)
    assert mapping.fill_from_event({**event, "last_fill_quantity": D2}, order)[0].quantity == D2
    assert mapping.fill_from_event(event, order) == ()  # the doc example reports 0.0
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.stream_event({"event": "account"})


def test_order_request_form() -> None:
    request = OrderRequest(
        client_order_id="bg01",
        symbol="AAPL",
        side=OrderSide.sell,
        quantity=Decimal("100"),
        order_type=OrderType.stop_limit,
        time_in_force=TimeInForce.gtc,
        limit_price=Decimal("187.50"),
        stop_price=Decimal("188"),
    )
    assert mapping.order_to_form(request) == {
        "class": "equity",
        "symbol": "AAPL",
        "side": "sell",
        "quantity": "100",
        "type": "stop_limit",
        "duration": "gtc",
        "price": "187.5",
        "stop": "188",
        "tag": "bg01",
    }
    for bad in (
        {"quantity": Decimal("0.5")},
        {"time_in_force": TimeInForce.ioc},
        {"extended_hours": True},
        {"symbol": "BTC-USD"},
    ):
        with pytest.raises(errors.UnsupportedOrder):
            mapping.order_to_form(replace(request, **bad))
    assert mapping.changes_to_form(
        OrderChanges(limit_price=Decimal("1.50"), time_in_force=TimeInForce.day)
    ) == {"price": "1.5", "duration": "day"}
    with pytest.raises(errors.UnsupportedOrder):
        mapping.changes_to_form(OrderChanges(quantity=Decimal(3)))


def response(status: int, body: object, path: str = "/v1/accounts/VA1/orders") -> httpx.Response:
    request = httpx.Request("POST", "http://x" + path)
    if isinstance(body, str):
        return httpx.Response(status, text=body, request=request)
    return httpx.Response(status, json=body, request=request)


@pytest.mark.parametrize(
    ("status", "body", "method", "path", "expected"),
    [
        (401, INVALID_TOKEN, "GET", "/v1/user/profile", errors.AuthenticationFailed),
        (
            401,
            {
                "fault": {
                    "faultstring": "Access Token expired",
                    "detail": {"errorcode": "keymanagement.service.access_token_expired"},
                }
            },
            "GET",
            "/v1/user/profile",
            errors.AuthenticationFailed,
        ),
        (403, "Forbidden", "GET", "/v1/accounts/VA1/balances", errors.AuthenticationFailed),
        (400, BUYING_POWER, "POST", "/v1/accounts/VA1/orders", errors.InsufficientFunds),
        (
            400,
            {"errors": {"error": "Undefined symbol: XYZ"}},
            "POST",
            "/v1/accounts/VA1/orders",
            errors.UnknownSymbol,
        ),
        (
            400,
            {"errors": {"error": "order already in finalized state: filled"}},
            "DELETE",
            "/v1/accounts/VA1/orders/1",
            errors.OrderNotModifiable,
        ),
        (
            400,
            {"errors": {"error": "Invalid parameter, duration: pre market no longer available"}},
            "POST",
            "/v1/accounts/VA1/orders",
            errors.MarketClosed,
        ),
        (
            400,
            {"errors": {"error": ["MarketOrderIsGtc"]}},
            "POST",
            "/v1/accounts/VA1/orders",
            errors.UnsupportedOrder,
        ),
        (
            400,
            {"errors": {"error": "Invalid parameter, side: short"}},
            "POST",
            "/v1/accounts/VA1/orders",
            errors.Rejected,
        ),
        (
            400,
            "Unauthorized Account: VA1",
            "DELETE",
            "/v1/accounts/VA1/orders/9",
            errors.OrderNotFound,
        ),
        (
            401,
            "Unauthorized Account: VA1",
            "GET",
            "/v1/accounts/VA1/orders/9",
            errors.OrderNotFound,
        ),
        # An account the token does not see: a refusal for that account, not a dead token.
        (
            401,
            "Unauthorized Account: VA9",
            "GET",
            "/v1/accounts/VA9/balances",
            errors.Rejected,
        ),
        # A dead token is the gateway's JSON fault, on an order path too.
        (
            401,
            {
                "fault": {
                    "faultstring": "Invalid Access Token",
                    "detail": {"errorcode": "keymanagement.service.invalid_access_token"},
                }
            },
            "DELETE",
            "/v1/accounts/VA1/orders/9",
            errors.AuthenticationFailed,
        ),
        # Issue 15: a finished order, answered in plain text (not the errors envelope).
        (
            400,
            "order already in finalized state: filled",
            "DELETE",
            "/v1/accounts/VA1/orders/9",
            errors.OrderNotModifiable,
        ),
        (
            400,
            "order already in finalized state: canceled",
            "PUT",
            "/v1/accounts/VA1/orders/9",
            errors.OrderNotModifiable,
        ),
        (404, "Not Found", "GET", "/v1/accounts/VA1/orders/9", errors.OrderNotFound),
    ],
)
def test_tradier_error_answers(
    status: int, body: object, method: str, path: str, expected: type[errors.BrokerError]
) -> None:
    mapped = mapping.classify(response(status, body, path), method)
    assert type(mapped) is expected
    assert mapped is not None
    assert mapped.reason


def test_a_200_errors_body_keeps_every_message() -> None:
    mapped = mapping.classify_messages(BUYING_POWER["errors"]["error"], "POST")
    assert isinstance(mapped, errors.InsufficientFunds)
    assert (
        mapped.reason == "Backoffice rejected override of the order.; DayTradingBuyingPowerExceeded"
    )
    assert mapping.error_messages({"order": {}}) is None


def test_rate_limit_expiry_header() -> None:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    answer = httpx.Response(
        429,
        headers={"X-Ratelimit-Expiry": str(now_ms + 30_000)},
        request=httpx.Request("GET", "http://x"),
    )
    seconds = mapping.retry_after(answer)
    assert seconds is not None
    assert 20 < seconds <= 30
    assert (
        mapping.retry_after(httpx.Response(429, request=httpx.Request("GET", "http://x"))) is None
    )


def test_credentials_are_checked_by_name_without_echoing_values() -> None:
    good = auth.check_credentials({"access_token": "s3cr3tT0ken"})
    assert "s3cr3tT0ken" not in repr(good)
    with pytest.raises(ValueError, match="missing credentials: access_token"):
        auth.check_credentials({})
    with pytest.raises(ValueError, match="unknown credentials: password") as caught:
        auth.check_credentials({"access_token": "t", "password": "hunter2"})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="access_token is not a valid"):
        auth.check_credentials({"access_token": "two words"})
    assert auth.headers(good) == {
        "Authorization": "Bearer s3cr3tT0ken",
        "Accept": "application/json",
    }
    with pytest.raises(errors.AuthenticationFailed):
        auth.headers(None)


def test_connections_take_a_personal_access_token_not_the_oauth_flow() -> None:
    spec = tradier_spec()
    assert (spec.auth, spec.oauth) == (AuthKind.api_key, None)
    assert spec.check_credentials is auth.check_credentials

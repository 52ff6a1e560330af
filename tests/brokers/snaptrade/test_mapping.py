"""SnapTrade wire payloads (from the spec's examples and the docs) into normalized models."""

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
from app.brokers.snaptrade import mapping
from tests.brokers.snaptrade.payloads import (
    ACCOUNT,
    ACTIVITIES,
    AUTHORIZATION,
    BALANCES,
    BROKERAGE,
    BUSY,
    FEATURE_OFF,
    FORBIDDEN,
    IMPACT,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    ORDER,
    POSITIONS,
    QUOTES,
    THROTTLED,
    UNIVERSAL_SYMBOL,
    variant,
)

NOW = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


def wire(payload: object) -> object:
    """As the adapter reads it: JSON text parsed with every number a Decimal."""
    return mapping.loads(json.dumps(payload).encode())


def test_the_documented_order_record() -> None:
    order = mapping.order_from_wire(wire(ORDER))
    assert order.broker_order_id == "66a033fa-da74-4fcf-b527-feefdec9257e"
    assert order.client_order_id is None
    assert (order.symbol, order.side, order.order_type, order.time_in_force) == (
        "VAB.TO",
        OrderSide.buy,
        OrderType.market,
        TimeInForce.day,
    )
    assert (order.quantity, order.filled_quantity, order.avg_fill_price) == (
        Decimal(100),
        Decimal(80),
        Decimal("12.34"),
    )
    assert order.status is OrderStatus.filled
    # A market order's limit and stop prices are not read, whatever the record says.
    assert (order.limit_price, order.stop_price) == (None, None)
    assert order.created_at == datetime(2024, 7, 30, 22, 51, 49, 746270, tzinfo=UTC)
    assert order.updated_at == datetime(2024, 8, 5, 0, 5, 57, 409000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("PENDING", "0", OrderStatus.submitted),
        ("ACCEPTED", "0", OrderStatus.accepted),
        ("ACCEPTED", "5", OrderStatus.partially_filled),
        ("QUEUED", "0", OrderStatus.accepted),
        ("TRIGGERED", "0", OrderStatus.accepted),
        ("ACTIVATED", "0", OrderStatus.accepted),
        ("STOPPED", "0", OrderStatus.accepted),
        ("SUSPENDED", "0", OrderStatus.accepted),
        ("CONTINGENT_ORDER", "0", OrderStatus.accepted),
        ("PENDING_RISK_REVIEW", "0", OrderStatus.submitted),
        ("PARTIAL", "40", OrderStatus.partially_filled),
        ("EXECUTED", "100", OrderStatus.filled),
        ("CANCELED", "0", OrderStatus.canceled),
        ("PARTIAL_CANCELED", "40", OrderStatus.canceled),
        ("CANCEL_PENDING", "0", OrderStatus.pending_cancel),
        ("REPLACE_PENDING", "0", OrderStatus.pending_replace),
        ("REPLACED", "0", OrderStatus.replaced),
        ("REJECTED", "0", OrderStatus.rejected),
        ("FAILED", "0", OrderStatus.rejected),
        ("EXPIRED", "0", OrderStatus.expired),
    ],
)
def test_every_documented_status(status: str, filled: str, expected: OrderStatus) -> None:
    order = mapping.order_from_wire(wire(variant(ORDER, status=status, filled_quantity=filled)))
    assert order.status is expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "NONE"),  # SnapTrade could not map the brokerage's status
        ("status", "WORKING"),
        ("order_type", "TrailingStop"),  # a brokerage value passed through unmapped
        ("time_in_force", "GTD"),
        ("time_in_force", "MOO"),
        ("action", "BUY_TO_OPEN"),
        ("total_quantity", "ten"),
        ("time_placed", "yesterday"),
    ],
)
def test_unknown_order_values_are_errors(field: str, value: object) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(wire(variant(ORDER, **{field: value})))


def test_only_a_market_day_order_may_lack_a_quantity() -> None:
    # A dollar-amount order (notional_value: Market, Day only) has no share count until the
    # brokerage sizes it; any other order without one cannot be read.
    sized_later = {"total_quantity": None, "filled_quantity": "0"}
    dollar = variant(ORDER, order_type="Market", time_in_force="Day", **sized_later)
    order = mapping.order_from_wire(wire(dollar), notional=Decimal(500))
    assert (order.quantity, order.notional) == (Decimal(0), Decimal(500))
    for other in ({"order_type": "Limit", "limit_price": "10"}, {"time_in_force": "GTC"}):
        with pytest.raises(errors.UnknownBrokerValue):
            mapping.order_from_wire(wire(variant(dollar, **other)))


def test_a_limit_order_ignores_the_zero_stop_snaptrade_sends() -> None:
    # docs/webhooks.md TRADE_DETECTION: a LIMIT order with "stop_price": "0.0000000000".
    order = mapping.order_from_wire(
        wire(
            variant(
                ORDER,
                order_type="Limit",
                limit_price="19.2000000000",
                stop_price="0.0000000000",
                status="ACCEPTED",
                filled_quantity="0",
                execution_price=None,
            )
        )
    )
    assert (order.limit_price, order.stop_price, order.avg_fill_price) == (
        Decimal("19.2"),
        None,
        None,
    )
    assert str(order.limit_price) == "19.2"


def test_stop_limit_keeps_both_prices_and_short_actions_map_to_sides() -> None:
    order = mapping.order_from_wire(
        wire(variant(ORDER, order_type="StopLimit", action="SELL_SHORT", status="ACCEPTED"))
    )
    assert (order.limit_price, order.stop_price, order.side) == (
        Decimal("12.34"),
        Decimal("12.5"),
        OrderSide.sell,
    )
    cover = mapping.order_from_wire(wire(variant(ORDER, action="BUY_COVER")))
    assert cover.side is OrderSide.buy


def test_option_and_crypto_records_are_left_out_of_lists_and_refused_alone() -> None:
    option = variant(
        ORDER, universal_symbol=None, option_symbol={"ticker": "AAPL  261218C00240000"}
    )
    crypto = variant(ORDER, quote_currency={"code": "USD"})
    listed = mapping.orders_from_wire(wire([ORDER, option, crypto]))
    assert [o.broker_order_id for o in listed] == [ORDER["brokerage_order_id"]]
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(wire(option))


def test_the_documented_account_and_connection() -> None:
    [link] = mapping.links_from_wire(wire([AUTHORIZATION]), wire([ACCOUNT]))
    assert (link.link_id, link.institution, link.institution_slug) == (
        "87b24961-b51e-4db8-9226-f198f6518a89",
        "Robinhood",
        "ROBINHOOD",
    )
    assert (link.disabled, link.trading) == (False, True)
    [account] = link.accounts
    assert (account.broker_account_id, account.name, account.number_masked) == (
        "917c8734-8470-4a3e-a18f-57c3f2ee6631",
        "Robinhood Individual",
        "****8443",
    )
    assert account.currency == "USD"
    assert mapping.account_total(wire(ACCOUNT)) == (Decimal("15363.23"), "USD")


@pytest.mark.parametrize(
    ("kind", "allows_trading", "trading"),
    [
        ("trade", True, True),
        ("trade", None, True),  # not stated: the connection type decides
        ("trade", False, False),
        ("read", True, False),  # a read-only link (Fidelity) never trades
    ],
)
def test_which_links_trade(kind: str, allows_trading: bool | None, trading: bool) -> None:
    brokerage = variant(BROKERAGE, allows_trading=allows_trading)
    [link] = mapping.links_from_wire(
        wire([variant(AUTHORIZATION, type=kind, brokerage=brokerage)]), wire([])
    )
    assert link.trading is trading


def test_disabled_links_closed_accounts_and_unknown_types() -> None:
    disabled = variant(AUTHORIZATION, disabled=True)
    closed = variant(ACCOUNT, status="closed", id="00000000-0000-4000-8000-000000000001")
    [link] = mapping.links_from_wire(wire([disabled]), wire([ACCOUNT, closed]))
    assert link.disabled is True
    assert link.disabled_at == datetime(2022, 1, 21, 20, 11, 19, 217000, tzinfo=UTC)
    assert [a.broker_account_id for a in link.accounts] == [ACCOUNT["id"]]
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.links_from_wire(wire([variant(AUTHORIZATION, type="admin")]), wire([]))
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.links_from_wire(wire([variant(AUTHORIZATION, disabled="no")]), wire([]))


def test_the_documented_balances() -> None:
    cash, buying_power, currency = mapping.cash_and_buying_power(wire(BALANCES), "USD")
    assert (cash, buying_power, currency) == (Decimal("300.71"), Decimal("410.71"), "USD")
    # buying_power "is not always available": then cash is what can be spent.
    no_bp = [variant(BALANCES[0], buying_power=None)]
    assert mapping.cash_and_buying_power(wire(no_bp), "USD")[:2] == (
        Decimal("300.71"),
        Decimal("300.71"),
    )
    cad = [variant(BALANCES[0], currency={"code": "CAD"}), BALANCES[0]]
    assert mapping.cash_and_buying_power(wire(cad), "USD")[2] == "USD"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.cash_and_buying_power(wire([variant(BALANCES[0], cash=None)]), "USD")
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.cash_and_buying_power(wire(cad[:1] * 2), "USD")


def test_the_documented_positions() -> None:
    [position], as_of = mapping.positions_from_wire(wire(POSITIONS), NOW)
    assert as_of == datetime(2026, 6, 2, 14, 30, tzinfo=UTC)
    assert (position.symbol, position.asset_class) == ("AAPL", AssetClass.equity)
    assert (position.quantity, position.avg_cost, position.current_price) == (
        Decimal("10.5"),
        Decimal("118.2"),
        Decimal("123.45"),
    )
    assert position.market_value == Decimal("1296.225")
    assert position.unrealized_pl == Decimal("55.125")
    assert position.as_of == as_of


def test_position_kinds() -> None:
    stock = POSITIONS["results"][0]
    option = {
        "instrument": {
            "kind": "option",
            "id": "1ef3a5d3-4a9b-40b2-b8d1-cc35f74d6324",
            "symbol": "AAPL  261218C00240000",
            "option_type": "CALL",
            "strike_price": "240",
            "expiration_date": "2026-12-18",
            "multiplier": "100",
            "underlying": stock["instrument"],
        },
        "units": "2",
        "price": "3.5",
        "cost_basis": "3",
        "currency": "USD",
    }
    future = {
        "instrument": {
            "kind": "future",
            "id": "1ef3a5d3-4a9b-40b2-b8d1-cc35f74d6324",
            "symbol": "ESZ6",
            "root_symbol": "ES",
            "expiration_code": "Z6",
        },
        "units": "1",
        "price": "6000",
    }
    fund = {**stock, "instrument": {**stock["instrument"], "kind": "mutualfund", "symbol": "VFIAX"}}
    body = {"results": [option, future, fund], "data_freshness": {"as_of": "2026-06-02T14:30:00Z"}}
    positions, _ = mapping.positions_from_wire(wire(body), NOW)
    assert [(p.symbol, p.asset_class) for p in positions] == [
        ("AAPL261218C00240000", AssetClass.option),
        ("VFIAX", AssetClass.mutual_fund),
    ]
    assert positions[0].market_value == Decimal(700)  # 2 contracts x 3.5 x 100 shares
    assert positions[0].unrealized_pl == Decimal(100)
    # An unknown kind or a position without a price is left out and counted, never the list.
    bond = {**stock, "instrument": {**stock["instrument"], "kind": "bond"}}
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.position_from_wire(wire(bond), NOW)
    priceless = {**stock, "price": None}
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.position_from_wire(wire(priceless), NOW)
    mixed, _ = mapping.positions_from_wire(wire({**body, "results": [bond, fund, priceless]}), NOW)
    assert [p.symbol for p in mixed] == ["VFIAX"]
    assert mixed.skipped == 2


def test_the_documented_activity_and_types() -> None:
    [buy], total = mapping.transactions_from_wire(wire(ACTIVITIES))
    assert total == 1
    assert (buy.type, buy.symbol, buy.quantity, buy.price, buy.amount) == (
        "buy",
        "VAB.TO",
        Decimal("5.2"),
        Decimal("0.4"),
        Decimal("263.82"),
    )
    assert buy.occurred_at == datetime(2024, 3, 22, 16, 27, 55, tzinfo=UTC)
    item = ACTIVITIES["data"][0]
    deposit = variant(item, type="CONTRIBUTION", symbol=None, trade_date="2024-03-22")
    contract = {
        "id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
        "ticker": "AAPL  261218C00240000",  # the spec's OptionsSymbol example
        "option_type": "CALL",
        "strike_price": 240,
        "expiration_date": "2026-12-18",
        "is_mini_option": False,
        "underlying_symbol": item["symbol"],
    }
    option = variant(item, type="OPTIONEXPIRATION", symbol=None, option_symbol=contract)
    other = variant(item, type="SPLIT")  # not a type we report
    page = {
        "data": [deposit, option, other],
        "pagination": {"offset": 0, "limit": 3, "total": 3},
    }
    mapped, expired = mapping.transactions_from_wire(wire(page))[0]
    assert (mapped.type, mapped.symbol, mapped.quantity) == ("deposit", None, None)
    assert mapped.occurred_at == datetime(2024, 3, 22, tzinfo=UTC)
    assert (expired.type, expired.symbol) == ("option_expiration", "AAPL261218C00240000")


def test_the_documented_quotes_and_symbols() -> None:
    quotes = mapping.quotes_from_wire(wire(QUOTES), ["VAB.TO"], NOW)
    assert quotes["VAB.TO"].last == Decimal("8.74")
    assert (quotes["VAB.TO"].bid, quotes["VAB.TO"].ask) == (Decimal("8.43"), Decimal("8.43"))
    assert quotes["VAB.TO"].as_of == NOW  # SnapTrade's quotes carry no time
    assert mapping.quotes_from_wire(wire(QUOTES), ["AAPL"], NOW) == {}
    assert mapping.universal_symbol_id(wire(UNIVERSAL_SYMBOL), "VAB.TO") == UNIVERSAL_SYMBOL["id"]
    # "the first matching result" may be another listing: only the exact ticker counts.
    assert mapping.universal_symbol_id(wire(UNIVERSAL_SYMBOL), "VAB") is None


def test_the_documented_impact_answer() -> None:
    assert mapping.trade_id(wire(IMPACT)) == "139e307a-82f7-4402-b39e-4da7baa87758"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.trade_id(wire({"trade_impacts": []}))


def order(**changes: object) -> OrderRequest:
    values: dict[str, object] = {
        "client_order_id": "bg-1",
        "symbol": "AAPL",
        "side": OrderSide.sell,
        "quantity": Decimal("1.5"),
        "order_type": OrderType.stop_limit,
        "time_in_force": TimeInForce.gtc,
        "limit_price": Decimal("187.23"),
        "stop_price": Decimal("187.5"),
    }
    values.update(changes)
    return OrderRequest(**values)  # type: ignore[arg-type]


def test_the_impact_form() -> None:
    form = mapping.impact_form("acct-1", order(), "sym-1")
    assert form == {
        "account_id": "acct-1",
        "action": "SELL",
        "universal_symbol_id": "sym-1",
        "order_type": "StopLimit",
        "time_in_force": "GTC",
        "units": 1.5,
        "price": 187.23,
        "stop": 187.5,
    }
    market = mapping.impact_form(
        "acct-1",
        order(order_type=OrderType.market, limit_price=None, stop_price=None, quantity=Decimal(3)),
        "sym-1",
    )
    assert market["units"] == 3
    assert isinstance(market["units"], int)
    assert "price" not in market
    assert "stop" not in market


def test_numbers_that_would_not_survive_json_are_refused() -> None:
    with pytest.raises(errors.UnsupportedOrder):
        mapping.impact_form("a", order(limit_price=Decimal("187.2300000000000000001")), "s")
    assert mapping.number(Decimal("0.1"), "x") == 0.1
    assert mapping.number(Decimal("100.000"), "x") == 100


def test_the_replace_form_is_the_whole_order() -> None:
    current = mapping.order_from_wire(
        wire(variant(ORDER, order_type="Limit", status="ACCEPTED", filled_quantity="0"))
    )
    form = mapping.replace_form(current, OrderChanges(limit_price=Decimal("13")))
    assert form == {
        "brokerage_order_id": ORDER["brokerage_order_id"],
        "action": "BUY",
        "order_type": "Limit",
        "time_in_force": "Day",
        "symbol": "VAB.TO",
        "units": 100,
        "price": 13,
    }


def response(status: int, body: object, path: str = "/accounts", **headers: str) -> httpx.Response:
    request = httpx.Request("POST", f"https://api.snaptrade.com{path}")
    return httpx.Response(status, json=body, request=request, headers=headers)


@pytest.mark.parametrize(
    ("status", "body", "path", "expected"),
    [
        (
            401,
            {"default_detail": "Unable to verify signature sent"},
            "/accounts",
            errors.AuthenticationFailed,
        ),
        (
            402,
            {"detail": "disabled", "code": 3003},
            "/authorizations/x/refresh",
            errors.AuthenticationFailed,
        ),
        (403, FORBIDDEN, "/trade/impact", errors.Rejected),
        (403, FEATURE_OFF, "/accounts/a/recentOrders", errors.NotSupported),
        (404, NOT_FOUND, "/symbols/NOPE", errors.UnknownSymbol),
        (404, NOT_FOUND, "/accounts/a/orders/details", errors.OrderNotFound),
        (425, {"detail": "populating", "code": 3012}, "/accounts/a/holdings", errors.Transient),
        (501, NOT_IMPLEMENTED, "/accounts/a/orders", errors.NotSupported),
        (400, {"detail": "Insufficient buying power"}, "/trade/impact", errors.InsufficientFunds),
        (400, {"detail": "The market is closed"}, "/trade/x", errors.MarketClosed),
        (
            400,
            {"detail": "Order cannot be canceled in its current state (EXECUTED)"},
            "/accounts/a/trading/cancel",
            errors.OrderNotModifiable,
        ),
        (400, {"detail": "Trade has expired"}, "/trade/x", errors.Rejected),
    ],
)
def test_error_classification(
    status: int, body: object, path: str, expected: type[errors.BrokerError]
) -> None:
    found = mapping.classify(response(status, body, path), "POST")
    assert type(found) is expected


def test_error_bodies_and_retry_after() -> None:
    assert mapping.error_of(response(503, BUSY)).code == "3002"
    assert mapping.error_of(response(501, NOT_IMPLEMENTED)).detail.startswith("The orders")
    throttled = response(
        429, THROTTLED, **{"X-RateLimit-Reset": "12", "X-RateLimit-Remaining": "0"}
    )
    assert mapping.retry_after(throttled) == 12.0
    account = response(
        429,
        THROTTLED,
        **{
            "X-RateLimit-Reset": "40",
            "X-RateLimit-Account-Remaining": "0",
            "X-RateLimit-Account-Reset": "3",
        },
    )
    assert mapping.retry_after(account) == 3.0
    assert mapping.retry_after(response(429, THROTTLED)) == 7.0  # from the documented body
    assert mapping.retry_after(response(429, {})) is None

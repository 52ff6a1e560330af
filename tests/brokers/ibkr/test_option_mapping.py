"""IBKR option wire mapping: conidex and signed prices (properties), the secdef answers, what-if
figures, option position rows and order answers, and unknown values refused."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    BrokerOrder,
    ExpirationType,
    OptionContract,
    OptionRight,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
    TimeInForce,
)
from app.brokers.ibkr import options

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
DAY = date(2026, 12, 18)


def _contract(strike: str, right: OptionRight = OptionRight.call) -> OptionContract:
    return OptionContract("AAPL", "AAPL", DAY, right, Decimal(strike))


def _combo(
    sides: list[OrderSide],
    ratios: list[int],
    effect: PriceEffect | None,
    price: Decimal | None,
    strikes: list[str] | None = None,
) -> OrderRequest:
    strikes = strikes or [str(190 + 5 * i) for i in range(len(sides))]
    legs = tuple(
        OrderLeg(_contract(k).symbol, side, ratio, PositionEffect.open)
        for k, side, ratio in zip(strikes, sides, ratios, strict=True)
    )
    return OrderRequest(
        client_order_id="c1",
        symbol="AAPL",
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=Decimal(2),
        order_type=OrderType.limit if price is not None else OrderType.market,
        time_in_force=TimeInForce.day,
        limit_price=price,
        legs=legs,
        price_effect=effect,
    )


conid_st = st.integers(min_value=1, max_value=2**40)
legs_st = st.lists(
    st.tuples(conid_st, st.integers(min_value=-9, max_value=9).filter(bool)),
    min_size=1,
    max_size=4,
)


@given(legs_st)
def test_conidex_round_trips(raw: list[tuple[int, int]]) -> None:
    legs = [options.ComboLeg(c, r) for c, r in raw]
    text = options.conidex("USD", legs)
    assert text.startswith("28812380;;;")
    spread, back = options.parse_conidex(text)
    assert spread == 28812380
    assert back == legs


@given(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(500), places=2),
    st.sampled_from([PriceEffect.debit, PriceEffect.credit]),
)
def test_the_combo_price_sign_is_the_price_effect_and_reads_back(
    price: Decimal, effect: PriceEffect
) -> None:
    order = _combo([OrderSide.buy, OrderSide.sell, OrderSide.buy], [1, 2, 1], effect, price)
    signed = options.signed_price(order)
    assert signed is not None
    assert abs(signed) == price
    assert (signed < 0) == (effect is PriceEffect.credit)
    assert options.combo_price_effect(signed, market=False) is effect
    body = options.combo_order_to_wire(order, "DU1", "USD", [11, 12, 13])
    assert body["side"] == "BUY"
    assert body["conidex"] == "28812380;;;11/1,12/-2,13/1"
    assert Decimal(repr(body["price"])) == signed


def test_an_even_combo_is_priced_zero_and_a_market_one_has_no_price() -> None:
    even = _combo([OrderSide.buy, OrderSide.sell], [1, 1], PriceEffect.even, Decimal(0))
    assert options.combo_order_to_wire(even, "DU1", "USD", [1, 2])["price"] == 0
    market = _combo([OrderSide.buy, OrderSide.sell], [1, 1], None, None)
    assert "price" not in options.combo_order_to_wire(market, "DU1", "USD", [1, 2])


def test_a_currency_without_a_spread_conid_is_refused() -> None:
    with pytest.raises(errors.UnsupportedOrder, match="spread conid"):
        options.conidex("ZAR", [options.ComboLeg(1, 1)])


@pytest.mark.parametrize(
    ("sides", "strikes", "right", "known"),
    [
        ([OrderSide.buy, OrderSide.sell], ["190", "195"], OptionRight.call, PriceEffect.debit),
        ([OrderSide.sell, OrderSide.buy], ["190", "195"], OptionRight.call, PriceEffect.credit),
        ([OrderSide.buy, OrderSide.sell], ["195", "190"], OptionRight.put, PriceEffect.debit),
        ([OrderSide.buy, OrderSide.sell], ["190", "195"], OptionRight.put, PriceEffect.credit),
        ([OrderSide.buy, OrderSide.buy], ["190", "195"], OptionRight.put, PriceEffect.debit),
        ([OrderSide.sell, OrderSide.sell], ["190", "195"], OptionRight.call, PriceEffect.credit),
    ],
)
def test_the_direction_the_legs_decide(
    sides: list[OrderSide], strikes: list[str], right: OptionRight, known: PriceEffect
) -> None:
    contracts = [_contract(k, right) for k in strikes]
    order = _combo(sides, [1, 1], PriceEffect.debit, Decimal(1), strikes)
    assert options.known_direction(order, contracts) is known


def test_a_mixed_three_leg_combo_has_no_known_direction() -> None:
    order = _combo(
        [OrderSide.buy, OrderSide.sell, OrderSide.buy], [1, 2, 1], PriceEffect.debit, Decimal(1)
    )
    contracts = [_contract(k) for k in ("190", "195", "200")]
    assert options.known_direction(order, contracts) is None


@pytest.mark.parametrize(
    "text", ["28812380", "28812380;;;", "28812380;;;1/0", "x;;;1/1", "28812380;;;1/1,2"]
)
def test_a_malformed_conidex_is_an_unknown_value(text: str) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        options.parse_conidex(text)


# --- secdef ---------------------------------------------------------------------------------

# The spec's example (IB REST API 2.13.0, /iserver/secdef/search "found"), trimmed.
SEARCH = [
    {
        "conid": "8314",
        "companyHeader": "INTL BUSINESS MACHINES CORP - NYSE",
        "symbol": "IBM",
        "opt": "20240315;20240322;20240328;20240405",
        "sections": [
            {"secType": "STK"},
            {"secType": "OPT", "months": "MAR24;APR24", "exchange": "SMART;AMEX"},
            {"secType": "BAG"},
        ],
    },
    {"conid": "41645598", "symbol": "IBM", "opt": None, "sections": [{"secType": "STK"}]},
]


def test_the_search_gives_conid_months_and_dates() -> None:
    listing = options.listing_from_search(SEARCH, "IBM")
    assert listing == options.OptionListing(
        8314,
        ("MAR24", "APR24"),
        (date(2024, 3, 15), date(2024, 3, 22), date(2024, 3, 28), date(2024, 4, 5)),
    )
    assert options.listing_from_search(SEARCH[1:], "IBM") is None
    assert options.listing_from_search({"error": "no symbol"}, "IBM") is None


def test_search_months_in_another_form_are_unknown() -> None:
    bad = [{**SEARCH[0], "sections": [{"secType": "OPT", "months": "2024-03"}]}]
    with pytest.raises(errors.UnknownBrokerValue):
        options.listing_from_search(bad, "IBM")


def test_expiration_types_follow_the_date() -> None:
    found = options.expirations(
        [date(2026, 12, 18), date(2026, 12, 11), date(2027, 1, 15), date(2026, 12, 31)],
        date(2026, 12, 4),
    )
    assert [(e.expiration, e.expiration_type) for e in found] == [
        (date(2026, 12, 11), ExpirationType.weekly),
        (date(2026, 12, 18), ExpirationType.quarterly),
        (date(2026, 12, 31), ExpirationType.other),
        (date(2027, 1, 15), ExpirationType.standard),
    ]
    assert options.month_code(date(2027, 1, 15)) == "JAN27"


def test_strikes_and_info_answers() -> None:
    body = {"call": [Decimal("70.0"), Decimal("72.5")], "put": [Decimal("70.0")]}
    assert options.strikes_from_wire(body, OptionRight.call) == [Decimal(70), Decimal("72.5")]
    assert options.strikes_from_wire(body, OptionRight.put) == [Decimal(70)]
    info = [
        {
            "conid": 653412429,
            "symbol": "SPX",
            "secType": "OPT",
            "right": "P",
            "strike": Decimal("4500.0"),
            "currency": "USD",
            "maturityDate": "20231020",
            "multiplier": "100",
            "tradingClass": "SPXW",
        }
    ]
    [listed] = options.listed_from_info(info)
    assert listed.conid == 653412429
    assert listed.contract.symbol == "SPXW231020P04500000"
    assert listed.contract.underlying == "SPX"
    assert options.strike_param(Decimal("4500.0")) == "4500"
    assert options.strike_param(Decimal("192.50")) == "192.5"
    with pytest.raises(errors.UnknownBrokerValue):
        options.listed_from_info([{**info[0], "right": "X"}])
    with pytest.raises(errors.UnknownBrokerValue):
        options.listed_from_info([{**info[0], "maturityDate": "Oct 20 2023"}])


# --- quotes, what-if, positions, orders ------------------------------------------------------


def test_a_snapshot_becomes_an_option_quote_with_iv_as_a_fraction() -> None:
    item = {
        "conid": 1,
        "31": "C2.50",
        "84": "2.45",
        "86": "2.55",
        "7308": "0.512",
        "7309": "0.031",
        "7310": "-0.08",
        "7311": "0.21",
        "7633": "24.5%",
        "7638": "1,234",
        "_updated": 1765000000000,
    }
    quote = options.option_quote_from_snapshot(item, _contract("190"), NOW)
    assert (quote.bid, quote.ask, quote.last) == (Decimal("2.45"), Decimal("2.55"), Decimal("2.50"))
    assert quote.greeks is not None
    assert quote.greeks.iv == Decimal("0.245")
    assert quote.greeks.delta == Decimal("0.512")
    assert quote.open_interest == 1234
    empty = options.option_quote_from_snapshot({"conid": 1}, _contract("190"), NOW)
    assert (empty.bid, empty.ask, empty.greeks) == (None, None, None)
    with pytest.raises(errors.UnknownBrokerValue):
        options.option_quote_from_snapshot({"84": "n/a", "86": "1"}, _contract("190"), NOW)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,977.60 USD (10 Shares)", Decimal("1977.60")),
        ("1 USD", Decimal(1)),
        ("1.1 ... 1.2 USD", Decimal("1.2")),
        ("-1", Decimal(-1)),
        ("590", Decimal(590)),
        (None, None),
    ],
)
def test_whatif_figures_are_read_from_their_text(text: str | None, value: Decimal | None) -> None:
    assert options.whatif_amount(text, "amount") == value


def test_the_spec_whatif_example_previews_a_buy() -> None:
    body = {
        "amount": {"amount": "1,977.60 USD (10 Shares)", "commission": "1 USD", "total": "x"},
        "equity": {"current": "123,456", "change": "-1", "after": "123,455"},
        "initial": {"current": "1000", "change": "652", "after": "1652"},
        "maintenance": {"current": "900", "change": "590", "after": "1490"},
        "warn": "21/You are trying to submit an order without having market data",
        "error": None,
    }
    preview = options.preview_from_whatif(body, PriceEffect.debit)
    assert preview.estimated_cash_change == Decimal("-1978.60")
    assert preview.fees == Decimal(1)
    assert preview.buying_power_change == Decimal(-652)
    assert preview.warnings == (body["warn"],)
    assert preview.rejections == ()
    refused = options.preview_from_whatif({**body, "error": "no margin"}, PriceEffect.credit)
    assert refused.rejections == ("no margin",)
    assert refused.estimated_cash_change == Decimal("1976.60")
    with pytest.raises(errors.UnknownBrokerValue):
        options.whatif_amount("lots", "amount")


# The spec's option position example (IB REST API 2.13.0, /portfolio/{accountId}/positions).
SPY_CALL = {
    "acctId": "DU123456",
    "conid": 584891614,
    "contractDesc": "SPY    JAN2025 440 C [SPY   250117C00440000 100]",
    "position": Decimal("1.0"),
    "mktPrice": Decimal("95.70706175"),
    "mktValue": Decimal("9570.71"),
    "avgCost": Decimal("5801.0401"),
    "avgPrice": Decimal("58.010401"),
    "unrealizedPnl": Decimal("3769.67"),
    "expiry": "20250117",
    "putOrCall": "C",
    "multiplier": Decimal("100.0"),
    "strike": "440",
    "assetClass": "OPT",
    "undConid": 756733,
    "ticker": "SPY",
    "undSym": "SPY",
}


def test_the_spec_option_position_row() -> None:
    position = options.option_position_from_wire(SPY_CALL, NOW)
    assert position.symbol == "SPY250117C00440000"
    assert position.contract == OptionContract(
        "SPY", "SPY", date(2025, 1, 17), OptionRight.call, Decimal(440)
    )
    assert position.quantity == 1
    assert position.avg_cost == Decimal("58.010401")  # per share, as the other brokers
    assert position.market_value == Decimal("9570.71")
    short = options.option_position_from_wire({**SPY_CALL, "position": Decimal(-2)}, NOW)
    assert short.quantity == -2
    with pytest.raises(errors.UnknownBrokerValue):
        options.option_position_from_wire({**SPY_CALL, "putOrCall": None}, NOW)


def _status_order(side: OrderSide, limit: Decimal, filled: Decimal) -> BrokerOrder:
    return BrokerOrder(
        broker_order_id="7",
        client_order_id=None,
        symbol="AAPL",
        side=side,
        quantity=Decimal(2),
        filled_quantity=filled,
        avg_fill_price=Decimal("-1.10") if filled else None,
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        status=OrderStatus.filled if filled else OrderStatus.accepted,
        limit_price=limit,
        stop_price=None,
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_combo_answer_gets_its_legs_and_an_unsigned_price() -> None:
    contracts = {11: _contract("190", OptionRight.put), 12: _contract("195", OptionRight.put)}
    body = {"sec_type": "BAG", "conidex": "28812380;;;11/1,12/-1", "limit_price": "-1.25"}
    order = options.with_option_terms(
        _status_order(OrderSide.buy, Decimal("-1.25"), Decimal(2)),
        body,
        contracts,
        {11: Decimal("0.80"), 12: Decimal("1.90")},
    )
    assert order.price_effect is PriceEffect.credit
    assert order.side is OrderSide.sell
    assert order.limit_price == Decimal("1.25")
    assert order.avg_fill_price == Decimal("1.10")
    assert [(leg.symbol, leg.side, leg.ratio, leg.filled_quantity) for leg in order.legs] == [
        (contracts[11].symbol, OrderSide.buy, 1, 2),
        (contracts[12].symbol, OrderSide.sell, 1, 2),
    ]
    assert order.legs[1].avg_fill_price == Decimal("1.90")
    # The same combo sold (as the web UI may send it): every sign flips.
    sold = options.with_option_terms(
        _status_order(OrderSide.sell, Decimal("1.25"), Decimal(0)),
        {**body, "conidex": "28812380;;;11/-1,12/1", "limit_price": "1.25"},
        contracts,
    )
    assert sold.price_effect is PriceEffect.credit
    assert [leg.side for leg in sold.legs] == [OrderSide.buy, OrderSide.sell]
    assert all(leg.avg_fill_price is None for leg in sold.legs)


def test_bad_combo_orders_are_unsupported() -> None:
    today = date(2026, 12, 4)
    good = _combo([OrderSide.buy, OrderSide.sell], [1, 1], PriceEffect.debit, Decimal(2))
    assert len(options.check_option_order(good, today)) == 2
    cases = [
        _combo([OrderSide.buy, OrderSide.sell], [2, 4], PriceEffect.debit, Decimal(2)),
        _combo([OrderSide.buy] * 5, [1] * 5, PriceEffect.debit, Decimal(2)),
        _combo([OrderSide.buy, OrderSide.sell], [1, 1], PriceEffect.credit, Decimal(2)),
        _combo([OrderSide.buy, OrderSide.sell], [1, 1], PriceEffect.even, Decimal(2)),
        _combo([OrderSide.buy, OrderSide.sell], [1, 1], None, Decimal(2)),
    ]
    for order in cases:
        with pytest.raises(errors.UnsupportedOrder):
            options.check_option_order(order, today)
    with pytest.raises(errors.UnsupportedOrder, match="expired"):
        options.check_option_order(good, date(2027, 1, 1))

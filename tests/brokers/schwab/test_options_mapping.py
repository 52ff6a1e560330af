"""Schwab option wire mapping: the complexOrderStrategyType inference table, padded OCC
legs, combos read back with per-leg fills, option positions, chains, expirations and
previews (shapes from schwab-py and z-Wind/schwab_api's recorded live answers)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    ExpirationType,
    OptionChainQuery,
    OptionContract,
    OptionRight,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderType,
    PositionEffect,
    PriceEffect,
    TimeInForce,
)
from app.brokers.schwab import mapping
from tests.brokers.schwab.payloads import wire

B, S = OrderSide.buy, OrderSide.sell
OPEN, CLOSE = PositionEffect.open, PositionEffect.close
NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def occ(right: str, strike: str, day: str = "261218", root: str = "AAPL") -> str:
    return f"{root}{day}{right}{int(Decimal(strike) * 1000):08d}"


def leg(symbol: str, side: OrderSide, ratio: int = 1) -> OrderLeg:
    return OrderLeg(symbol, side, ratio, OPEN)


INFERENCE = [
    ("vertical", [leg(occ("C", "190"), B), leg(occ("C", "195"), S)], "VERTICAL"),
    ("put credit vertical", [leg(occ("P", "185"), S), leg(occ("P", "180"), B)], "VERTICAL"),
    ("back ratio", [leg(occ("C", "190"), S), leg(occ("C", "195"), B, 2)], "BACK_RATIO"),
    ("calendar", [leg(occ("C", "190"), S), leg(occ("C", "190", "270115"), B)], "CALENDAR"),
    ("diagonal", [leg(occ("C", "190"), S), leg(occ("C", "195", "270115"), B)], "DIAGONAL"),
    ("straddle", [leg(occ("C", "190"), B), leg(occ("P", "190"), B)], "STRADDLE"),
    ("strangle", [leg(occ("C", "195"), S), leg(occ("P", "185"), S)], "STRANGLE"),
    ("risk reversal", [leg(occ("C", "195"), B), leg(occ("P", "185"), S)], "CUSTOM"),
    (
        "butterfly",
        [leg(occ("C", "185"), B), leg(occ("C", "190"), S, 2), leg(occ("C", "195"), B)],
        "BUTTERFLY",
    ),
    (
        "broken wing",
        [leg(occ("C", "185"), B), leg(occ("C", "190"), S, 2), leg(occ("C", "200"), B)],
        "CUSTOM",
    ),
    (
        "condor",
        [
            leg(occ("C", "180"), B),
            leg(occ("C", "185"), S),
            leg(occ("C", "195"), S),
            leg(occ("C", "200"), B),
        ],
        "CONDOR",
    ),
    (
        "iron condor",
        [
            leg(occ("P", "180"), B),
            leg(occ("P", "185"), S),
            leg(occ("C", "195"), S),
            leg(occ("C", "200"), B),
        ],
        "IRON_CONDOR",
    ),
    (
        "reverse iron condor",
        [
            leg(occ("C", "200"), S),
            leg(occ("P", "185"), B),
            leg(occ("P", "180"), S),
            leg(occ("C", "195"), B),
        ],
        "IRON_CONDOR",
    ),
    (
        "iron condor, two expirations",
        [
            leg(occ("P", "180"), B),
            leg(occ("P", "185"), S),
            leg(occ("C", "195"), S),
            leg(occ("C", "200", "270115"), B),
        ],
        "CUSTOM",
    ),
    (
        "iron condor, unequal ratios",
        [
            leg(occ("P", "180"), B, 2),
            leg(occ("P", "185"), S),
            leg(occ("C", "195"), S),
            leg(occ("C", "200"), B),
        ],
        "CUSTOM",
    ),
    ("covered call", [leg("AAPL", B, 100), leg(occ("C", "195"), S)], "COVERED"),
    ("covered, wrong share count", [leg("AAPL", B, 50), leg(occ("C", "195"), S)], "CUSTOM"),
    (
        "collar",
        [leg("AAPL", B, 100), leg(occ("P", "180"), B), leg(occ("C", "200"), S)],
        "COLLAR_WITH_STOCK",
    ),
    ("two calls, same side", [leg(occ("C", "190"), B), leg(occ("C", "195"), B)], "CUSTOM"),
]


@pytest.mark.parametrize(
    ("legs", "expected"), [(x[1], x[2]) for x in INFERENCE], ids=[x[0] for x in INFERENCE]
)
def test_complex_order_strategy_type_is_inferred(legs: list[OrderLeg], expected: str) -> None:
    assert mapping.complex_strategy(legs) == expected
    assert expected in mapping.COMPLEX_STRATEGIES


def combo(
    legs: list[OrderLeg],
    effect: PriceEffect | None = PriceEffect.debit,
    *,
    price: str | None = "1.25",
    qty: str = "3",
) -> OrderRequest:
    return OrderRequest(
        client_order_id="c",
        symbol="AAPL",
        side=S if effect is PriceEffect.credit else B,
        quantity=Decimal(qty),
        order_type=OrderType.limit if price is not None else OrderType.market,
        time_in_force=TimeInForce.day,
        limit_price=Decimal(price) if price is not None else None,
        legs=tuple(legs),
        price_effect=effect,
    )


def test_a_vertical_body_matches_schwab_py() -> None:
    # schwab-py tests/orders/options_test.py test_bull_call_vertical_open, our inputs.
    body = mapping.order_to_wire(
        combo([leg(occ("C", "190"), B), leg(occ("C", "195"), S)], price="30.60")
    )
    assert body == {
        "session": "NORMAL",
        "duration": "DAY",
        "orderType": "NET_DEBIT",
        "complexOrderStrategyType": "VERTICAL",
        "quantity": 3,
        "orderStrategyType": "SINGLE",
        "price": "30.60",
        "orderLegCollection": [
            {
                "instruction": "BUY_TO_OPEN",
                "quantity": 3,
                "instrument": {"symbol": "AAPL  261218C00190000", "assetType": "OPTION"},
            },
            {
                "instruction": "SELL_TO_OPEN",
                "quantity": 3,
                "instrument": {"symbol": "AAPL  261218C00195000", "assetType": "OPTION"},
            },
        ],
    }


@pytest.mark.parametrize(
    ("effect", "price", "order_type", "sent_price"),
    [
        (PriceEffect.debit, "1.25", "NET_DEBIT", "1.25"),
        (PriceEffect.credit, "1.25", "NET_CREDIT", "1.25"),
        (PriceEffect.even, "0", "NET_ZERO", None),
        (None, None, "MARKET", None),
    ],
)
def test_the_direction_lives_in_the_order_type(
    effect: PriceEffect | None, price: str | None, order_type: str, sent_price: str | None
) -> None:
    body = mapping.order_to_wire(
        combo([leg(occ("C", "190"), B), leg(occ("C", "195"), S)], effect, price=price)
    )
    assert body["orderType"] == order_type
    assert body.get("price") == sent_price


def test_a_caller_cannot_send_a_signed_or_mismatched_combo_price() -> None:
    legs = [leg(occ("C", "190"), B), leg(occ("C", "195"), S)]
    with pytest.raises(ValueError, match="unsigned"):
        mapping.order_to_wire(combo(legs, price="-1.00"))
    with pytest.raises(ValueError, match="price effect"):
        mapping.order_to_wire(combo(legs, None, price="1.00"))
    with pytest.raises(ValueError, match="zero"):
        mapping.order_to_wire(combo(legs, PriceEffect.even, price="0.10"))


def test_ratios_multiply_the_strategy_quantity() -> None:
    legs = [leg(occ("C", "185"), B), leg(occ("C", "190"), S, 2), leg(occ("C", "195"), B)]
    body = mapping.order_to_wire(combo(legs, qty="4"))
    assert [x["quantity"] for x in body["orderLegCollection"]] == [4, 8, 4]
    assert body["quantity"] == 4
    assert body["complexOrderStrategyType"] == "BUTTERFLY"


@st.composite
def contracts(draw: st.DrawFn) -> OptionContract:
    root = draw(st.from_regex(r"[A-Z]{1,5}", fullmatch=True))
    day = draw(st.dates(min_value=date(2026, 1, 1), max_value=date(2099, 12, 31)))
    strike = Decimal(draw(st.integers(min_value=1, max_value=99_999_999))) / 1000
    return OptionContract.parse(
        f"{root}{day:%y%m%d}{draw(st.sampled_from('CP'))}{int(strike * 1000):08d}"
    )


@given(contracts(), st.sampled_from([B, S]), st.sampled_from([OPEN, CLOSE]))
def test_padded_occ_round_trips_through_an_order(
    contract: OptionContract, side: OrderSide, effect: PositionEffect
) -> None:
    request = OrderRequest(
        client_order_id="c",
        symbol=contract.symbol,
        side=side,
        quantity=Decimal(2),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        position_effect=effect,
    )
    body = mapping.order_to_wire(request)
    sent = body["orderLegCollection"][0]["instrument"]["symbol"]
    assert len(sent) == 21
    assert sent[:6] == f"{contract.root:<6}"
    back = {
        **body,
        "orderId": 1,
        "status": "WORKING",
        "quantity": 2,
        "enteredTime": "2026-12-04T15:00:00+0000",
    }
    order = mapping.order_from_wire(wire(back))
    assert order.symbol == contract.symbol
    assert " " not in order.symbol
    assert (order.side, order.position_effect) == (side, effect)
    assert OptionContract.parse(sent) == contract


def schwab_covered_call() -> dict[str, object]:
    """z-Wind/schwab_api tests/model/Trader/Order_real2.json (a live Schwab answer), filled."""
    return {
        "session": "NORMAL",
        "duration": "DAY",
        "orderType": "NET_DEBIT",
        "complexOrderStrategyType": "COVERED",
        "quantity": 1.0,
        "filledQuantity": 1.0,
        "remainingQuantity": 0.0,
        "requestedDestination": "AUTO",
        "destinationLinkName": "AutoRoute",
        "price": 10.0,
        "orderLegCollection": [
            {
                "orderLegType": "EQUITY",
                "legId": 1,
                "instrument": {
                    "assetType": "EQUITY",
                    "cusip": "345370860",
                    "symbol": "F",
                    "instrumentId": 2947182,
                },
                "instruction": "BUY",
                "positionEffect": "OPENING",
                "quantity": 100.0,
            },
            {
                "orderLegType": "OPTION",
                "legId": 2,
                "instrument": {
                    "assetType": "OPTION",
                    "cusip": "0F....CK60014000",
                    "symbol": "F     260320C00014000",
                    "description": "FORD MTR CO DEL 03/20/2026 $14 Call",
                    "instrumentId": 241079162,
                    "type": "VANILLA",
                    "putCall": "CALL",
                    "underlyingSymbol": "F",
                    "optionDeliverables": [{"symbol": "F", "deliverableUnits": 100.0}],
                },
                "instruction": "SELL_TO_OPEN",
                "positionEffect": "OPENING",
                "quantity": 1.0,
            },
        ],
        "orderStrategyType": "SINGLE",
        "orderId": 1234567890123,
        "cancelable": False,
        "editable": False,
        "status": "FILLED",
        "enteredTime": "2025-10-31T20:09:15+0000",
        "closeTime": "2025-10-31T20:09:16+0000",
        "tag": "TA_FAKE",
        "accountNumber": 12345678,
        "orderActivityCollection": [
            {
                "activityType": "EXECUTION",
                "activityId": 99,
                "executionType": "FILL",
                "quantity": 1.0,
                "orderRemainingQuantity": 0.0,
                "executionLegs": [
                    {
                        "legId": 1,
                        "quantity": 100.0,
                        "price": 11.2,
                        "time": "2025-10-31T20:09:16+0000",
                    },
                    {"legId": 2, "quantity": 1.0, "price": 1.3, "time": "2025-10-31T20:09:16+0000"},
                ],
            }
        ],
    }


def test_a_live_covered_call_reads_back_with_its_legs() -> None:
    order = mapping.order_from_wire(wire(schwab_covered_call()))
    assert order.symbol == "F"
    assert order.side is B
    assert order.price_effect is PriceEffect.debit
    assert order.order_type is OrderType.limit
    assert order.limit_price == Decimal("10.0")
    assert order.quantity == 1
    stock, call = order.legs
    assert (stock.symbol, stock.ratio, stock.filled_quantity) == ("F", 100, Decimal(100))
    assert (call.symbol, call.ratio, call.side) == ("F260320C00014000", 1, S)
    assert call.position_effect is OPEN
    assert call.broker_leg_id == "2"
    assert call.avg_fill_price == Decimal("1.3")
    assert order.avg_fill_price == Decimal("9.9000")  # 11.20 a share less 1.30 per share
    fills = mapping.fills_from_wire(wire(schwab_covered_call()))
    assert [(f.fill_id, f.leg_symbol) for f in fills] == [
        ("1234567890123:99:1", "F"),
        ("1234567890123:99:2", "F260320C00014000"),
    ]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("complexOrderStrategyType", "IRON_BUTTERFLY"),
        ("orderType", "NET_SOMETHING"),
        ("orderType", "STOP"),
        ("leg0.instruction", "BUY_TO_OPEN"),  # an option instruction on shares
        ("leg1.instruction", "BUY"),  # an equity instruction on an option
        ("leg1.quantity", 1.5),  # not a whole multiple of the strategy quantity
        ("leg1.symbol", "F_032026C14"),  # the old TD Ameritrade form
    ],
)
def test_a_combo_we_cannot_say_is_refused(path: str, value: object) -> None:
    body = schwab_covered_call()
    legs = body["orderLegCollection"]
    assert isinstance(legs, list)
    if path.startswith("leg"):
        index, field = int(path[3]), path.split(".")[1]
        target = legs[index]["instrument"] if field == "symbol" else legs[index]
        target[field] = value
    else:
        body[path] = value
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(wire(body))


def test_a_short_option_position_is_signed_and_per_share() -> None:
    position = mapping.position_from_wire(
        wire(
            {
                "shortQuantity": 2.0,
                "longQuantity": 0.0,
                "averagePrice": 1.5,
                "averageShortPrice": 1.5,
                "marketValue": -240.0,
                "instrument": {
                    "assetType": "OPTION",
                    "symbol": "SPXW  261218P05000000",
                    "putCall": "PUT",
                    "underlyingSymbol": "SPX",
                    "optionMultiplier": 100.0,
                },
            }
        ),
        NOW,
    )
    assert position.symbol == "SPXW261218P05000000"
    assert position.quantity == -2
    assert position.contract is not None
    assert position.contract.underlying == "SPX"
    assert position.contract.multiplier == 100
    assert position.contract.strike == 5000
    assert position.current_price == Decimal("1.2")
    assert position.avg_cost == Decimal("1.5")
    assert position.unrealized_pl == Decimal("60")  # sold at 1.50, worth 1.20: +$60


def chain_body() -> dict[str, object]:
    contract = {
        "putCall": "CALL",
        "symbol": "AAPL  261218C00190000",
        "bid": 4.1,
        "ask": 4.25,
        "last": 4.2,
        "mark": 4.18,
        "volatility": 29.5,
        "delta": 0.52,
        "gamma": 0.03,
        "theta": -0.08,
        "vega": 0.21,
        "rho": 0.05,
        "openInterest": 1234,
        "multiplier": 100.0,
        "quoteTimeInLong": 1796396400000,
        "expirationType": "S",
    }
    deep = {**contract, "symbol": "AAPL  261218C00400000", "bid": 0.0, "ask": 0.01}
    deep |= {"volatility": -999.0, "delta": "NaN", "gamma": -999.0, "openInterest": 0}
    put = {**contract, "putCall": "PUT", "symbol": "AAPL  261218P00190000"}
    return {
        "symbol": "AAPL",
        "status": "SUCCESS",
        "callExpDateMap": {"2026-12-18:14": {"190.0": [contract], "400.0": [deep]}},
        "putExpDateMap": {"2026-12-18:14": {"190.0": [put]}},
    }


def test_a_chain_maps_greeks_and_percent_volatility() -> None:
    quotes = mapping.chain_from_wire(wire(chain_body()), OptionChainQuery(underlying="AAPL"))
    call, put, deep = quotes
    assert call.contract.symbol == "AAPL261218C00190000"
    assert put.contract.right is OptionRight.put
    assert (call.bid, call.ask, call.last) == (Decimal("4.1"), Decimal("4.25"), Decimal("4.2"))
    assert call.greeks is not None
    assert call.greeks.iv == Decimal("0.295")
    assert call.greeks.delta == Decimal("0.52")
    assert call.open_interest == 1234
    assert call.as_of == datetime.fromtimestamp(1796396400, tz=UTC)
    assert deep.greeks is not None
    assert deep.greeks.iv is None
    assert deep.greeks.delta is None
    assert deep.greeks.gamma is None
    assert deep.greeks.theta == Decimal("-0.08")


def test_a_chain_reads_the_spec_names_too_and_refuses_a_mismatch() -> None:
    body = chain_body()
    contract = body["callExpDateMap"]["2026-12-18:14"]["190.0"][0]  # type: ignore[index]
    for short in ("bid", "ask", "last"):
        contract[f"{short}Price"] = contract.pop(short)
    call = mapping.chain_from_wire(wire(body), OptionChainQuery(underlying="AAPL"))[0]
    assert call.bid == Decimal("4.1")
    contract["putCall"] = "PUT"  # a put in the call map
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.chain_from_wire(wire(body), OptionChainQuery(underlying="AAPL"))
    with pytest.raises(errors.UnknownSymbol):
        mapping.chain_from_wire(
            {"symbol": "ZZZZ", "status": "FAILED"}, OptionChainQuery(underlying="ZZZZ")
        )


def test_expiration_types_map_strictly() -> None:
    # z-Wind/schwab_api tests/model/MarketData/ExpirationChain_real.json, trimmed.
    body = {
        "expirationList": [
            {
                "expirationDate": "2024-05-24",
                "daysToExpiration": 7,
                "expirationType": "W",
                "settlementType": "P",
                "optionRoots": "AAPL",
                "standard": True,
            },
            {
                "expirationDate": "2024-05-17",
                "daysToExpiration": 0,
                "expirationType": "S",
                "settlementType": "P",
                "optionRoots": "AAPL",
                "standard": True,
            },
            {
                "expirationDate": "2024-06-28",
                "daysToExpiration": 42,
                "expirationType": "Q",
                "settlementType": "P",
                "optionRoots": "AAPL",
                "standard": True,
            },
            {
                "expirationDate": "2024-05-31",
                "daysToExpiration": 14,
                "expirationType": "M",
                "settlementType": "P",
                "optionRoots": "AAPL",
                "standard": True,
            },
        ]
    }
    found = mapping.expirations_from_wire(body)
    assert [(e.expiration.isoformat(), e.expiration_type) for e in found] == [
        ("2024-05-17", ExpirationType.standard),
        ("2024-05-24", ExpirationType.weekly),
        ("2024-05-31", ExpirationType.end_of_month),
        ("2024-06-28", ExpirationType.quarterly),
    ]
    body["expirationList"][0]["expirationType"] = "X"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.expirations_from_wire(body)


def live_preview_with_rejects() -> dict[str, object]:
    """z-Wind/schwab_api tests/model/Trader/PreviewOrder_real.json (a live 200), trimmed."""
    return {
        "orderId": 0,
        "orderStrategy": {
            "accountNumber": "12345678",
            "orderBalance": {
                "orderValue": 10.0,
                "projectedAvailableFund": -9.5,
                "projectedBuyingPower": -9.5,
                "projectedCommission": 0.0,
            },
            "orderStrategyType": "SINGLE",
            "status": "REJECTED",
            "orderType": "LIMIT",
            "price": 10.0,
            "quantity": 1.0,
        },
        "orderValidationResult": {
            "rejects": [
                {
                    "activityMessage": "You do not have enough available cash/buying power "
                    "for this order.",
                    "originalSeverity": "REJECT",
                }
            ],
            "warns": [
                {
                    "activityMessage": "This buy order was accepted without sufficient "
                    "settled funds to trade in your account. ",
                    "originalSeverity": "WARN",
                }
            ],
        },
        "commissionAndFee": {
            "commission": {
                "commissionLegs": [
                    {
                        "commissionValues": [
                            {"value": 0.0, "type": "BASE_CHARGE"},
                            {"value": 0.0, "type": "COMMISSION"},
                        ]
                    }
                ]
            },
            "fee": {
                "feeLegs": [
                    {
                        "feeValues": [
                            {"value": 0.0, "type": "SEC_FEE"},
                            {"value": 0.01, "type": "TAF_FEE"},
                        ]
                    }
                ]
            },
        },
    }


def test_a_live_preview_with_rejects_is_a_refusal_in_a_200() -> None:
    order = OrderRequest(
        client_order_id="c",
        symbol="VEA",
        side=B,
        quantity=Decimal(1),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=Decimal(10),
    )
    preview = mapping.preview_from_wire(wire(live_preview_with_rejects()), order, Decimal("0.5"))
    assert preview.rejections == (
        "You do not have enough available cash/buying power for this order.",
    )
    assert preview.warnings == (
        "This buy order was accepted without sufficient settled funds to trade in your account.",
    )
    assert preview.direction is PriceEffect.debit
    assert preview.estimated_cash_change == Decimal("-10.0")
    assert preview.buying_power_change == Decimal("-10.0")
    assert preview.fees == Decimal("0.01")
    accepted = live_preview_with_rejects()
    accepted["orderValidationResult"] = {}
    assert mapping.preview_from_wire(wire(accepted), order, None).rejections == ()


def test_a_fingerprint_compares_legs_effects_and_direction() -> None:
    from dataclasses import replace

    from app.brokers.base import BrokerOrderLeg, OrderFingerprint

    legs = [leg(occ("C", "190"), B), leg(occ("C", "195"), S)]
    request = combo(legs, PriceEffect.debit)
    order = mapping.submitted_order("1", request, NOW)
    fingerprint = OrderFingerprint.of(request, NOW)
    assert fingerprint.matches(order)
    assert fingerprint.matches(replace(order, legs=order.legs[::-1]))  # any order
    unknown_effect = tuple(replace(g, position_effect=None) for g in order.legs)
    assert fingerprint.matches(replace(order, legs=unknown_effect))
    closing: tuple[BrokerOrderLeg, ...] = (
        replace(order.legs[0], position_effect=CLOSE),
        order.legs[1],
    )
    assert not fingerprint.matches(replace(order, legs=closing))
    assert not fingerprint.matches(replace(order, legs=order.legs[:1]))
    assert not fingerprint.matches(replace(order, price_effect=PriceEffect.credit))
    other_strike = (replace(order.legs[0], symbol=occ("C", "187.5")), order.legs[1])
    assert not fingerprint.matches(replace(order, legs=other_strike))

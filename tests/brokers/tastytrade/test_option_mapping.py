"""tastytrade option wire forms: padded OCC and streamer symbols, spread bodies and their
price-effect, chains, quotes and dry-run answers (properties where they beat examples)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    ExpirationType,
    OptionContract,
    OptionRight,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderType,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    TimeInForce,
)
from app.brokers.tastytrade import mapping

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)

# Roots: a letter, then letters or digits (adjusted roots such as AAPL1), 6 at most.
roots = st.from_regex(r"\A[A-Z][A-Z0-9]{0,5}\Z")
strikes = st.integers(min_value=1, max_value=99_999_999).map(
    lambda millis: (Decimal(millis) / 1000).normalize()
)


@st.composite
def contracts(draw: st.DrawFn, root: str | None = None) -> OptionContract:
    strike = draw(strikes)
    if strike == strike.to_integral_value():
        strike = strike.quantize(Decimal(1))
    name = root or draw(roots)
    return OptionContract(
        underlying=name,
        root=name,
        expiration=draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))),
        right=draw(st.sampled_from(OptionRight)),
        strike=strike,
    )


@given(contracts())
def test_padded_occ_and_streamer_symbols_round_trip(contract: OptionContract) -> None:
    padded = mapping.option_to_wire(contract.symbol)
    assert padded == contract.occ_padded
    assert len(padded) == 21
    assert mapping.option_from_wire(padded) == contract
    assert mapping.option_to_wire(padded) == padded  # padded input is accepted too
    # The docs print the symbol with its padding collapsed ("AAPL 221118C00157500").
    assert mapping.option_from_wire(" ".join(padded.split())) == contract
    streamer = mapping.streamer_symbol(contract)
    assert streamer.startswith("." + contract.root)
    assert not streamer.endswith(".")
    assert not (("." in streamer[1:]) and streamer.endswith("0"))
    assert mapping.contract_from_streamer(streamer) == contract


def test_streamer_symbols_of_the_sdk_examples() -> None:
    # tastyware/tastytrade docs: "SPLG  240315C00024000" streams as ".SPLG240315C24";
    # the multi-leg guide's 157.5 strike as ".AAPL221118C157.5".
    splg = mapping.option_from_wire("SPLG  240315C00024000")
    assert mapping.streamer_symbol(splg) == ".SPLG240315C24"
    aapl = mapping.option_from_wire("AAPL  221118C00157500")
    assert mapping.streamer_symbol(aapl) == ".AAPL221118C157.5"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.contract_from_streamer("AAPL221118C157.5")


@st.composite
def spreads(draw: st.DrawFn) -> OrderRequest:
    root = draw(roots)
    legs_contracts = draw(
        st.lists(contracts(root), min_size=2, max_size=4, unique_by=lambda c: c.symbol)
    )
    ratios = draw(
        st.lists(st.integers(1, 5), min_size=len(legs_contracts), max_size=len(legs_contracts))
    )
    common = math.gcd(*ratios)
    effect = draw(st.sampled_from([PriceEffect.debit, PriceEffect.credit]))
    price = draw(st.decimals(min_value="0.01", max_value="500", places=2))
    return OrderRequest(
        client_order_id="bg-prop",
        symbol=root,
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=Decimal(draw(st.integers(1, 50))),
        order_type=OrderType.limit,
        time_in_force=draw(st.sampled_from([TimeInForce.day, TimeInForce.gtc])),
        limit_price=price,
        legs=tuple(
            OrderLeg(
                c.symbol,
                draw(st.sampled_from(OrderSide)),
                ratio // common,
                draw(st.sampled_from(PositionEffect)),
            )
            for c, ratio in zip(legs_contracts, ratios, strict=True)
        ),
        price_effect=effect,
    )


def placed(body: dict[str, Any]) -> dict[str, Any]:
    """What tastytrade answers for a body it accepted (orders swagger ``Order``)."""
    return {
        **body,
        "id": 1,
        "status": "Live",
        "received-at": "2026-11-23T15:30:00.000+00:00",
        "underlying-symbol": OptionContract.parse(body["legs"][0]["symbol"]).underlying,
        "legs": [
            {**leg, "remaining-quantity": leg["quantity"], "fills": []} for leg in body["legs"]
        ],
    }


@given(spreads())
def test_a_spread_sends_an_unsigned_net_with_its_price_effect(order: OrderRequest) -> None:
    body = mapping.order_to_wire(order, "src")
    assert order.limit_price is not None
    assert body["price"] == str(order.limit_price)
    assert Decimal(body["price"]) > 0  # never signed: a negative price is refused
    assert body["price-effect"] == (
        "Credit" if order.price_effect is PriceEffect.credit else "Debit"
    )
    for leg, wire in zip(order.legs, body["legs"], strict=True):
        assert wire["instrument-type"] == "Equity Option"
        assert wire["symbol"] == OptionContract.parse(leg.symbol).occ_padded
        assert wire["quantity"] == int(order.quantity) * leg.ratio
        verb = "Buy" if leg.side is OrderSide.buy else "Sell"
        assert wire["action"] == f"{verb} to {leg.position_effect.value.capitalize()}"
    back = mapping.order_from_wire(placed(body))
    assert (back.price_effect, back.side, back.limit_price, back.quantity) == (
        order.price_effect,
        order.side,
        order.limit_price,
        order.quantity,
    )
    assert [(leg.symbol, leg.side, leg.ratio, leg.position_effect) for leg in back.legs] == [
        (leg.symbol, leg.side, leg.ratio, leg.position_effect) for leg in order.legs
    ]


@given(spreads(), st.decimals(min_value="0", max_value="20", places=2))
def test_the_preview_cash_sign_follows_the_price_effect(order: OrderRequest, fees: Decimal) -> None:
    body = mapping.order_to_wire(order, "src")
    answer = {
        "order": {**body, "status": "Received"},
        "buying-power-effect": {
            "change-in-buying-power": "100.0",
            "change-in-buying-power-effect": "Debit",
            "is-spread": True,
            "impact": "100.0",
            "effect": "Debit",
        },
        "fee-calculation": {"total-fees": str(fees), "total-fees-effect": "Debit"},
        "warnings": [],
    }
    preview = mapping.preview_from_wire(answer, order)
    assert order.limit_price is not None
    gross = order.limit_price * order.quantity * 100
    sign = 1 if order.price_effect is PriceEffect.credit else -1
    assert preview.estimated_cash_change == sign * gross - fees
    assert preview.buying_power_change == Decimal(-100)
    assert preview.fees == fees
    if order.price_effect is PriceEffect.debit:
        assert preview.direction is PriceEffect.debit


def test_even_and_signed_prices_never_reach_the_wire() -> None:
    legs = (
        OrderLeg("SPY261218C00600000", OrderSide.buy, 1, PositionEffect.open),
        OrderLeg("SPY261218C00610000", OrderSide.sell, 1, PositionEffect.open),
    )
    base = OrderRequest(
        "bg-e",
        "SPY",
        OrderSide.buy,
        Decimal(1),
        OrderType.limit,
        TimeInForce.day,
        limit_price=Decimal("1.00"),
        legs=legs,
        price_effect=PriceEffect.even,
    )
    with pytest.raises(errors.UnsupportedOrder, match="even"):
        mapping.order_to_wire(base, "src")
    for price in ("0", "-1.00"):
        with pytest.raises(errors.UnsupportedOrder):
            mapping.order_to_wire(
                replace(base, limit_price=Decimal(price), price_effect=PriceEffect.debit), "src"
            )
    market = replace(base, order_type=OrderType.market, limit_price=None, price_effect=None)
    body = mapping.order_to_wire(market, "src")
    assert "price" not in body
    assert "price-effect" not in body
    with pytest.raises(errors.UnsupportedOrder, match="distinct"):
        mapping.order_to_wire(
            replace(base, legs=(legs[0], legs[0]), price_effect=PriceEffect.debit), "src"
        )
    with pytest.raises(errors.UnsupportedOrder, match="2 to 4"):
        mapping.order_to_wire(replace(base, legs=legs * 3, price_effect=PriceEffect.debit), "src")


def nested(root: str, underlying: str, day: str, kind: str) -> dict[str, Any]:
    """A nested-chain item with the SDK's field names (``NestedOptionChain``)."""
    compact = day[2:].replace("-", "")
    return {
        "underlying-symbol": underlying,
        "root-symbol": root,
        "option-chain-type": "Standard",
        "shares-per-contract": 100,
        "tick-sizes": [{"value": "0.05", "threshold": "3.0"}, {"value": "0.1"}],
        "deliverables": [],
        "expirations": [
            {
                "expiration-type": kind,
                "expiration-date": day,
                "days-to-expiration": 5,
                "settlement-type": "PM" if root.endswith("W") else "AM",
                "strikes": [
                    {
                        "strike-price": "5500.0",
                        "call": f"{root:<6}{compact}C05500000",
                        "put": f"{root:<6}{compact}P05500000",
                        "call-streamer-symbol": f".{root}{compact}C5500",
                        "put-streamer-symbol": f".{root}{compact}P5500",
                    }
                ],
            }
        ],
    }


def test_a_nested_chain_of_two_roots_merges_by_date() -> None:
    items = [
        nested("SPX", "SPX", "2026-12-18", "Regular"),
        nested("SPXW", "SPX", "2026-12-18", "Regular"),
        nested("SPXW", "SPX", "2026-12-11", "Weekly"),
    ]
    chain = mapping.nested_chain_from_wire(items, "SPX")
    assert [(e.expiration.expiration, e.expiration.expiration_type) for e in chain] == [
        (date(2026, 12, 11), ExpirationType.weekly),
        (date(2026, 12, 18), ExpirationType.standard),
    ]
    december = chain[1].contracts
    assert sorted({c.root for c in december}) == ["SPX", "SPXW"]
    assert {c.underlying for c in december} == {"SPX"}
    assert len(december) == 4
    with pytest.raises(errors.UnknownBrokerValue, match="expiration-type"):
        mapping.nested_chain_from_wire([nested("SPX", "SPX", "2026-12-18", "Daily?")], "SPX")


def test_option_quotes_from_the_recorded_market_data() -> None:
    # tastyware/tastytrade docs/market-data.rst: a recorded equity-option quote.
    item = {
        "symbol": "SPLG  250516P00054000",
        "instrument-type": "Equity Option",
        "updated-at": "2025-04-28T21:31:33.779+00:00",
        "bid-size": "1.0",
        "ask-size": "11.0",
        "mark": "0.075",
        "close-price-type": "Regular",
        "prev-close": "0.1",
        "prev-close-price-type": "Regular",
        "summary-date": "2025-04-28",
        "prev-close-date": "2025-04-25",
        "halt-start-time": -1,
        "halt-end-time": -1,
        "ask": "0.1",
        "bid": "0.05",
        "close": "0.05",
        "last": "0.05",
        "mid": "0.075",
        "volume": "2.0",
    }
    wanted = mapping.option_from_wire("SPLG  250516P00054000")
    missing = mapping.option_from_wire("SPLG  250516P00055000")
    quoted, empty = mapping.option_quotes_from_wire([item], [wanted, missing], NOW)
    assert (quoted.bid, quoted.ask, quoted.last, quoted.greeks, quoted.source) == (
        Decimal("0.05"),
        Decimal("0.1"),
        Decimal("0.05"),
        None,
        "broker",
    )
    assert quoted.as_of == datetime(2025, 4, 28, 21, 31, 33, 779000, tzinfo=UTC)
    assert (empty.bid, empty.ask, empty.as_of) == (None, None, NOW)


def test_the_sdk_dry_run_example_as_a_preview() -> None:
    # tastyware/tastytrade docs/orders.rst: buy 5 USO at a $10 limit, dry run.
    order = OrderRequest(
        "bg-uso",
        "USO",
        OrderSide.buy,
        Decimal(5),
        OrderType.limit,
        TimeInForce.day,
        limit_price=Decimal(10),
    )
    answer = {
        "order": {**mapping.order_to_wire(order, "src"), "status": "Received"},
        "buying-power-effect": {
            "change-in-margin-requirement": "125.0",
            "change-in-margin-requirement-effect": "Debit",
            "change-in-buying-power": "125.004",
            "change-in-buying-power-effect": "Debit",
            "current-buying-power": "1000.0",
            "current-buying-power-effect": "Credit",
            "new-buying-power": "874.996",
            "new-buying-power-effect": "Credit",
            "isolated-order-margin-requirement": "125.0",
            "isolated-order-margin-requirement-effect": "Debit",
            "is-spread": False,
            "impact": "125.004",
            "effect": "Debit",
        },
        "fee-calculation": {
            "regulatory-fees": "0.0",
            "regulatory-fees-effect": "None",
            "clearing-fees": "0.004",
            "clearing-fees-effect": "Debit",
            "commission": "0.0",
            "commission-effect": "None",
            "proprietary-index-option-fees": "0.0",
            "proprietary-index-option-fees-effect": "None",
            "total-fees": "0.004",
            "total-fees-effect": "Debit",
        },
        "warnings": [{"code": "tif_next_valid_sesssion", "message": "next session"}],
    }
    preview = mapping.preview_from_wire(answer, order)
    assert (preview.estimated_cash_change, preview.direction) == (
        Decimal("-50.004"),
        PriceEffect.debit,
    )
    assert preview.buying_power_change == Decimal("-125.004")
    assert preview.fees == Decimal("0.004")
    assert preview.warnings == ("tif_next_valid_sesssion: next session",)
    assert preview.rejections == ()
    assert preview.source is PreviewSource.broker
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.preview_from_wire({**answer, "buying-power-effect": None}, order)

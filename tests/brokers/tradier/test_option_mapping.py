"""Tradier option and multileg mapping: forms, read-back, chains, expirations, preview, legs."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    ExpirationType,
    OptionContract,
    OptionRight,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    Quote,
    TimeInForce,
)
from app.brokers.tradier import mapping

D = Decimal
NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
EXPIRY = date(2027, 1, 15)


def occ(strike: str, right: str = "C", root: str = "SPY", expiry: date = EXPIRY) -> str:
    return OptionContract(
        underlying=root,
        root=root,
        expiration=expiry,
        right=OptionRight.call if right == "C" else OptionRight.put,
        strike=D(strike),
    ).symbol


def leg(
    symbol: str, side: OrderSide, ratio: int = 1, effect: PositionEffect = PositionEffect.open
) -> OrderLeg:
    return OrderLeg(symbol=symbol, side=side, ratio=ratio, position_effect=effect)


def iron_condor(
    qty: str = "2", price: str = "1.25", effect: PriceEffect = PriceEffect.credit
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bg-condor",
        symbol="SPY",
        side=OrderSide.sell,
        quantity=D(qty),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=D(price),
        price_effect=effect,
        legs=(
            leg(occ("520", "P"), OrderSide.buy),
            leg(occ("530", "P"), OrderSide.sell),
            leg(occ("550"), OrderSide.sell),
            leg(occ("560"), OrderSide.buy),
        ),
    )


# --- placing ----------------------------------------------------------------------------------


def test_a_single_leg_option_order_form() -> None:
    order = OrderRequest(
        client_order_id="bg-opt-1",
        symbol="SPY  270115C00550000",  # padded on input is fine; Tradier gets it unpadded
        side=OrderSide.sell,
        quantity=D(3),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.gtc,
        limit_price=D("4.10"),
        position_effect=PositionEffect.close,
    )
    assert mapping.order_to_form(order) == {
        "class": "option",
        "symbol": "SPY",
        "option_symbol": "SPY270115C00550000",
        "side": "sell_to_close",
        "quantity": "3",
        "type": "limit",
        "duration": "gtc",
        "tag": "bg-opt-1",
        "price": "4.1",
    }


def test_an_iron_condor_form_has_indexed_legs_and_a_positive_credit() -> None:
    form = mapping.order_to_form(iron_condor())
    assert form == {
        "class": "multileg",
        "symbol": "SPY",
        "type": "credit",
        "duration": "day",
        "tag": "bg-condor",
        "price": "1.25",
        "option_symbol[0]": "SPY270115P00520000",
        "side[0]": "buy_to_open",
        "quantity[0]": "2",
        "option_symbol[1]": "SPY270115P00530000",
        "side[1]": "sell_to_open",
        "quantity[1]": "2",
        "option_symbol[2]": "SPY270115C00550000",
        "side[2]": "sell_to_open",
        "quantity[2]": "2",
        "option_symbol[3]": "SPY270115C00560000",
        "side[3]": "buy_to_open",
        "quantity[3]": "2",
    }


def test_market_and_even_multileg_types_send_no_price() -> None:
    market = iron_condor()
    market = OrderRequest(
        **{**_fields(market), "order_type": OrderType.market, "limit_price": None}
    )
    assert "price" not in mapping.order_to_form(market)
    assert mapping.order_to_form(market)["type"] == "market"
    even = OrderRequest(
        **{**_fields(iron_condor()), "limit_price": D(0), "price_effect": PriceEffect.even}
    )
    form = mapping.order_to_form(even)
    assert (form["type"], "price" in form) == ("even", False)


def _fields(order: OrderRequest) -> dict[str, Any]:
    return {name: getattr(order, name) for name in OrderRequest.__dataclass_fields__}


@pytest.mark.parametrize(
    "change",
    [
        {"legs": (*iron_condor().legs, leg(occ("570"), OrderSide.buy))},  # a fifth leg
        {"legs": iron_condor().legs[:1]},  # one leg is not a multileg order
        {"legs": (leg(occ("550"), OrderSide.buy), leg(occ("550", root="QQQ"), OrderSide.sell))},
        {"legs": (leg(occ("550"), OrderSide.buy), leg(occ("550"), OrderSide.sell))},
        {"legs": (leg(occ("550"), OrderSide.buy, 0), leg(occ("560"), OrderSide.sell))},
        {"legs": (leg("SPY", OrderSide.buy), leg(occ("560"), OrderSide.sell))},
        {"quantity": D("1.5")},
        {"order_type": OrderType.stop_limit, "stop_price": D(1)},
        {"time_in_force": TimeInForce.ioc},
        {"price_effect": None},
        {"price_effect": PriceEffect.even},  # even with a price of 1.25
        {"limit_price": D(0)},  # a credit of nothing
        {"limit_price": D("-1.25")},  # a caller's sign is never passed through
    ],
)
def test_what_tradier_cannot_take_is_refused_before_sending(change: dict[str, Any]) -> None:
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_form(OrderRequest(**{**_fields(iron_condor()), **change}))


def test_an_option_order_needs_its_position_effect() -> None:
    order = OrderRequest(
        client_order_id="bg-x",
        symbol=occ("550"),
        side=OrderSide.buy,
        quantity=D(1),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
    )
    with pytest.raises(errors.UnsupportedOrder, match="position effect"):
        mapping.order_to_form(order)
    no_effect = OrderLeg(occ("550"), OrderSide.buy, 1, None)  # type: ignore[arg-type]
    legless = OrderRequest(
        **{**_fields(iron_condor()), "legs": (no_effect, leg(occ("560"), OrderSide.sell))}
    )
    with pytest.raises(errors.UnsupportedOrder, match="position effect"):
        mapping.order_to_form(legless)


# --- the indexed encoding round trip (hypothesis) ------------------------------------------


@st.composite
def multileg_orders(draw: st.DrawFn) -> OrderRequest:
    count = draw(st.integers(2, 4))
    strikes = draw(
        st.lists(
            st.integers(1, 2000).map(lambda k: D(k) / 2),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    ratios = draw(st.lists(st.integers(1, 6), min_size=count, max_size=count))
    divisor = math.gcd(*ratios)
    ratios = [r // divisor for r in ratios]
    rights = draw(st.lists(st.sampled_from(["C", "P"]), min_size=count, max_size=count))
    sides = draw(st.lists(st.sampled_from(list(OrderSide)), min_size=count, max_size=count))
    effects = draw(st.lists(st.sampled_from(list(PositionEffect)), min_size=count, max_size=count))
    root = draw(st.sampled_from(["SPY", "AAPL", "X", "BRKB"]))
    expiry = draw(st.dates(date(2026, 1, 1), date(2035, 12, 31)))
    effect = draw(st.sampled_from([None, *PriceEffect]))
    if effect is None:
        order_type, price = OrderType.market, None
    elif effect is PriceEffect.even:
        order_type, price = OrderType.limit, D(0)
    else:
        order_type = OrderType.limit
        price = draw(st.integers(1, 50_000).map(lambda c: D(c) / 100))
    return OrderRequest(
        client_order_id=draw(st.text("abcdef0123456789-", min_size=1, max_size=40)),
        symbol=root,
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=D(draw(st.integers(1, 500))),
        order_type=order_type,
        time_in_force=draw(st.sampled_from([TimeInForce.day, TimeInForce.gtc])),
        limit_price=price,
        price_effect=effect,
        legs=tuple(
            leg(occ(str(k), right, root, expiry), side, ratio, pe)
            for k, right, side, ratio, pe in zip(
                strikes, rights, sides, ratios, effects, strict=True
            )
        ),
    )


def as_tradier_reads_it_back(form: dict[str, str], order_id: int = 7000) -> dict[str, Any]:
    """The order object Tradier answers for a placed multileg form (docs/orders layout)."""
    return {
        "id": order_id,
        "type": form["type"],
        "symbol": form["symbol"],
        "side": "buy",
        "quantity": D(1),
        "status": "open",
        "duration": form["duration"],
        **({"price": D(form["price"])} if "price" in form else {}),
        "avg_fill_price": D(0),
        "exec_quantity": D(0),
        "create_date": "2026-12-04T15:00:00.000Z",
        "transaction_date": "2026-12-04T15:00:00.000Z",
        "class": "multileg",
        "num_legs": len(mapping.legs_from_form(form)),
        "strategy": "freeform",
        "tag": form["tag"],
        "leg": [
            {
                "id": order_id + 1 + i,
                "type": form["type"],
                "symbol": form["symbol"],
                "side": side,
                "quantity": D(quantity),
                "status": "open",
                "duration": form["duration"],
                "avg_fill_price": D(0),
                "exec_quantity": D(0),
                "create_date": "2026-12-04T15:00:00.000Z",
                "transaction_date": "2026-12-04T15:00:00.000Z",
                "class": "option",
                "option_symbol": symbol,
            }
            for i, (symbol, side, quantity) in enumerate(mapping.legs_from_form(form))
        ],
    }


@given(multileg_orders())
def test_the_indexed_encoding_round_trips(order: OrderRequest) -> None:
    form = mapping.order_to_form(order)
    indexed = [k for k in form if "[" in k]
    assert len(indexed) == 3 * len(order.legs)  # indices 0..n-1, no gaps, nothing else
    for index, sent in enumerate(order.legs):
        assert form[f"option_symbol[{index}]"] == sent.symbol
        assert form[f"quantity[{index}]"] == str(sent.ratio * order.quantity)
        side = form[f"side[{index}]"]
        assert side.startswith(sent.side.value)
        assert side.endswith(sent.position_effect.value)
    if order.price_effect in (PriceEffect.debit, PriceEffect.credit):
        assert order.limit_price is not None
        assert D(form["price"]) == order.limit_price > 0
    else:
        assert "price" not in form

    back = mapping.order_from_wire(as_tradier_reads_it_back(form))
    assert back.client_order_id == order.client_order_id
    assert (back.symbol, back.quantity, back.side) == (order.symbol, order.quantity, order.side)
    assert (back.order_type, back.price_effect, back.limit_price) == (
        order.order_type,
        order.price_effect,
        order.limit_price,
    )
    assert [(x.symbol, x.side, x.ratio, x.position_effect) for x in back.legs] == [
        (x.symbol, x.side, x.ratio, x.position_effect) for x in order.legs
    ]


# --- reading orders back ------------------------------------------------------------------


def filled_condor() -> dict[str, Any]:
    form = mapping.order_to_form(iron_condor())
    body = as_tradier_reads_it_back(form)
    prices = [D("0.80"), D("1.90"), D("1.70"), D("0.60")]
    for item, price in zip(body["leg"], prices, strict=True):
        item.update(status="filled", exec_quantity=item["quantity"], avg_fill_price=price)
    body.update(status="filled", exec_quantity=D(2), avg_fill_price=D("2.20"))
    return body


def test_a_filled_multileg_order_reads_with_its_legs() -> None:
    order = mapping.order_from_wire(filled_condor())
    assert (order.status, order.filled_quantity, order.avg_fill_price) == (
        OrderStatus.filled,
        D(2),
        D("2.20"),
    )
    assert order.price_effect is PriceEffect.credit
    assert order.side is OrderSide.sell
    assert [(x.filled_quantity, x.avg_fill_price, x.broker_leg_id) for x in order.legs] == [
        (D(2), D("0.80"), "7001"),
        (D(2), D("1.90"), "7002"),
        (D(2), D("1.70"), "7003"),
        (D(2), D("0.60"), "7004"),
    ]
    # Without a top-level average the legs' net price stands in (credit 2.20, unsigned).
    order = mapping.order_from_wire({**filled_condor(), "avg_fill_price": D(0)})
    assert order.avg_fill_price == D("2.20")


def test_a_single_option_order_reads_back_with_its_position_effect() -> None:
    order = mapping.order_from_wire(
        {
            **as_tradier_reads_it_back(mapping.order_to_form(iron_condor()))["leg"][1],
            "type": "limit",
            "price": D("1.9"),
        }
    )
    assert (order.symbol, order.side, order.position_effect) == (
        "SPY270115P00530000",
        OrderSide.sell,
        PositionEffect.open,
    )


@pytest.mark.parametrize(
    "change",
    [
        {"type": "limit"},  # not a multileg type
        {"leg": []},
        {"leg": "null"},
    ],
)
def test_an_unreadable_multileg_order_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire({**filled_condor(), **change})


def test_a_leg_with_an_unknown_side_is_refused() -> None:
    body = filled_condor()
    body["leg"][0]["side"] = "buy"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.order_from_wire(body)


# --- positions ------------------------------------------------------------------------------


def test_option_positions_are_signed_and_carry_their_contract() -> None:
    quote = Quote(symbol=occ("550"), bid=D("1.9"), ask=D("2.1"), last=D("2"), as_of=NOW)
    short = mapping.position_from_wire(
        {"symbol": occ("550"), "quantity": D(-2), "cost_basis": D(-340), "id": 1}, quote, NOW
    )
    assert short.asset_class is AssetClass.option
    assert short.contract == OptionContract.parse(occ("550"))
    assert (short.quantity, short.avg_cost, short.current_price) == (D(-2), D("1.7"), D(2))
    assert short.market_value == D(-400)  # 2.00 x -2 x 100
    assert short.unrealized_pl == D(-60)  # sold for 340, would cost 400 to buy back
    stock = mapping.position_from_wire(
        {"symbol": "SPY", "quantity": D(10), "cost_basis": D(5000), "id": 2}, None, NOW
    )
    assert stock.contract is None
    assert stock.market_value == D(5000)


# --- chains and expirations ---------------------------------------------------------------

CHAIN_ROW: dict[str, Any] = {  # jiak94/asynctradier tests/test_tradier.py, recorded answer
    "symbol": "TSLA240119C00290000",
    "description": "TSLA Jan 19 2024 $290.00 Call",
    "exch": "Z",
    "type": "option",
    "last": D("0.02"),
    "bid": D("0.01"),
    "ask": D("0.02"),
    "underlying": "TSLA",
    "strike": D("290.0"),
    "greeks": {
        "delta": D("1.4422886648140625e-4"),
        "gamma": D("3.5165824253684816e-5"),
        "theta": D("-7.229633668219417e-4"),
        "vega": D("1.9028779215795382e-4"),
        "rho": D("6.64036071274819e-6"),
        "phi": D("-6.7701434035364e-6"),
        "bid_iv": D("0.679611"),
        "mid_iv": D("0.701844"),
        "ask_iv": D("0.724077"),
        "smv_vol": D("0.634"),
        "updated_at": "2024-01-12 16:59:08",
    },
    "trade_date": 1705078886958,
    "bid_date": 1705079341000,
    "ask_date": 1705079341000,
    "open_interest": 18077,
    "contract_size": 100,
    "expiration_date": "2024-01-19",
    "expiration_type": "standard",
    "option_type": "call",
    "root_symbol": "TSLA",
}


def test_a_chain_contract_with_orats_greeks() -> None:
    [quote] = mapping.chain_from_wire({"options": {"option": CHAIN_ROW}}, NOW)
    assert quote.contract.symbol == "TSLA240119C00290000"
    assert (quote.contract.strike, quote.contract.right) == (D(290), OptionRight.call)
    assert (quote.bid, quote.ask, quote.last, quote.open_interest) == (
        D("0.01"),
        D("0.02"),
        D("0.02"),
        18077,
    )
    assert quote.source == "orats"
    assert quote.greeks is not None
    assert quote.greeks.iv == D("0.701844")
    assert quote.as_of == datetime.fromtimestamp(1705079341, UTC)
    no_mid = {**CHAIN_ROW, "greeks": {**CHAIN_ROW["greeks"], "mid_iv": D("0.0")}}
    [quote] = mapping.chain_from_wire({"options": {"option": [no_mid]}}, NOW)
    assert quote.greeks is not None
    assert quote.greeks.iv == D("0.634")
    [plain] = mapping.chain_from_wire({"options": {"option": [{**CHAIN_ROW, "greeks": None}]}}, NOW)
    assert (plain.greeks, plain.source) == (None, "broker")
    assert mapping.chain_from_wire({"options": None}, NOW) == []


def test_a_chain_contract_that_contradicts_its_symbol_is_refused() -> None:
    for change in ({"option_type": "put"}, {"expiration_date": "2024-01-26"}, {"symbol": "X"}):
        with pytest.raises(errors.UnknownBrokerValue):
            mapping.chain_from_wire({"options": {"option": {**CHAIN_ROW, **change}}}, NOW)


def test_expirations_in_both_shapes() -> None:
    typed = {
        "expirations": {
            "expiration": [
                {"date": "2023-11-17", "contract_size": 100, "expiration_type": "standard"},
                {"date": "2023-11-10", "contract_size": 100, "expiration_type": "weeklys"},
                {"date": "2023-12-29", "contract_size": 100, "expiration_type": "quarterlys"},
            ]
        }
    }
    found = mapping.expirations_from_wire(typed)
    assert found is not None
    assert [(e.expiration, e.expiration_type) for e in found] == [
        (date(2023, 11, 10), ExpirationType.weekly),
        (date(2023, 11, 17), ExpirationType.standard),
        (date(2023, 12, 29), ExpirationType.quarterly),
    ]
    bare = mapping.expirations_from_wire({"expirations": {"date": ["2024-01-12", "2024-01-19"]}})
    assert bare is not None
    assert {e.expiration_type for e in bare} == {ExpirationType.other}
    assert mapping.expirations_from_wire({"expirations": None}) is None
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.expirations_from_wire(
            {"expirations": {"expiration": {"date": "2024-01-12", "expiration_type": "dailys"}}}
        )


# --- preview --------------------------------------------------------------------------------

PREVIEW = {  # https://docs.tradier.com/docs/preview
    "order": {
        "status": "ok",
        "commission": D("3.49000000"),
        "cost": D("34.715100000000"),
        "fees": 0,
        "symbol": "T",
        "quantity": 1,
        "side": "buy",
        "type": "market",
        "duration": "day",
        "result": True,
        "order_cost": D("31.225100000000"),
        "margin_change": 0,
        "request_date": "2019-05-14T15:56:47.371",
        "extended_hours": False,
        "class": "equity",
        "strategy": "equity",
        "day_trades": 3,
    }
}


def test_the_documented_preview() -> None:
    preview = mapping.preview_from_wire(PREVIEW, PriceEffect.debit)
    assert preview.estimated_cash_change == D("-34.7151")
    assert (preview.fees, preview.buying_power_change) == (D("3.49"), D(0))
    assert (preview.rejections, preview.source) == ((), PreviewSource.broker)
    credit = {"order": {**PREVIEW["order"], "order_cost": D("-250"), "margin_change": D(750)}}
    preview = mapping.preview_from_wire(credit, PriceEffect.credit)
    assert preview.estimated_cash_change == D("246.51")  # 250 received less 3.49
    assert preview.buying_power_change == D(-750)


def test_a_refused_preview_is_returned_as_rejections() -> None:
    refused = {"errors": {"error": ["Backoffice rejected override of the order.", "InitialMargin"]}}
    preview = mapping.preview_from_wire(refused, PriceEffect.debit)
    assert preview.rejections == ("Backoffice rejected override of the order.", "InitialMargin")
    failed = {"order": {**PREVIEW["order"], "result": False}}
    assert mapping.preview_from_wire(failed, PriceEffect.debit).rejections


# --- leg fills for the stream -------------------------------------------------------------


def test_leg_fills_are_what_grew_since_the_last_read() -> None:
    body = filled_condor()
    for item in body["leg"]:
        item.update(exec_quantity=D(1), status="partially_filled")
    body.update(status="partially_filled")
    seen: mapping.LegState = {}
    first = mapping.leg_fills(mapping.order_from_wire(body), seen)
    assert [(f.leg_symbol, f.quantity, f.price) for f in first] == [
        ("SPY270115P00520000", D(1), D("0.8")),
        ("SPY270115P00530000", D(1), D("1.9")),
        ("SPY270115C00550000", D(1), D("1.7")),
        ("SPY270115C00560000", D(1), D("0.6")),
    ]
    assert mapping.leg_fills(mapping.order_from_wire(body), seen) == ()  # nothing new
    body["leg"][0].update(exec_quantity=D(2), avg_fill_price=D("0.85"))
    [second] = mapping.leg_fills(mapping.order_from_wire(body), seen)
    assert (second.quantity, second.price) == (D(1), D("0.9"))  # (2 x 0.85 - 0.80) / 1
    assert second.fill_id != first[0].fill_id


def test_a_leg_event_names_its_parent_order() -> None:
    assert mapping.event_order_id({"id": 7001, "parent_id": 7000, "event": "order"}) == "7000"
    assert mapping.event_order_id({"id": 7000, "event": "order"}) == "7000"


def test_an_expired_contract_still_reads() -> None:
    old = occ("100", expiry=NOW.date() - timedelta(days=400))
    assert mapping.wire_contract(old).symbol == old

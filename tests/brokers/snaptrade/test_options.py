"""SnapTrade options through the adapter against the fake over real HTTP: a vertical spread
placed (impact, then placement), filled with both legs, two positions; single-leg orders,
cancel, preview, option quotes, lifecycle activities, the per-brokerage capability, and bad
input refused before any request."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    OptionContract,
    OptionRight,
    OrderChanges,
    OrderFingerprint,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    Support,
    SupportsOptionChains,
    SupportsOrderCheck,
    SupportsOrderPreview,
    TimeInForce,
)
from app.brokers.snaptrade import options
from app.brokers.snaptrade.adapter import SNAPTRADE_CAPABILITIES
from tests.brokers.snaptrade.support import Running, running_fake

D = Decimal
UNDERLYING = "AAPL"
TRADING_PATHS = ("/trading/", "/trade/")


def expiry(run: Running, weeks: int = 4) -> date:
    """A listed expiration about ``weeks`` out in the fake's (the paper) option market."""
    today = datetime.now(UTC).date()
    listed = [e.expiration for e in run.fake.options.expirations(UNDERLYING, today)]
    return min(listed, key=lambda d: abs(d - (today + timedelta(weeks=weeks))))


def contract(run: Running, offset: int, right: OptionRight = OptionRight.call) -> OptionContract:
    strikes = run.fake.options.strikes(UNDERLYING)
    strike = strikes[len(strikes) // 2 + offset]
    return OptionContract(UNDERLYING, UNDERLYING, expiry(run), right, strike)


def vertical_legs(run: Running) -> tuple[OrderLeg, ...]:
    """A call debit spread: buy the lower strike, sell the higher one."""
    return (
        OrderLeg(contract(run, 0).symbol, OrderSide.buy, 1, PositionEffect.open),
        OrderLeg(contract(run, 2).symbol, OrderSide.sell, 1, PositionEffect.open),
    )


def natural_debit(run: Running, legs: tuple[OrderLeg, ...]) -> Decimal:
    now = datetime.now(UTC)
    net = D(0)
    for leg in legs:
        quote = run.fake.options.quote(OptionContract.parse(leg.symbol), now)
        net += quote.ask if leg.side is OrderSide.buy else -quote.bid
    return net


def vertical(
    legs: tuple[OrderLeg, ...],
    price: Decimal,
    *,
    qty: str = "2",
    effect: PriceEffect = PriceEffect.debit,
    client_order_id: str = "bg-vertical",
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=UNDERLYING,
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=D(qty),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=price,
        legs=legs,
        price_effect=effect,
    )


def single(symbol: str, price: str = "0.01", qty: str = "1") -> OrderRequest:
    return OrderRequest(
        client_order_id="bg-single",
        symbol=symbol,
        side=OrderSide.buy,
        quantity=D(qty),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.gtc,
        limit_price=D(price),
        position_effect=PositionEffect.open,
    )


def trading_requests(run: Running) -> list[tuple[str, str]]:
    return [r for r in run.fake.requests if any(p in r[1] for p in TRADING_PATHS)]


async def test_capabilities_say_options_without_a_chain() -> None:
    caps = SNAPTRADE_CAPABILITIES
    assert caps.asset_classes[AssetClass.option] is Support.native
    assert caps.multi_leg is Support.native
    assert caps.options.max_legs == 4
    assert caps.options.chain is Support.unsupported
    assert caps.options.expirations is Support.unsupported
    assert caps.preview is Support.native
    async with running_fake() as run:
        adapter = run.adapter()
        assert not isinstance(adapter, SupportsOptionChains)
        assert isinstance(adapter, SupportsOrderPreview)


async def test_a_vertical_spread_is_checked_placed_and_filled_with_both_legs() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        legs = vertical_legs(run)
        price = (natural_debit(run, legs) * D("1.2")).quantize(D("0.01"))
        placed = await adapter.place_order(account, vertical(legs, price))
        paths = [p for _, p in trading_requests(run)]
        assert paths == [
            f"/accounts/{account}/trading/options/impact",
            f"/accounts/{account}/trading/options",
        ]
        assert placed.status is OrderStatus.accepted
        assert placed.symbol == UNDERLYING
        assert placed.quantity == 2
        assert placed.price_effect is PriceEffect.debit
        assert [(g.symbol, g.side, g.ratio) for g in placed.legs] == [
            (legs[0].symbol, OrderSide.buy, 1),
            (legs[1].symbol, OrderSide.sell, 1),
        ]
        cash_before = run.account.cash
        assert await run.fake.match() == 1
        order = await adapter.get_order(account, placed.broker_order_id)
        assert order.status is OrderStatus.filled
        assert order.filled_quantity == 2
        assert order.price_effect is PriceEffect.debit
        assert [g.filled_quantity for g in order.legs] == [2, 2]
        assert [g.position_effect for g in order.legs] == [PositionEffect.open] * 2
        buy, sell = order.legs
        assert buy.avg_fill_price is not None
        assert sell.avg_fill_price is not None
        assert order.avg_fill_price == buy.avg_fill_price - sell.avg_fill_price
        assert order.avg_fill_price is not None
        assert order.avg_fill_price <= price
        assert run.account.cash == cash_before - order.avg_fill_price * 2 * 100
        positions = {p.symbol: p for p in await adapter.get_positions(account)}
        assert set(positions) == {legs[0].symbol, legs[1].symbol}
        long, short = positions[legs[0].symbol], positions[legs[1].symbol]
        assert (long.quantity, short.quantity) == (2, -2)
        for position in (long, short):
            assert position.asset_class is AssetClass.option
            assert position.contract == OptionContract.parse(position.symbol)
            assert position.market_value == position.current_price * position.quantity * 100
        assert long.avg_cost == buy.avg_fill_price
        assert short.avg_cost == sell.avg_fill_price
        padded = OptionContract.parse(legs[1].symbol).occ_padded
        found = await adapter.get_position(account, padded)
        assert found is not None
        assert (found.symbol, found.quantity) == (short.symbol, -2)


async def test_option_orders_are_listed_with_their_legs_and_found_by_fingerprint() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        legs = vertical_legs(run)
        submitted = datetime.now(UTC)
        request = vertical(legs, D("0.05"))
        placed = await adapter.place_order(account, request)
        await adapter.place_order(account, single(contract(run, -3).symbol))
        listed = await adapter.list_orders(account, "open", 10)
        combo = next(o for o in listed if o.broker_order_id == placed.broker_order_id)
        assert len(combo.legs) == 2
        assert combo.status is OrderStatus.accepted
        assert any(o.symbol == contract(run, -3).symbol and not o.legs for o in listed)
        found = await adapter.find_order_by_fingerprint(
            account, OrderFingerprint.of(request, submitted), frozenset()
        )
        assert found is not None
        assert found.broker_order_id == placed.broker_order_id
        claimed = frozenset({placed.broker_order_id})
        assert (
            await adapter.find_order_by_fingerprint(
                account, OrderFingerprint.of(request, submitted), claimed
            )
            is None
        )


async def test_a_single_leg_order_is_read_back_and_canceled() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        call = contract(run, 1)
        placed = await adapter.place_order(account, single(call.occ_padded))
        assert placed.symbol == call.symbol
        assert placed.legs == ()
        assert placed.position_effect is PositionEffect.open
        assert placed.limit_price == D("0.01")
        await run.fake.match()  # a cent under any ask: it rests
        working = await adapter.get_order(account, placed.broker_order_id)
        assert working.status is OrderStatus.accepted
        canceled = await adapter.cancel_order(account, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.cancel_order(account, placed.broker_order_id)


async def test_a_resting_combo_is_canceled_whole() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        placed = await adapter.place_order(account, vertical(vertical_legs(run), D("0.01")))
        await run.fake.match()
        canceled = await adapter.cancel_order(account, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        assert [g.filled_quantity for g in canceled.legs] == [0, 0]
        assert await adapter.get_positions(account) == []


async def test_preview_is_the_impact_and_places_nothing() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        legs = vertical_legs(run)
        preview = await adapter.preview_order(account, vertical(legs, D("1.50")))
        assert preview.source is PreviewSource.broker
        assert preview.direction is PriceEffect.debit
        assert preview.estimated_cash_change == D(-300)  # 1.50 x 2 x 100, cash leaves
        assert preview.fees == D("0.65")
        assert preview.rejections == ()
        contradicted = await adapter.preview_order(
            account, vertical(legs, D("1.50"), effect=PriceEffect.credit)
        )
        assert contradicted.rejections  # a debit spread said to be a credit
        equity = await adapter.preview_order(
            account,
            OrderRequest(
                client_order_id="bg-eq",
                symbol="AAPL",
                side=OrderSide.buy,
                quantity=D(3),
                order_type=OrderType.limit,
                time_in_force=TimeInForce.day,
                limit_price=D(10),
            ),
        )
        assert equity.estimated_cash_change == D(-30)
        assert equity.direction is PriceEffect.debit
        assert run.account.options.orders == {}
        assert run.account.orders == {}


async def test_a_price_effect_the_impact_contradicts_places_nothing() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        with pytest.raises(errors.UnsupportedOrder, match="impact"):
            await adapter.place_order(
                run.account.id, vertical(vertical_legs(run), D("1"), effect=PriceEffect.credit)
            )
        assert run.account.options.orders == {}
        assert [p for _, p in trading_requests(run)] == [
            f"/accounts/{run.account.id}/trading/options/impact"
        ]


@pytest.mark.parametrize("broker", ["ALPACA", "FIDELITY"])
async def test_a_brokerage_without_options_is_refused_before_any_trading_request(
    broker: str,
) -> None:
    async with running_fake(broker=broker) as run:
        adapter = run.adapter()
        legs = (
            OrderLeg(contract(run, 0).symbol, OrderSide.buy, 1, PositionEffect.open),
            OrderLeg(contract(run, 2).symbol, OrderSide.sell, 1, PositionEffect.open),
        )
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.place_order(run.account.id, vertical(legs, D("1")))
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.preview_order(run.account.id, single(contract(run, 0).symbol))
        assert trading_requests(run) == []
        assert run.account.options.orders == {}


def _bad_orders(run: Running) -> list[tuple[str, OrderRequest]]:
    legs = vertical_legs(run)
    other = OptionContract("MSFT", "MSFT", expiry(run), OptionRight.call, D(400)).symbol
    five = tuple(
        OrderLeg(contract(run, i).symbol, OrderSide.buy, 1, PositionEffect.open) for i in range(5)
    )
    return [
        ("fifth leg", vertical(five, D(1))),
        (
            "ratio of zero",
            vertical(
                (legs[0], OrderLeg(legs[1].symbol, OrderSide.sell, 0, PositionEffect.open)), D(1)
            ),
        ),
        (
            "common factor",
            vertical(tuple(OrderLeg(g.symbol, g.side, 2, g.position_effect) for g in legs), D(1)),
        ),
        ("fractional quantity", vertical(legs, D(1), qty="1.5")),
        (
            "another underlying",
            vertical((legs[0], OrderLeg(other, OrderSide.sell, 1, PositionEffect.open)), D(1)),
        ),
        (
            "same contract twice",
            vertical(
                (legs[0], OrderLeg(legs[0].symbol, OrderSide.sell, 1, PositionEffect.open)), D(1)
            ),
        ),
        ("no limit price", vertical(legs, D(0))),
        (
            "no position effect",
            OrderRequest(
                "bg-x", legs[0].symbol, OrderSide.buy, D(1), OrderType.market, TimeInForce.day
            ),
        ),
        ("fractional contracts", single(legs[0].symbol, qty="0.5")),
        (
            "not a contract",
            vertical((legs[0], OrderLeg("AAPL", OrderSide.sell, 1, PositionEffect.open)), D(1)),
        ),
        (
            "legs of another underlying than the order",
            OrderRequest(
                "bg-y",
                "MSFT",
                OrderSide.buy,
                D(1),
                OrderType.limit,
                TimeInForce.day,
                limit_price=D(1),
                legs=legs,
                price_effect=PriceEffect.debit,
            ),
        ),
    ]


async def test_bad_input_is_refused_before_any_request() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        for name, order in _bad_orders(run):
            try:
                await adapter.place_order(run.account.id, order)
            except errors.UnsupportedOrder:
                continue
            pytest.fail(f"{name}: not refused")
        assert run.fake.requests == []


async def test_option_quotes_come_per_contract_beside_equity_quotes() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        call = contract(run, 0)
        quotes = await adapter.get_quotes([call.symbol, "AAPL"])
        assert set(quotes) == {call.symbol, "AAPL"}
        model = run.fake.options.quote(call, datetime.now(UTC))
        assert quotes[call.symbol].last == model.mark
        assert quotes[call.symbol].bid == quotes[call.symbol].ask == model.mark
        paths = [p for _, p in run.fake.requests if "/quotes" in p]
        assert any(p.endswith("/quotes/options") for p in paths)
        unknown = OptionContract(UNDERLYING, UNDERLYING, call.expiration, OptionRight.put, D(1))
        assert await adapter.get_quotes([unknown.symbol]) == {}


async def test_lifecycle_activities_are_transactions_of_the_contract() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        legs = vertical_legs(run)
        price = (natural_debit(run, legs) * D("1.2")).quantize(D("0.01"))
        await adapter.place_order(account, vertical(legs, price, qty="1"))
        await run.fake.match()
        long, short = (OptionContract.parse(g.symbol) for g in legs)
        run.fake.record_option_event(account, "OPTIONEXERCISE", long, D(1))
        run.fake.record_option_event(account, "OPTIONASSIGNMENT", short, D(-1))
        run.fake.record_option_event(account, "OPTIONEXPIRATION", contract(run, 5), D(1))
        found = await adapter.get_transactions(account, None, None, None)
        events = {t.type: t for t in found if t.type.startswith("option_")}
        assert set(events) == {"option_exercise", "option_assignment", "option_expiration"}
        assert events["option_exercise"].symbol == long.symbol
        assert events["option_assignment"].symbol == short.symbol
        trades = [t for t in found if t.type == "buy" and t.symbol == long.symbol]
        assert len(trades) == 1
        only = await adapter.get_transactions(account, None, None, "option_assignment")
        assert [t.symbol for t in only] == [short.symbol]
        assert await adapter.get_positions(account) == []


@given(
    ratios=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    units=st.integers(1, 50),
    sides=st.lists(st.sampled_from(list(OrderSide)), min_size=4, max_size=4),
)
def test_the_form_sends_ratio_times_quantity_of_each_padded_contract(
    ratios: list[int], units: int, sides: list[OrderSide]
) -> None:
    if math.gcd(*ratios) != 1:
        ratios = [*ratios[:-1], 1]
    day = date(2030, 1, 18)
    legs = tuple(
        OrderLeg(
            OptionContract(UNDERLYING, UNDERLYING, day, OptionRight.call, D(400 + 5 * i)).symbol,
            sides[i],
            ratio,
            PositionEffect.open,
        )
        for i, ratio in enumerate(ratios)
    )
    form = options.mleg_form(vertical(legs, D("1.25"), qty=str(units)))
    assert [leg["units"] for leg in form["legs"]] == [r * units for r in ratios]
    for sent, leg in zip(form["legs"], legs, strict=True):
        assert len(sent["instrument"]["symbol"]) == 21
        assert OptionContract.parse(sent["instrument"]["symbol"]).symbol == leg.symbol
        assert sent["action"] == f"{leg.side.value.upper()}_TO_OPEN"
    assert (form["price_effect"], form["limit_price"]) == ("DEBIT", "1.25")


async def test_a_lost_placement_answer_is_unknown_and_found_by_its_legs() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        request = vertical(vertical_legs(run), D("0.05"))
        submitted = datetime.now(UTC)
        run.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(account, request)
        [entered] = run.account.options.orders.values()
        found = await adapter.find_order_by_fingerprint(
            account, OrderFingerprint.of(request, submitted), frozenset()
        )
        assert found is not None
        assert found.broker_order_id == entered.id
        other = vertical(vertical_legs(run)[::-1], D("0.05"))  # same contracts, sides swapped
        swapped = tuple(
            OrderLeg(
                g.symbol,
                OrderSide.sell if g.side is OrderSide.buy else OrderSide.buy,
                1,
                g.position_effect,
            )
            for g in other.legs
        )
        assert (
            await adapter.find_order_by_fingerprint(
                account,
                OrderFingerprint.of(vertical(swapped, D("0.05")), submitted),
                frozenset(),
            )
            is None
        )


async def test_a_market_combo_without_a_price_effect_fills() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        legs = vertical_legs(run)
        request = OrderRequest(
            client_order_id="bg-market-combo",
            symbol=UNDERLYING,
            side=OrderSide.buy,
            quantity=D(1),
            order_type=OrderType.market,
            time_in_force=TimeInForce.day,
            legs=legs,
        )
        placed = await adapter.place_order(account, request)
        assert placed.limit_price is None
        assert placed.price_effect is None
        await run.fake.match()
        filled = await adapter.get_order(account, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.price_effect is PriceEffect.debit  # SnapTrade's reading of the fills
        assert sorted(p.quantity for p in await adapter.get_positions(account)) == [-1, 1]


@pytest.mark.parametrize(("broker", "takes"), [("SCHWAB", True), ("ALPACA", False)])
async def test_the_checks_before_anything_is_written_read_only(broker: str, takes: bool) -> None:
    async with running_fake(broker=broker) as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOrderCheck)
        call = contract(run, 0)
        order = vertical(vertical_legs(run), D("1"))
        if takes:
            await adapter.check_symbol(call.symbol)
            await adapter.check_order(run.account.id, order)
            await adapter.check_order(run.account.id, single(call.occ_padded))
        else:
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.check_symbol(call.symbol)
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.check_order(run.account.id, order)
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol("AAPL261340C00150000")  # no 40th of December
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.check_order(run.account.id, vertical(vertical_legs(run), D(1), qty="0.5"))
        await adapter.check_order(
            run.account.id,
            OrderRequest("bg-eq", "AAPL", OrderSide.buy, D(1), OrderType.market, TimeInForce.day),
        )  # an equity order: left to the impact check
        assert trading_requests(run) == []
        assert all(method == "GET" for method, _ in run.fake.requests)


async def test_a_single_leg_option_is_replaced_and_a_combo_is_not() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        call = contract(run, 1)
        placed = await adapter.place_order(account, single(call.symbol))
        moved = await adapter.modify_order(
            account, placed.broker_order_id, OrderChanges(limit_price=D("0.02"), quantity=D(2))
        )
        assert moved.replaces == placed.broker_order_id
        assert (moved.symbol, moved.quantity, moved.limit_price) == (call.symbol, 2, D("0.02"))
        assert moved.position_effect is PositionEffect.open
        old = await adapter.get_order(account, placed.broker_order_id)
        assert old.status is OrderStatus.replaced
        combo = await adapter.place_order(account, vertical(vertical_legs(run), D("0.01")))
        before = len(trading_requests(run))
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.modify_order(
                account, combo.broker_order_id, OrderChanges(limit_price=D("0.02"))
            )
        assert len(trading_requests(run)) == before  # refused before any request


async def test_without_an_impact_at_the_brokerage_the_order_is_placed_directly() -> None:
    async with running_fake() as run:
        run.fake.faults.no_option_impact = True
        adapter = run.adapter()
        account = run.account.id
        legs = vertical_legs(run)
        placed = await adapter.place_order(account, vertical(legs, D("0.05")))
        assert placed.status is OrderStatus.accepted
        assert [p for _, p in trading_requests(run)] == [
            f"/accounts/{account}/trading/options/impact",
            f"/accounts/{account}/trading/options",
        ]
        with pytest.raises(errors.NotSupported):
            await adapter.preview_order(account, vertical(legs, D("0.05")))


def test_an_impact_without_a_direction_is_a_warning_not_a_guess() -> None:
    legs = (
        OrderLeg("AAPL270115C00200000", OrderSide.buy, 1, PositionEffect.open),
        OrderLeg("AAPL270115C00210000", OrderSide.sell, 1, PositionEffect.open),
    )
    body = {"estimated_cash_change": "250", "cash_change_direction": "UNKNOWN"}
    preview = options.preview_from_impact(body, vertical(legs, D("2.5"), qty="1"))
    assert (preview.direction, preview.estimated_cash_change) == (PriceEffect.debit, D(-250))
    assert preview.warnings
    assert preview.fees == 0
    credit = options.preview_from_impact(
        {**body, "cash_change_direction": "CREDIT", "estimated_fee_total": "1.30"},
        vertical(legs[::-1], D("2.5"), qty="1", effect=PriceEffect.credit),
    )
    assert (credit.estimated_cash_change, credit.fees, credit.rejections) == (D(250), D("1.3"), ())
    with pytest.raises(errors.UnknownBrokerValue):
        options.preview_from_impact(
            {**body, "cash_change_direction": "SIDEWAYS"}, vertical(legs, D("2.5"))
        )

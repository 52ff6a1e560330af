"""Tradier options through the adapter against the fake over real HTTP: discovery, single-leg
and multileg orders (a four-leg iron condor placed, filled with its legs, four positions),
preview, modify and cancel, and leg fills on the account stream."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    ExpirationType,
    Fill,
    OptionChainQuery,
    OptionContract,
    OptionRight,
    OrderChanges,
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
    SupportsOrderPreview,
    TimeInForce,
)
from app.brokers.tradier.adapter import TRADIER_CAPABILITIES
from tests.brokers.support import limit_buy
from tests.brokers.tradier.support import Running, running_fake
from tests.brokers.tradier.test_stream import next_update, open_stream

D = Decimal
UNDERLYING = "AAPL"


def expiry(run: Running, weeks: int = 4) -> date:
    """A listed expiration about ``weeks`` out in the fake's (the paper) option market."""
    today = datetime.now(UTC).date()
    listed = [e.expiration for e in run.fake.options.expirations(UNDERLYING, today)]
    return min(listed, key=lambda d: abs(d - (today + timedelta(weeks=weeks))))


def contract(run: Running, offset: int, right: OptionRight, day: date) -> str:
    strikes = run.fake.options.strikes(UNDERLYING)
    strike = strikes[len(strikes) // 2 + offset]
    return OptionContract(UNDERLYING, UNDERLYING, day, right, strike).symbol


def condor_legs(run: Running, effect: PositionEffect = PositionEffect.open) -> tuple[OrderLeg, ...]:
    day = expiry(run)
    put, call = OptionRight.put, OptionRight.call
    opens = effect is PositionEffect.open
    buy, sell = (OrderSide.buy, OrderSide.sell) if opens else (OrderSide.sell, OrderSide.buy)
    return (
        OrderLeg(contract(run, -4, put, day), buy, 1, effect),
        OrderLeg(contract(run, -2, put, day), sell, 1, effect),
        OrderLeg(contract(run, 2, call, day), sell, 1, effect),
        OrderLeg(contract(run, 4, call, day), buy, 1, effect),
    )


def condor(
    client_order_id: str, legs: tuple[OrderLeg, ...], price: str, qty: str = "2"
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=UNDERLYING,
        side=OrderSide.sell,
        quantity=D(qty),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=D(price),
        price_effect=PriceEffect.credit,
        legs=legs,
    )


def current_credit(run: Running, legs: tuple[OrderLeg, ...]) -> Decimal:
    """What the legs would fetch now: sells at the bid, less buys at the ask."""
    now = datetime.now(UTC)
    total = D(0)
    for leg in legs:
        quote = run.fake.options.quote(OptionContract.parse(leg.symbol), now)
        total += quote.bid * leg.ratio if leg.side is OrderSide.sell else -quote.ask * leg.ratio
    return total


def single(
    client_order_id: str,
    symbol: str,
    side: OrderSide,
    effect: PositionEffect,
    qty: str = "3",
    *,
    order_type: OrderType = OrderType.market,
    price: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        quantity=D(qty),
        order_type=order_type,
        time_in_force=TimeInForce.day,
        limit_price=None if price is None else D(price),
        position_effect=effect,
    )


def test_capabilities_state_options_multileg_and_preview() -> None:
    caps = TRADIER_CAPABILITIES
    assert caps.asset_classes[AssetClass.option] is Support.native
    assert (caps.multi_leg, caps.preview) == (Support.native, Support.native)
    options = caps.options
    assert (options.chain, options.expirations, options.greeks) == (Support.native,) * 3
    assert options.max_legs == 4
    assert options.combo_order_types == {OrderType.market, OrderType.limit}
    assert options.combo_time_in_force == {TimeInForce.day, TimeInForce.gtc}


async def test_expirations_and_a_chain_with_greeks() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOptionChains)
        expirations = await adapter.list_option_expirations(UNDERLYING)
        today = datetime.now(UTC).date()
        listed = run.fake.options.expirations(UNDERLYING, today)
        assert [(e.expiration, e.expiration_type) for e in expirations] == [
            (e.expiration, e.expiration_type) for e in listed
        ]
        assert {e.expiration_type for e in expirations} >= {
            ExpirationType.weekly,
            ExpirationType.standard,
        }
        await adapter.list_option_expirations(UNDERLYING)  # remembered for a while
        assert run.fake.requests.count(("GET", "/v1/markets/options/expirations")) == 1
        with pytest.raises(errors.UnknownSymbol):
            await adapter.list_option_expirations("NOPE")

        day = expiry(run)
        chain = await adapter.get_option_chain(OptionChainQuery(UNDERLYING, expiration=day))
        strikes = run.fake.options.strikes(UNDERLYING)
        assert len(chain) == 2 * len(strikes)
        [request] = [r for r in run.fake.recorded if r.path == "/v1/markets/options/chains"]
        assert request.query == {
            "symbol": UNDERLYING,
            "expiration": day.isoformat(),
            "greeks": "true",
        }
        quote = chain[0]
        assert quote.source == "orats"
        assert quote.greeks is not None
        assert quote.greeks.iv is not None
        assert quote.greeks.iv > 0
        assert quote.bid is not None
        assert quote.ask is not None
        assert quote.bid <= quote.ask
        calls = [q for q in chain if q.contract.right is OptionRight.call]
        deltas = [q.greeks.delta for q in calls if q.greeks is not None and q.greeks.delta]
        assert deltas == sorted(deltas, reverse=True)  # call delta falls as the strike rises

        low, high = strikes[15], strikes[18]
        puts = await adapter.get_option_chain(
            OptionChainQuery(
                UNDERLYING, expiration=day, right=OptionRight.put, strike_gte=low, strike_lte=high
            )
        )
        assert [q.contract.strike for q in puts] == strikes[15:19]
        assert {q.contract.right for q in puts} == {OptionRight.put}
        assert (
            await adapter.get_option_chain(
                OptionChainQuery(UNDERLYING, expiration=day + timedelta(days=1))
            )
            == []
        )  # not an expiration: {"options": null}


async def test_a_single_leg_option_round_trip() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        call = contract(run, 0, OptionRight.call, expiry(run))
        placed = await adapter.place_order(
            number, single("bg-call-1", call, OrderSide.buy, PositionEffect.open)
        )
        [post] = [r for r in run.fake.recorded if r.method == "POST"]
        assert (post.form["class"], post.form["symbol"]) == ("option", UNDERLYING)
        assert (post.form["option_symbol"], post.form["side"]) == (call, "buy_to_open")
        assert (placed.symbol, placed.position_effect, placed.status) == (
            call,
            PositionEffect.open,
            OrderStatus.submitted,
        )
        assert await run.fake.match() == 1
        filled = await adapter.get_order(number, placed.broker_order_id)
        assert (filled.status, filled.filled_quantity) == (OrderStatus.filled, D(3))

        [position] = await adapter.get_positions(number)
        assert position.contract == OptionContract.parse(call)
        assert position.asset_class is AssetClass.option
        assert position.quantity == D(3)
        assert position.market_value == position.current_price * 3 * 100
        assert filled.avg_fill_price is not None
        assert position.avg_cost == filled.avg_fill_price

        closing = await adapter.place_order(
            number, single("bg-call-2", call, OrderSide.sell, PositionEffect.close)
        )
        assert closing.position_effect is PositionEffect.close
        await run.fake.match()
        assert await adapter.get_positions(number) == []


async def test_an_iron_condor_fills_with_its_four_legs_into_four_positions() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        legs = condor_legs(run)
        credit = current_credit(run, legs)
        assert credit > 0
        ask_for = (credit * D("0.8")).quantize(D("0.01"))
        placed = await adapter.place_order(number, condor("bg-condor-1", legs, str(ask_for)))
        [post] = [r for r in run.fake.recorded if r.method == "POST"]
        # The adapter writes the plain decimal (2.70 goes out as "2.7"): compare as numbers.
        assert (post.form["class"], post.form["type"], D(post.form["price"])) == (
            "multileg",
            "credit",
            ask_for,
        )
        assert post.form["quantity[3]"] == "2"
        assert (placed.status, placed.quantity, placed.price_effect, placed.limit_price) == (
            OrderStatus.submitted,
            D(2),
            PriceEffect.credit,
            ask_for,
        )
        assert [leg.symbol for leg in placed.legs] == [leg.symbol for leg in legs]

        assert await run.fake.match() == 1
        filled = await adapter.get_order(number, placed.broker_order_id)
        assert (filled.status, filled.filled_quantity) == (OrderStatus.filled, D(2))
        assert [
            (x.symbol, x.side, x.ratio, x.position_effect, x.filled_quantity) for x in filled.legs
        ] == [(x.symbol, x.side, 1, PositionEffect.open, D(2)) for x in legs]
        assert all(x.avg_fill_price is not None for x in filled.legs)
        assert filled.avg_fill_price is not None
        assert filled.avg_fill_price >= ask_for
        [listed] = [o for o in await adapter.list_orders(number, "all", 10) if o.legs]
        assert listed.broker_order_id == placed.broker_order_id

        positions = {p.symbol: p for p in await adapter.get_positions(number)}
        assert {s: p.quantity for s, p in positions.items()} == {
            x.symbol: D(2) if x.side is OrderSide.buy else D(-2) for x in legs
        }
        assert all(p.contract is not None for p in positions.values())
        shorts = [p for p in positions.values() if p.quantity < 0]
        assert all(p.market_value < 0 for p in shorts)  # long and short legs stay apart

        balances = await adapter.get_balances(number)
        assert balances.cash == D(100000) + filled.avg_fill_price * 2 * 100


async def test_preview_places_nothing_and_reports_the_credit() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOrderPreview)
        number = run.account.number
        legs = condor_legs(run)
        order = condor("bg-preview-1", legs, "0.50")
        preview = await adapter.preview_order(number, order)
        [post] = [r for r in run.fake.recorded if r.method == "POST"]
        assert post.form["preview"] == "true"
        assert run.fake.order_count(number) == 0
        assert (preview.source, preview.direction, preview.rejections) == (
            PreviewSource.broker,
            PriceEffect.credit,
            (),
        )
        assert preview.fees == D("0.35") * 8  # 4 legs x 2 contracts
        assert preview.estimated_cash_change > 0  # a credit, less fees
        assert preview.buying_power_change is not None
        assert preview.buying_power_change < 0

        too_big = single(
            "bg-preview-2",
            contract(run, -6, OptionRight.call, expiry(run, 20)),
            OrderSide.buy,
            PositionEffect.open,
            qty="10000",
        )
        refused = await adapter.preview_order(number, too_big)
        assert "DayTradingBuyingPowerExceeded" in refused.rejections
        assert run.fake.order_count(number) == 0


async def test_a_resting_condor_is_modified_then_canceled_as_a_whole() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        legs = condor_legs(run)
        far = (current_credit(run, legs) * 3 + 5).quantize(D("0.01"))  # never fills
        placed = await adapter.place_order(number, condor("bg-condor-2", legs, str(far)))
        await run.fake.match()
        changed = await adapter.modify_order(
            number, placed.broker_order_id, OrderChanges(limit_price=far + 1)
        )
        assert changed.broker_order_id == placed.broker_order_id
        assert (changed.limit_price, changed.price_effect) == (far + 1, PriceEffect.credit)
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.modify_order(number, placed.broker_order_id, OrderChanges(quantity=D(3)))
        canceled = await adapter.cancel_order(number, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        assert [leg.filled_quantity for leg in canceled.legs] == [D(0)] * 4
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.cancel_order(number, placed.broker_order_id)
        assert await adapter.get_positions(number) == []


async def test_a_leg_on_an_unlisted_contract_is_refused_by_tradier() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        legs = condor_legs(run)
        odd = OptionContract.parse(legs[0].symbol)
        unlisted = OptionContract(UNDERLYING, UNDERLYING, odd.expiration, odd.right, D("1.5"))
        bad = (OrderLeg(unlisted.symbol, OrderSide.buy, 1, PositionEffect.open), *legs[1:])
        with pytest.raises(errors.UnknownSymbol):
            await adapter.place_order(run.account.number, condor("bg-bad-1", bad, "1.00"))
        assert run.fake.order_count(run.account.number) == 0


async def test_the_stream_reports_each_legs_fill() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        before = await adapter.place_order(number, limit_buy("bg-before"))
        stream = open_stream(run, adapter, number)
        updates = stream.updates()
        try:
            caught_up = await next_update(updates)  # the REST catch-up comes first
            assert caught_up.order.broker_order_id == before.broker_order_id
            legs = condor_legs(run)
            ask_for = (current_credit(run, legs) * D("0.8")).quantize(D("0.01"))
            placed = await adapter.place_order(number, condor("bg-condor-3", legs, str(ask_for)))
            await run.fake.match()
            fills: list[Fill] = []
            while True:
                update = await next_update(updates)
                if update.order.broker_order_id == before.broker_order_id:
                    continue  # the equity order's own events (match() looked at it too)
                assert update.order.broker_order_id == placed.broker_order_id  # legs -> parent
                assert update.order.legs
                fills.extend(update.fills)
                if update.order.status is OrderStatus.filled and len(fills) == 4:
                    break
            assert sorted(f.leg_symbol or "" for f in fills) == sorted(x.symbol for x in legs)
            assert {f.quantity for f in fills} == {D(2)}
            filled = update.order
            prices = {x.symbol: x.avg_fill_price for x in filled.legs}
            assert all(f.price == prices[f.leg_symbol or ""] for f in fills)
            assert len({f.fill_id for f in fills}) == 4
        finally:
            await updates.aclose()


async def test_leg_fills_seen_in_a_catch_up_are_not_reported_again() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        legs = condor_legs(run)
        ask_for = (current_credit(run, legs) * D("0.8")).quantize(D("0.01"))
        placed = await adapter.place_order(number, condor("bg-condor-4", legs, str(ask_for)))
        await run.fake.match()  # filled before the stream is open
        stream = open_stream(run, adapter, number)
        updates = stream.updates()
        try:
            caught_up = await next_update(updates)
            assert caught_up.order.status is OrderStatus.filled
            assert caught_up.fills == ()
            _user, _account, order = run.fake.find_order(int(placed.broker_order_id))
            run.fake._broadcast(run.user, order)  # the same events once more
            again = await next_update(updates)
            assert again.order.broker_order_id == placed.broker_order_id
            assert again.fills == ()
        finally:
            await updates.aclose()

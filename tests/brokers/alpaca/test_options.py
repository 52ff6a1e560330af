"""Alpaca options against the fake over real HTTP: chain, expirations, single-leg and
multi-leg orders (an iron condor placed, filled with its four legs, four positions), replace
and cancel of the whole order, and the refusals made before any call."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.alpaca.adapter import ALPACA_CAPABILITIES
from app.brokers.base import (
    AssetClass,
    OptionChainQuery,
    OptionContract,
    OptionRight,
    OrderChanges,
    OrderLeg,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
    Support,
    SupportsOptionChains,
    TimeInForce,
)
from tests.brokers.alpaca.options import (
    UNDERLYING,
    combo,
    contract,
    expiration,
    iron_condor_legs,
    single,
)
from tests.brokers.alpaca.support import running_fake


def test_capabilities_state_options_per_alpaca() -> None:
    caps = ALPACA_CAPABILITIES
    assert caps.asset_classes[AssetClass.option] is Support.native
    assert caps.multi_leg is Support.native
    assert caps.preview is Support.emulated
    options = caps.options
    assert (options.chain, options.expirations, options.greeks) == (
        Support.native,
        Support.emulated,
        Support.native,
    )
    assert options.max_legs == 4
    assert options.combo_order_types == {OrderType.market, OrderType.limit}
    assert options.combo_time_in_force == {TimeInForce.day}


async def test_expirations_are_the_listed_dates() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOptionChains)
        found = await adapter.list_option_expirations(UNDERLYING)
        today = datetime.now(UTC).date()
        listed = run.fake.options.expirations(UNDERLYING, today)
        assert [e.expiration for e in found] == [e.expiration for e in listed]
        assert all(e.expiration >= today for e in found)
        # Alpaca's default window (only this week) was not what was asked for.
        assert len(found) > 2
        with pytest.raises(errors.UnknownSymbol):
            await adapter.list_option_expirations("NOPE")
        assert await adapter.list_option_expirations("BTC-USD") == []  # listed, no options


async def test_the_chain_joins_contracts_and_snapshots() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        day = expiration(run.fake)
        query = OptionChainQuery(
            UNDERLYING, expiration=day, right=OptionRight.call, strike_gte=Decimal(0)
        )
        quotes = await adapter.get_option_chain(query)
        strikes = run.fake.options.strikes(UNDERLYING)
        assert [q.contract.strike for q in quotes] == strikes
        assert {q.contract.expiration for q in quotes} == {day}
        assert {q.contract.right for q in quotes} == {OptionRight.call}
        middle = quotes[len(quotes) // 2]
        model = run.fake.options.quote(middle.contract, datetime.now(UTC))
        assert (middle.bid, middle.ask) == (model.bid, model.ask)
        assert middle.last == model.last
        assert middle.greeks is not None
        assert middle.greeks.delta is not None
        assert middle.greeks == model.greeks  # Alpaca's numbers, read as exact decimals
        assert middle.contract.multiplier == 100
        assert isinstance(middle.open_interest, int)
        assert middle.source == "broker"
        # Both calls carried the filters, and both followed their pages.
        assert ("GET", f"/v1beta1/options/snapshots/{UNDERLYING}") in run.fake.requests
        low, high = strikes[10], strikes[12]
        narrow = await adapter.get_option_chain(
            OptionChainQuery(UNDERLYING, expiration=day, strike_gte=low, strike_lte=high)
        )
        assert len(narrow) == 6  # three strikes, call and put
        with pytest.raises(errors.UnknownSymbol):
            await adapter.get_option_chain(OptionChainQuery("NOPE"))


async def test_a_whole_chain_follows_the_pages() -> None:
    async with running_fake() as run:
        quotes = await run.adapter().get_option_chain(OptionChainQuery(UNDERLYING))
        today = datetime.now(UTC).date()
        per_day = len(run.fake.options.strikes(UNDERLYING)) * 2
        expected = per_day * len(run.fake.options.expirations(UNDERLYING, today))
        assert len(quotes) == expected > 1000  # more than one snapshots page
        assert all(q.bid is not None for q in quotes)


async def test_a_single_leg_option_round_trip() -> None:
    async with running_fake(cash="100000") as run:
        adapter = run.adapter()
        call = contract(run.fake, OptionRight.call, 0)
        await adapter.check_symbol(call.occ_padded)  # padded input is accepted
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol("AAPL" + call.symbol[4:-8] + "00000001")
        placed = await adapter.place_order(
            run.account.id, single("bg-o-1", call.occ_padded, qty="2")
        )
        assert (placed.symbol, placed.quantity, placed.status) == (
            call.symbol,
            Decimal(2),
            OrderStatus.accepted,
        )
        assert placed.position_effect is PositionEffect.open
        assert await run.fake.match() == 1
        filled = await adapter.get_order(run.account.id, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        model = run.fake.options.quote(call, datetime.now(UTC))
        assert filled.avg_fill_price == model.ask
        [position] = await adapter.get_positions(run.account.id)
        assert position.asset_class is AssetClass.option
        assert position.contract is not None
        assert position.contract.symbol == call.symbol
        assert position.quantity == Decimal(2)
        assert position.market_value == position.current_price * 2 * 100
        assert position.contract == call  # its terms, read from the contract endpoint
        one = await adapter.get_position(run.account.id, call.occ_padded)
        assert one is not None
        assert (one.quantity, one.contract) == (Decimal(2), call)
        lookups = [r for r in run.fake.requests if r[1] == f"/v2/options/contracts/{call.symbol}"]
        assert len(lookups) == 2  # check_symbol, then the first position read: remembered
        balances = await adapter.get_balances(run.account.id)
        assert balances.cash == Decimal(100000) - model.ask * 2 * 100
        [fill, _deposit] = await adapter.get_transactions(run.account.id, None, None, None)
        assert (fill.symbol, fill.amount) == (call.symbol, -(model.ask * 2 * 100))

        closing = single("bg-o-2", call.symbol, OrderSide.sell, PositionEffect.close, qty="2")
        closed = await adapter.place_order(run.account.id, closing)
        assert closed.position_effect is PositionEffect.close
        await run.fake.match()
        assert await adapter.get_positions(run.account.id) == []
        # Closing what is not held: Alpaca's "insufficient qty available".
        with pytest.raises(errors.InsufficientFunds):
            await adapter.place_order(run.account.id, replace(closing, client_order_id="bg-o-3"))


async def test_option_order_terms_are_refused_before_any_call() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        symbol = contract(run.fake, OptionRight.put, -1).symbol
        before = len(run.fake.requests)
        refused = [
            single("bg-x-1", symbol, qty="1.5"),
            single("bg-x-2", symbol, order_type=OrderType.stop),
            single("bg-x-3", symbol, time_in_force=TimeInForce.ioc),
        ]
        for order in refused:
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.place_order(run.account.id, order)
        legs = iron_condor_legs(run.fake)
        for order in [
            combo("bg-x-4", legs, time_in_force=TimeInForce.gtc),
            combo("bg-x-5", legs, limit_price="-1.00"),  # a signed price is never passed on
            combo("bg-x-6", legs, limit_price="1.00", effect=PriceEffect.even),
            combo("bg-x-7", legs, limit_price="1.00", effect=None),
            combo("bg-x-8", legs[:1]),
            combo("bg-x-9", (*legs, legs[0])),
            combo("bg-x-10", (legs[0], legs[0])),
            combo("bg-x-11", legs, qty="0.5"),
            combo(
                "bg-x-12", (*legs[:3], OrderLeg("AAPL", OrderSide.buy, 100, PositionEffect.open))
            ),
        ]:
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.place_order(run.account.id, order)
        assert len(run.fake.requests) == before


async def test_an_iron_condor_is_placed_filled_with_four_legs_and_four_positions() -> None:
    async with running_fake(cash="10000") as run:
        adapter = run.adapter()
        legs = iron_condor_legs(run.fake)
        order = combo("bg-ic-1", legs, qty="2", limit_price="0.05", effect=PriceEffect.credit)
        placed = await adapter.place_order(run.account.id, order)
        assert placed.symbol == UNDERLYING
        assert (placed.side, placed.price_effect, placed.limit_price) == (
            OrderSide.sell,
            PriceEffect.credit,
            Decimal("0.05"),
        )
        assert [(leg.symbol, leg.side, leg.ratio) for leg in placed.legs] == [
            (leg.symbol, leg.side, leg.ratio) for leg in legs
        ]
        assert all(leg.position_effect is PositionEffect.open for leg in placed.legs)
        sent = run.fake.accounts[run.account.key_id].orders[placed.broker_order_id]
        assert sent.limit_price == Decimal("-0.05")  # the credit went out negative

        assert await run.fake.match() == 1
        filled = await adapter.get_order(run.account.id, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.filled_quantity == Decimal(2)
        assert len(filled.legs) == 4
        now = datetime.now(UTC)
        for leg in filled.legs:
            assert leg.filled_quantity == Decimal(2)
            model = run.fake.options.quote(contract_of(leg.symbol), now)
            assert leg.avg_fill_price == (model.ask if leg.side is OrderSide.buy else model.bid)
            assert leg.broker_leg_id
        net = sum(
            (
                (leg.avg_fill_price or Decimal(0)) * (1 if leg.side is OrderSide.buy else -1)
                for leg in filled.legs
            ),
            Decimal(0),
        )
        assert net < 0
        assert filled.avg_fill_price == -net

        positions = {p.symbol: p for p in await adapter.get_positions(run.account.id)}
        assert set(positions) == {leg.symbol for leg in legs}
        for leg in legs:
            expected = Decimal(2) if leg.side is OrderSide.buy else Decimal(-2)
            position = positions[leg.symbol]
            assert position.quantity == expected
            assert position.contract is not None
            assert (position.market_value < 0) == (expected < 0)
            assert position.market_value == position.current_price * expected * 100

        # The same order is found by our client order id, with its legs.
        found = await adapter.find_order_by_client_id(run.account.id, "bg-ic-1")
        assert found is not None
        assert len(found.legs) == 4
        [listed] = await adapter.list_orders(run.account.id, "closed", 10)
        assert listed.legs == filled.legs

        # Closing the condor: the reverse legs, a debit.
        close = combo(
            "bg-ic-2",
            iron_condor_legs(run.fake, PositionEffect.close),
            qty="2",
            limit_price="50",
            effect=PriceEffect.debit,
        )
        closed = await adapter.place_order(run.account.id, close)
        assert closed.price_effect is PriceEffect.debit
        await run.fake.match()
        assert await adapter.get_positions(run.account.id) == []


async def test_a_resting_condor_is_replaced_and_canceled_as_a_whole() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        far = combo("bg-ic-r", iron_condor_legs(run.fake), limit_price="500")  # never reached
        placed = await adapter.place_order(run.account.id, far)
        assert await run.fake.match() == 0
        account = run.fake.accounts[run.account.key_id]
        leg_id = placed.legs[0].broker_leg_id
        assert leg_id is not None
        with pytest.raises(errors.OrderNotModifiable):  # a leg on its own: refused by Alpaca
            await adapter.cancel_order(run.account.id, leg_id)

        replaced = await adapter.modify_order(
            run.account.id,
            placed.broker_order_id,
            OrderChanges(quantity=Decimal(3), limit_price=Decimal("400")),
        )
        assert replaced.replaces == placed.broker_order_id
        assert (replaced.quantity, replaced.limit_price, replaced.price_effect) == (
            Decimal(3),
            Decimal(400),
            PriceEffect.credit,
        )
        assert account.orders[replaced.broker_order_id].limit_price == Decimal(-400)
        assert [leg.ratio for leg in replaced.legs] == [1, 1, 1, 1]
        # A quantity change alone keeps the signed price.
        resized = await adapter.modify_order(
            run.account.id, replaced.broker_order_id, OrderChanges(quantity=Decimal(1))
        )
        assert account.orders[resized.broker_order_id].limit_price == Decimal(-400)
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.modify_order(
                run.account.id,
                resized.broker_order_id,
                OrderChanges(time_in_force=TimeInForce.gtc),
            )

        canceled = await adapter.cancel_order(run.account.id, resized.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        assert {leg.broker_leg_id for leg in canceled.legs} <= set(account.legs)
        assert all(
            account.legs[leg.broker_leg_id or ""].status == "canceled" for leg in canceled.legs
        )
        assert await adapter.list_orders(run.account.id, "open", 10) == []


async def test_a_market_debit_spread_fills_at_the_natural_price() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        low = contract(run.fake, OptionRight.call, 0)
        high = contract(run.fake, OptionRight.call, 2)
        legs = (
            OrderLeg(low.symbol, OrderSide.buy, 1, PositionEffect.open),
            OrderLeg(high.symbol, OrderSide.sell, 1, PositionEffect.open),
        )
        placed = await adapter.place_order(
            run.account.id, combo("bg-vs", legs, limit_price=None, effect=None)
        )
        assert (placed.order_type, placed.limit_price, placed.price_effect) == (
            OrderType.market,
            None,
            None,
        )
        await run.fake.match()
        filled = await adapter.get_order(run.account.id, placed.broker_order_id)
        now = datetime.now(UTC)
        natural = run.fake.options.quote(low, now).ask - run.fake.options.quote(high, now).bid
        assert filled.avg_fill_price == natural > 0


def contract_of(symbol: str) -> OptionContract:
    return OptionContract.parse(symbol)


async def test_a_single_option_order_is_replaced_within_its_terms() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        put = contract(run.fake, OptionRight.put, -6)
        resting = single("bg-o-r", put.symbol, order_type=OrderType.limit, limit_price="0.01")
        placed = await adapter.place_order(run.account.id, resting)
        assert await run.fake.match() == 0
        replaced = await adapter.modify_order(
            run.account.id, placed.broker_order_id, OrderChanges(limit_price=Decimal("0.02"))
        )
        assert (replaced.symbol, replaced.limit_price) == (put.symbol, Decimal("0.02"))
        assert replaced.position_effect is PositionEffect.open
        before = len(run.fake.requests)
        for changes in (
            OrderChanges(quantity=Decimal("1.5")),
            OrderChanges(time_in_force=TimeInForce.ioc),
            OrderChanges(stop_price=Decimal(1)),
        ):
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.modify_order(run.account.id, replaced.broker_order_id, changes)
        # Only the reads of the current order went out, never a replace.
        assert {m for m, _ in run.fake.requests[before:]} == {"GET"}


async def test_quotes_of_option_contracts_come_from_the_options_endpoints() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        put = contract(run.fake, OptionRight.put, -1)
        quotes = await adapter.get_quotes(["AAPL", put.occ_padded, "AAPL261218C99999000"])
        assert set(quotes) == {"AAPL", put.occ_padded}  # asked for padded, answered as asked
        model = run.fake.options.quote(put, datetime.now(UTC))
        option = quotes[put.occ_padded]
        assert (option.bid, option.ask, option.last) == (model.bid, model.ask, model.last)
        assert ("GET", "/v1beta1/options/quotes/latest") in run.fake.requests
        assert ("GET", "/v1beta1/options/trades/latest") in run.fake.requests
        assert quotes["AAPL"].bid < quotes["AAPL"].ask

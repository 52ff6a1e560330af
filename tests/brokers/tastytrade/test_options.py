"""Options at tastytrade: the adapter against the fake over real HTTP (chains, single legs,
a four-leg iron condor, dry-run preview, cancel and replace of a spread)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    OptionChainQuery,
    OptionContract,
    OptionRight,
    OrderChanges,
    OrderSide,
    OrderStatus,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    Support,
    SupportsOptionChains,
    SupportsOrderPreview,
    TimeInForce,
)
from app.brokers.tastytrade.adapter import TASTYTRADE_CAPABILITIES
from tests.brokers.tastytrade.options_support import (
    contract,
    expiration,
    iron_condor_legs,
    single,
    spread,
)
from tests.brokers.tastytrade.support import Running, running_fake

# A fixed clock for the fake: the paper market's quotes are a function of time, so the
# figures the test computes are the ones the fake answered.
NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


@contextlib.asynccontextmanager
async def fixed_fake(cash: str = "100000") -> AsyncIterator[Running]:
    async with running_fake(cash=cash) as run:
        run.fake.clock = lambda: NOW
        yield run


def orders_sent(run: Running) -> list[dict[str, object]]:
    return [b for m, p, b in run.fake.bodies if m == "POST" and p.endswith("/orders")]


def test_capabilities_state_options_multi_leg_and_preview() -> None:
    caps = TASTYTRADE_CAPABILITIES
    assert caps.asset_classes[AssetClass.option] is Support.native
    assert caps.multi_leg is Support.native
    assert caps.preview is Support.native
    options = caps.options.as_dict()
    assert options == {
        "chain": "native",
        "expirations": "native",
        "max_legs": 4,
        "combo_order_types": ["limit", "market"],
        "combo_time_in_force": ["day", "gtc"],
        "combo_price_effects": ["credit", "debit"],  # no even spread at tastytrade
        "single_order_types": None,
        "single_time_in_force": None,
        "greeks": "unsupported",  # REST quotes carry none (DXLink only)
        "exercise": "unsupported",
    }


async def test_expirations_and_a_filtered_chain_with_broker_quotes() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOptionChains)
        listed = run.fake.options.expirations("AAPL", NOW.date())
        assert await adapter.list_option_expirations("AAPL") == listed
        day = expiration(run.fake)
        strikes = run.fake.options.strikes("AAPL")
        low, high = strikes[18], strikes[22]
        chain = await adapter.get_option_chain(
            OptionChainQuery(
                "AAPL", expiration=day, right=OptionRight.put, strike_gte=low, strike_lte=high
            )
        )
        assert [q.contract.strike for q in chain] == strikes[18:23]
        for quote in chain:
            assert (quote.contract.expiration, quote.contract.right) == (day, OptionRight.put)
            model = run.fake.options.quote(quote.contract, NOW)
            assert (quote.bid, quote.ask, quote.last) == (model.bid, model.ask, model.last)
            assert quote.greeks is None
            assert quote.source == "broker"
        paths = [p for _, p in run.fake.requests]
        assert "/option-chains/AAPL/nested" in paths
        assert "/market-data/by-type" in paths
        # The nested chain is reused for the next call (listing only; quotes are re-read).
        await adapter.get_option_chain(OptionChainQuery("AAPL", expiration=day))
        assert paths.count("/option-chains/AAPL/nested") == 1
        with pytest.raises(errors.UnknownSymbol):
            await adapter.list_option_expirations("NOPE")


async def test_a_whole_expiration_is_quoted_in_requests_of_100() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter()
        chain = await adapter.get_option_chain(
            OptionChainQuery("AAPL", expiration=expiration(run.fake))
        )
        assert len(chain) == 2 * len(run.fake.options.strikes("AAPL"))  # 82 contracts
        assert all(q.bid is not None for q in chain)
        assert [p for _, p in run.fake.requests].count("/market-data/by-type") == 1


async def test_single_leg_buy_to_open_then_sell_to_close() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        call = contract(run.fake, OptionRight.call, 1)
        await adapter.check_symbol(call.symbol)
        placed = await adapter.place_order(
            number, single("bg-opt-1", call.symbol, OrderSide.buy, PositionEffect.open, qty="3")
        )
        assert (placed.symbol, placed.position_effect, placed.legs) == (
            call.symbol,
            PositionEffect.open,
            (),
        )
        [sent] = orders_sent(run)
        assert sent["legs"] == [
            {
                "instrument-type": "Equity Option",
                "symbol": call.occ_padded,  # padded OCC: "AAPL  261218C00192500"
                "quantity": 3,
                "action": "Buy to Open",
            }
        ]
        assert await run.fake.match() == 1
        filled = await adapter.get_order(number, placed.broker_order_id)
        ask = run.fake.options.quote(call, NOW).ask
        assert (filled.status, filled.filled_quantity, filled.avg_fill_price) == (
            OrderStatus.filled,
            Decimal(3),
            ask,
        )
        [position] = await adapter.get_positions(number)
        assert (position.symbol, position.asset_class, position.quantity) == (
            call.symbol,
            AssetClass.option,
            Decimal(3),
        )
        assert position.contract == call
        mark = run.fake.options.quote(call, NOW).mark
        assert position.market_value == mark * 3 * 100
        assert await adapter.get_position(number, call.symbol) == position
        balances = await adapter.get_balances(number)
        assert balances.cash == Decimal(100000) - ask * 300 - Decimal("0.30") - Decimal("3.06")
        quotes = await adapter.get_quotes([call.symbol, "AAPL"])
        model = run.fake.options.quote(call, NOW)
        assert (quotes[call.symbol].bid, quotes[call.symbol].ask) == (model.bid, model.ask)
        assert "AAPL" in quotes
        [trade, _deposit] = await adapter.get_transactions(number, None, None, None)
        assert (trade.symbol, trade.type, trade.amount) == (call.symbol, "buy", -(ask * 300))
        [history] = await adapter.order_history(number, None, None, call.symbol)
        assert history.broker_order_id == placed.broker_order_id

        await adapter.place_order(
            number, single("bg-opt-2", call.symbol, OrderSide.sell, PositionEffect.close, qty="3")
        )
        assert orders_sent(run)[-1]["legs"][0]["action"] == "Sell to Close"  # type: ignore[index]
        await run.fake.match()
        assert await adapter.get_positions(number) == []


async def test_an_option_order_needs_its_position_effect_and_whole_contracts() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter()
        call = contract(run.fake, OptionRight.call, 1).symbol
        order = single("bg-x", call, OrderSide.buy, PositionEffect.open, qty="1.5")
        with pytest.raises(errors.UnsupportedOrder, match="whole contracts"):
            await adapter.place_order(run.account.number, order)
        no_effect = single("bg-y", call, OrderSide.buy, PositionEffect.open)
        object.__setattr__(no_effect, "position_effect", None)
        with pytest.raises(errors.UnsupportedOrder, match="position effect"):
            await adapter.place_order(run.account.number, no_effect)
        assert orders_sent(run) == []
        unlisted = OptionContract(
            "AAPL", "AAPL", expiration(run.fake), OptionRight.call, Decimal("191.37")
        )
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol(unlisted.symbol)


async def test_an_iron_condor_fills_with_four_legs_into_four_positions() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        legs = iron_condor_legs(run.fake)
        placed = await adapter.place_order(number, spread("bg-ic-1", legs, qty="2"))
        assert (placed.symbol, placed.side, placed.quantity, placed.price_effect) == (
            "AAPL",
            OrderSide.sell,
            Decimal(2),
            PriceEffect.credit,
        )
        assert placed.status is OrderStatus.submitted
        [sent] = orders_sent(run)
        assert (sent["price"], sent["price-effect"], sent["order-type"]) == (
            "0.01",
            "Credit",
            "Limit",
        )
        assert [(leg["symbol"], leg["action"], leg["quantity"]) for leg in sent["legs"]] == [  # type: ignore[attr-defined]
            (
                OptionContract.parse(leg.symbol).occ_padded,
                "Buy to Open" if leg.side is OrderSide.buy else "Sell to Open",
                2,
            )
            for leg in legs
        ]

        assert await run.fake.match() == 1
        filled = await adapter.get_order(number, placed.broker_order_id)
        assert (filled.status, filled.filled_quantity) == (OrderStatus.filled, Decimal(2))
        quotes = [run.fake.options.quote(OptionContract.parse(leg.symbol), NOW) for leg in legs]
        prices = [
            q.ask if leg.side is OrderSide.buy else q.bid
            for q, leg in zip(quotes, legs, strict=True)
        ]
        assert [
            (
                leg.symbol,
                leg.side,
                leg.ratio,
                leg.position_effect,
                leg.filled_quantity,
                leg.avg_fill_price,
            )
            for leg in filled.legs
        ] == [
            (leg.symbol, leg.side, 1, PositionEffect.open, Decimal(2), price)
            for leg, price in zip(legs, prices, strict=True)
        ]
        credit = sum(
            (p if leg.side is OrderSide.sell else -p for p, leg in zip(prices, legs, strict=True)),
            Decimal(0),
        )
        assert credit > 0
        assert filled.avg_fill_price == credit

        positions = {p.symbol: p for p in await adapter.get_positions(number)}
        assert {s: p.quantity for s, p in positions.items()} == {
            leg.symbol: Decimal(2) if leg.side is OrderSide.buy else Decimal(-2) for leg in legs
        }
        assert all(
            p.contract is not None and p.contract.multiplier == 100 for p in positions.values()
        )

        # The list of orders shows the spread with its legs, and the closed search finds it.
        [listed] = await adapter.list_orders(number, "closed", 10)
        assert (listed.broker_order_id, len(listed.legs)) == (placed.broker_order_id, 4)


async def test_dry_run_preview_places_nothing() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOrderPreview)
        number = run.account.number
        legs = iron_condor_legs(run.fake)
        preview = await adapter.preview_order(
            number, spread("bg-pv-1", legs, qty="2", price="0.50")
        )
        assert preview.source is PreviewSource.broker
        assert preview.rejections == ()
        # 2 condors x $0.50 credit x 100, less the fees the answer states
        fees = Decimal("8.00") + Decimal("0.80") + Decimal("0.16")  # commission, clearing, reg
        assert preview.fees == fees
        assert preview.estimated_cash_change == Decimal(100) - fees
        assert preview.direction is PriceEffect.credit
        # buying power held: the spread's maximum loss (two strikes wide, less the credit)
        strikes = run.fake.options.strikes("AAPL")
        width = strikes[1] - strikes[0]
        assert preview.buying_power_change == -((2 * width - Decimal("0.50")) * 2 * 100)
        assert run.fake.order_count(number) == 0
        assert run.fake.dry_runs == 1
        assert ("POST", f"/accounts/{number}/orders/dry-run") in run.fake.requests

        # A debit single leg: cash leaves the account.
        call = contract(run.fake, OptionRight.call, 0).symbol
        debit = await adapter.preview_order(
            number, single("bg-pv-2", call, OrderSide.buy, PositionEffect.open, price="5.00")
        )
        assert debit.direction is PriceEffect.debit
        assert debit.estimated_cash_change == -(Decimal(500) + debit.fees)

        # A market spread has no price: the estimate is its natural price from the quotes.
        market = await adapter.preview_order(number, spread("bg-pv-4", legs, qty="1", price=None))
        quotes = [run.fake.options.quote(OptionContract.parse(leg.symbol), NOW) for leg in legs]
        natural_credit = sum(
            (
                q.bid if leg.side is OrderSide.sell else -q.ask
                for q, leg in zip(quotes, legs, strict=True)
            ),
            Decimal(0),
        )
        assert market.estimated_cash_change == natural_credit * 100 - market.fees
        assert market.direction is PriceEffect.credit
        assert run.fake.order_count(number) == 0


async def test_a_preview_the_broker_would_refuse_has_rejections() -> None:
    async with fixed_fake(cash="100") as run:
        adapter = run.adapter()
        legs = iron_condor_legs(run.fake)
        preview = await adapter.preview_order(run.account.number, spread("bg-pv-3", legs))
        assert preview.rejections
        assert "sufficient buying power" in preview.rejections[0]
        assert run.fake.order_count(run.account.number) == 0


async def test_an_even_spread_is_refused_before_any_call() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter()
        legs = iron_condor_legs(run.fake)
        for order in (
            spread("bg-even", legs, effect=PriceEffect.even),
            spread("bg-zero", legs, price="0"),
        ):
            with pytest.raises(errors.UnsupportedOrder, match="debit or"):
                await adapter.place_order(run.account.number, order)
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.preview_order(run.account.number, order)
        assert not any(p.endswith(("/orders", "/dry-run")) for _, p in run.fake.requests)


async def test_a_spread_is_replaced_and_cancelled_whole() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        legs = iron_condor_legs(run.fake)
        # A credit of $50 a condor never fills on strikes this close.
        placed = await adapter.place_order(
            number, spread("bg-ic-2", legs, price="50", time_in_force=TimeInForce.gtc)
        )
        assert await run.fake.match() == 0
        replacement = await adapter.modify_order(
            number, placed.broker_order_id, OrderChanges(limit_price=Decimal("40"))
        )
        assert replacement.replaces == placed.broker_order_id
        assert (replacement.limit_price, replacement.price_effect) == (
            Decimal(40),
            PriceEffect.credit,
        )
        assert [leg.symbol for leg in replacement.legs] == [leg.symbol for leg in legs]
        [(_, _, body)] = [b for b in run.fake.bodies if b[0] == "PUT"]
        assert "legs" not in body
        assert body["price-effect"] == "Credit"
        old = await adapter.get_order(number, placed.broker_order_id)
        assert old.status is OrderStatus.replaced
        with pytest.raises(errors.UnsupportedOrder, match="quantity"):
            await adapter.modify_order(
                number, replacement.broker_order_id, OrderChanges(quantity=Decimal(1))
            )

        answer = await adapter.cancel_order(number, replacement.broker_order_id)
        assert answer.status is OrderStatus.pending_cancel  # "Cancel Requested"
        cancelled = await adapter.get_order(number, replacement.broker_order_id)
        assert cancelled.status is OrderStatus.canceled
        assert len(cancelled.legs) == 4
        assert all(leg.filled_quantity == 0 for leg in cancelled.legs)
        assert await adapter.get_positions(number) == []


async def test_a_spread_whose_answer_is_lost_is_found_by_its_client_order_id() -> None:
    async with fixed_fake() as run:
        adapter = run.adapter(broker_read_timeout_seconds=0.3)
        number = run.account.number
        run.fake.faults.timeout_after_accept = 1
        run.fake.faults.hang_seconds = 2
        legs = iron_condor_legs(run.fake)
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(number, spread("bg-ic-lost", legs))
        assert run.fake.order_count(number) == 1
        found = await adapter.find_order_by_client_id(number, "bg-ic-lost")
        assert found is not None
        assert (found.status, found.price_effect, len(found.legs)) == (
            OrderStatus.accepted,
            PriceEffect.credit,
            4,
        )

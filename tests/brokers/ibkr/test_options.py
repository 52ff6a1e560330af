"""IBKR options against the fake gateway over real HTTP: the secdef walk and its cache, chain
quotes, single-leg and combo orders, preview, positions, executions, and bad input refused
before any request."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    ExpirationType,
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
    SupportsOptionChains,
    SupportsOrderPreview,
    TimeInForce,
)
from app.brokers.ibkr.adapter import IBKR_CAPABILITIES
from tests.brokers.ibkr.option_support import (
    UNDERLYING,
    contract,
    expiration,
    net_ask,
    single,
    strikes,
    vertical,
)
from tests.brokers.ibkr.support import running_fake

SLACK = Decimal("0.30")  # limit room over the touch, for the seeded market's moves


def paths(requests: list[tuple[str, str]], fragment: str) -> int:
    return sum(1 for _m, p in requests if fragment in p)


async def test_capabilities_declare_options_combos_chain_and_preview() -> None:
    caps = IBKR_CAPABILITIES.as_dict()
    assert caps["asset_classes"]["option"] == "native"  # type: ignore[index]
    assert caps["multi_leg"] == "native"
    assert caps["preview"] == "native"
    assert caps["options"] == {
        "chain": "native",
        "expirations": "native",
        "max_legs": 4,
        "combo_order_types": ["limit", "market"],
        "combo_time_in_force": ["day", "gtc"],
        "combo_price_effects": ["credit", "debit", "even"],
        "single_order_types": None,
        "single_time_in_force": None,
        "greeks": "native",
        "exercise": "unsupported",
    }
    async with running_fake() as ib:
        adapter = ib.adapter()
        assert isinstance(adapter, SupportsOptionChains)
        assert isinstance(adapter, SupportsOrderPreview)


async def test_expirations_come_from_the_search_in_one_request() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        found = await adapter.list_option_expirations(UNDERLYING)
        today = ib.fake.clock().date()
        wanted = ib.fake.options.market.expirations(UNDERLYING, today)
        assert [e.expiration for e in found] == [e.expiration for e in wanted]
        assert paths(ib.fake.requests, "/secdef/search") == 1
        assert paths(ib.fake.requests, "/secdef/info") == 0
        kinds = {e.expiration: e.expiration_type for e in found}
        third_fridays = [d for d in kinds if d.weekday() == 4 and 15 <= d.day <= 21]
        assert third_fridays
        assert all(
            kinds[d] in (ExpirationType.standard, ExpirationType.quarterly) for d in third_fridays
        )
        await adapter.list_option_expirations(UNDERLYING)
        assert paths(ib.fake.requests, "/secdef/search") == 1  # remembered


async def test_an_underlying_without_options_is_unknown() -> None:
    async with running_fake() as ib:
        with pytest.raises(errors.UnknownSymbol):
            await ib.adapter().list_option_expirations("NOPE")


async def test_chain_walks_only_the_strikes_asked_then_serves_from_the_cache() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        day = expiration(ib.fake)
        listed = strikes(ib.fake)
        low, high = listed[len(listed) // 2 - 2], listed[len(listed) // 2 + 2]
        query = OptionChainQuery(UNDERLYING, expiration=day, strike_gte=low, strike_lte=high)
        chain = await adapter.get_option_chain(query)
        assert len(chain) == 10  # five strikes, calls and puts
        assert {q.contract.expiration for q in chain} == {day}
        assert paths(ib.fake.requests, "/secdef/info") == 10
        assert paths(ib.fake.requests, "/secdef/strikes") == 1
        # The first snapshot only subscribes; the second has the fields.
        assert paths(ib.fake.requests, "/marketdata/snapshot") == 2
        at = ib.fake.clock()
        for quote in chain:
            model = ib.fake.options.quote(quote.contract, at)
            assert quote.bid is not None
            assert quote.ask is not None
            assert quote.bid <= quote.ask
            assert quote.greeks is not None
            assert quote.greeks.iv is not None
            assert quote.greeks.rho is None  # IBKR has no rho field
            assert Decimal("0.01") < quote.greeks.iv < Decimal(2)  # a fraction, not percent
            assert model.greeks.delta is not None
            assert quote.greeks.delta is not None
            assert abs(quote.greeks.delta - model.greeks.delta) < Decimal("0.2")
            assert quote.open_interest is not None
            assert quote.source == "broker"
        before = len(ib.fake.requests)
        again = await adapter.get_option_chain(query)
        assert [q.contract for q in again] == [q.contract for q in chain]
        new = ib.fake.requests[before:]
        assert paths(new, "/secdef/") == 0
        assert paths(new, "/marketdata/snapshot") == 1


async def test_chain_right_filter_halves_the_walk() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        listed = strikes(ib.fake)
        query = OptionChainQuery(
            UNDERLYING,
            expiration=expiration(ib.fake),
            right=OptionRight.put,
            strike_gte=listed[10],
            strike_lte=listed[12],
        )
        chain = await adapter.get_option_chain(query)
        assert {q.contract.right for q in chain} == {OptionRight.put}
        assert len(chain) == 3
        assert paths(ib.fake.requests, "/secdef/info") == 3


async def test_a_wide_chain_stays_inside_the_pacing() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        listed = strikes(ib.fake)
        query = OptionChainQuery(
            UNDERLYING,
            expiration=expiration(ib.fake),
            strike_gte=listed[8],
            strike_lte=listed[27],
        )
        chain = await adapter.get_option_chain(query)
        assert len(chain) == 40
        assert ib.fake.penalties == 0


async def test_the_fake_puts_a_burst_over_ten_a_second_in_the_penalty_box() -> None:
    async with running_fake() as ib:
        ib.fake.faults.penalty_seconds = 0.3
        adapter = ib.adapter(ibkr_requests_per_second=100.0)  # unpaced: breaks IBKR's 10/s
        listed = strikes(ib.fake)
        query = OptionChainQuery(
            UNDERLYING, expiration=expiration(ib.fake), strike_gte=listed[0], strike_lte=listed[9]
        )
        await adapter.get_option_chain(query)  # the shared HTTP layer retries the 429s
        assert ib.fake.penalties >= 1


async def test_a_debit_vertical_is_one_combo_filled_with_both_legs_and_two_positions() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        account = ib.account.account_id
        buy, sell = contract(ib.fake, 0), contract(ib.fake, 2)
        price = net_ask(ib.fake, buy, sell) + SLACK
        order = vertical(buy, sell, price=price, effect=PriceEffect.debit, quantity=3)
        placed = await adapter.place_order(account, order)
        assert placed.status is OrderStatus.accepted
        assert placed.client_order_id == order.client_order_id
        assert placed.price_effect is PriceEffect.debit
        assert placed.limit_price == price
        assert placed.symbol == UNDERLYING
        assert placed.side is OrderSide.buy
        assert [(leg.symbol, leg.side, leg.ratio) for leg in placed.legs] == [
            (buy.symbol, OrderSide.buy, 1),
            (sell.symbol, OrderSide.sell, 1),
        ]
        sent = next(o for o in ib.fake.orders.values() if o.coid == order.client_order_id)
        conids = [ib.fake.options.by_symbol[c.symbol] for c in (buy, sell)]
        assert sent.conidex == f"28812380;;;{conids[0]}/1,{conids[1]}/-1"
        assert sent.side == "BUY"
        assert sent.price == price
        assert sent.quantity == 3
        await ib.fake.match()
        filled = await adapter.get_order(account, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.filled_quantity == 3
        legs = {leg.symbol: leg for leg in filled.legs}
        at_fill = [e for e in ib.account.executions if e["order_ref"] == order.client_order_id]
        prices = {e["conid"]: Decimal(e["price"]) for e in at_fill}
        assert legs[buy.symbol].filled_quantity == legs[sell.symbol].filled_quantity == 3
        assert legs[buy.symbol].avg_fill_price == prices[conids[0]]
        assert legs[sell.symbol].avg_fill_price == prices[conids[1]]
        assert filled.avg_fill_price == prices[conids[0]] - prices[conids[1]]
        assert filled.avg_fill_price is not None
        assert filled.avg_fill_price <= price
        positions = {
            p.symbol: p for p in await adapter.get_positions(account) if p.contract is not None
        }
        assert set(positions) == {buy.symbol, sell.symbol}
        long, short = positions[buy.symbol], positions[sell.symbol]
        assert long.quantity == 3
        assert short.quantity == -3
        assert long.contract == dataclasses.replace(buy, strike=buy.strike)
        assert short.contract is not None
        assert short.contract.strike == sell.strike
        assert long.avg_cost == prices[conids[0]]
        assert long.market_value == long.current_price * 3 * 100
        assert short.market_value < 0
        padded = await adapter.get_position(account, sell.occ_padded)
        assert padded is not None
        assert padded.symbol == sell.symbol
        listed = await adapter.list_orders(account, "all", 10)
        assert [leg.avg_fill_price for leg in listed[0].legs] == [
            prices[conids[0]],
            prices[conids[1]],
        ]
        trades = await adapter.get_transactions(account, None, None, None)
        by_symbol = {t.symbol: t for t in trades}
        assert by_symbol[buy.symbol].amount == -prices[conids[0]] * 3 * 100
        assert by_symbol[sell.symbol].amount == prices[conids[1]] * 3 * 100


async def test_a_credit_vertical_goes_out_with_a_negative_price_and_reads_back_as_credit() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        account = ib.account.account_id
        # Sell the nearer-the-money put, buy the further one: a bull put credit spread.
        sold, bought = contract(ib.fake, 0, OptionRight.put), contract(ib.fake, -2, OptionRight.put)
        at = ib.fake.clock()
        credit = ib.fake.options.quote(sold, at).bid - ib.fake.options.quote(bought, at).ask
        assert credit > SLACK
        order = vertical(bought, sold, price=credit - SLACK, effect=PriceEffect.credit)
        placed = await adapter.place_order(account, order)
        sent = next(o for o in ib.fake.orders.values() if o.coid == order.client_order_id)
        assert sent.side == "BUY"
        assert sent.price == -(credit - SLACK)
        assert placed.price_effect is PriceEffect.credit
        assert placed.side is OrderSide.sell
        assert placed.limit_price == credit - SLACK
        await ib.fake.match()
        filled = await adapter.get_order(account, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.avg_fill_price is not None
        assert filled.avg_fill_price >= credit - SLACK


async def test_a_combo_limit_is_modified_with_its_sign_kept() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        account = ib.account.account_id
        sold, bought = contract(ib.fake, 0, OptionRight.put), contract(ib.fake, -2, OptionRight.put)
        order = vertical(bought, sold, price=Decimal("9.00"), effect=PriceEffect.credit)
        placed = await adapter.place_order(account, order)  # far from the market: works
        changed = await adapter.modify_order(
            account, placed.broker_order_id, OrderChanges(limit_price=Decimal("8.50"))
        )
        sent = ib.fake.orders[int(placed.broker_order_id)]
        assert sent.price == Decimal("-8.5")
        before = len(ib.fake.requests)
        for bad in (
            OrderChanges(stop_price=Decimal(1)),
            OrderChanges(time_in_force=TimeInForce.ioc),
            OrderChanges(quantity=Decimal("1.5")),
        ):
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.modify_order(account, placed.broker_order_id, bad)
        writes = [m for m, _p in ib.fake.requests[before:] if m != "GET"]
        assert writes == []  # refused after reading the order, before any change is sent
        assert changed.limit_price == Decimal("8.5")
        assert changed.price_effect is PriceEffect.credit
        canceled = await adapter.cancel_order(account, placed.broker_order_id)
        assert canceled.status in (OrderStatus.canceled, OrderStatus.pending_cancel)


async def test_a_single_option_is_bought_by_its_conid_and_sold_to_close() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        account = ib.account.account_id
        call = contract(ib.fake, 1)
        ask = ib.fake.options.quote(call, ib.fake.clock()).ask
        order = single(call, OrderSide.buy, Decimal(2), ask + SLACK, PositionEffect.open)
        placed = await adapter.place_order(account, order)
        sent = next(o for o in ib.fake.orders.values() if o.coid == order.client_order_id)
        assert sent.conid == ib.fake.options.by_symbol[call.symbol]
        assert sent.sec_type == "OPT"
        assert placed.symbol == call.symbol
        assert placed.legs == ()
        await ib.fake.match()
        held = await adapter.get_position(account, call.symbol)
        assert held is not None
        assert held.quantity == 2
        assert held.contract is not None
        bid = ib.fake.options.quote(call, ib.fake.clock()).bid
        close = single(call, OrderSide.sell, Decimal(2), bid - SLACK, PositionEffect.close)
        closed = await adapter.place_order(account, close)
        await ib.fake.match()
        assert (await adapter.get_order(account, closed.broker_order_id)).status is (
            OrderStatus.filled
        )
        assert await adapter.get_position(account, call.symbol) is None


async def test_an_uncovered_short_call_is_refused_by_the_cash_account() -> None:
    async with running_fake() as ib:
        call = contract(ib.fake, 1)
        order = single(call, OrderSide.sell, Decimal(1), Decimal("1.00"), PositionEffect.open)
        with pytest.raises(errors.Rejected, match="uncovered"):
            await ib.adapter().place_order(ib.account.account_id, order)


async def test_preview_is_the_whatif_with_fees_and_direction() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        account = ib.account.account_id
        buy, sell = contract(ib.fake, 0), contract(ib.fake, 2)
        price = Decimal("2.50")
        order = vertical(buy, sell, price=price, effect=PriceEffect.debit, quantity=2)
        preview = await adapter.preview_order(account, order)
        assert preview.source is PreviewSource.broker
        assert preview.direction is PriceEffect.debit
        assert preview.fees == Decimal("2.60")  # 4 contracts at 0.65
        assert preview.estimated_cash_change == -(price * 2 * 100 + Decimal("2.60"))
        assert preview.buying_power_change == -(price * 2 * 100)
        assert preview.rejections == ()
        assert ib.fake.order_count() == 0
        whatifs = [p for m, p in ib.fake.requests if p.endswith("/orders/whatif")]
        assert len(whatifs) == 1
        # The instruments were snapshotted before the what-if, as IBKR asks.
        first_snapshot = next(i for i, (_m, p) in enumerate(ib.fake.requests) if "snapshot" in p)
        assert first_snapshot < [p for _m, p in ib.fake.requests].index(whatifs[0])


async def test_a_preview_the_broker_would_refuse_carries_the_rejection() -> None:
    async with running_fake(cash="100") as ib:
        adapter = ib.adapter()
        buy, sell = contract(ib.fake, 0), contract(ib.fake, 2)
        order = vertical(buy, sell, price=Decimal("3.00"), effect=PriceEffect.debit, quantity=5)
        preview = await adapter.preview_order(ib.account.account_id, order)
        assert preview.rejections
        assert "insufficient" in preview.rejections[0]
        assert ib.fake.order_count() == 0


async def test_a_credit_preview_brings_cash_in_less_fees() -> None:
    async with running_fake() as ib:
        sold, bought = contract(ib.fake, 0, OptionRight.put), contract(ib.fake, -2, OptionRight.put)
        order = vertical(bought, sold, price=Decimal("1.20"), effect=PriceEffect.credit)
        preview = await ib.adapter().preview_order(ib.account.account_id, order)
        assert preview.direction is PriceEffect.credit
        assert preview.estimated_cash_change == Decimal("120.00") - Decimal("1.30")


# --- bad input: refused before any request -------------------------------------------------


def _bad_orders(ib_fake: object) -> list[tuple[str, object]]:
    from tests.fakes.ibkr import FakeIbkrGateway

    assert isinstance(ib_fake, FakeIbkrGateway)
    fake = ib_fake
    a, b, c = contract(fake, 0), contract(fake, 2), contract(fake, 4)
    d, e = contract(fake, 6), contract(fake, 8)
    base = vertical(a, b, price=Decimal("2.00"), effect=PriceEffect.debit)
    other = OptionContract.parse(
        OptionContract("MSFT", "MSFT", a.expiration, OptionRight.call, Decimal(400)).symbol
    )
    expired = dataclasses.replace(a, expiration=fake.clock().date().replace(year=2020))
    leg = OrderLeg
    return [
        ("fractional", dataclasses.replace(base, quantity=Decimal("1.5"))),
        ("one leg", dataclasses.replace(base, legs=base.legs[:1])),
        (
            "five legs",
            dataclasses.replace(
                base,
                legs=(
                    *base.legs,
                    leg(c.symbol, OrderSide.buy, 1, PositionEffect.open),
                    leg(d.symbol, OrderSide.sell, 1, PositionEffect.open),
                    leg(e.symbol, OrderSide.buy, 1, PositionEffect.open),
                ),
            ),
        ),
        (
            "same contract twice",
            dataclasses.replace(
                base, legs=(base.legs[0], leg(a.symbol, OrderSide.sell, 1, PositionEffect.open))
            ),
        ),
        (
            "another underlying",
            dataclasses.replace(
                base, legs=(base.legs[0], leg(other.symbol, OrderSide.sell, 1, PositionEffect.open))
            ),
        ),
        (
            "zero ratio",
            dataclasses.replace(
                base, legs=(base.legs[0], dataclasses.replace(base.legs[1], ratio=0))
            ),
        ),
        (
            "common factor",
            dataclasses.replace(
                base,
                legs=(
                    dataclasses.replace(base.legs[0], ratio=2),
                    dataclasses.replace(base.legs[1], ratio=2),
                ),
            ),
        ),
        (
            "expired leg",
            dataclasses.replace(
                base, legs=(base.legs[0], dataclasses.replace(base.legs[1], symbol=expired.symbol))
            ),
        ),
        ("stop combo", dataclasses.replace(base, order_type=OrderType.stop)),
        ("ioc combo", dataclasses.replace(base, time_in_force=TimeInForce.ioc)),
        ("outside hours", dataclasses.replace(base, extended_hours=True)),
        (
            "credit for a debit vertical",
            dataclasses.replace(base, price_effect=PriceEffect.credit, side=OrderSide.sell),
        ),
        ("no price effect", dataclasses.replace(base, price_effect=None)),
        ("signed price", dataclasses.replace(base, limit_price=Decimal("-2.00"))),
        ("even with a price", dataclasses.replace(base, price_effect=PriceEffect.even)),
        (
            "market with a price",
            dataclasses.replace(base, order_type=OrderType.market, price_effect=None),
        ),
        ("wrong side for the effect", dataclasses.replace(base, side=OrderSide.sell)),
        ("symbol not the underlying", dataclasses.replace(base, symbol="MSFT")),
        (
            "malformed leg",
            dataclasses.replace(
                base, legs=(base.legs[0], dataclasses.replace(base.legs[1], symbol="AAPL2612"))
            ),
        ),
        (
            "fractional single",
            single(a, OrderSide.buy, Decimal("0.5"), Decimal(1), PositionEffect.open),
        ),
        (
            "expired single",
            single(expired, OrderSide.buy, Decimal(1), Decimal(1), PositionEffect.open),
        ),
        (
            "fok single",
            dataclasses.replace(
                single(a, OrderSide.buy, Decimal(1), Decimal(1), PositionEffect.open),
                time_in_force=TimeInForce.fok,
            ),
        ),
    ]


async def test_bad_option_orders_are_refused_before_any_request() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        account = ib.account.account_id
        await adapter.list_accounts()  # the session, so only order traffic could follow
        for name, order in _bad_orders(ib.fake):
            before = len(ib.fake.requests)
            with pytest.raises(errors.UnsupportedOrder) as caught:
                await adapter.place_order(account, order)  # type: ignore[arg-type]
            assert caught.value.reason, name
            assert ib.fake.requests[before:] == [], name
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.preview_order(account, order)  # type: ignore[arg-type]
            assert ib.fake.requests[before:] == [], name
        assert ib.fake.order_count() == 0


async def test_a_contract_ibkr_does_not_list_is_an_unknown_symbol() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        a = contract(ib.fake, 0)
        unlisted = OptionContract.parse(
            dataclasses.replace(a, strike=a.strike + Decimal("0.1")).symbol
        )
        order = single(unlisted, OrderSide.buy, Decimal(1), Decimal(1), PositionEffect.open)
        with pytest.raises(errors.UnknownSymbol):
            await adapter.place_order(ib.account.account_id, order)
        assert ib.fake.order_count() == 0


async def test_an_option_symbol_is_checked_and_quoted_through_its_conid() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        call = contract(ib.fake, 1)
        await adapter.check_symbol(call.occ_padded)
        walked = paths(ib.fake.requests, "/secdef/info")
        assert walked == 1
        quotes = await adapter.get_quotes([call.symbol, "AAPL"])
        assert set(quotes) == {call.symbol, "AAPL"}
        assert Decimal(0) < quotes[call.symbol].bid < quotes[call.symbol].ask
        assert paths(ib.fake.requests, "/secdef/info") == walked  # remembered
        unlisted = dataclasses.replace(call, strike=call.strike + Decimal("0.1"))
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol(unlisted.symbol)


async def test_without_search_dates_expirations_come_from_each_month_s_info() -> None:
    async with running_fake() as ib:
        ib.fake.faults.option_dates = False
        adapter = ib.adapter()
        found = await adapter.list_option_expirations(UNDERLYING)
        today = ib.fake.clock().date()
        wanted = ib.fake.options.market.expirations(UNDERLYING, today)
        assert [e.expiration for e in found] == [e.expiration for e in wanted]
        months = len(ib.fake.options.months(UNDERLYING, today))
        assert paths(ib.fake.requests, "/secdef/strikes") == months
        assert paths(ib.fake.requests, "/secdef/info") == months


async def test_a_single_option_limit_is_modified_by_its_conid() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        account = ib.account.account_id
        call = contract(ib.fake, 1)
        order = single(call, OrderSide.buy, Decimal(1), Decimal("0.05"), PositionEffect.open)
        placed = await adapter.place_order(account, order)
        changed = await adapter.modify_order(
            account, placed.broker_order_id, OrderChanges(limit_price=Decimal("0.10"))
        )
        sent = ib.fake.orders[int(placed.broker_order_id)]
        assert sent.conid == ib.fake.options.by_symbol[call.symbol]
        assert sent.price == Decimal("0.1")
        assert changed.symbol == call.symbol
        assert changed.limit_price == Decimal("0.1")


async def test_a_new_adapter_reads_a_filled_combo_from_conids_alone() -> None:
    async with running_fake() as ib:
        account = ib.account.account_id
        buy, sell = contract(ib.fake, 0), contract(ib.fake, 2)
        order = vertical(
            buy, sell, price=net_ask(ib.fake, buy, sell) + SLACK, effect=PriceEffect.debit
        )
        placed = await ib.adapter().place_order(account, order)
        await ib.fake.match()
        ib.fake.requests.clear()
        fresh = ib.adapter()  # its own pool: nothing remembered (no conids, no cOID)
        filled = await fresh.get_order(account, placed.broker_order_id)
        assert [leg.symbol for leg in filled.legs] == [buy.symbol, sell.symbol]
        assert all(leg.avg_fill_price is not None for leg in filled.legs)
        assert paths(ib.fake.requests, "/trsrv/secdef") == 2
        assert paths(ib.fake.requests, "/iserver/account/orders") >= 1  # the cOID


async def test_an_equity_order_is_previewed_by_the_same_whatif() -> None:
    async with running_fake() as ib:
        order = OrderRequest(
            client_order_id="eq1",
            symbol="AAPL",
            side=OrderSide.buy,
            quantity=Decimal(10),
            order_type=OrderType.limit,
            time_in_force=TimeInForce.day,
            limit_price=Decimal("100.00"),
        )
        preview = await ib.adapter().preview_order(ib.account.account_id, order)
        assert preview.direction is PriceEffect.debit
        assert preview.fees == Decimal(1)
        assert preview.estimated_cash_change == Decimal("-1001.00")
        assert preview.rejections == ()
        assert ib.fake.order_count() == 0

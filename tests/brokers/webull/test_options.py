"""Webull options against the fake over real HTTP: single- and multi-leg orders through the
order endpoints (place, preview, replace, cancel), legs decomposed with the strategy named,
option positions with their contracts, quotes of known contracts, no chain."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    OptionRight,
    OrderChanges,
    OrderLeg,
    OrderSide,
    OrderStatus,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    Support,
)
from app.brokers.webull.adapter import WEBULL_CAPABILITIES, WebullAdapter
from tests.brokers.webull.option_support import contract, mark, single, vertical
from tests.brokers.webull.support import running_fake

ROOM = Decimal("0.50")  # limit room above the model mark: the market moves between calls


def test_webull_declares_options_without_a_chain() -> None:
    caps = WEBULL_CAPABILITIES
    assert caps.asset_classes[AssetClass.option] is Support.native
    assert caps.multi_leg is Support.native
    assert caps.options.chain is Support.unsupported
    assert caps.options.expirations is Support.unsupported
    assert caps.preview is Support.native
    # No discovery methods at all: the service answers options_chain_unsupported.
    assert not hasattr(WebullAdapter, "get_option_chain")
    assert not hasattr(WebullAdapter, "list_option_expirations")


async def test_a_single_leg_buy_to_open_is_sent_decomposed_fills_and_is_held() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        account = wb.account.account_id
        call = contract(wb.fake, 0)
        order = single(
            call, OrderSide.buy, PositionEffect.open, price=mark(wb.fake, call) + ROOM, quantity=2
        )
        placed = await adapter.place_order(account, order)
        assert placed.symbol == call.symbol  # the canonical OCC symbol
        assert placed.position_effect is PositionEffect.open
        assert placed.legs == ()
        sent = wb.account.orders[order.client_order_id[2:]]
        assert (sent.strategy, sent.intent, len(sent.legs)) == ("SINGLE", "BUY_TO_OPEN", 1)
        assert sent.legs[0].contract == call
        await wb.fake.match()
        filled = await adapter.get_order(account, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.filled_quantity == 2
        [held] = [p for p in await adapter.get_positions(account) if p.contract is not None]
        assert held.contract == call
        assert held.symbol == call.symbol
        assert held.quantity == 2
        assert held.asset_class is AssetClass.option
        assert held.market_value == held.current_price * 2 * 100
        # Closing it: sell to close.
        close = single(
            call, OrderSide.sell, PositionEffect.close, price=Decimal("0.01"), quantity=2
        )
        closed = await adapter.place_order(account, close)
        await wb.fake.match()
        assert (await adapter.get_order(account, closed.broker_order_id)).status is (
            OrderStatus.filled
        )
        assert [p for p in await adapter.get_positions(account) if p.contract is not None] == []


async def test_a_vertical_fills_with_both_legs_and_leaves_two_positions() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        account = wb.account.account_id
        buy, sell = contract(wb.fake, 0), contract(wb.fake, 2)
        net = mark(wb.fake, buy) - mark(wb.fake, sell)
        order = vertical(buy, sell, price=net + ROOM, effect=PriceEffect.debit, quantity=3)
        placed = await adapter.place_order(account, order)
        assert placed.symbol == "AAPL"
        assert placed.price_effect is PriceEffect.debit
        sent = wb.account.orders[order.client_order_id[2:]]
        assert sent.strategy == "VERTICAL"
        assert wb.fake.categories == ["US_OPTION"]  # the 3.x SDK's placement header
        assert [(leg.side, leg.quantity) for leg in sent.legs] == [
            ("BUY", Decimal(3)),
            ("SELL", Decimal(3)),
        ]
        await wb.fake.match()
        filled = await adapter.get_order(account, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert [(leg.symbol, leg.side, leg.ratio, leg.filled_quantity) for leg in filled.legs] == [
            (buy.symbol, OrderSide.buy, 1, Decimal(3)),
            (sell.symbol, OrderSide.sell, 1, Decimal(3)),
        ]
        assert all(leg.broker_leg_id for leg in filled.legs)
        held = {p.symbol: p for p in await adapter.get_positions(account) if p.contract}
        assert {s: p.quantity for s, p in held.items()} == {
            buy.symbol: Decimal(3),
            sell.symbol: Decimal(-3),
        }
        assert held[sell.symbol].market_value < 0  # a short leg is a liability


async def test_a_credit_spread_is_a_sell_of_the_strategy() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        account = wb.account.account_id
        short_put = contract(wb.fake, 0, OptionRight.put)
        long_put = contract(wb.fake, -2, OptionRight.put)
        credit = mark(wb.fake, short_put) - mark(wb.fake, long_put)
        price = max(credit - ROOM, Decimal("0.01"))
        order = vertical(long_put, short_put, price=price, effect=PriceEffect.credit)
        placed = await adapter.place_order(account, order)
        assert placed.side is OrderSide.sell
        assert placed.price_effect is PriceEffect.credit
        cash_before = wb.account.cash
        await wb.fake.match()
        assert (await adapter.get_order(account, placed.broker_order_id)).status is (
            OrderStatus.filled
        )
        assert wb.account.cash > cash_before  # a credit brings cash in


async def test_replace_sends_each_leg_by_its_id_and_cancel_ends_it() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        account = wb.account.account_id
        buy, sell = contract(wb.fake, 0), contract(wb.fake, 2)
        order = vertical(buy, sell, price=Decimal("0.01"), effect=PriceEffect.debit)
        placed = await adapter.place_order(account, order)
        changed = await adapter.modify_order(
            account,
            placed.broker_order_id,
            OrderChanges(quantity=Decimal(2), limit_price=Decimal("0.02")),
        )
        assert (changed.quantity, changed.limit_price) == (Decimal(2), Decimal("0.02"))
        assert [leg.filled_quantity for leg in changed.legs] == [0, 0]
        sent = wb.account.orders[placed.broker_order_id]
        assert [leg.quantity for leg in sent.legs] == [Decimal(2), Decimal(2)]
        canceled = await adapter.cancel_order(account, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled


async def test_preview_answers_the_cost_and_places_nothing() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        account = wb.account.account_id
        buy, sell = contract(wb.fake, 0), contract(wb.fake, 2)
        order = vertical(buy, sell, price=Decimal("1.25"), effect=PriceEffect.debit, quantity=2)
        preview = await adapter.preview_order(account, order)
        assert preview.source is PreviewSource.broker
        assert preview.direction is PriceEffect.debit
        assert preview.estimated_cash_change == Decimal("-250.00")
        assert preview.rejections == ()
        assert wb.account.orders == {}
        assert ("POST", "/trading/orders/preview") in wb.fake.requests
        poor = wb.fake.add_app(cash="10")
        broke = await wb.adapter(poor)
        refused = await broke.preview_order(next(iter(poor.accounts)), order)
        assert refused.rejections
        assert "buying power" in refused.rejections[0]


async def test_legs_that_form_no_webull_strategy_are_refused_before_any_request() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        account = wb.account.account_id
        a, b = contract(wb.fake, 0), contract(wb.fake, 2)
        same_side = dataclasses.replace(
            vertical(a, b, price=Decimal("1"), effect=PriceEffect.debit),
            legs=(
                OrderLeg(a.symbol, OrderSide.buy, 1, PositionEffect.open),
                OrderLeg(b.symbol, OrderSide.buy, 1, PositionEffect.open),
            ),
        )
        before = len(wb.fake.requests)
        with pytest.raises(errors.UnsupportedOrder, match="no option strategy"):
            await adapter.place_order(account, same_side)
        assert len(wb.fake.requests) == before


async def test_quotes_of_known_contracts_come_from_the_option_snapshot() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        call = contract(wb.fake, 0)
        quotes = await adapter.get_quotes([call.occ_padded, "AAPL"])
        assert set(quotes) == {call.occ_padded, "AAPL"}
        q = quotes[call.occ_padded]
        assert q.symbol == call.symbol
        assert q.bid < q.ask
        assert ("GET", "/market-data/options/snapshots/list") in wb.fake.requests

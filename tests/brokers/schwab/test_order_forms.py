"""Schwab short sales and covers, list reads that survive one bad row, and the fake's
``Location`` and streamer URL in Schwab's own form (issue 15 items 1, 6, 9)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    Support,
    TimeInForce,
)
from app.brokers.rows import is_partial
from app.brokers.schwab import mapping
from app.brokers.schwab.adapter import SCHWAB_CAPABILITIES
from tests.brokers.schwab.support import running_fake


def equity(side: OrderSide, qty: str, effect: PositionEffect | None) -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol="AAPL",
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        position_effect=effect,
    )


@pytest.mark.parametrize(
    ("side", "effect", "instruction"),
    [
        (OrderSide.buy, None, "BUY"),
        (OrderSide.buy, PositionEffect.open, "BUY"),
        (OrderSide.buy, PositionEffect.close, "BUY_TO_COVER"),
        (OrderSide.sell, None, "SELL"),
        (OrderSide.sell, PositionEffect.close, "SELL"),
        (OrderSide.sell, PositionEffect.open, "SELL_SHORT"),
    ],
)
def test_equity_instruction_from_side_and_effect(
    side: OrderSide, effect: PositionEffect | None, instruction: str
) -> None:
    body = mapping.order_to_wire(equity(side, "1", effect))
    assert body["orderLegCollection"][0]["instruction"] == instruction


def test_short_selling_is_declared() -> None:
    assert SCHWAB_CAPABILITIES.short_selling is Support.native


async def test_short_sale_then_cover_in_a_margin_account() -> None:
    async with running_fake(account_type="MARGIN") as run:
        adapter, ref = run.adapter(), run.account.hash_value
        short = await adapter.place_order(ref, equity(OrderSide.sell, "5", PositionEffect.open))
        [(_m, _p, _q, body)] = [c for c in run.fake.calls if c[0] == "POST"]
        assert json.loads(body)["orderLegCollection"][0]["instruction"] == "SELL_SHORT"
        await run.fake.match()
        filled = await adapter.get_order(ref, short.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert (filled.side, filled.position_effect) == (OrderSide.sell, PositionEffect.open)
        [position] = await adapter.get_positions(ref)
        assert (position.symbol, position.quantity) == ("AAPL", Decimal(-5))
        cover = await adapter.place_order(ref, equity(OrderSide.buy, "5", PositionEffect.close))
        await run.fake.match()
        covered = await adapter.get_order(ref, cover.broker_order_id)
        assert covered.status is OrderStatus.filled
        assert covered.position_effect is PositionEffect.close
        assert await adapter.get_positions(ref) == []


async def test_a_short_sale_in_a_cash_account_is_rejected_by_schwab() -> None:
    async with running_fake(account_type="CASH") as run:
        adapter, ref = run.adapter(), run.account.hash_value
        with pytest.raises(errors.Rejected, match="cash account"):
            await adapter.place_order(ref, equity(OrderSide.sell, "1", PositionEffect.open))


async def test_one_unrepresentable_order_never_breaks_the_list() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        first = await adapter.place_order(ref, equity(OrderSide.buy, "1", None))
        second = await adapter.place_order(ref, equity(OrderSide.buy, "2", None))
        run.fake.set_status(int(first.broker_order_id), "SOMETHING_NEW")
        orders = await adapter.list_orders(ref, "all", 50)
        assert [o.broker_order_id for o in orders] == [second.broker_order_id]
        assert is_partial(orders)
        assert orders.skipped == 1  # type: ignore[attr-defined]
        history = await adapter.order_history(ref, None, None, "AAPL")
        assert is_partial(history)
        with pytest.raises(errors.UnknownBrokerValue):
            await adapter.get_order(ref, first.broker_order_id)


async def test_one_unrepresentable_position_never_breaks_the_list() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        await adapter.place_order(ref, equity(OrderSide.buy, "3", None))
        await adapter.place_order(
            ref,
            OrderRequest(
                client_order_id="bg" + uuid.uuid4().hex,
                symbol="MSFT",
                side=OrderSide.buy,
                quantity=Decimal(1),
                order_type=OrderType.market,
                time_in_force=TimeInForce.day,
            ),
        )
        await run.fake.match()
        run.fake.position_asset_types["MSFT"] = "FUTURE_NEW_KIND"
        positions = await adapter.get_positions(ref)
        assert [p.symbol for p in positions] == ["AAPL"]
        assert is_partial(positions)


async def test_location_and_streamer_url_are_schwabs_own() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        await adapter.place_order(ref, equity(OrderSide.buy, "1", None))
        [location] = run.fake.locations
        assert location.startswith(f"https://api.schwabapi.com/trader/v1/accounts/{ref}/orders/")
        info = await adapter.streamer_info()
        assert info["streamerSocketUrl"].startswith("wss://")


async def test_one_unrepresentable_transaction_never_breaks_the_list() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        await adapter.place_order(ref, equity(OrderSide.buy, "3", None))
        await run.fake.match()
        [trade] = [t for t in run.account.transactions if t["type"] == "TRADE"]
        trade["transferItems"] = []  # a TRADE the gateway cannot read
        found = await adapter.get_transactions(ref, None, None, None)
        assert [t.type for t in found] == ["deposit"]
        assert is_partial(found)
        deposits = await adapter.get_transactions(ref, None, None, "deposit")
        assert is_partial(deposits)  # the filter keeps the count of rows left out

"""Dollar-amount orders, one bad row in a list, and the fake's place-without-impact route
and JSON envelope for unknown routes (issue 15 items 3, 6, 9)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    OrderFingerprint,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    TimeInForce,
)
from app.brokers.rows import is_partial
from app.brokers.snaptrade.adapter import SNAPTRADE_CAPABILITIES
from tests.brokers.snaptrade.support import running_fake
from tests.fakes.snaptrade.server import FakeOrder


def dollars(amount: str, **changes: object) -> OrderRequest:
    values: dict[str, object] = {
        "client_order_id": "bg-notional-1",
        "symbol": "AAPL",
        "side": OrderSide.buy,
        "quantity": Decimal(0),
        "order_type": OrderType.market,
        "time_in_force": TimeInForce.day,
        "notional": Decimal(amount),
    }
    values.update(changes)
    return OrderRequest(**values)  # type: ignore[arg-type]


async def test_a_dollar_amount_order_is_placed_as_notional_value_and_sized_when_filled() -> None:
    assert SNAPTRADE_CAPABILITIES.notional.value == "native"
    assert SNAPTRADE_CAPABILITIES.notional_limit.value == "unsupported"
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, dollars("500"))
        assert (placed.notional, placed.quantity, placed.status) == (
            Decimal(500),
            Decimal(0),
            OrderStatus.accepted,
        )
        [order] = run.account.orders.values()
        assert order.notional == Decimal(500)
        assert order.units == 0
        assert await run.fake.match() == 1
        filled = await adapter.get_order(run.account.id, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.filled_quantity == order.units > 0
        assert filled.avg_fill_price is not None
        assert filled.filled_quantity * filled.avg_fill_price <= Decimal(500)


async def test_dollar_amounts_only_on_market_day_orders() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        for order in (
            dollars("500", order_type=OrderType.limit, limit_price=Decimal(10)),
            dollars("500", time_in_force=TimeInForce.gtc),
        ):
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.place_order(run.account.id, order)
        assert run.fake.order_count(run.account.id) == 0


async def test_one_unrepresentable_order_row_never_breaks_the_list() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(
            run.account.id,
            OrderRequest(
                "bg-1", "AAPL", OrderSide.buy, Decimal(1), OrderType.limit, TimeInForce.gtc,
                limit_price=Decimal("1.5"),
            ),
        )  # fmt: skip
        odd = FakeOrder(
            id="odd-1",
            account_id=run.account.id,
            symbol="AAPL",
            action="BUY",
            order_type="TrailingStop",  # not in OrderTypeStrict: the mapping refuses it
            time_in_force="Day",
            units=Decimal(1),
            price=None,
            stop=None,
            time_placed=next(iter(run.account.orders.values())).time_placed,
        )
        run.account.orders[odd.id] = odd
        listed = await adapter.list_orders(run.account.id, "all", 50)
        assert [o.broker_order_id for o in listed] == [placed.broker_order_id]
        assert is_partial(listed)
        assert getattr(listed, "skipped", 0) == 1
        history = await adapter.order_history(run.account.id, None, None, None)
        assert [o.broker_order_id for o in history] == [placed.broker_order_id]
        assert is_partial(history)
        assert not is_partial(await adapter.get_positions(run.account.id))


async def test_unknown_routes_answer_the_json_envelope() -> None:
    async with running_fake() as run:
        async with httpx.AsyncClient(base_url=run.url) as client:
            for method, path in (("GET", "/no/such/route"), ("DELETE", "/trade/impact")):
                answer = await client.request(method, path)
                assert answer.status_code == 404
                assert answer.json() == {
                    "detail": "The requested resource does not exist.",
                    "status_code": 404,
                    "code": "1011",
                }


async def test_a_lost_dollar_amount_placement_is_found_even_after_it_filled() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.timeout_after_accept = 1
        request = dollars("300")
        submitted = datetime.now(UTC)
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.account.id, request)
        assert await run.fake.match() == 1  # filled: the record now shows shares
        fingerprint = OrderFingerprint.of(request, submitted)
        found = await adapter.find_order_by_fingerprint(run.account.id, fingerprint, frozenset())
        assert found is not None
        assert found.status is OrderStatus.filled
        assert found.quantity > 0
        claimed = frozenset({found.broker_order_id})
        assert await adapter.find_order_by_fingerprint(run.account.id, fingerprint, claimed) is None
        await adapter.place_order(run.account.id, dollars("200", client_order_id="bg-2"))
        await adapter.place_order(run.account.id, dollars("250", client_order_id="bg-3"))
        with pytest.raises(errors.Transient):  # two could be it: neither is adopted
            await adapter.find_order_by_fingerprint(run.account.id, fingerprint, claimed)


async def test_short_sales_and_covers_are_refused_before_any_request() -> None:
    assert SNAPTRADE_CAPABILITIES.short_selling.value == "unsupported"
    async with running_fake() as run:
        adapter = run.adapter()
        before = len(run.fake.requests)
        for side, effect in (
            (OrderSide.sell, PositionEffect.open),
            (OrderSide.buy, PositionEffect.close),
        ):
            order = OrderRequest(
                "bg-short", "AAPL", side, Decimal(1), OrderType.market, TimeInForce.day,
                position_effect=effect,
            )  # fmt: skip
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.check_order(run.account.id, order)
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.place_order(run.account.id, order)
        assert len(run.fake.requests) == before
        opening = OrderRequest(
            "bg-buy", "AAPL", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.day,
            position_effect=PositionEffect.open,
        )  # fmt: skip
        assert (await adapter.place_order(run.account.id, opening)).status is OrderStatus.accepted

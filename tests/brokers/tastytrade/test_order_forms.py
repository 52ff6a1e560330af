"""tastytrade short sales and covers stated by position effect, and list reads that survive
one row the gateway cannot represent (issue 15 items 1 and 6)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    TimeInForce,
)
from app.brokers.rows import is_partial
from app.brokers.tastytrade import mapping
from tests.brokers.support import market
from tests.brokers.tastytrade.support import running_fake


@pytest.mark.parametrize(
    ("side", "effect", "action"),
    [
        (OrderSide.buy, None, "Buy to Open"),
        (OrderSide.buy, PositionEffect.open, "Buy to Open"),
        (OrderSide.buy, PositionEffect.close, "Buy to Close"),
        (OrderSide.sell, None, "Sell to Close"),
        (OrderSide.sell, PositionEffect.close, "Sell to Close"),
        (OrderSide.sell, PositionEffect.open, "Sell to Open"),
    ],
)
def test_equity_action_from_side_and_effect(
    side: OrderSide, effect: PositionEffect | None, action: str
) -> None:
    order = dataclasses.replace(market("bg-a", side=side), position_effect=effect)
    assert mapping.order_to_wire(order, "test")["legs"][0]["action"] == action


async def test_short_sale_and_cover_are_said_and_read_back() -> None:
    async with running_fake() as run:
        adapter, number = run.adapter(), run.account.number
        short = dataclasses.replace(
            market("bg-short", side=OrderSide.sell), position_effect=PositionEffect.open
        )
        placed = await adapter.place_order(number, short)
        sent = [b for _m, p, b in run.fake.bodies if p.endswith("/orders")]
        assert sent[-1]["legs"][0]["action"] == "Sell to Open"
        assert placed.position_effect is PositionEffect.open
        await run.fake.match()
        filled = await adapter.get_order(number, placed.broker_order_id)
        assert (filled.status, filled.side) == (OrderStatus.filled, OrderSide.sell)
        [position] = await adapter.get_positions(number)
        assert position.quantity == Decimal(-2)
        cover = dataclasses.replace(
            market("bg-cover", side=OrderSide.buy), position_effect=PositionEffect.close
        )
        covered = await adapter.place_order(number, cover)
        sent = [b for _m, p, b in run.fake.bodies if p.endswith("/orders")]
        assert sent[-1]["legs"][0]["action"] == "Buy to Close"
        assert covered.position_effect is PositionEffect.close
        await run.fake.match()
        assert await adapter.get_positions(number) == []


async def test_one_unrepresentable_order_never_breaks_the_lists() -> None:
    async with running_fake() as run:
        adapter, number = run.adapter(), run.account.number
        bad = await adapter.place_order(number, market("bg-bad"))
        good = await adapter.place_order(number, market("bg-good"))
        run.fake.set_status(bad.broker_order_id, "Something New")
        for status in ("open", "all"):
            orders = await adapter.list_orders(number, status, 50)  # type: ignore[arg-type]
            assert [o.broker_order_id for o in orders] == [good.broker_order_id]
            assert is_partial(orders)
        history = await adapter.order_history(number, None, None, None)
        assert [o.broker_order_id for o in history] == [good.broker_order_id]
        assert is_partial(history)
        with pytest.raises(errors.UnknownBrokerValue):
            await adapter.get_order(number, bad.broker_order_id)
        # A complete list is not partial.
        run.fake.set_status(bad.broker_order_id, "Live")
        assert not is_partial(await adapter.list_orders(number, "all", 50))


async def test_the_fake_answers_what_the_sdk_reads_in_tastytrades_envelopes() -> None:
    async with running_fake() as run:
        token = await run.adapter().access_token()
        headers = {"Authorization": f"Bearer {token}", "User-Agent": "test/1.0"}
        number = run.account.number
        async with httpx.AsyncClient(base_url=run.url, headers=headers) as client:
            unknown = await client.get("/no/such/route")
            assert unknown.status_code == 404
            assert unknown.json()["error"]["code"] == "not_found"
            wrong_method = await client.patch(f"/accounts/{number}/balances")
            assert wrong_method.status_code == 405
            assert "error" in wrong_method.json()
            usd = (await client.get(f"/accounts/{number}/balances/USD")).json()["data"]
            plain = (await client.get(f"/accounts/{number}/balances")).json()["data"]
            assert usd.keys() == plain.keys()
            # The real body's fields (tastyware/tastytrade AccountBalance), not ~20 of them.
            assert len(usd) >= 45
            assert {"long-cryptocurrency-value", "maintenance-excess", "snapshot-date"} <= set(usd)
            assert (await client.get(f"/accounts/{number}/balances/EUR")).status_code == 404
            one = (await client.get(f"/customers/me/accounts/{number}")).json()["data"]
            assert one["account-number"] == number


def _crypto(side: OrderSide = OrderSide.buy, qty: str = "0.01") -> OrderRequest:
    return OrderRequest(
        client_order_id=f"bg-crypto-{side.value}-{qty}",
        symbol="BTC-USD",
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.market,
        time_in_force=TimeInForce.ioc,
    )


def _notional(symbol: str, amount: str, side: OrderSide = OrderSide.buy) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"bg-notional-{symbol}-{amount}",
        symbol=symbol,
        side=side,
        quantity=Decimal(0),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day if symbol == "AAPL" else TimeInForce.ioc,
        notional=Decimal(amount),
    )


def test_crypto_and_notional_wire_forms() -> None:
    crypto = mapping.order_to_wire(_crypto(), "test")
    assert crypto["legs"] == [
        {
            "instrument-type": "Cryptocurrency",
            "symbol": "BTC/USD",
            "quantity": "0.01",
            "action": "Buy to Open",
        }
    ]
    notional = mapping.order_to_wire(_notional("AAPL", "500"), "test")
    assert notional["order-type"] == "Notional Market"
    assert (notional["value"], notional["value-effect"]) == ("500", "Debit")
    assert "quantity" not in notional["legs"][0]
    assert "price" not in notional
    limit = dataclasses.replace(
        _notional("AAPL", "500"), order_type=OrderType.limit, limit_price=Decimal(1)
    )
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(limit, "test")
    short_crypto = dataclasses.replace(_crypto(OrderSide.sell), position_effect=PositionEffect.open)
    with pytest.raises(errors.UnsupportedOrder, match="short"):
        mapping.order_to_wire(short_crypto, "test")


async def test_crypto_order_fills_and_shows_as_btc_usd() -> None:
    async with running_fake() as run:
        adapter, number = run.adapter(), run.account.number
        await adapter.check_symbol("BTC-USD")
        assert ("GET", "/instruments/cryptocurrencies/BTC/USD") in run.fake.requests
        placed = await adapter.place_order(number, _crypto())
        assert (placed.symbol, placed.quantity) == ("BTC-USD", Decimal("0.01"))
        await run.fake.match()
        filled = await adapter.get_order(number, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        [position] = await adapter.get_positions(number)
        assert (position.symbol, position.quantity) == ("BTC-USD", Decimal("0.01"))
        assert position.asset_class.value == "crypto"
        quotes = await adapter.get_quotes(["BTC-USD"])
        assert quotes["BTC-USD"].ask > 1000
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol("NOPE-USD")


@pytest.mark.parametrize(("symbol", "places"), [("AAPL", 5), ("BTC-USD", 8)])
async def test_notional_market_order_fills_for_a_quantity_the_broker_reports(
    symbol: str, places: int
) -> None:
    async with running_fake() as run:
        adapter, number = run.adapter(), run.account.number
        placed = await adapter.place_order(number, _notional(symbol, "500"))
        assert placed.notional == Decimal(500)
        assert placed.quantity == 0
        assert placed.status in (OrderStatus.accepted, OrderStatus.submitted)
        await run.fake.match()
        filled = await adapter.get_order(number, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.notional == Decimal(500)
        assert filled.quantity == filled.filled_quantity > 0
        assert filled.avg_fill_price is not None
        spent = filled.filled_quantity * filled.avg_fill_price
        assert Decimal(500) - filled.avg_fill_price / 10**places <= spent <= Decimal(500)
        assert -filled.filled_quantity.as_tuple().exponent <= places  # type: ignore[operator]
        listed = await adapter.list_orders(number, "all", 10)
        assert [o.notional for o in listed] == [Decimal(500)]
        assert not is_partial(listed)
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.modify_order(
                number, placed.broker_order_id, OrderChanges(limit_price=Decimal(1))
            )


async def test_one_unrepresentable_position_never_breaks_the_list() -> None:
    async with running_fake() as run:
        adapter, number = run.adapter(), run.account.number
        await adapter.place_order(number, market("bg-aapl"))
        await adapter.place_order(number, _crypto())
        await run.fake.match()
        run.fake.position_instrument_types["BTC/USD"] = "Something New"
        positions = await adapter.get_positions(number)
        assert [p.symbol for p in positions] == ["AAPL"]
        assert is_partial(positions)
        # A kind tastytrade lists and the gateway leaves out (futures) is not "partial".
        run.fake.position_instrument_types["BTC/USD"] = "Future"
        positions = await adapter.get_positions(number)
        assert [p.symbol for p in positions] == ["AAPL"]
        assert not is_partial(positions)

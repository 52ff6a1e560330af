"""Alpaca's order forms beyond plain quantities, against the fake over real HTTP: notional
(dollar-amount) orders, crypto pairs, short sales and covers, one foreign row in a list, and
an option's end of life (exercise, do-not-exercise, expiration, assignment)."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors
from app.brokers.alpaca import mapping
from app.brokers.alpaca.adapter import ALPACA_CAPABILITIES
from app.brokers.base import (
    AssetClass,
    OptionRight,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    Support,
    SupportsOptionExercise,
    TimeInForce,
)
from app.brokers.rows import is_partial
from tests.brokers.alpaca.options import contract, single
from tests.brokers.alpaca.support import running_fake
from tests.brokers.support import limit_buy, market

# The row of issue 15 item 6: a notional order placed outside the gateway (Alpaca's
# dashboard or another client), field for field the spec's ``Order`` with ``qty`` null.
FOREIGN_NOTIONAL_ORDER = {
    "asset_class": "us_equity",
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
    "canceled_at": None,
    "client_order_id": "dashboard-7c1e5a2f",
    "created_at": "2026-05-22T14:30:00.123456789Z",
    "expired_at": None,
    "extended_hours": False,
    "failed_at": None,
    "filled_at": None,
    "filled_avg_price": None,
    "filled_qty": "0",
    "hwm": None,
    "id": "0b0c2d6e-5b1a-4a4e-9a53-1f1f0c8f7e11",
    "legs": None,
    "limit_price": None,
    "notional": "500",
    "order_class": "",
    "order_type": "market",
    "qty": None,
    "replaced_at": None,
    "replaced_by": None,
    "replaces": None,
    "side": "buy",
    "source": None,
    "status": "accepted",
    "stop_price": None,
    "submitted_at": "2026-05-22T14:30:00.123456789Z",
    "subtag": None,
    "symbol": "AAPL",
    "time_in_force": "day",
    "trail_percent": None,
    "trail_price": None,
    "type": "market",
    "updated_at": "2026-05-22T14:30:00.123456789Z",
}


def notional(
    client_order_id: str,
    amount: str = "500",
    side: OrderSide = OrderSide.buy,
    *,
    symbol: str = "AAPL",
    time_in_force: TimeInForce = TimeInForce.day,
    order_type: OrderType = OrderType.market,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        quantity=Decimal(0),
        order_type=order_type,
        time_in_force=time_in_force,
        notional=Decimal(amount),
    )


# --- item 6: one foreign row never breaks the list ---------------------------------------------


async def test_a_foreign_notional_order_in_the_list_is_read_not_fatal() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, limit_buy("bg-own-1"))
        run.account.foreign_orders.append(dict(FOREIGN_NOTIONAL_ORDER))
        listed = await adapter.list_orders(run.account.id, "open", 50)
        by_id = {o.broker_order_id: o for o in listed}
        assert set(by_id) == {placed.broker_order_id, FOREIGN_NOTIONAL_ORDER["id"]}
        foreign = by_id[str(FOREIGN_NOTIONAL_ORDER["id"])]
        assert (foreign.notional, foreign.quantity) == (Decimal(500), Decimal(0))
        assert foreign.status is OrderStatus.accepted
        assert not is_partial(listed)


async def test_an_unrepresentable_row_is_left_out_and_counted() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, limit_buy("bg-own-2"))
        # Neither qty nor notional, and an order type the gateway does not model.
        broken = dict(FOREIGN_NOTIONAL_ORDER, notional=None, type="trailing_stop", id="x-1")
        run.account.foreign_orders.append(broken)
        for listed in (
            await adapter.list_orders(run.account.id, "all", 50),
            await adapter.order_history(run.account.id, None, None, None),
            await adapter.recent_orders(run.account.id),
        ):
            assert [o.broker_order_id for o in listed] == [placed.broker_order_id]
            assert is_partial(listed)
            assert getattr(listed, "skipped", 0) == 1


async def test_an_unrepresentable_position_is_left_out() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        await adapter.place_order(run.account.id, market("bg-pos", qty="1"))
        await run.fake.match()
        run.account.foreign_positions.append(
            {"asset_class": "crypto_perp", "symbol": "BTCUSDPERP", "qty": "1", "side": "long"}
        )
        positions = await adapter.get_positions(run.account.id)
        assert [p.symbol for p in positions] == ["AAPL"]
        assert is_partial(positions)


# --- item 3: dollar-amount orders ------------------------------------------------------------


def test_capabilities_declare_notional_crypto_and_exercise() -> None:
    assert ALPACA_CAPABILITIES.notional is Support.native
    assert ALPACA_CAPABILITIES.notional_limit is Support.unsupported
    assert ALPACA_CAPABILITIES.asset_classes[AssetClass.crypto] is Support.native
    assert ALPACA_CAPABILITIES.options.exercise is Support.native


def test_a_notional_order_goes_out_without_qty() -> None:
    body = mapping.order_to_wire(notional("bg-n-w", "250.5"))
    assert body["notional"] == "250.5"
    assert "qty" not in body
    assert (body["type"], body["time_in_force"]) == ("market", "day")


@pytest.mark.parametrize(
    "request_",
    [
        notional("bg-n-lim", order_type=OrderType.limit),
        notional("bg-n-gtc", time_in_force=TimeInForce.gtc),
        notional("bg-n-zero", "0"),
        notional("bg-n-neg", "-5"),
    ],
)
def test_notional_terms_alpaca_refuses_are_refused_before_any_request(
    request_: OrderRequest,
) -> None:
    with pytest.raises(errors.UnsupportedOrder):
        mapping.order_to_wire(request_)


async def test_a_notional_buy_fills_as_alpaca_reports_it() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, notional("bg-n-1", "500"))
        assert placed.notional == Decimal(500)
        assert placed.quantity == Decimal(0)  # unknown until it fills (qty null)
        assert await run.fake.match() == 1
        filled = await adapter.get_order(run.account.id, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.notional == Decimal(500)
        assert filled.avg_fill_price is not None
        assert filled.quantity == filled.filled_quantity > 0
        assert abs(filled.filled_quantity * filled.avg_fill_price - Decimal(500)) < Decimal("0.01")
        [position] = await adapter.get_positions(run.account.id)
        assert position.quantity == filled.filled_quantity


async def test_a_notional_order_whose_answer_is_lost_is_found_by_client_order_id() -> None:
    async with running_fake() as run:
        adapter = run.adapter(broker_read_timeout_seconds=0.3)
        run.fake.faults.timeout_after_accept = 1
        run.fake.faults.hang_seconds = 2
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.account.id, notional("bg-n-lost", "300"))
        found = await adapter.find_order_by_client_id(run.account.id, "bg-n-lost")
        assert found is not None
        assert (found.notional, found.status) == (Decimal(300), OrderStatus.accepted)
        # A retry with the same client order id is the same order (idempotent).
        again = await adapter.place_order(run.account.id, notional("bg-n-lost", "300"))
        assert again.broker_order_id == found.broker_order_id
        assert run.fake.order_count(run.account.key_id) == 1


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2))
def test_notional_amounts_round_trip_exactly(amount: Decimal) -> None:
    body = mapping.order_to_wire(notional("bg-n-p", str(amount)))
    wire = dict(FOREIGN_NOTIONAL_ORDER, notional=body["notional"])
    assert mapping.order_from_wire(wire).notional == amount


# --- item 2: crypto pairs --------------------------------------------------------------------


async def test_crypto_pairs_trade_as_btc_usd_and_map_back() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        await adapter.check_symbol("BTC-USD")
        placed = await adapter.place_order(
            run.account.id,
            market("bg-c-1", qty="0.01", symbol="BTC-USD", time_in_force=TimeInForce.gtc),
        )
        assert placed.symbol == "BTC-USD"
        posted = [m for m in run.fake.requests if m == ("POST", "/v2/orders")]
        assert posted
        assert run.fake.accounts[run.account.key_id].orders[placed.broker_order_id].symbol == (
            "BTC/USD"
        )
        await run.fake.match()
        [position] = await adapter.get_positions(run.account.id)
        assert (position.symbol, position.asset_class) == ("BTC-USD", AssetClass.crypto)
        assert position.quantity == Decimal("0.01")
        one = await adapter.get_position(run.account.id, "BTC-USD")
        assert one is not None
        assert one.quantity == Decimal("0.01")
        by_dollars = await adapter.place_order(
            run.account.id,
            notional("bg-c-2", "100", symbol="ETH-USD", time_in_force=TimeInForce.ioc),
        )
        assert (by_dollars.symbol, by_dollars.notional) == ("ETH-USD", Decimal(100))
        [tx, *_] = await adapter.get_transactions(run.account.id, None, None, "buy")
        assert tx.symbol == "BTC-USD"


@pytest.mark.parametrize(
    "request_",
    [
        market("bg-c-day", qty="0.01", symbol="BTC-USD", time_in_force=TimeInForce.day),
        market("bg-c-fok", qty="0.01", symbol="BTC-USD", time_in_force=TimeInForce.fok),
        OrderRequest(
            "bg-c-stop",
            "BTC-USD",
            OrderSide.buy,
            Decimal(1),
            OrderType.stop,
            TimeInForce.gtc,
            stop_price=Decimal(1),
        ),
        OrderRequest(
            "bg-c-short",
            "BTC-USD",
            OrderSide.sell,
            Decimal(1),
            OrderType.market,
            TimeInForce.gtc,
            position_effect=PositionEffect.open,
        ),
    ],
)
async def test_crypto_terms_alpaca_refuses_are_refused_before_any_request(
    request_: OrderRequest,
) -> None:
    async with running_fake() as run:
        with pytest.raises(errors.UnsupportedOrder):
            await run.adapter().place_order(run.account.id, request_)
        assert ("POST", "/v2/orders") not in run.fake.requests


def test_crypto_symbols_map_both_ways() -> None:
    assert mapping.wire_symbol("BTC-USD") == "BTC/USD"
    assert mapping.from_alpaca_symbol("BTC/USD") == "BTC-USD"
    assert mapping.from_alpaca_symbol("ETHUSD", AssetClass.crypto) == "ETH-USD"
    assert mapping.is_crypto_symbol("BTC-USD")
    assert mapping.is_crypto_symbol("ETH/USDT")
    assert not mapping.is_crypto_symbol("AAPL")
    assert not mapping.is_crypto_symbol("BRK-B")


# --- item 1: short sales and covers ------------------------------------------------------------


async def test_a_short_sale_and_its_cover_on_a_margin_account() -> None:
    async with running_fake() as run:
        run.account.shorting = True
        adapter = run.adapter()
        short = OrderRequest(
            "bg-s-1",
            "AAPL",
            OrderSide.sell,
            Decimal(5),
            OrderType.market,
            TimeInForce.day,
            position_effect=PositionEffect.open,
        )
        placed = await adapter.place_order(run.account.id, short)
        await run.fake.match()
        assert (await adapter.get_order(run.account.id, placed.broker_order_id)).status is (
            OrderStatus.filled
        )
        [position] = await adapter.get_positions(run.account.id)
        assert position.quantity == Decimal(-5)
        assert position.market_value < 0
        cover = OrderRequest(
            "bg-s-2",
            "AAPL",
            OrderSide.buy,
            Decimal(5),
            OrderType.market,
            TimeInForce.day,
            position_effect=PositionEffect.close,
        )
        await adapter.place_order(run.account.id, cover)
        await run.fake.match()
        assert await adapter.get_positions(run.account.id) == []


def short_sale(client_order_id: str, qty: str = "5") -> OrderRequest:
    return OrderRequest(
        client_order_id,
        "AAPL",
        OrderSide.sell,
        Decimal(qty),
        OrderType.market,
        TimeInForce.day,
        position_effect=PositionEffect.open,
    )


def cover(client_order_id: str, qty: str = "5") -> OrderRequest:
    return OrderRequest(
        client_order_id,
        "AAPL",
        OrderSide.buy,
        Decimal(qty),
        OrderType.market,
        TimeInForce.day,
        position_effect=PositionEffect.close,
    )


async def test_a_short_sale_on_a_cash_account_is_refused_before_the_order() -> None:
    async with running_fake() as run:
        with pytest.raises(errors.UnsupportedOrder, match="cannot sell short"):
            await run.adapter().place_order(run.account.id, short_sale("bg-s-3"))
        assert ("POST", "/v2/orders") not in run.fake.requests
        # Alpaca itself refuses it too (the fake as the real API), were it sent.
        run.fake.accounts[run.account.key_id].shorting = False
        body = mapping.order_to_wire(short_sale("bg-s-3b"))

        async with httpx.AsyncClient(base_url=run.url) as http:
            refused = await http.post(
                "/v2/orders",
                json=body,
                headers={
                    "APCA-API-KEY-ID": run.account.key_id,
                    "APCA-API-SECRET-KEY": run.account.secret,
                },
            )
        assert refused.status_code == 403


async def test_open_and_close_that_alpaca_would_read_otherwise_are_refused() -> None:
    async with running_fake() as run:
        run.account.shorting = True
        adapter = run.adapter()
        with pytest.raises(errors.UnsupportedOrder, match="no short position"):
            await adapter.place_order(run.account.id, cover("bg-s-c0"))
        await adapter.place_order(run.account.id, market("bg-s-long", qty="2"))
        await run.fake.match()
        with pytest.raises(errors.UnsupportedOrder, match="long position"):
            await adapter.place_order(run.account.id, short_sale("bg-s-while-long"))
        assert run.fake.order_count(run.account.key_id) == 1


async def test_a_retried_cover_finds_the_order_it_placed() -> None:
    async with running_fake() as run:
        run.account.shorting = True
        adapter = run.adapter()
        await adapter.place_order(run.account.id, short_sale("bg-s-r1"))
        await run.fake.match()
        first = await adapter.place_order(run.account.id, cover("bg-s-r2"))
        await run.fake.match()
        again = await adapter.place_order(run.account.id, cover("bg-s-r2"))  # position now 0
        assert again.broker_order_id == first.broker_order_id
        assert again.status is OrderStatus.filled


async def test_fractional_and_notional_short_sales_are_refused_before_any_request() -> None:
    async with running_fake() as run:
        run.account.shorting = True
        adapter = run.adapter()
        for request_ in (
            OrderRequest(
                "bg-s-f",
                "AAPL",
                OrderSide.sell,
                Decimal("1.5"),
                OrderType.market,
                TimeInForce.day,
                position_effect=PositionEffect.open,
            ),
            OrderRequest(
                "bg-s-n",
                "AAPL",
                OrderSide.sell,
                Decimal(0),
                OrderType.market,
                TimeInForce.day,
                position_effect=PositionEffect.open,
                notional=Decimal(100),
            ),
        ):
            with pytest.raises(errors.UnsupportedOrder):
                await adapter.place_order(run.account.id, request_)
        assert ("POST", "/v2/orders") not in run.fake.requests


# --- issue 13 item 6: an option's end of life --------------------------------------------------


async def _long_call(run: object, symbol: str, qty: str = "2") -> None:
    from tests.brokers.alpaca.support import Running

    assert isinstance(run, Running)
    adapter = run.adapter()
    await adapter.place_order(run.account.id, single("bg-o-open", symbol, qty=qty))
    assert await run.fake.match() == 1


async def test_exercise_turns_a_long_call_into_shares_and_reads_back_as_a_transaction() -> None:
    async with running_fake(cash="1000000") as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOptionExercise)
        call = contract(run.fake, OptionRight.call, 1)
        await _long_call(run, call.symbol)
        await adapter.exercise_option(run.account.id, call.symbol)
        positions = {p.symbol: p for p in await adapter.get_positions(run.account.id)}
        assert call.symbol not in positions
        assert positions["AAPL"].quantity == Decimal(200)
        [event] = await adapter.get_transactions(run.account.id, None, None, "option_exercise")
        assert (event.symbol, event.quantity, event.amount) == (call.symbol, Decimal(-2), 0)
        bought = await adapter.get_transactions(run.account.id, None, None, "buy")
        shares = [t for t in bought if t.symbol == "AAPL"]
        assert [(t.quantity, t.price) for t in shares] == [(Decimal(200), call.strike)]
        assert shares[0].amount == -200 * call.strike
        with pytest.raises(errors.Rejected, match="no available position"):
            await adapter.exercise_option(run.account.id, call.symbol)


async def test_do_not_exercise_needs_a_long_position() -> None:
    async with running_fake(cash="1000000") as run:
        adapter = run.adapter()
        call = contract(run.fake, OptionRight.call, 1)
        with pytest.raises(errors.Rejected, match="no available position"):
            await adapter.do_not_exercise(run.account.id, call.symbol)
        await _long_call(run, call.symbol)
        await adapter.do_not_exercise(run.account.id, call.symbol)
        assert call.symbol in run.account.do_not_exercise
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.exercise_option(run.account.id, "AAPL")


async def test_expiration_and_assignment_activities_become_transactions() -> None:
    async with running_fake(cash="1000000") as run:
        run.account.shorting = True
        adapter = run.adapter()
        call = contract(run.fake, OptionRight.call, 1)
        put = contract(run.fake, OptionRight.put, 1)
        await _long_call(run, call.symbol, qty="3")
        await adapter.place_order(
            run.account.id,
            single("bg-o-short", put.symbol, side=OrderSide.sell, effect=PositionEffect.open),
        )
        await run.fake.match()
        run.fake.settle_option(run.account.key_id, call.symbol, "OPEXP")
        run.fake.settle_option(run.account.key_id, put.symbol, "OPASN")
        events = {
            t.type: t
            for t in await adapter.get_transactions(run.account.id, None, None, None)
            if t.type.startswith("option_")
        }
        assert set(events) == {"option_expiration", "option_assignment"}
        assert (events["option_expiration"].symbol, events["option_expiration"].quantity) == (
            call.symbol,
            Decimal(-3),
        )
        assert events["option_assignment"].quantity == Decimal(1)
        positions = {p.symbol: p.quantity for p in await adapter.get_positions(run.account.id)}
        assert positions == {"AAPL": Decimal(100)}  # the short put bought 100 at the strike


def test_the_documented_option_activities_map_to_transactions() -> None:
    # https://docs.alpaca.markets/docs/non-trade-activities-for-option-events (as published)
    documented = [
        {
            "id": "20190801011955195::5f596936-6f23-4cef-bdf1-3806aae57dbf",
            "activity_type": "OPEXC",
            "date": "2023-07-21",
            "net_amount": "0",
            "description": "Option Exercise",
            "symbol": "AAPL230721C00150000",
            "qty": "-2",
            "status": "executed",
        },
        {
            "id": "20190801011955195::5f596936-6f23-4cef-bdf1-3806aae57dbf",
            "activity_type": "OPTRD",
            "date": "2023-07-21",
            "net_amount": "-30000",
            "description": "Option Trade",
            "symbol": "AAPL",
            "qty": "200",
            "price": "90",
            "status": "executed",
        },
        {
            "id": "20190801011955195::5f596936-6f23-4cef-bdf1-3806aae57dbg",
            "activity_type": "OPASN",
            "date": "2023-07-01",
            "net_amount": "0",
            "description": "Option Assignment",
            "symbol": "AAPL230721C00150000",
            "qty": "2",
            "status": "executed",
        },
    ]
    exercise, trade, assignment = (mapping.transaction_from_activity(a) for a in documented)
    assert exercise is not None
    assert (exercise.type, exercise.symbol, exercise.quantity) == (
        "option_exercise",
        "AAPL230721C00150000",
        Decimal(-2),
    )
    assert exercise.occurred_at.isoformat() == "2023-07-21T00:00:00+00:00"
    assert trade is not None
    assert (trade.type, trade.quantity, trade.amount) == ("buy", Decimal(200), Decimal(-30000))
    assert assignment is not None
    assert (assignment.type, assignment.quantity) == ("option_assignment", Decimal(2))
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.transaction_from_activity(dict(documented[0], symbol="NOT-AN-OPTION"))

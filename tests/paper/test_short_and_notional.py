"""Short sales in margin paper accounts, their refusal in cash accounts, and dollar-amount
(notional) market orders, against a real database."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.brokers import errors as broker_errors
from app.brokers.base import (
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    TimeInForce,
)
from app.db.session import SessionMaker
from app.paper.adapter import PAPER_CAPABILITIES
from app.paper.engine import PaperEngine, _free_shares
from app.paper.store import PaperStore
from tests.conftest import new_user
from tests.paper.test_engine import START, first_time, make_engine, quote_at, request


async def margin(engine: PaperEngine, cash: str = "100000") -> tuple[str, str]:
    owner = new_user("paper")
    account = await engine.create_account(owner, Decimal(cash), account_type="margin")
    return owner, account.broker_account_id


def short(
    symbol: str = "AAPL",
    quantity: str = "10",
    order_type: OrderType = OrderType.market,
    tif: TimeInForce = TimeInForce.day,
    limit: Decimal | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="c" + uuid.uuid4().hex,
        symbol=symbol,
        side=OrderSide.sell,
        quantity=Decimal(quantity),
        order_type=order_type,
        time_in_force=tif,
        limit_price=limit,
        position_effect=PositionEffect.open,
    )


def cover(symbol: str = "AAPL", quantity: str = "10") -> OrderRequest:
    return OrderRequest(
        client_order_id="c" + uuid.uuid4().hex,
        symbol=symbol,
        side=OrderSide.buy,
        quantity=Decimal(quantity),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        position_effect=PositionEffect.close,
    )


def notional(
    amount: str,
    symbol: str = "AAPL",
    side: OrderSide = OrderSide.buy,
    order_type: OrderType = OrderType.market,
    limit: Decimal | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="c" + uuid.uuid4().hex,
        symbol=symbol,
        side=side,
        quantity=Decimal(0),
        order_type=order_type,
        time_in_force=TimeInForce.day,
        limit_price=limit,
        notional=Decimal(amount),
    )


def test_the_paper_broker_declares_short_selling_and_notional_market_orders() -> None:
    assert PAPER_CAPABILITIES.short_selling.value == "native"
    assert PAPER_CAPABILITIES.notional.value == "native"
    assert PAPER_CAPABILITIES.notional_limit.value == "unsupported"


async def test_a_cash_account_refuses_a_short_sale_and_books_nothing(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner = new_user("paper")
    account = (await engine.create_account(owner, Decimal(100000))).broker_account_id

    with pytest.raises(broker_errors.UnsupportedOrder, match="margin account"):
        await engine.place(owner, account, short())

    assert await engine.list_orders(owner, account, "all", 10) == []
    assert await engine.positions(owner, account) == []
    assert (await engine.balances(owner, account)).buying_power == Decimal(100000)


async def test_a_short_sale_credits_proceeds_holds_150_percent_and_a_cover_releases_it(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    bid = quote_at("AAPL", START).bid

    sold = await engine.place(owner, account, short(quantity="10"))

    assert sold.status is OrderStatus.filled
    assert sold.position_effect is PositionEffect.open
    assert (sold.filled_quantity, sold.avg_fill_price) == (Decimal(10), bid)
    balances = await engine.balances(owner, account)
    assert balances.cash == Decimal(100000) + 10 * bid
    assert balances.buying_power == balances.cash - Decimal("1.5") * 10 * bid
    [position] = await engine.positions(owner, account)
    assert (position.quantity, position.avg_cost) == (Decimal(-10), bid)
    assert position.market_value == -10 * quote_at("AAPL", START).mid

    clock.advance(timedelta(seconds=30))
    ask = quote_at("AAPL", clock.now()).ask
    covered = await engine.place(owner, account, cover(quantity="10"))

    assert covered.status is OrderStatus.filled
    assert covered.avg_fill_price == ask
    balances = await engine.balances(owner, account)
    assert balances.cash == Decimal(100000) + 10 * bid - 10 * ask
    assert balances.buying_power == balances.cash
    assert await engine.positions(owner, account) == []
    assert await engine.cycles_completed(owner) == 1


async def test_short_refusals_are_clear_and_book_nothing(sessionmaker: SessionMaker) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    # A plain sell never opens a short by accident.
    with pytest.raises(broker_errors.InsufficientFunds, match="position_effect open"):
        await engine.place(owner, account, request(side=OrderSide.sell, quantity="1"))
    # Nothing short to cover.
    with pytest.raises(broker_errors.InsufficientFunds, match="no short position"):
        await engine.place(owner, account, cover(quantity="1"))
    # Fractional and crypto short sales.
    with pytest.raises(broker_errors.UnsupportedOrder, match="whole shares"):
        await engine.place(owner, account, short(quantity="1.5"))
    with pytest.raises(broker_errors.UnsupportedOrder, match="equities only"):
        await engine.place(owner, account, short("BTC-USD", quantity="1"))
    # Held long: sell those first.
    await engine.place(owner, account, request("MSFT", quantity="2"))
    with pytest.raises(broker_errors.Rejected, match="held long"):
        await engine.place(owner, account, short("MSFT", quantity="1"))
    # Covering more than is short.
    await engine.place(owner, account, short(quantity="3"))
    with pytest.raises(broker_errors.InsufficientFunds, match="to cover"):
        await engine.place(owner, account, cover(quantity="4"))
    # A short beyond buying power (its 50% net margin).
    small_owner, small = await margin(engine, "1000")
    with pytest.raises(broker_errors.InsufficientFunds, match="margin"):
        await engine.place(small_owner, small, short(quantity="20"))
    assert await engine.positions(small_owner, small) == []
    assert (await engine.balances(small_owner, small)).buying_power == Decimal(1000)


async def test_a_short_call_is_not_covered_by_short_shares(sessionmaker: SessionMaker) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    funded_owner, funded = await margin(engine, "1000000")
    await engine.place(funded_owner, funded, short(quantity="100"))
    # The free-shares view the option cover rules use sees no shares to pledge.
    async with sessionmaker() as session:
        rows = {p.symbol: p for p in await PaperStore(session).positions([funded])}
    assert _free_shares(rows) == {"AAPL": Decimal(0)}


async def test_a_resting_short_sale_survives_a_restart_and_fills_on_the_tick(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    limit = quote_at("META", START).bid + Decimal("3.00")
    order = await engine.place(
        owner, account, short("META", "2", OrderType.limit, TimeInForce.gtc, limit)
    )
    assert order.status is OrderStatus.accepted
    held = await engine.balances(owner, account)
    assert held.buying_power < Decimal(100000)
    with pytest.raises(broker_errors.OrderNotModifiable):
        await engine.modify(
            owner, account, order.broker_order_id, OrderChanges(quantity=Decimal(3))
        )
    del engine

    reached = first_time(START, "META", lambda q: q.bid >= limit)
    restarted, _clock2, _sink2 = make_engine(sessionmaker, start=reached)
    await restarted.tick()

    done = await restarted.get_order(owner, account, order.broker_order_id)
    assert done.status is OrderStatus.filled
    price = done.avg_fill_price
    assert price is not None
    assert price >= limit
    balances = await restarted.balances(owner, account)
    assert balances.cash == Decimal(100000) + 2 * price
    assert balances.buying_power == balances.cash - Decimal("1.5") * 2 * price


async def test_canceling_a_resting_short_sale_gives_its_margin_back(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    limit = quote_at("META", START).bid + Decimal("50.00")
    order = await engine.place(
        owner, account, short("META", "2", OrderType.limit, TimeInForce.gtc, limit)
    )
    await engine.cancel(owner, account, order.broker_order_id)
    assert (await engine.balances(owner, account)).buying_power == Decimal(100000)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=1, max_value=40), st.integers(0, 600)),
        min_size=1,
        max_size=8,
    )
)
async def test_cash_and_requirement_follow_the_fills_across_shorts_and_covers(
    sessionmaker: SessionMaker, steps: list[tuple[bool, int, int]]
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine, "20000")
    cash = Decimal(20000)
    short_qty = Decimal(0)
    for is_short, quantity, seconds in steps:
        clock.advance(timedelta(seconds=seconds))
        order_request = short(quantity=str(quantity)) if is_short else cover(quantity=str(quantity))
        try:
            order = await engine.place(owner, account, order_request)
        except broker_errors.Rejected:
            continue
        assert order.avg_fill_price is not None or order.filled_quantity == 0
        value = order.filled_quantity * (order.avg_fill_price or Decimal(0))
        cash += value if is_short else -value
        short_qty += order.filled_quantity if is_short else -order.filled_quantity
        balances = await engine.balances(owner, account)
        assert balances.cash == cash
        assert balances.cash >= 0
        assert balances.buying_power >= 0
        positions = await engine.positions(owner, account)
        if short_qty == 0:
            assert positions == []
            assert balances.buying_power == balances.cash
        else:
            [position] = positions
            assert position.quantity == -short_qty
            assert balances.buying_power == (
                balances.cash - Decimal("1.5") * short_qty * position.avg_cost
            )
            # Equity counts the short at its market value.
            assert balances.equity == balances.cash + position.market_value


async def test_a_notional_buy_spends_at_most_the_amount_in_fractional_shares(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    ask = quote_at("AAPL", START).ask

    order = await engine.place(owner, account, notional("500"))

    expected = (Decimal(500) / ask).quantize(Decimal("0.000001"), rounding=ROUND_FLOOR)
    assert order.notional == Decimal(500)
    assert order.status is OrderStatus.filled
    assert (order.filled_quantity, order.avg_fill_price) == (expected, ask)
    assert expected != expected.to_integral_value()
    balances = await engine.balances(owner, account)
    spent = Decimal(100000) - balances.cash
    assert spent == expected * ask
    assert Decimal(500) - ask / 1000000 < spent <= Decimal(500)
    assert balances.buying_power == balances.cash
    again = await engine.get_order(owner, account, order.broker_order_id)
    assert again == order


async def test_a_notional_sell_raises_at_most_the_amount_from_the_long_position(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    await engine.place(owner, account, request(quantity="10"))
    bid = quote_at("AAPL", START).bid
    before = (await engine.balances(owner, account)).cash

    order = await engine.place(owner, account, notional("250", side=OrderSide.sell))

    assert order.avg_fill_price == bid
    raised = (await engine.balances(owner, account)).cash - before
    assert raised == order.filled_quantity * bid <= Decimal(250)
    [position] = await engine.positions(owner, account)
    assert position.quantity == Decimal(10) - order.filled_quantity
    with pytest.raises(broker_errors.InsufficientFunds):
        await engine.place(owner, account, notional("100000", side=OrderSide.sell))


async def test_notional_refusals(sessionmaker: SessionMaker) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine, "100")
    ask = quote_at("AAPL", START).ask
    with pytest.raises(broker_errors.UnsupportedOrder, match="market orders only"):
        await engine.place(owner, account, notional("50", order_type=OrderType.limit, limit=ask))
    with pytest.raises(broker_errors.UnsupportedOrder, match="less than"):
        await engine.place(owner, account, notional("0.0001"))
    with pytest.raises(broker_errors.InsufficientFunds):
        await engine.place(owner, account, notional("500"))
    assert await engine.list_orders(owner, account, "all", 10) == []


async def test_a_notional_crypto_buy_uses_eight_decimals(sessionmaker: SessionMaker) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    order = await engine.place(owner, account, notional("100", symbol="BTC-USD"))
    ask = quote_at("BTC-USD", START).ask
    assert order.filled_quantity == (Decimal(100) / ask).quantize(
        Decimal("0.00000001"), rounding=ROUND_FLOOR
    )


async def test_previews_of_a_short_sale_a_cover_and_a_notional_buy(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    bid = quote_at("AAPL", START).bid
    preview = await engine.preview(owner, account, short(quantity="10"))
    assert preview.rejections == ()
    assert preview.estimated_cash_change == (10 * bid).quantize(Decimal("0.01"))
    assert preview.buying_power_change is not None
    assert preview.buying_power_change < 0
    bought = await engine.preview(owner, account, notional("500"))
    assert bought.rejections == ()
    assert -Decimal("500.01") <= bought.estimated_cash_change < 0
    nothing = await engine.preview(owner, account, cover(quantity="1"))
    assert nothing.rejections != ()
    owner_cash = new_user("paper")
    cash_account = (await engine.create_account(owner_cash, Decimal(1000))).broker_account_id
    refused = await engine.preview(owner_cash, cash_account, short(quantity="1"))
    assert any("margin account" in r for r in refused.rejections)


async def test_a_working_buy_and_a_working_short_sale_never_meet(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await margin(engine)
    low = quote_at("NVDA", START).ask - Decimal("20.00")
    resting_buy = await engine.place(
        owner, account, request("NVDA", quantity="1", order_type=OrderType.limit, limit=low)
    )
    with pytest.raises(broker_errors.Rejected, match="cancel it before selling short"):
        await engine.place(owner, account, short("NVDA", "1"))
    await engine.cancel(owner, account, resting_buy.broker_order_id)

    high = quote_at("NVDA", START).bid + Decimal("20.00")
    await engine.place(owner, account, short("NVDA", "1", OrderType.limit, TimeInForce.gtc, high))
    with pytest.raises(broker_errors.Rejected, match="short sale of NVDA is working"):
        await engine.place(owner, account, request("NVDA", quantity="1"))
    assert await engine.positions(owner, account) == []


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    symbol=st.sampled_from(["AAPL", "NVDA", "SPY", "BTC-USD", "ETH-USD"]),
    amount=st.decimals(min_value="1", max_value="5000", places=2),
    seconds=st.integers(min_value=0, max_value=7200),
)
async def test_a_notional_buy_never_spends_more_than_its_amount(
    sessionmaker: SessionMaker, symbol: str, amount: Decimal, seconds: int
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    clock.advance(timedelta(seconds=seconds))
    owner, account = await margin(engine, "10000")
    try:
        order = await engine.place(owner, account, notional(str(amount), symbol=symbol))
    except broker_errors.UnsupportedOrder:
        return  # less than one increment
    spent = Decimal(10000) - (await engine.balances(owner, account)).cash
    assert order.avg_fill_price is not None
    assert spent == order.filled_quantity * order.avg_fill_price
    assert spent <= amount
    if order.status is OrderStatus.filled:
        # Rounded down by less than one increment of the instrument.
        assert amount - spent < order.avg_fill_price * Decimal("0.000001")
    assert (await engine.balances(owner, account)).buying_power == Decimal(10000) - spent

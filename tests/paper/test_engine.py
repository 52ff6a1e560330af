"""The paper engine against a real database (Postgres and SQLite), driven by a manual clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.brokers import errors as broker_errors
from app.brokers.base import (
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    TimeInForce,
)
from app.db.models import PaperAccount
from app.db.paper_lock import LockedPaperRows, current_transaction
from app.db.session import SessionMaker
from app.paper.clock import ManualClock
from app.paper.engine import PaperEngine
from app.paper.quotes import PaperQuote, SeededQuoteSource
from tests.conftest import new_user

START = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
SEED = 7


class Recorder:
    """A sink that keeps what it hears, in order."""

    def __init__(self) -> None:
        self.updates: list[OrderUpdate] = []

    async def __call__(self, update: OrderUpdate) -> None:
        self.updates.append(update)


def make_engine(
    sessionmaker: SessionMaker, start: datetime = START
) -> tuple[PaperEngine, ManualClock, Recorder]:
    clock = ManualClock(start)
    sink = Recorder()
    return PaperEngine(sessionmaker, SeededQuoteSource(SEED), clock, sink), clock, sink


def request(
    symbol: str = "AAPL",
    side: OrderSide = OrderSide.buy,
    quantity: str = "10",
    order_type: OrderType = OrderType.market,
    tif: TimeInForce = TimeInForce.day,
    limit: Decimal | None = None,
    stop: Decimal | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="c" + uuid.uuid4().hex,
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        order_type=order_type,
        time_in_force=tif,
        limit_price=limit,
        stop_price=stop,
    )


def first_time(
    start: datetime, symbol: str, condition: Callable[[PaperQuote], bool], limit: int = 20_000
) -> datetime:
    """The first whole second after ``start`` whose quote meets ``condition``."""
    source = SeededQuoteSource(SEED)
    for offset in range(1, limit):
        at = start + timedelta(seconds=offset)
        if condition(source.quote(symbol, at)):
            return at
    raise AssertionError("the seeded market never met the condition")


def quote_at(symbol: str, at: datetime) -> PaperQuote:
    return SeededQuoteSource(SEED).quote(symbol, at)


async def funded(engine: PaperEngine, cash: str = "100000") -> tuple[str, str]:
    owner = new_user("paper")
    account = await engine.create_account(owner, Decimal(cash))
    return owner, account.broker_account_id


async def test_a_small_market_buy_fills_at_the_ask_and_books_cash_and_position(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    quote = quote_at("AAPL", START)

    order = await engine.place(owner, account, request(quantity="5"))

    assert order.status is OrderStatus.filled
    assert order.filled_quantity == Decimal(5)
    assert order.avg_fill_price == quote.ask
    balances = await engine.balances(owner, account)
    assert balances.cash == Decimal(100000) - 5 * quote.ask
    assert balances.buying_power == balances.cash
    [position] = await engine.positions(owner, account)
    assert (position.symbol, position.quantity, position.avg_cost) == ("AAPL", 5, quote.ask)


async def test_an_order_bigger_than_displayed_size_fills_partially_then_completes(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "10000000")
    displayed = quote_at("MSFT", START).ask_size
    wanted = displayed + 400

    order = await engine.place(owner, account, request("MSFT", quantity=str(wanted)))

    assert order.status is OrderStatus.partially_filled
    assert order.filled_quantity == displayed
    while order.status is not OrderStatus.filled:
        clock.advance(timedelta(seconds=1))
        await engine.tick()
        order = await engine.get_order(owner, account, order.broker_order_id)
    assert order.filled_quantity == wanted
    fills = await engine.fills(owner, account)
    assert sum(f.quantity for f in fills) == wanted
    assert [u.order.status for u in sink.updates][-1] is OrderStatus.filled
    expected_avg = sum(f.quantity * f.price for f in fills) / wanted
    assert abs(order.avg_fill_price - expected_avg) < Decimal("0.00000001")  # type: ignore[operator]


async def test_a_limit_buy_rests_until_the_ask_reaches_it(sessionmaker: SessionMaker) -> None:
    engine, clock, sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    ask = quote_at("NVDA", START).ask
    limit = ask - Decimal("1.00")

    order = await engine.place(
        owner,
        account,
        request("NVDA", order_type=OrderType.limit, tif=TimeInForce.gtc, limit=limit),
    )
    assert order.status is OrderStatus.accepted
    balances = await engine.balances(owner, account)
    assert balances.buying_power == Decimal(100000) - 10 * limit  # held for the order

    reached = first_time(START, "NVDA", lambda q: q.ask <= limit)
    clock.set(reached - timedelta(seconds=1))
    await engine.tick()
    assert (await engine.get_order(owner, account, order.broker_order_id)).status is (
        OrderStatus.accepted
    )
    clock.set(reached)
    assert await engine.tick() >= 1
    filled = await engine.get_order(owner, account, order.broker_order_id)
    assert filled.status is OrderStatus.filled
    assert filled.avg_fill_price is not None
    assert filled.avg_fill_price <= limit
    assert sink.updates[-1].order.broker_order_id == order.broker_order_id
    assert sink.updates[-1].fills[0].price == quote_at("NVDA", reached).ask


async def test_a_sell_stop_triggers_on_the_last_price_and_fills_at_the_bid(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    await engine.place(owner, account, request("TSLA", quantity="10"))
    stop = quote_at("TSLA", START).last - Decimal("2.00")

    order = await engine.place(
        owner,
        account,
        request("TSLA", OrderSide.sell, "10", OrderType.stop, TimeInForce.gtc, stop=stop),
    )
    assert order.status is OrderStatus.accepted

    hit = first_time(START, "TSLA", lambda q: q.last <= stop)
    clock.set(hit)
    await engine.tick()
    done = await engine.get_order(owner, account, order.broker_order_id)
    assert done.status is OrderStatus.filled
    assert done.avg_fill_price == quote_at("TSLA", hit).bid
    assert await engine.positions(owner, account) == []
    assert await engine.cycles_completed(owner) == 1


async def test_a_stop_limit_triggers_then_waits_for_its_limit(sessionmaker: SessionMaker) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    last = quote_at("AMZN", START).last
    stop = last + Decimal("1.00")
    limit = stop + Decimal("0.50")

    order = await engine.place(
        owner,
        account,
        request("AMZN", OrderSide.buy, "3", OrderType.stop_limit, TimeInForce.gtc, limit, stop),
    )
    assert order.status is OrderStatus.accepted
    hit = first_time(START, "AMZN", lambda q: q.last >= stop)
    clock.set(hit)
    await engine.tick()
    after = await engine.get_order(owner, account, order.broker_order_id)
    marketable = quote_at("AMZN", hit).ask <= limit
    assert after.status is (OrderStatus.filled if marketable else OrderStatus.accepted)
    if after.status is OrderStatus.filled:
        assert after.avg_fill_price is not None
        assert after.avg_fill_price <= limit


async def test_ioc_fills_what_is_displayed_and_cancels_the_rest(sessionmaker: SessionMaker) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "10000000")
    displayed = quote_at("SPY", START).ask_size

    order = await engine.place(
        owner, account, request("SPY", quantity=str(displayed + 10), tif=TimeInForce.ioc)
    )

    assert order.status is OrderStatus.canceled
    assert order.filled_quantity == displayed
    balances = await engine.balances(owner, account)
    assert balances.buying_power == balances.cash  # nothing stays reserved


async def test_fok_bigger_than_displayed_is_killed_with_nothing_filled(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "10000000")
    displayed = quote_at("QQQ", START).ask_size

    order = await engine.place(
        owner, account, request("QQQ", quantity=str(displayed + 1), tif=TimeInForce.fok)
    )

    assert order.status is OrderStatus.canceled
    assert order.filled_quantity == 0
    assert order.reject_reason is not None
    assert "fill-or-kill" in order.reject_reason
    assert await engine.positions(owner, account) == []
    assert (await engine.balances(owner, account)).cash == Decimal(10000000)


async def test_a_buy_beyond_buying_power_is_refused_and_nothing_is_booked(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "1000")

    with pytest.raises(broker_errors.InsufficientFunds):
        await engine.place(owner, account, request("META", quantity="10"))

    assert await engine.history(owner, account, None, None, None) == []
    balances = await engine.balances(owner, account)
    assert (balances.cash, balances.buying_power) == (Decimal(1000), Decimal(1000))


async def test_resting_buys_hold_buying_power_so_two_cannot_spend_it_twice(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "1000")
    limit = Decimal("50.00")  # far below the market: rests

    await engine.place(
        owner, account, request("AAPL", quantity="15", order_type=OrderType.limit, limit=limit)
    )
    with pytest.raises(broker_errors.InsufficientFunds):
        await engine.place(
            owner, account, request("AAPL", quantity="6", order_type=OrderType.limit, limit=limit)
        )


async def test_selling_more_than_held_is_refused(sessionmaker: SessionMaker) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    await engine.place(owner, account, request("IWM", quantity="4"))

    with pytest.raises(broker_errors.InsufficientFunds, match="short selling"):
        await engine.place(owner, account, request("IWM", OrderSide.sell, quantity="5"))


async def test_average_cost_and_realized_cycle(sessionmaker: SessionMaker) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    first = quote_at("VTI", START).ask
    await engine.place(owner, account, request("VTI", quantity="2"))
    later = clock.advance(timedelta(minutes=7))
    second = quote_at("VTI", later).ask
    await engine.place(owner, account, request("VTI", quantity="6"))

    position = await engine.position(owner, account, "VTI")
    assert position is not None
    assert position.quantity == 8
    expected = ((2 * first + 6 * second) / 8).quantize(Decimal("0.00000001"))
    assert position.avg_cost == expected

    await engine.place(owner, account, request("VTI", OrderSide.sell, quantity="3"))
    assert await engine.cycles_completed(owner) == 0
    await engine.place(owner, account, request("VTI", OrderSide.sell, quantity="5"))
    assert await engine.cycles_completed(owner) == 1
    assert await engine.position(owner, account, "VTI") is None


async def test_modify_and_cancel_a_resting_order_release_what_it_held(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "10000")
    order = await engine.place(
        owner,
        account,
        request("GOOGL", quantity="10", order_type=OrderType.limit, limit=Decimal("100")),
    )
    modified = await engine.modify(
        owner,
        account,
        order.broker_order_id,
        OrderChanges(quantity=Decimal(20), limit_price=Decimal("90")),
    )
    assert (modified.broker_order_id, modified.quantity, modified.limit_price) == (
        order.broker_order_id,
        20,
        Decimal(90),
    )
    assert (await engine.balances(owner, account)).buying_power == Decimal(10000 - 1800)

    canceled = await engine.cancel(owner, account, order.broker_order_id)
    assert canceled.status is OrderStatus.canceled
    assert (await engine.balances(owner, account)).buying_power == Decimal(10000)
    with pytest.raises(broker_errors.OrderNotModifiable):
        await engine.cancel(owner, account, order.broker_order_id)


async def test_day_orders_expire_at_midnight_utc_and_gtc_orders_do_not(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    low = Decimal("10.00")
    day = await engine.place(
        owner, account, request("AAPL", order_type=OrderType.limit, tif=TimeInForce.day, limit=low)
    )
    gtc = await engine.place(
        owner, account, request("AAPL", order_type=OrderType.limit, tif=TimeInForce.gtc, limit=low)
    )
    clock.set(datetime(2026, 11, 24, 0, 0, tzinfo=UTC))
    await engine.tick()
    assert (
        await engine.get_order(owner, account, day.broker_order_id)
    ).status is OrderStatus.expired
    assert (
        await engine.get_order(owner, account, gtc.broker_order_id)
    ).status is OrderStatus.accepted
    assert any(
        u.order.broker_order_id == day.broker_order_id and u.order.status is OrderStatus.expired
        for u in sink.updates
    )


async def test_accounts_of_another_owner_are_unknown(sessionmaker: SessionMaker) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    order = await engine.place(owner, account, request(quantity="1"))
    stranger = new_user("stranger")

    with pytest.raises(broker_errors.OrderNotFound):
        await engine.balances(stranger, account)
    with pytest.raises(broker_errors.OrderNotFound):
        await engine.get_order(stranger, account, order.broker_order_id)
    with pytest.raises(broker_errors.OrderNotFound):
        await engine.place(stranger, account, request(quantity="1"))
    assert await engine.find_by_client_id(stranger, account, order.client_order_id or "") is None


async def test_a_restarted_engine_keeps_working_the_resting_orders(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    limit = quote_at("META", START).ask - Decimal("3.00")
    order = await engine.place(
        owner,
        account,
        request("META", quantity="2", order_type=OrderType.limit, tif=TimeInForce.gtc, limit=limit),
    )
    del engine  # the process goes away; only the database remains

    reached = first_time(START, "META", lambda q: q.ask <= limit)
    restarted, _clock2, sink = make_engine(sessionmaker, start=reached)
    await restarted.tick()

    done = await restarted.get_order(owner, account, order.broker_order_id)
    assert done.status is OrderStatus.filled
    assert [u.order.broker_order_id for u in sink.updates if u.account_ref == account] == [
        order.broker_order_id
    ]


async def _scripted_session(sessionmaker: SessionMaker) -> list[tuple[object, ...]]:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "5000000")
    ask = quote_at("BTC-USD", START).ask
    await engine.place(owner, account, request("BTC-USD", quantity="0.5"))
    await engine.place(
        owner,
        account,
        request("ETH-USD", quantity="300", order_type=OrderType.market, tif=TimeInForce.gtc),
    )
    await engine.place(
        owner,
        account,
        request(
            "BTC-USD",
            quantity="0.25",
            order_type=OrderType.limit,
            tif=TimeInForce.gtc,
            limit=ask * Decimal("0.995"),
        ),
    )
    for _ in range(600):
        clock.advance(timedelta(seconds=1))
        await engine.tick()
    fills = await engine.fills(owner, account)
    return [(f.symbol, f.side, f.quantity, f.price, f.occurred_at) for f in fills]


async def test_same_seed_and_inputs_give_the_same_fills_bit_for_bit(
    sessionmaker: SessionMaker,
) -> None:
    first = await _scripted_session(sessionmaker)
    second = await _scripted_session(sessionmaker)
    assert len(first) >= 3
    assert first == second
    assert [str(f[3]) for f in first] == [str(f[3]) for f in second]


async def test_a_reused_client_order_id_is_refused_and_books_nothing(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    first = request(quantity="1")
    await engine.place(owner, account, first)
    cash = (await engine.balances(owner, account)).cash

    with pytest.raises(broker_errors.Rejected, match="client_order_id"):
        await engine.place(owner, account, first)

    assert len(await engine.history(owner, account, None, None, None)) == 1
    assert (await engine.balances(owner, account)).cash == cash


async def without_cash(sessionmaker: SessionMaker, account: str) -> dict[str, object]:
    """The paper account's columns as a locked read would hand them over, with no cash."""
    async with sessionmaker() as session:
        real = await session.get(PaperAccount, account)
        assert real is not None
        row: dict[str, object] = {
            c.key: getattr(real, c.key) for c in PaperAccount.__table__.columns
        }
    row["cash"] = Decimal(0)
    return row


@pytest.mark.parametrize(
    "asked",
    ["another symbol", "another account", "another owner", "no transaction", "an earlier one"],
)
async def test_rows_read_for_another_order_or_transaction_are_not_taken(
    sessionmaker: SessionMaker, asked: str
) -> None:
    """``locked`` rows stand in for the engine's own read only when they are for this
    account, owner and symbol, read in the caller's transaction: otherwise the engine
    reads (and locks) the account itself. Here the handed rows claim no cash at all."""
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    broke = await without_cash(sessionmaker, account)
    target = {
        "another symbol": (account, owner, "MSFT"),
        "another account": ("pa_other", owner, "AAPL"),
        "another owner": (account, "someone-else", "AAPL"),
        "no transaction": (account, owner, "AAPL"),
        "an earlier one": (account, owner, "AAPL"),
    }[asked]
    if asked == "no transaction":
        locked = LockedPaperRows(*target, account=broke, position=None, transaction=None)
        order = await engine.place(owner, account, request(quantity="5"), locked=locked)
    else:
        async with sessionmaker() as session:
            await session.execute(select(1))
            locked = LockedPaperRows(
                *target, account=broke, position=None, transaction=current_transaction(session)
            )
            if asked == "an earlier one":
                await session.commit()  # the rows' transaction is over, and its lock with it
            order = await engine.place(
                owner, account, request(quantity="5"), session=session, locked=locked
            )
            await session.commit()
    assert order.status is OrderStatus.filled


async def test_rows_read_under_the_lock_for_this_order_are_taken(
    sessionmaker: SessionMaker,
) -> None:
    """The same handed rows for this very account, owner and symbol are the engine's
    view: no cash, so the buy is refused."""
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    broke = await without_cash(sessionmaker, account)
    async with sessionmaker() as session:
        await session.execute(select(1))
        locked = LockedPaperRows(
            account,
            owner,
            "AAPL",
            account=broke,
            position=None,
            transaction=current_transaction(session),
        )
        with pytest.raises(broker_errors.InsufficientFunds):
            await engine.place(
                owner, account, request(quantity="5"), session=session, locked=locked
            )
        await session.rollback()

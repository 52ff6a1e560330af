"""One behavioural contract, run against every adapter: paper, Alpaca, Tradier, tastytrade,
Schwab and SnapTrade (fakes).

The paper venue uses the SQLite backend (the paper engine's own tests cover Postgres). Each
venue gives an adapter bound to a fresh funded account and a way to let the market
move (``settle``): the paper engine's clock and tick, the fake's matching pass. The contract
is written against ``BrokerAdapter`` only; where brokers legitimately differ (replace keeps
the id at the paper broker and Tradier, makes a new one at Alpaca, tastytrade, Schwab and
SnapTrade; tastytrade answers a new order "Routed", i.e. ``submitted``, before it is ``Live``;
Schwab and SnapTrade have no client order id, so an order is found by fingerprint instead, as
``capabilities.client_order_ids`` says) both outcomes are spelled out.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.brokers import errors
from app.brokers.base import (
    BrokerAdapter,
    FingerprintLookup,
    OrderChanges,
    OrderFingerprint,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Support,
    TimeInForce,
)
from app.db.session import create_sessionmaker
from app.paper.adapter import PaperAdapter
from app.paper.clock import ManualClock
from app.paper.engine import PaperEngine
from app.paper.quotes import SeededQuoteSource
from tests.brokers.alpaca.support import running_fake
from tests.brokers.schwab.support import running_fake as running_schwab
from tests.brokers.snaptrade.support import running_fake as running_snaptrade
from tests.brokers.tastytrade.support import running_fake as running_tastytrade
from tests.brokers.tradier.support import running_fake as running_tradier
from tests.conftest import new_user
from tests.harness import CLOCK_START


@dataclass
class Venue:
    adapter: BrokerAdapter
    account_ref: str
    settle: Callable[[], Awaitable[object]]


async def _ignore(_update: object) -> None:
    return None


@contextlib.asynccontextmanager
async def venue(name: str, engine: AsyncEngine, cash: str) -> AsyncIterator[Venue]:
    if name == "paper":
        clock = ManualClock(CLOCK_START)
        paper = PaperEngine(create_sessionmaker(engine), SeededQuoteSource(7), clock, _ignore)
        owner = new_user("contract")
        account = await paper.create_account(owner, Decimal(cash))

        async def tick() -> object:
            clock.advance(timedelta(seconds=1))
            return await paper.tick()

        yield Venue(PaperAdapter(paper, owner=owner), account.broker_account_id, tick)
        return
    if name == "tradier":
        async with running_tradier(cash=cash) as tradier:
            yield Venue(tradier.adapter(), tradier.account.number, tradier.fake.match)
        return
    if name == "tastytrade":
        async with running_tastytrade(cash=cash) as tt:
            yield Venue(tt.adapter(), tt.account.number, tt.fake.match)
        return
    if name == "schwab":
        async with running_schwab(cash=cash) as schwab:
            yield Venue(schwab.adapter(), schwab.account.hash_value, schwab.fake.match)
        return
    if name == "snaptrade":
        async with running_snaptrade(cash=cash) as snap:
            yield Venue(snap.adapter(), snap.account.id, snap.fake.match)
        return
    async with running_fake(cash=cash) as run:
        yield Venue(run.adapter(), run.account.id, run.fake.match)


def order(
    *,
    side: OrderSide = OrderSide.buy,
    qty: str = "2",
    order_type: OrderType = OrderType.limit,
    limit: str | None = "1.00",
    tif: TimeInForce = TimeInForce.gtc,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bgc" + uuid.uuid4().hex[:20],
        symbol="AAPL",
        side=side,
        quantity=Decimal(qty),
        order_type=order_type,
        time_in_force=tif,
        limit_price=None if limit is None else Decimal(limit),
    )


VENUES = ["paper", "alpaca", "tradier", "tastytrade", "schwab", "snaptrade"]


@pytest.mark.parametrize("name", VENUES)
async def test_a_resting_order_is_found_every_way(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        request = order()
        submitted_at = datetime.now(UTC)
        placed = await v.adapter.place_order(v.account_ref, request)
        assert placed.status in (OrderStatus.submitted, OrderStatus.accepted)
        assert placed.filled_quantity == 0
        got = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
        assert (got.broker_order_id, got.limit_price) == (placed.broker_order_id, Decimal(1))
        assert got.status is OrderStatus.accepted
        if v.adapter.capabilities.client_order_ids is Support.native:
            found = await v.adapter.find_order_by_client_id(
                v.account_ref, placed.client_order_id or ""
            )
            assert found is not None
            assert found.broker_order_id == placed.broker_order_id
            assert await v.adapter.find_order_by_client_id(v.account_ref, "bgc-none") is None
        else:
            assert isinstance(v.adapter, FingerprintLookup)
            fingerprint = OrderFingerprint.of(request, submitted_at)
            found = await v.adapter.find_order_by_fingerprint(
                v.account_ref, fingerprint, frozenset()
            )
            assert found is not None
            assert found.broker_order_id == placed.broker_order_id
            claimed = frozenset({placed.broker_order_id})
            assert (
                await v.adapter.find_order_by_fingerprint(v.account_ref, fingerprint, claimed)
                is None
            )
            with pytest.raises(errors.NotSupported):
                await v.adapter.find_order_by_client_id(v.account_ref, request.client_order_id)
        open_ids = [
            o.broker_order_id for o in await v.adapter.list_orders(v.account_ref, "open", 50)
        ]
        assert placed.broker_order_id in open_ids


@pytest.mark.parametrize("name", VENUES)
async def test_cancel_then_cancel_again(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        placed = await v.adapter.place_order(v.account_ref, order())
        canceled = await v.adapter.cancel_order(v.account_ref, placed.broker_order_id)
        assert canceled.status in (OrderStatus.canceled, OrderStatus.pending_cancel)
        with pytest.raises(errors.OrderNotModifiable):
            await v.adapter.cancel_order(v.account_ref, placed.broker_order_id)


@pytest.mark.parametrize("name", VENUES)
async def test_modify_a_resting_limit(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        placed = await v.adapter.place_order(v.account_ref, order())
        changed = await v.adapter.modify_order(
            v.account_ref, placed.broker_order_id, OrderChanges(limit_price=Decimal("1.50"))
        )
        assert changed.limit_price == Decimal("1.50")
        if changed.broker_order_id != placed.broker_order_id:  # replace-style brokers
            assert changed.replaces == placed.broker_order_id
            old = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
            assert old.status is OrderStatus.replaced


@pytest.mark.parametrize("name", VENUES)
async def test_a_market_buy_fills_into_a_position(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        placed = await v.adapter.place_order(
            v.account_ref, order(order_type=OrderType.market, limit=None, tif=TimeInForce.day)
        )
        for _ in range(5):
            current = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
            if current.status is OrderStatus.filled:
                break
            await v.settle()
        assert current.status is OrderStatus.filled
        assert current.filled_quantity == Decimal(2)
        position = await v.adapter.get_position(v.account_ref, "AAPL")
        assert position is not None
        assert position.quantity == Decimal(2)
        balances = await v.adapter.get_balances(v.account_ref)
        assert balances.cash < Decimal(100000)


@pytest.mark.parametrize("name", VENUES)
async def test_refusals(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100") as v:
        with pytest.raises(errors.InsufficientFunds):
            await v.adapter.place_order(
                v.account_ref,
                order(qty="10", order_type=OrderType.market, limit=None, tif=TimeInForce.day),
            )
        with pytest.raises(errors.UnknownSymbol):
            await v.adapter.check_symbol("NOSUCHSYM")
        with pytest.raises(errors.OrderNotFound):
            await v.adapter.get_order(v.account_ref, "6f1b9c8e-0000-4000-8000-000000000000")


@pytest.mark.parametrize("name", VENUES)
async def test_quotes(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        quotes = await v.adapter.get_quotes(["AAPL"])
        quote = quotes["AAPL"]
        assert isinstance(quote.bid, Decimal)
        assert quote.bid < quote.ask
        assert quote.as_of.tzinfo is not None


@pytest.mark.parametrize("name", VENUES)
async def test_the_account_and_its_starting_balances(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "25000") as v:
        accounts = await v.adapter.list_accounts()
        assert v.account_ref in [a.broker_account_id for a in accounts]
        balances = await v.adapter.get_balances(v.account_ref)
        assert (balances.cash, balances.buying_power) == (Decimal(25000), Decimal(25000))
        assert balances.currency == "USD"
        assert balances.as_of.tzinfo is not None
        assert await v.adapter.get_positions(v.account_ref) == []


@pytest.mark.parametrize("name", VENUES)
async def test_open_and_closed_orders_are_told_apart(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        resting = await v.adapter.place_order(v.account_ref, order())
        gone = await v.adapter.place_order(v.account_ref, order())
        await v.adapter.cancel_order(v.account_ref, gone.broker_order_id)
        assert (await v.adapter.get_order(v.account_ref, gone.broker_order_id)).status is (
            OrderStatus.canceled
        )
        open_ids = {
            o.broker_order_id for o in await v.adapter.list_orders(v.account_ref, "open", 50)
        }
        closed_ids = {
            o.broker_order_id for o in await v.adapter.list_orders(v.account_ref, "closed", 50)
        }
        assert resting.broker_order_id in open_ids - closed_ids
        assert gone.broker_order_id in closed_ids - open_ids
        history = await v.adapter.order_history(v.account_ref, None, None, "AAPL")
        assert {resting.broker_order_id, gone.broker_order_id} <= {
            o.broker_order_id for o in history
        }


@pytest.mark.parametrize("name", VENUES)
async def test_a_fill_is_a_transaction(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        placed = await v.adapter.place_order(
            v.account_ref, order(order_type=OrderType.market, limit=None, tif=TimeInForce.day)
        )
        for _ in range(5):
            current = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
            if current.status is OrderStatus.filled:
                break
            await v.settle()
        assert current.avg_fill_price is not None
        buys = await v.adapter.get_transactions(v.account_ref, None, None, "buy")
        assert [(t.symbol, t.quantity) for t in buys] == [("AAPL", Decimal(2))]
        assert buys[0].amount == -(Decimal(2) * current.avg_fill_price)
        deposits = await v.adapter.get_transactions(v.account_ref, None, None, "deposit")
        assert sum(t.amount for t in deposits) == Decimal(100000)

"""The paper broker's books: accounts, orders, fills and positions, kept in the database.

Every write runs in one transaction that first locks the paper account row, so cash,
reservations and positions change together or not at all, and a restart (or a second app
instance) sees exactly what was committed. Orders rest in ``paper_orders``; the ticker
re-evaluates them against the seeded quote source at the injected clock's time, so the same
seed, clock and inputs give the same fills, bit for bit.

Money rules:

* Buying power is ``cash - reserved_cash``. A buy reserves its worst expected cost when it
  is placed: ``quantity * limit`` for limit and stop-limit orders, ``quantity * reference *
  (1 + collar)`` for market and stop orders (reference: the ask, or the stop price when
  higher). A buy whose reservation exceeds buying power is refused (``InsufficientFunds``).
* A fill releases the reservation of the filled quantity and moves the real cost from cash.
  Should a market fill cost more than cash not held for other orders, the rest of that order
  is canceled (never a negative balance).
* Sells need the quantity in the position, net of other open sells: no short selling.
* A cycle completes when a position goes from flat to open and back to flat.

Updates that the ticker produces are handed to ``sink`` (the upstream feed seam) only after
their transaction has committed; placement, modification and cancellation return the new
state to their caller instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import (
    ROUND_CEILING,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.brokers import errors as broker_errors
from app.brokers.base import (
    Balances,
    BrokerAccount,
    BrokerOrder,
    Fill,
    OrderChanges,
    OrderListFilter,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    TimeInForce,
    Transaction,
)
from app.db.models import PaperAccount, PaperFill, PaperOrder, PaperPosition
from app.db.session import SessionMaker
from app.ids import new_id
from app.paper.clock import Clock
from app.paper.matching import OrderState, decide, has_limit, is_stop_type
from app.paper.quotes import SeededQuoteSource
from app.paper.store import OPEN_STATUSES, PaperStore, is_open

log = logging.getLogger(__name__)

ZERO = Decimal(0)
CENT = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.00000001")
MARKET_COLLAR = Decimal("0.05")
TICK_BATCH = 100

OrderSink = Callable[[OrderUpdate], Awaitable[None]]

# Quantities and prices may each carry up to 28 significant digits (18 integer, 10 decimal
# places), so their products and averages need more than the default 28-digit context; an
# inexact or overflowing result is a bug and raises instead of rounding silently.
_MONEY_CONTEXT = Context(prec=80, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, Overflow])

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _exact_money(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """Run a coroutine method under the money context (decimal contexts are per task)."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext(_MONEY_CONTEXT):
            return await method(*args, **kwargs)

    return wrapper


PositionKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Outcome:
    changed: bool
    fills: tuple[Fill, ...] = ()


def _end_of_day(at: datetime) -> datetime:
    """Day orders expire at the next midnight UTC: the paper market trades around the clock."""
    return datetime.combine(at.date() + timedelta(days=1), time(0), tzinfo=at.tzinfo)


def to_broker_order(row: PaperOrder) -> BrokerOrder:
    return BrokerOrder(
        broker_order_id=row.id,
        client_order_id=row.client_order_id,
        symbol=row.symbol,
        side=OrderSide(row.side),
        quantity=row.quantity,
        filled_quantity=row.filled_quantity,
        avg_fill_price=row.avg_fill_price,
        order_type=OrderType(row.order_type),
        time_in_force=TimeInForce(row.time_in_force),
        status=OrderStatus(row.status),
        limit_price=row.limit_price,
        stop_price=row.stop_price,
        created_at=row.created_at,
        updated_at=row.updated_at,
        reject_reason=row.reject_reason,
    )


def _masked(account_id: str) -> str:
    return "****" + account_id[-4:]


def _broker_account(row: PaperAccount) -> BrokerAccount:
    return BrokerAccount(
        broker_account_id=row.id, name="Paper account", number_masked=_masked(row.id)
    )


class PaperEngine:
    """The paper market. Methods taking ``owner`` only ever see that owner's accounts.

    Raises ``app.brokers.errors`` exceptions like any broker: ``OrderNotFound`` for an
    account or order the owner does not have, ``UnknownSymbol``, ``InsufficientFunds``,
    ``UnsupportedOrder`` and ``OrderNotModifiable`` for refusals.
    """

    def __init__(
        self,
        sessionmaker: SessionMaker,
        quotes: SeededQuoteSource,
        clock: Clock,
        sink: OrderSink | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.quote_source = quotes
        self.clock = clock
        self._sink = sink

    # --- accounts --------------------------------------------------------------------

    async def create_account(self, owner: str, starting_cash: Decimal) -> BrokerAccount:
        if starting_cash < ZERO:
            raise ValueError("starting cash cannot be negative")
        now = self.clock.now()
        row = PaperAccount(
            id=new_id("pa"),
            owner=owner,
            starting_cash=starting_cash,
            cash=starting_cash,
            reserved_cash=ZERO,
            seq=0,
            cycles_completed=0,
            created_at=now,
            updated_at=now,
        )
        async with self._sessionmaker() as session:
            session.add(row)
            await session.commit()
        return _broker_account(row)

    async def list_accounts(self, owner: str) -> list[BrokerAccount]:
        async with self._sessionmaker() as session:
            rows = await PaperStore(session).accounts_of(owner)
            return [_broker_account(row) for row in rows]

    async def _account(
        self, store: PaperStore, owner: str, account_id: str, *, lock: bool
    ) -> PaperAccount:
        account = await store.account(account_id, owner=owner, lock=lock)
        if account is None:
            raise broker_errors.OrderNotFound("no such paper account", broker="paper")
        return account

    @_exact_money
    async def balances(self, owner: str, account_id: str) -> Balances:
        now = self.clock.now()
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=False)
            positions = await store.positions([account.id])
        market_value = sum(
            (p.quantity * self._mark(p.symbol, now) for p in positions if p.quantity != ZERO),
            ZERO,
        )
        return Balances(
            cash=account.cash,
            equity=account.cash + market_value,
            buying_power=account.cash - account.reserved_cash,
            currency="USD",
            as_of=now,
        )

    async def cycles_completed(self, owner: str, session: AsyncSession | None = None) -> int:
        """Completed round trips over all of the owner's paper accounts (the paper-first gate).

        Pass ``session`` to read inside the caller's transaction: on SQLite the order path
        already holds the one write lock, and a second session would wait for it.
        """
        if session is not None:
            rows = await PaperStore(session).accounts_of(owner)
            return sum(row.cycles_completed for row in rows)
        async with self._sessionmaker() as own:
            rows = await PaperStore(own).accounts_of(owner)
            return sum(row.cycles_completed for row in rows)

    # --- positions and quotes ----------------------------------------------------------

    def _mark(self, symbol: str, at: datetime) -> Decimal:
        return self.quote_source.quote(symbol, at).mid

    def _position(self, row: PaperPosition, at: datetime) -> Position:
        price = self._mark(row.symbol, at)
        value = row.quantity * price
        return Position(
            symbol=row.symbol,
            asset_class=self.quote_source.asset_class(row.symbol),
            quantity=row.quantity,
            avg_cost=row.avg_cost,
            current_price=price,
            market_value=value,
            unrealized_pl=value - row.quantity * row.avg_cost,
            as_of=at,
        )

    @_exact_money
    async def positions(self, owner: str, account_id: str) -> list[Position]:
        now = self.clock.now()
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=False)
            rows = await store.positions([account.id])
        return [self._position(row, now) for row in rows if row.quantity != ZERO]

    @_exact_money
    async def position(self, owner: str, account_id: str, symbol: str) -> Position | None:
        now = self.clock.now()
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=False)
            row = await store.position(account.id, symbol)
        if row is None or row.quantity == ZERO:
            return None
        return self._position(row, now)

    def check_symbol(self, symbol: str) -> None:
        """Raises ``UnknownSymbol`` for a symbol the paper market does not list."""
        self.quote_source.instrument(symbol)

    async def quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        now = self.clock.now()
        result: dict[str, Quote] = {}
        for symbol in symbols:
            q = self.quote_source.quote(symbol, now)
            result[symbol] = Quote(symbol=symbol, bid=q.bid, ask=q.ask, last=q.last, as_of=q.as_of)
        return result

    # --- orders ----------------------------------------------------------------------

    @_exact_money
    async def place(self, owner: str, account_id: str, request: OrderRequest) -> BrokerOrder:
        _validate_shape(
            request.order_type, request.quantity, request.limit_price, request.stop_price
        )
        self.check_symbol(request.symbol)
        now = self.clock.now()
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=True)
            position = await store.position(account.id, request.symbol)
            positions: dict[PositionKey, PaperPosition] = {}
            if position is not None:
                positions[(account.id, request.symbol)] = position
            reserved_cash = ZERO
            if request.side is OrderSide.buy:
                reserved_cash = self._reservation(
                    request.symbol,
                    request.order_type,
                    request.quantity,
                    request.limit_price,
                    request.stop_price,
                    now,
                )
                buying_power = account.cash - account.reserved_cash
                if reserved_cash > buying_power:
                    raise broker_errors.InsufficientFunds(
                        f"insufficient buying power: {reserved_cash} needed, "
                        f"{buying_power} available",
                        broker="paper",
                    )
                account.reserved_cash += reserved_cash
            else:
                available = (
                    ZERO if position is None else position.quantity - position.reserved_quantity
                )
                if request.quantity > available:
                    raise broker_errors.InsufficientFunds(
                        f"insufficient quantity: {request.quantity} requested, "
                        f"{available} available (short selling is not supported)",
                        broker="paper",
                    )
                assert position is not None
                position.reserved_quantity += request.quantity
            account.seq += 1
            order = PaperOrder(
                id=f"po_{account.seq:010d}_{account.id[-24:]}",
                seq=account.seq,
                paper_account_id=account.id,
                client_order_id=request.client_order_id,
                symbol=request.symbol,
                side=request.side.value,
                quantity=request.quantity,
                filled_quantity=ZERO,
                avg_fill_price=None,
                order_type=request.order_type.value,
                limit_price=request.limit_price,
                stop_price=request.stop_price,
                time_in_force=request.time_in_force.value,
                extended_hours=request.extended_hours,
                stop_triggered=False,
                status=OrderStatus.accepted.value,
                reject_reason=None,
                reserved_cash=reserved_cash,
                created_at=now,
                updated_at=now,
                expires_at=_end_of_day(now) if request.time_in_force is TimeInForce.day else None,
            )
            account.updated_at = now
            store.hold_fills()
            self._evaluate(store, account, order, positions, now)
            store.add(order)
            try:
                # The order row goes in first (its fills reference it); the unique
                # (account, client_order_id) constraint refuses a reused client order id.
                await session.flush()
            except IntegrityError as exc:
                await session.rollback()
                raise broker_errors.Rejected(
                    "client_order_id must be unique", broker="paper"
                ) from exc
            store.release_fills()
            await session.commit()
            return to_broker_order(order)

    def _reservation(
        self,
        symbol: str,
        order_type: OrderType,
        quantity: Decimal,
        limit_price: Decimal | None,
        stop_price: Decimal | None,
        now: datetime,
    ) -> Decimal:
        if has_limit(order_type):
            assert limit_price is not None
            reference = limit_price
        else:
            reference = self.quote_source.quote(symbol, now).ask
            if stop_price is not None:
                reference = max(reference, stop_price)
            reference = reference * (1 + MARKET_COLLAR)
        return (quantity * reference).quantize(CENT, rounding=ROUND_CEILING)

    @_exact_money
    async def modify(
        self, owner: str, account_id: str, order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """Change a working order in place (same id), then match it at once.

        Raises ``OrderNotModifiable`` when the order is no longer working or the new
        quantity is not above what has filled, ``InsufficientFunds`` when a bigger buy no
        longer fits the buying power.
        """
        now = self.clock.now()
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=True)
            order = await store.order(account.id, order_id, lock=True)
            if order is None:
                raise broker_errors.OrderNotFound("no such order", broker="paper")
            if not is_open(order.status):
                raise broker_errors.OrderNotModifiable(
                    f"the order is {order.status}", broker="paper"
                )
            order_type = OrderType(order.order_type)
            quantity = changes.quantity if changes.quantity is not None else order.quantity
            limit_price = (
                changes.limit_price if changes.limit_price is not None else order.limit_price
            )
            stop_price = changes.stop_price if changes.stop_price is not None else order.stop_price
            _validate_shape(order_type, quantity, limit_price, stop_price)
            if quantity <= order.filled_quantity:
                raise broker_errors.OrderNotModifiable(
                    "quantity must stay above what has already filled", broker="paper"
                )
            if changes.time_in_force in (TimeInForce.ioc, TimeInForce.fok):
                raise broker_errors.UnsupportedOrder(
                    "a resting order cannot become ioc or fok", broker="paper"
                )
            remaining = quantity - order.filled_quantity
            positions: dict[PositionKey, PaperPosition] = {}
            position = await store.position(account.id, order.symbol)
            if position is not None:
                positions[(account.id, order.symbol)] = position
            if order.side == OrderSide.buy.value:
                needed = self._reservation(
                    order.symbol, order_type, remaining, limit_price, stop_price, now
                )
                available = account.cash - account.reserved_cash + order.reserved_cash
                if needed > available:
                    raise broker_errors.InsufficientFunds(
                        f"insufficient buying power: {needed} needed, {available} available",
                        broker="paper",
                    )
                account.reserved_cash += needed - order.reserved_cash
                order.reserved_cash = needed
            else:
                assert position is not None  # an open sell holds a reservation on it
                old_remaining = order.quantity - order.filled_quantity
                free = position.quantity - position.reserved_quantity + old_remaining
                if remaining > free:
                    raise broker_errors.InsufficientFunds(
                        f"insufficient quantity: {remaining} wanted, {free} available",
                        broker="paper",
                    )
                position.reserved_quantity += remaining - old_remaining
            order.quantity = quantity
            order.limit_price = limit_price
            order.stop_price = stop_price
            if changes.time_in_force is not None:
                order.time_in_force = changes.time_in_force.value
                order.expires_at = (
                    _end_of_day(now) if changes.time_in_force is TimeInForce.day else None
                )
            order.updated_at = now
            account.updated_at = now
            self._evaluate(store, account, order, positions, now)
            await session.commit()
            return to_broker_order(order)

    async def cancel(self, owner: str, account_id: str, order_id: str) -> BrokerOrder:
        """Cancel a working order; ``OrderNotModifiable`` once it is filled or closed."""
        now = self.clock.now()
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=True)
            order = await store.order(account.id, order_id, lock=True)
            if order is None:
                raise broker_errors.OrderNotFound("no such order", broker="paper")
            if not is_open(order.status):
                raise broker_errors.OrderNotModifiable(
                    f"the order is {order.status}", broker="paper"
                )
            position = await store.position(account.id, order.symbol)
            self._close(account, order, position, OrderStatus.canceled, now, None)
            await session.commit()
            return to_broker_order(order)

    async def get_order(self, owner: str, account_id: str, order_id: str) -> BrokerOrder:
        async with self._sessionmaker() as session:
            order = await PaperStore(session).order(account_id, order_id, owner=owner)
            if order is None:
                raise broker_errors.OrderNotFound("no such order", broker="paper")
            return to_broker_order(order)

    async def find_by_client_id(
        self, owner: str, account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        async with self._sessionmaker() as session:
            order = await PaperStore(session).order_by_client_id(
                account_id, client_order_id, owner=owner
            )
            return None if order is None else to_broker_order(order)

    async def list_orders(
        self, owner: str, account_id: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            await self._account(store, owner, account_id, lock=False)
            rows = await store.orders(
                account_id,
                statuses=OPEN_STATUSES if status == "open" else None,
                exclude_statuses=OPEN_STATUSES if status == "closed" else None,
                limit=limit,
            )
            return [to_broker_order(row) for row in rows]

    async def history(
        self,
        owner: str,
        account_id: str,
        start: datetime | None,
        end: datetime | None,
        symbol: str | None,
    ) -> list[BrokerOrder]:
        """Every order of the account, oldest first, optionally within a window."""
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            await self._account(store, owner, account_id, lock=False)
            rows = await store.orders(
                account_id,
                created_from=start,
                created_to=end,
                symbol=symbol,
                newest_first=False,
            )
            return [to_broker_order(row) for row in rows]

    @_exact_money
    async def transactions(
        self,
        owner: str,
        account_id: str,
        start: datetime | None,
        end: datetime | None,
        type_: str | None,
    ) -> list[Transaction]:
        """The opening deposit and every fill (buys negative, sells positive), oldest first."""
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=False)
            fills = await store.fills(account.id, start=start, end=end)
        found: list[Transaction] = []
        in_window = (start is None or account.created_at >= start) and (
            end is None or account.created_at <= end
        )
        if in_window and type_ in (None, "deposit"):
            found.append(
                Transaction(
                    transaction_id=f"dep_{account.id}",
                    type="deposit",
                    occurred_at=account.created_at,
                    amount=account.starting_cash,
                    description="paper account opening balance",
                )
            )
        for fill in fills:
            kind = fill.side
            if type_ not in (None, "trade", kind):
                continue
            value = fill.quantity * fill.price
            found.append(
                Transaction(
                    transaction_id=fill.id,
                    type=kind,
                    occurred_at=fill.occurred_at,
                    amount=-value if kind == "buy" else value,
                    symbol=fill.symbol,
                    quantity=fill.quantity,
                    price=fill.price,
                    description=f"{kind} {fill.quantity} {fill.symbol} @ {fill.price}",
                )
            )
        return found

    async def fills(self, owner: str, account_id: str) -> list[PaperFill]:
        """Every fill of the account in the order it happened (for tests and audits)."""
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=False)
            return list(await store.fills(account.id))

    # --- matching --------------------------------------------------------------------

    @_exact_money
    async def tick(self) -> int:
        """Evaluate every working order at the clock's time; returns how many changed.

        Accounts are claimed in batches with ``SKIP LOCKED`` so a busy account (or one
        another instance is ticking) waits for the next tick instead of blocking this one.
        The sink hears about each change after its batch has committed; a failing sink is
        logged, and the change is still in the paper books for reconciliation to find.
        """
        now = self.clock.now()
        changed = 0
        after: str | None = None
        while True:
            updates: list[OrderUpdate] = []
            async with self._sessionmaker() as session:
                store = PaperStore(session)
                accounts = await store.claim_accounts_with_open_orders(after, TICK_BATCH)
                if not accounts:
                    break
                by_id = {account.id: account for account in accounts}
                orders = await store.claim_open_orders(list(by_id))
                positions = {
                    (p.paper_account_id, p.symbol): p for p in await store.positions(list(by_id))
                }
                for order in orders:
                    account = by_id[order.paper_account_id]
                    outcome = self._evaluate(store, account, order, positions, now)
                    if outcome.changed:
                        updates.append(
                            OrderUpdate(
                                account_ref=account.id,
                                order=to_broker_order(order),
                                occurred_at=now,
                                fills=outcome.fills,
                            )
                        )
                await session.commit()
            changed += len(updates)
            await self._deliver(updates)
            after = accounts[-1].id
            if len(accounts) < TICK_BATCH:
                break
        return changed

    async def _deliver(self, updates: list[OrderUpdate]) -> None:
        if self._sink is None:
            return
        for update in updates:
            try:
                await self._sink(update)
            except Exception:
                log.exception(
                    "paper order update not delivered",
                    extra={"broker_order_id": update.order.broker_order_id},
                )

    def _evaluate(
        self,
        store: PaperStore,
        account: PaperAccount,
        order: PaperOrder,
        positions: dict[PositionKey, PaperPosition],
        now: datetime,
    ) -> _Outcome:
        """Match one working order against the quote at ``now`` and book what happens."""
        key = (account.id, order.symbol)
        if order.expires_at is not None and now >= order.expires_at:
            self._close(account, order, positions.get(key), OrderStatus.expired, now, None)
            return _Outcome(True)
        quote = self.quote_source.quote(order.symbol, now)
        state = OrderState(
            side=OrderSide(order.side),
            order_type=OrderType(order.order_type),
            time_in_force=TimeInForce(order.time_in_force),
            remaining=order.quantity - order.filled_quantity,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            stop_triggered=order.stop_triggered,
        )
        decision = decide(state, quote)
        changed = False
        fills: tuple[Fill, ...] = ()
        if decision.stop_triggered and not order.stop_triggered:
            order.stop_triggered = True
            changed = True
        if decision.fills:
            assert decision.fill_price is not None
            fill = self._fill(
                store, account, order, positions, decision.fill_quantity, decision.fill_price, now
            )
            if fill is None:
                self._close(
                    account,
                    order,
                    positions.get(key),
                    OrderStatus.canceled,
                    now,
                    "insufficient buying power at the fill price",
                )
                return _Outcome(True)
            fills = (fill,)
            changed = True
        remaining = order.quantity - order.filled_quantity
        if decision.cancel_remainder and remaining > ZERO:
            self._close(
                account, order, positions.get(key), OrderStatus.canceled, now, decision.reason
            )
            return _Outcome(True, fills)
        if fills:
            order.status = (
                OrderStatus.filled.value
                if remaining == ZERO
                else OrderStatus.partially_filled.value
            )
        if changed:
            order.updated_at = now
        return _Outcome(changed, fills)

    def _fill(
        self,
        store: PaperStore,
        account: PaperAccount,
        order: PaperOrder,
        positions: dict[PositionKey, PaperPosition],
        quantity: Decimal,
        price: Decimal,
        now: datetime,
    ) -> Fill | None:
        """Book one fill; None (nothing booked) when a buy would overdraw the account."""
        key = (account.id, order.symbol)
        position = positions.get(key)
        value = quantity * price
        remaining_before = order.quantity - order.filled_quantity
        if order.side == OrderSide.buy.value:
            if quantity == remaining_before:
                release = order.reserved_cash
            else:
                release = (order.reserved_cash * quantity / remaining_before).quantize(
                    CENT, rounding=ROUND_HALF_EVEN
                )
                release = min(release, order.reserved_cash)
            free_cash = account.cash - (account.reserved_cash - order.reserved_cash)
            if value > free_cash:
                return None
            account.cash -= value
            account.reserved_cash -= release
            order.reserved_cash -= release
            if position is None:
                position = PaperPosition(
                    paper_account_id=account.id,
                    symbol=order.symbol,
                    asset_class=self.quote_source.asset_class(order.symbol).value,
                    quantity=ZERO,
                    avg_cost=ZERO,
                    realized_pl=ZERO,
                    reserved_quantity=ZERO,
                    updated_at=now,
                )
                store.add(position)
                positions[key] = position
            held = position.quantity
            position.avg_cost = ((held * position.avg_cost + value) / (held + quantity)).quantize(
                PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
            )
            position.quantity = held + quantity
        else:
            assert position is not None  # the sell reserved quantity on it when placed
            account.cash += value
            position.realized_pl += (price - position.avg_cost) * quantity
            position.quantity -= quantity
            position.reserved_quantity -= quantity
            if position.quantity == ZERO:
                account.cycles_completed += 1
                position.avg_cost = ZERO
        position.updated_at = now
        filled_before = order.filled_quantity
        order.filled_quantity = filled_before + quantity
        previous_value = (
            ZERO if order.avg_fill_price is None else order.avg_fill_price * filled_before
        )
        order.avg_fill_price = ((previous_value + value) / order.filled_quantity).quantize(
            PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
        )
        account.seq += 1
        account.updated_at = now
        fill = PaperFill(
            id=f"pf_{account.seq:010d}_{account.id[-24:]}",
            paper_order_id=order.id,
            paper_account_id=account.id,
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            occurred_at=now,
        )
        store.add_fill(fill)
        return Fill(fill_id=fill.id, quantity=quantity, price=price, occurred_at=now)

    @staticmethod
    def _close(
        account: PaperAccount,
        order: PaperOrder,
        position: PaperPosition | None,
        status: OrderStatus,
        now: datetime,
        reason: str | None,
    ) -> None:
        """End a working order and give back what it held."""
        remaining = order.quantity - order.filled_quantity
        if order.side == OrderSide.buy.value:
            account.reserved_cash -= order.reserved_cash
            order.reserved_cash = ZERO
        elif position is not None:
            position.reserved_quantity -= remaining
            position.updated_at = now
        order.status = status.value
        if reason is not None:
            order.reject_reason = reason
        order.updated_at = now
        account.updated_at = now


def _validate_shape(
    order_type: OrderType,
    quantity: Decimal,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
) -> None:
    if quantity <= ZERO:
        raise broker_errors.UnsupportedOrder("quantity must be positive", broker="paper")
    if has_limit(order_type) and (limit_price is None or limit_price <= ZERO):
        raise broker_errors.UnsupportedOrder("a positive limit_price is required", broker="paper")
    if is_stop_type(order_type) and (stop_price is None or stop_price <= ZERO):
        raise broker_errors.UnsupportedOrder("a positive stop_price is required", broker="paper")


async def run_ticker(engine: PaperEngine, interval: float, stop: asyncio.Event) -> None:
    """Advance the paper market every ``interval`` seconds until ``stop`` is set.

    A failed tick is logged and retried on the next one: resting orders are in the
    database, so nothing is lost by a skipped tick.
    """
    while not stop.is_set():
        try:
            await engine.tick()
        except Exception:
            log.exception("paper tick failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            continue

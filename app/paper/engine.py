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
* Sells need the quantity in the position, net of other open sells and pledged shares.
* Accounts are ``cash`` (the default: what every paper account was before short sales, and
  the safe reading of an account that says nothing) or ``margin``. Only a margin account
  sells short, and only when it says so: ``position_effect`` ``open`` on a sell (the API's
  short sale). A plain sell beyond the long position stays a refusal, so a mistyped
  quantity never opens a short by accident. A short sale takes whole shares of an equity,
  from a flat or short position (a long position is sold first); borrow is assumed. Its
  proceeds are credited to cash and Reg T's initial requirement, 150% of the entry value,
  is held in buying power (``short_requirement``): net, a short consumes 50% of its value.
  A working short sale reserves that 50% at ``bid * (1 + collar)`` (or the limit, when
  higher). A buy against a short position is a cover (``position_effect`` ``close`` or
  none; ``open`` is refused): it may not exceed the short quantity net of other covers, and
  releases the requirement of what it covers (at the short's average entry price). The
  requirement stays at the entry value: the paper broker makes no margin calls (the 30%
  maintenance level is not enforced), and a cover whose cost the account cannot pay at the
  fill is canceled like any buy. Short stock never covers a short call. Short sales and
  covers are not modifiable (cancel and place again). In a cash account a short sale is
  ``UnsupportedOrder`` (the API answers ``unsupported_order``).
* Dollar-amount orders (``notional``): market orders only; the quantity is computed from
  the amount at the touch the order fills at (the ask for a buy, the bid for a sell), rounded
  down to the instrument's increment (``NOTIONAL_QUANTUM``), so a buy spends at most the
  amount and a sell raises at most the amount (and only from the long position). They
  execute at once: what the displayed size allows fills and the rest is canceled (as IOC).
* A cycle completes when a position goes from flat to open and back to flat (an option
  position closed, expired, exercised or assigned included: the paper-first gate counts it).

Options (premium x 100 per contract):

* An option order is one contract (``position_effect`` open or close) or 2-4 legs on one
  underlying (``price_effect``, unsigned ``limit_price``); it fills whole, all legs at once,
  at the legs' touch prices (``matching.net_credit``) when its net is marketable.
* Short legs need cover (``option_risk``): the order's own long legs, 100 free shares per
  short call (pledged: ``pledged_quantity``, not sellable), or cash. The cash held against
  the account's short options is ``collateral_cash``; buying power is ``cash -
  reserved_cash - collateral_cash``. A working option order reserves its worst cash out
  plus the collateral it adds. Uncovered: ``UncoveredOption``.
* Closing needs the contracts on the right side, not already held by another closing
  order (``reserved_quantity``); long and short legs are never netted.
* At a contract's expiry instant (``EXPIRY_TIME_UTC`` on its expiration day) the ticker
  settles it: worthless, exercised or assigned into shares at the strike, or, when the
  account cannot carry the delivery or is short the underlying's stock, in cash at
  intrinsic value (``_settle_expirations``).

Updates that the ticker produces are handed to ``sink`` (the upstream feed seam) only after
their transaction has committed; placement, modification and cancellation return the new
state to their caller instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.brokers import errors as broker_errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    BrokerOrder,
    BrokerOrderLeg,
    Fill,
    InvalidOptionSymbol,
    OptionChainQuery,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OptionRight,
    OrderChanges,
    OrderListFilter,
    OrderPreview,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    Quote,
    TimeInForce,
    Transaction,
    is_option_symbol,
)
from app.db.deferred import DeferredWrites
from app.db.models import PaperAccount, PaperFill, PaperOrder, PaperPosition
from app.db.paper_lock import LockedPaperRows
from app.db.session import SessionMaker
from app.ids import new_id
from app.paper.clock import Clock
from app.paper.matching import (
    LegQuote,
    OrderState,
    combo_marketable,
    decide,
    has_limit,
    is_stop_type,
    net_credit,
)
from app.paper.option_risk import OptionHolding, Requirement, intrinsic, requirement
from app.paper.options_market import EXPIRY_TIME_UTC, SeededOptionMarket
from app.paper.quotes import PaperQuote, SeededQuoteSource
from app.paper.store import OPEN_STATUSES, ClientOrderIdTaken, PaperStore, is_open

log = logging.getLogger(__name__)

ZERO = Decimal(0)
CENT = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.00000001")
MARKET_COLLAR = Decimal("0.05")
SHORT_INITIAL = Decimal("1.5")  # Reg T initial requirement on a short sale: 150% of value
SHORT_NET = SHORT_INITIAL - 1  # what a short consumes of buying power, net of its proceeds
ACCOUNT_TYPES = ("cash", "margin")
# The finest quantity a dollar-amount order buys or sells, by asset class.
NOTIONAL_QUANTUM = {
    AssetClass.equity: Decimal("0.000001"),
    AssetClass.crypto: Decimal("0.00000001"),
}
TICK_BATCH = 100
MAX_LEGS = 4
COMBO_ORDER_TYPES = frozenset({OrderType.market, OrderType.limit})
COMBO_TIME_IN_FORCE = frozenset({TimeInForce.day, TimeInForce.gtc})
OPTION_MULTIPLIER = Decimal(100)
OPTION_EVENT_KINDS = (
    "option_expiration",
    "option_exercise",
    "option_assignment",
    "option_cash_settlement",
)

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


@dataclass(frozen=True, slots=True)
class _Leg:
    """One leg of an option order (a single-leg option order is one leg of ratio 1)."""

    contract: OptionContract
    side: OrderSide
    ratio: int
    position_effect: PositionEffect

    @property
    def symbol(self) -> str:
        return self.contract.symbol


@dataclass(frozen=True, slots=True)
class _OptionPlan:
    """What an option order would do: ``reservation`` is the cash held while it works (its
    worst cash out plus the collateral it adds); ``estimated_cash`` the signed cash change at
    the current quotes (or the limit); ``collateral_change`` what the fill adds to the cash
    held against short options; ``problems`` why the paper broker refuses it (first wins)."""

    reservation: Decimal
    estimated_cash: Decimal
    collateral_change: Decimal
    problems: tuple[broker_errors.Rejected, ...]


def _multiplier(symbol: str) -> Decimal:
    return OPTION_MULTIPLIER if is_option_symbol(symbol) else Decimal(1)


def _expiry_instant(contract: OptionContract) -> datetime:
    return datetime.combine(contract.expiration, EXPIRY_TIME_UTC)


def _is_option_order(row: PaperOrder) -> bool:
    return row.legs is not None or is_option_symbol(row.symbol)


def _row_legs(row: PaperOrder) -> list[_Leg]:
    if row.legs is not None:
        return [
            _Leg(
                contract=OptionContract.parse(leg["symbol"]),
                side=OrderSide(leg["side"]),
                ratio=int(leg["ratio"]),
                position_effect=PositionEffect(leg["position_effect"]),
            )
            for leg in row.legs
        ]
    return [
        _Leg(
            contract=OptionContract.parse(row.symbol),
            side=OrderSide(row.side),
            ratio=1,
            position_effect=PositionEffect(row.position_effect or PositionEffect.open.value),
        )
    ]


def _account_positions(
    positions: dict[PositionKey, PaperPosition], account_id: str
) -> dict[str, PaperPosition]:
    return {symbol: row for (owner, symbol), row in positions.items() if owner == account_id}


def _holdings(positions: dict[str, PaperPosition]) -> dict[str, OptionHolding]:
    return {
        symbol: OptionHolding(OptionContract.parse(symbol), row.quantity)
        for symbol, row in positions.items()
        if row.quantity != ZERO and is_option_symbol(symbol)
    }


def _free_shares(positions: dict[str, PaperPosition]) -> dict[str, Decimal]:
    """Shares of each underlying that open sell orders do not hold (pledges are recomputed)."""
    return {
        symbol: max(ZERO, row.quantity - row.reserved_quantity)
        for symbol, row in positions.items()
        if not is_option_symbol(symbol)
    }


def _effect_of(credit: Decimal) -> PriceEffect:
    if credit > ZERO:
        return PriceEffect.credit
    return PriceEffect.debit if credit < ZERO else PriceEffect.even


def _end_of_day(at: datetime) -> datetime:
    """Day orders expire at the next midnight UTC: the paper market trades around the clock."""
    return datetime.combine(at.date() + timedelta(days=1), time(0), tzinfo=at.tzinfo)


def _broker_legs(row: PaperOrder) -> tuple[BrokerOrderLeg, ...]:
    return tuple(
        BrokerOrderLeg(
            symbol=leg["symbol"],
            side=OrderSide(leg["side"]),
            ratio=int(leg["ratio"]),
            position_effect=PositionEffect(leg["position_effect"]),
            filled_quantity=row.filled_quantity * int(leg["ratio"]),
            avg_fill_price=(
                None if leg.get("avg_fill_price") is None else Decimal(leg["avg_fill_price"])
            ),
        )
        for leg in row.legs or ()
    )


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
        position_effect=(
            None if row.position_effect is None else PositionEffect(row.position_effect)
        ),
        legs=_broker_legs(row),
        price_effect=None if row.price_effect is None else PriceEffect(row.price_effect),
        notional=row.notional,
    )


def _buying_power(account: PaperAccount) -> Decimal:
    return (
        account.cash - account.reserved_cash - account.collateral_cash - account.short_requirement
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
        self.options = SeededOptionMarket(quotes)
        self.clock = clock
        self._sink = sink

    # --- accounts --------------------------------------------------------------------

    async def create_account(
        self, owner: str, starting_cash: Decimal, *, account_type: str = "cash"
    ) -> BrokerAccount:
        if starting_cash < ZERO:
            raise ValueError("starting cash cannot be negative")
        if account_type not in ACCOUNT_TYPES:
            raise ValueError(f"account_type must be one of {ACCOUNT_TYPES}")
        now = self.clock.now()
        row = PaperAccount(
            id=new_id("pa"),
            owner=owner,
            starting_cash=starting_cash,
            cash=starting_cash,
            reserved_cash=ZERO,
            seq=0,
            cycles_completed=0,
            account_type=account_type,
            short_requirement=ZERO,
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
            (
                p.quantity * self._mark(p.symbol, now) * _multiplier(p.symbol)
                for p in positions
                if p.quantity != ZERO
            ),
            ZERO,
        )
        return Balances(
            cash=account.cash,
            equity=account.cash + market_value,
            buying_power=_buying_power(account),
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
        if is_option_symbol(symbol):
            return self.options.quote(OptionContract.parse(symbol), at).mark
        return self.quote_source.quote(symbol, at).mid

    def _position(self, row: PaperPosition, at: datetime) -> Position:
        price = self._mark(row.symbol, at)
        if is_option_symbol(row.symbol):
            contract = OptionContract.parse(row.symbol)
            value = row.quantity * price * contract.multiplier
            return Position(
                symbol=row.symbol,
                asset_class=AssetClass.option,
                quantity=row.quantity,
                avg_cost=row.avg_cost,
                current_price=price,
                market_value=value,
                unrealized_pl=value - row.quantity * row.avg_cost * contract.multiplier,
                as_of=at,
                contract=contract,
            )
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
        """Raises ``UnknownSymbol`` for a symbol the paper market does not list (an option
        contract must be listed and not yet expired)."""
        if is_option_symbol(symbol):
            self._contract(symbol, self.clock.now())
        else:
            self.quote_source.instrument(symbol)

    def _contract(self, symbol: str, now: datetime) -> OptionContract:
        """The listed, unexpired contract ``symbol`` names (padded or unpadded OCC)."""
        try:
            contract = OptionContract.parse(symbol)
        except InvalidOptionSymbol as exc:
            raise broker_errors.UnknownSymbol(str(exc), broker="paper") from exc
        if not self.options.is_listed(contract, now.date()):
            raise broker_errors.UnknownSymbol(
                f"the paper market does not list the option {contract.symbol}", broker="paper"
            )
        if now >= _expiry_instant(contract):
            raise broker_errors.UnknownSymbol(
                f"the option {contract.symbol} has expired", broker="paper"
            )
        return contract

    @_exact_money
    async def quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Quotes by the symbols asked for; option contracts (OCC) are the model's quotes,
        under their canonical unpadded symbol."""
        now = self.clock.now()
        result: dict[str, Quote] = {}
        for symbol in symbols:
            if is_option_symbol(symbol):
                contract = self._contract(symbol, now)
                o = self.options.quote(contract, now)
                result[symbol] = Quote(
                    symbol=contract.symbol, bid=o.bid, ask=o.ask, last=o.last, as_of=o.as_of
                )
                continue
            q = self.quote_source.quote(symbol, now)
            result[symbol] = Quote(symbol=symbol, bid=q.bid, ask=q.ask, last=q.last, as_of=q.as_of)
        return result

    def option_expirations(self, underlying: str) -> list[OptionExpiration]:
        """Listed expirations still trading at the clock's time; ``UnknownSymbol`` for an
        underlying without options."""
        now = self.clock.now()
        return [
            e
            for e in self.options.expirations(underlying, now.date())
            if now < datetime.combine(e.expiration, EXPIRY_TIME_UTC)
        ]

    @_exact_money
    async def option_chain(self, query: OptionChainQuery) -> list[OptionQuote]:
        """The chain with model quotes and greeks (source ``model``), every filter applied;
        all listed expirations when the query names none. Sorted by expiration, strike,
        then call before put."""
        now = self.clock.now()
        expirations = [e.expiration for e in self.option_expirations(query.underlying)]
        if query.expiration is not None:
            expirations = [e for e in expirations if e == query.expiration]
        found: list[OptionQuote] = []
        for expiration in expirations:
            for contract in self.options.contracts(query.underlying, expiration):
                if query.right is not None and contract.right is not query.right:
                    continue
                if query.strike_gte is not None and contract.strike < query.strike_gte:
                    continue
                if query.strike_lte is not None and contract.strike > query.strike_lte:
                    continue
                q = self.options.quote(contract, now)
                found.append(
                    OptionQuote(
                        contract=contract,
                        bid=q.bid,
                        ask=q.ask,
                        last=q.last,
                        open_interest=None,
                        greeks=q.greeks,
                        source="model",
                        as_of=q.as_of,
                    )
                )
        return found

    # --- orders ----------------------------------------------------------------------

    @_exact_money
    async def place(
        self,
        owner: str,
        account_id: str,
        request: OrderRequest,
        *,
        session: AsyncSession | None = None,
        deferred: DeferredWrites | None = None,
        locked: LockedPaperRows | None = None,
    ) -> BrokerOrder:
        """Place an order; with ``session`` inside the caller's transaction (nothing is
        committed here: the caller commits the paper books with its own rows, or rolls
        everything back), else in a transaction of its own. ``deferred`` (with ``session``):
        an equity order's paper-book writes are handed to the caller's statement on
        Postgres instead of sent here (``app.db.deferred``). ``locked`` (with ``session``):
        the account and position the caller's transaction already read under the account's
        lock (``app.db.paper_lock``), taken instead of reading them again when they are for
        this account, owner and symbol and were read in ``session``'s current transaction."""
        if request.is_multi_leg or is_option_symbol(request.symbol):
            return await self._place_option(owner, account_id, request, session)
        self.check_symbol(request.symbol)
        now = self.clock.now()
        quantity = self._equity_quantity(request, now)
        # Rows read in another transaction are no lock held in this one.
        if (
            session is None
            or locked is None
            or not locked.is_for(account_id, owner, request.symbol, session)
        ):
            locked = None
        async with self._writing(session) as session:
            store = PaperStore(session, core=True)
            # The position is read after the account lock is held (one round trip on
            # Postgres, see ``PaperStore.core_account_and_position``, or none when the
            # caller's first statement did it).
            if locked is not None:
                account, position = store.adopt_locked(locked)
            else:
                account, position = await store.core_account_and_position(
                    account_id, owner, request.symbol
                )
            if account is None:
                raise broker_errors.OrderNotFound("no such paper account", broker="paper")
            positions: dict[PositionKey, PaperPosition] = {}
            if position is not None:
                positions[(account.id, request.symbol)] = position
            reserved_cash = ZERO
            held = ZERO if position is None else position.quantity
            position_effect = request.position_effect
            if request.side is OrderSide.sell and request.position_effect is PositionEffect.open:
                reserved_cash = self._short_reservation(account, request, quantity, held, now)
                if await store.has_open_order(account.id, request.symbol, "buy", None):
                    raise broker_errors.Rejected(
                        f"a buy of {request.symbol} is working: cancel it before selling short",
                        broker="paper",
                    )
                if position is None:
                    # A working short sale always has a position row: a later plain buy sees
                    # it and checks for the short (below).
                    position = self._new_position(store, account, request.symbol, positions, now)
                account.reserved_cash += reserved_cash
            elif request.side is OrderSide.buy and held < ZERO:
                assert position is not None
                reserved_cash = self._cover_reservation(account, request, quantity, position, now)
                account.reserved_cash += reserved_cash
                position.reserved_quantity += quantity
                position_effect = PositionEffect.close
            elif request.side is OrderSide.buy:
                if request.position_effect is PositionEffect.close:
                    raise broker_errors.InsufficientFunds(
                        f"insufficient quantity: no short position in {request.symbol} to cover",
                        broker="paper",
                    )
                if (
                    position is not None
                    and position.quantity == ZERO
                    and await store.has_open_order(account.id, request.symbol, "sell", "open")
                ):
                    raise broker_errors.Rejected(
                        f"a short sale of {request.symbol} is working: cancel it, or cover "
                        "once it has filled",
                        broker="paper",
                    )
                if request.notional is not None:
                    # Spends at most the amount: the quantity was computed at the ask.
                    reserved_cash = request.notional.quantize(CENT, rounding=ROUND_CEILING)
                else:
                    reserved_cash = self._reservation(
                        request.symbol,
                        request.order_type,
                        quantity,
                        request.limit_price,
                        request.stop_price,
                        now,
                    )
                buying_power = _buying_power(account)
                if reserved_cash > buying_power:
                    raise broker_errors.InsufficientFunds(
                        f"insufficient buying power: {reserved_cash} needed, "
                        f"{buying_power} available",
                        broker="paper",
                    )
                account.reserved_cash += reserved_cash
            else:
                available = (
                    ZERO
                    if position is None
                    else position.quantity - position.reserved_quantity - position.pledged_quantity
                )
                if quantity > available:
                    hint = (
                        "a short sale is a sell with position_effect open"
                        if account.account_type == "margin"
                        else "short selling needs a margin account"
                    )
                    raise broker_errors.InsufficientFunds(
                        f"insufficient quantity: {quantity} requested, "
                        f"{available} available ({hint}; shares "
                        "pledged to covered calls are not available)",
                        broker="paper",
                    )
                assert position is not None
                position.reserved_quantity += quantity
            account.seq += 1
            order = PaperOrder(
                id=f"po_{account.seq:010d}_{account.id[-24:]}",
                seq=account.seq,
                paper_account_id=account.id,
                client_order_id=request.client_order_id,
                symbol=request.symbol,
                side=request.side.value,
                quantity=quantity,
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
                position_effect=None if position_effect is None else position_effect.value,
                notional=request.notional,
            )
            account.updated_at = now
            self._evaluate(store, account, order, positions, now)
            await self._write_core(store, order, deferred if session is not None else None)
            return to_broker_order(order)

    def _equity_quantity(self, request: OrderRequest, now: datetime) -> Decimal:
        """The order's quantity: as given, or for a dollar-amount order the amount divided by
        the touch it fills at, rounded down to the instrument's increment."""
        if request.notional is None:
            _validate_shape(
                request.order_type, request.quantity, request.limit_price, request.stop_price
            )
            return request.quantity
        if request.order_type is not OrderType.market:
            raise broker_errors.UnsupportedOrder(
                "the paper broker takes dollar-amount (notional) orders as market orders only",
                broker="paper",
            )
        if request.notional <= ZERO:
            raise broker_errors.UnsupportedOrder("notional must be positive", broker="paper")
        if request.position_effect is not None:
            raise broker_errors.UnsupportedOrder(
                "short sales and covers take a quantity, not a notional amount", broker="paper"
            )
        quote = self.quote_source.quote(request.symbol, now)
        price = quote.ask if request.side is OrderSide.buy else quote.bid
        quantum = NOTIONAL_QUANTUM[self.quote_source.asset_class(request.symbol)]
        quantity = (request.notional / price).quantize(quantum, rounding=ROUND_FLOOR)
        if quantity <= ZERO:
            raise broker_errors.UnsupportedOrder(
                f"notional {request.notional} buys less than {quantum} of {request.symbol}",
                broker="paper",
            )
        return quantity

    def _short_reservation(
        self,
        account: PaperAccount,
        request: OrderRequest,
        quantity: Decimal,
        held: Decimal,
        now: datetime,
    ) -> Decimal:
        """Check a short sale and return the buying power it holds while it works."""
        if account.account_type != "margin":
            raise broker_errors.UnsupportedOrder(
                "short selling needs a margin account; this paper account is a cash account",
                broker="paper",
            )
        if self.quote_source.asset_class(request.symbol) is not AssetClass.equity:
            raise broker_errors.UnsupportedOrder(
                "the paper broker sells short equities only", broker="paper"
            )
        if quantity != quantity.to_integral_value():
            raise broker_errors.UnsupportedOrder("a short sale takes whole shares", broker="paper")
        if held > ZERO:
            raise broker_errors.Rejected(
                f"{request.symbol} is held long: sell the long shares before selling short",
                broker="paper",
            )
        reference = self.quote_source.quote(request.symbol, now).bid * (1 + MARKET_COLLAR)
        if request.limit_price is not None:
            reference = max(reference, request.limit_price)
        if request.stop_price is not None:
            reference = max(reference, request.stop_price * (1 + MARKET_COLLAR))
        needed = (SHORT_NET * quantity * reference).quantize(CENT, rounding=ROUND_CEILING)
        buying_power = _buying_power(account)
        if needed > buying_power:
            raise broker_errors.InsufficientFunds(
                f"insufficient buying power for the short sale's margin: {needed} needed, "
                f"{buying_power} available",
                broker="paper",
            )
        return needed

    def _cover_reservation(
        self,
        account: PaperAccount,
        request: OrderRequest,
        quantity: Decimal,
        position: PaperPosition,
        now: datetime,
    ) -> Decimal:
        """Check a buy against a short position (a cover) and return the cash it holds."""
        if request.position_effect is PositionEffect.open:
            raise broker_errors.Rejected(
                f"{request.symbol} is held short: cover it (position_effect close) first",
                broker="paper",
            )
        if request.notional is not None:
            raise broker_errors.UnsupportedOrder(
                "a cover takes a quantity, not a notional amount", broker="paper"
            )
        coverable = -position.quantity - position.reserved_quantity
        if quantity > coverable:
            raise broker_errors.InsufficientFunds(
                f"insufficient quantity: {quantity} to cover, {coverable} short and not "
                "already being covered",
                broker="paper",
            )
        needed = self._reservation(
            request.symbol,
            request.order_type,
            quantity,
            request.limit_price,
            request.stop_price,
            now,
        )
        # The requirement the cover releases counts toward what it may spend.
        released = SHORT_INITIAL * quantity * position.avg_cost
        buying_power = _buying_power(account) + released
        if needed > buying_power:
            raise broker_errors.InsufficientFunds(
                f"insufficient buying power: {needed} needed, {buying_power} available",
                broker="paper",
            )
        return needed

    # --- option orders ----------------------------------------------------------------

    def _request_legs(self, request: OrderRequest, now: datetime) -> list[_Leg]:
        """The legs of an option order, validated; raises ``UnsupportedOrder`` for a shape the
        paper broker does not take and ``UnknownSymbol`` for an unlisted or expired contract."""
        if request.quantity <= ZERO or request.quantity != request.quantity.to_integral_value():
            raise broker_errors.UnsupportedOrder(
                "option orders are in whole contracts (whole strategy units)", broker="paper"
            )
        if not request.is_multi_leg:
            _validate_shape(
                request.order_type, request.quantity, request.limit_price, request.stop_price
            )
            if request.position_effect is None:
                raise broker_errors.UnsupportedOrder(
                    "an option order needs position_effect (open or close)", broker="paper"
                )
            contract = self._contract(request.symbol, now)
            return [_Leg(contract, request.side, 1, request.position_effect)]
        if not 2 <= len(request.legs) <= MAX_LEGS:
            raise broker_errors.UnsupportedOrder(
                f"a multi-leg order has 2 to {MAX_LEGS} legs", broker="paper"
            )
        if request.order_type not in COMBO_ORDER_TYPES:
            raise broker_errors.UnsupportedOrder(
                "multi-leg orders are market or limit", broker="paper"
            )
        if request.time_in_force not in COMBO_TIME_IN_FORCE:
            raise broker_errors.UnsupportedOrder("multi-leg orders are day or gtc", broker="paper")
        if request.order_type is OrderType.limit and (
            request.limit_price is None or request.limit_price < ZERO
        ):
            raise broker_errors.UnsupportedOrder(
                "a multi-leg limit order needs an unsigned limit_price", broker="paper"
            )
        if request.order_type is OrderType.limit and request.price_effect is None:
            raise broker_errors.UnsupportedOrder(
                "a multi-leg limit order needs price_effect (debit, credit or even)",
                broker="paper",
            )
        legs: list[_Leg] = []
        for leg in request.legs:
            if not is_option_symbol(leg.symbol):
                raise broker_errors.UnsupportedOrder(
                    "the paper broker takes option legs only", broker="paper"
                )
            contract = self._contract(leg.symbol, now)
            if contract.underlying != request.symbol:
                raise broker_errors.UnsupportedOrder(
                    f"every leg must be on {request.symbol}: {contract.symbol} is not",
                    broker="paper",
                )
            if leg.ratio < 1:
                raise broker_errors.UnsupportedOrder("a leg ratio is at least 1", broker="paper")
            if any(existing.symbol == contract.symbol for existing in legs):
                raise broker_errors.UnsupportedOrder(
                    f"{contract.symbol} appears in more than one leg", broker="paper"
                )
            legs.append(_Leg(contract, leg.side, leg.ratio, leg.position_effect))
        return legs

    def _plan_option(
        self,
        account: PaperAccount,
        legs: Sequence[_Leg],
        quantity: Decimal,
        order_type: OrderType,
        limit_price: Decimal | None,
        stop_price: Decimal | None,
        price_effect: PriceEffect | None,
        positions: dict[str, PaperPosition],
        now: datetime,
    ) -> _OptionPlan:
        """What the order would hold and do against the account's positions now.

        Cover: see ``app.paper.option_risk``. Closing needs the position on the right side
        (long to sell, short to buy) with enough contracts not already being closed; opening
        against a position held the other way is refused (legs are never netted).
        """
        problems: list[broker_errors.Rejected] = []
        holdings = _holdings(positions)
        after = dict(holdings)
        for leg in legs:
            wanted = quantity * leg.ratio
            row = positions.get(leg.symbol)
            held = ZERO if row is None else row.quantity
            if leg.position_effect is PositionEffect.close:
                on_side = held if leg.side is OrderSide.sell else -held
                available = (
                    on_side - row.reserved_quantity if row is not None and on_side > ZERO else ZERO
                )
                if wanted > available:
                    direction = "long" if leg.side is OrderSide.sell else "short"
                    problems.append(
                        broker_errors.InsufficientFunds(
                            f"cannot close {wanted} {leg.symbol}: {available} held {direction} "
                            "and not already being closed",
                            broker="paper",
                        )
                    )
            elif (leg.side is OrderSide.sell and held > ZERO) or (
                leg.side is OrderSide.buy and held < ZERO
            ):
                problems.append(
                    broker_errors.Rejected(
                        f"{leg.symbol} is held {'long' if held > ZERO else 'short'}: close it "
                        "(position_effect close) rather than open the other way",
                        broker="paper",
                    )
                )
            signed = wanted if leg.side is OrderSide.buy else -wanted
            before = after.get(leg.symbol)
            after[leg.symbol] = OptionHolding(
                leg.contract, (ZERO if before is None else before.quantity) + signed
            )
        free = _free_shares(positions)
        now_requirement = requirement(holdings.values(), free)
        after_requirement = requirement(after.values(), free)
        if after_requirement.uncovered:
            problems.append(
                broker_errors.UncoveredOption(
                    "uncovered short option: " + "; ".join(after_requirement.uncovered),
                    broker="paper",
                )
            )
        quotes = [self.options.quote(leg.contract, now) for leg in legs]
        market = net_credit(
            [
                LegQuote(leg.side, leg.ratio, q.bid, q.ask)
                for leg, q in zip(legs, quotes, strict=True)
            ]
        )
        single = len(legs) == 1
        effect = price_effect
        if single:
            effect = PriceEffect.credit if legs[0].side is OrderSide.sell else PriceEffect.debit
        if has_limit(order_type):
            assert limit_price is not None
            assert effect is not None
            signed_limit = {
                PriceEffect.credit: limit_price,
                PriceEffect.debit: -limit_price,
                PriceEffect.even: ZERO,
            }[effect]
            worst = estimate = signed_limit
        else:
            reference = market
            if single and stop_price is not None and legs[0].side is OrderSide.buy:
                reference = min(reference, -stop_price)
            worst = reference * (1 + MARKET_COLLAR) if reference < ZERO else ZERO
            estimate = market
        multiplier = legs[0].contract.multiplier
        worst_cash = worst * quantity * multiplier
        estimated_cash = (estimate * quantity * multiplier).quantize(CENT, rounding=ROUND_HALF_EVEN)
        collateral_change = after_requirement.cash - now_requirement.cash
        reservation = max(ZERO, collateral_change - worst_cash).quantize(
            CENT, rounding=ROUND_CEILING
        )
        buying_power = _buying_power(account)
        if not problems and reservation > buying_power:
            problems.append(
                broker_errors.InsufficientFunds(
                    f"insufficient buying power: {reservation} needed, {buying_power} available",
                    broker="paper",
                )
            )
        return _OptionPlan(reservation, estimated_cash, collateral_change, tuple(problems))

    @staticmethod
    def _hold_closing(
        legs: Sequence[_Leg],
        quantity: Decimal,
        positions: dict[str, PaperPosition],
        sign: int,
        now: datetime,
    ) -> None:
        """Hold (``sign`` 1) or give back (-1) the contracts the closing legs will close."""
        for leg in legs:
            if leg.position_effect is PositionEffect.close:
                row = positions.get(leg.symbol)
                if row is not None:
                    row.reserved_quantity += sign * quantity * leg.ratio
                    row.updated_at = now

    async def _place_option(
        self,
        owner: str,
        account_id: str,
        request: OrderRequest,
        caller_session: AsyncSession | None,
    ) -> BrokerOrder:
        now = self.clock.now()
        legs = self._request_legs(request, now)
        async with self._writing(caller_session) as session:
            store = PaperStore(session, core=True)
            account = await store.core_account(account_id, owner)
            if account is None:
                raise broker_errors.OrderNotFound("no such paper account", broker="paper")
            positions = {
                (p.paper_account_id, p.symbol): p for p in await store.core_positions(account.id)
            }
            mine = _account_positions(positions, account.id)
            plan = self._plan_option(
                account,
                legs,
                request.quantity,
                request.order_type,
                request.limit_price,
                request.stop_price,
                request.price_effect,
                mine,
                now,
            )
            if plan.problems:
                raise plan.problems[0]
            account.reserved_cash += plan.reservation
            self._hold_closing(legs, request.quantity, mine, 1, now)
            account.seq += 1
            multi = request.is_multi_leg
            order = PaperOrder(
                id=f"po_{account.seq:010d}_{account.id[-24:]}",
                seq=account.seq,
                paper_account_id=account.id,
                client_order_id=request.client_order_id,
                symbol=request.symbol if multi else legs[0].symbol,
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
                reserved_cash=plan.reservation,
                created_at=now,
                updated_at=now,
                expires_at=_end_of_day(now) if request.time_in_force is TimeInForce.day else None,
                position_effect=None if multi else legs[0].position_effect.value,
                price_effect=(
                    request.price_effect.value
                    if multi and request.price_effect is not None
                    else None
                ),
                legs=(
                    [
                        {
                            "symbol": leg.symbol,
                            "side": leg.side.value,
                            "ratio": leg.ratio,
                            "position_effect": leg.position_effect.value,
                            "avg_fill_price": None,
                        }
                        for leg in legs
                    ]
                    if multi
                    else None
                ),
            )
            account.updated_at = now
            self._evaluate(store, account, order, positions, now)
            await self._write_core(store, order)
            return to_broker_order(order)

    @contextlib.asynccontextmanager
    async def _writing(self, session: AsyncSession | None) -> AsyncIterator[AsyncSession]:
        """The session a write runs on: the caller's (its transaction, not committed
        here), or one of its own, committed when the write returns normally."""
        if session is not None:
            yield session
            return
        async with self._sessionmaker() as own:
            yield own
            await own.commit()

    async def _write_core(
        self,
        store: PaperStore,
        order: PaperOrder | None = None,
        deferred: DeferredWrites | None = None,
    ) -> None:
        """Write a Core-mode store's changes (and the new ``order``, in its final state,
        ahead of its fills); a reused client order id is refused.

        Never rolls back itself: the transaction is the caller's (its own session's, closed
        unfinished when the refusal leaves ``_writing``; or a caller's, which may hold this
        write in a savepoint and must keep what came before it).
        """
        try:
            await store.write_core(new_order=order, deferred=deferred)
        except ClientOrderIdTaken as exc:
            raise broker_errors.Rejected("client_order_id must be unique", broker="paper") from exc

    @_exact_money
    async def preview(self, owner: str, account_id: str, request: OrderRequest) -> OrderPreview:
        """What placing ``request`` would do now, placing nothing: the cash change at the
        current quotes (or the limit), buying power after the collateral a short option
        needs, no fees, and the paper broker's refusals as ``rejections``."""
        now = self.clock.now()
        async with self._sessionmaker() as session:
            store = PaperStore(session)
            account = await self._account(store, owner, account_id, lock=False)
            mine = {p.symbol: p for p in await store.positions([account.id])}
        try:
            if request.is_multi_leg or is_option_symbol(request.symbol):
                legs = self._request_legs(request, now)
                plan = self._plan_option(
                    account,
                    legs,
                    request.quantity,
                    request.order_type,
                    request.limit_price,
                    request.stop_price,
                    request.price_effect,
                    mine,
                    now,
                )
                cash = plan.estimated_cash
                buying_power = cash - plan.collateral_change
                problems = plan.problems
            else:
                cash, buying_power, problems = self._equity_preview(account, request, mine, now)
        except broker_errors.Rejected as exc:
            return OrderPreview(
                estimated_cash_change=ZERO,
                direction=PriceEffect.even,
                buying_power_change=None,
                fees=ZERO,
                warnings=(),
                rejections=(exc.reason,),
                source=PreviewSource.broker,
            )
        return OrderPreview(
            estimated_cash_change=cash,
            direction=_effect_of(cash),
            buying_power_change=buying_power,
            fees=ZERO,
            warnings=(),
            rejections=tuple(problem.reason for problem in problems),
            source=PreviewSource.broker,
        )

    def _equity_preview(
        self,
        account: PaperAccount,
        request: OrderRequest,
        positions: dict[str, PaperPosition],
        now: datetime,
    ) -> tuple[Decimal, Decimal, tuple[broker_errors.Rejected, ...]]:
        """The cash change, the buying power change and the refusals of an equity order."""
        quantity = self._equity_quantity(request, now)
        quote = self.quote_source.quote(request.symbol, now)
        row = positions.get(request.symbol)
        held = ZERO if row is None else row.quantity
        if request.side is OrderSide.buy:
            price = request.limit_price if has_limit(request.order_type) else quote.ask
            assert price is not None
            cash = -(quantity * price).quantize(CENT, rounding=ROUND_CEILING)
            if held < ZERO:
                assert row is not None
                released = (SHORT_INITIAL * quantity * row.avg_cost).quantize(CENT)
                try:
                    self._cover_reservation(account, request, quantity, row, now)
                except broker_errors.Rejected as exc:
                    return cash, cash + released, (exc,)
                return cash, cash + released, ()
            if request.position_effect is PositionEffect.close:
                return (
                    cash,
                    cash,
                    (
                        broker_errors.InsufficientFunds(
                            "insufficient quantity: no short position in "
                            f"{request.symbol} to cover",
                            broker="paper",
                        ),
                    ),
                )
            if request.notional is not None:
                needed = request.notional.quantize(CENT, rounding=ROUND_CEILING)
            else:
                needed = self._reservation(
                    request.symbol,
                    request.order_type,
                    quantity,
                    request.limit_price,
                    request.stop_price,
                    now,
                )
            buying_power = _buying_power(account)
            if needed > buying_power:
                return (
                    cash,
                    cash,
                    (
                        broker_errors.InsufficientFunds(
                            f"insufficient buying power: {needed} needed, {buying_power} available",
                            broker="paper",
                        ),
                    ),
                )
            return cash, cash, ()
        price = request.limit_price if has_limit(request.order_type) else quote.bid
        assert price is not None
        cash = (quantity * price).quantize(CENT, rounding=ROUND_HALF_EVEN)
        if request.position_effect is PositionEffect.open:
            # A short sale: proceeds in, 150% of them held.
            buying_power_change = cash - (SHORT_INITIAL * quantity * price).quantize(
                CENT, rounding=ROUND_CEILING
            )
            try:
                self._short_reservation(account, request, quantity, held, now)
            except broker_errors.Rejected as exc:
                return cash, buying_power_change, (exc,)
            return cash, buying_power_change, ()
        available = (
            ZERO if row is None else row.quantity - row.reserved_quantity - row.pledged_quantity
        )
        if quantity > available:
            return (
                cash,
                cash,
                (
                    broker_errors.InsufficientFunds(
                        f"insufficient quantity: {quantity} requested, {available} available",
                        broker="paper",
                    ),
                ),
            )
        return cash, cash, ()

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
        self,
        owner: str,
        account_id: str,
        order_id: str,
        changes: OrderChanges,
        *,
        session: AsyncSession | None = None,
    ) -> BrokerOrder:
        """Change a working order in place (same id), then match it at once.

        Raises ``OrderNotModifiable`` when the order is no longer working or the new
        quantity is not above what has filled, ``InsufficientFunds`` when a bigger buy no
        longer fits the buying power.
        """
        now = self.clock.now()
        async with self._writing(session) as session:
            store = PaperStore(session, core=True)
            account = await store.core_account(account_id, owner)
            if account is None:
                raise broker_errors.OrderNotFound("no such paper account", broker="paper")
            order = await store.core_order(account.id, order_id)
            if order is None:
                raise broker_errors.OrderNotFound("no such order", broker="paper")
            if not is_open(order.status):
                raise broker_errors.OrderNotModifiable(
                    f"the order is {order.status}", broker="paper"
                )
            if _is_option_order(order):
                await self._modify_option(store, account, order, changes, now)
                await store.write_core()
                return to_broker_order(order)
            if order.position_effect is not None or order.notional is not None:
                raise broker_errors.OrderNotModifiable(
                    "a short sale, a cover or a dollar-amount order is not modifiable: "
                    "cancel it and place a new one",
                    broker="paper",
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
            position = await store.core_position(account.id, order.symbol)
            if position is not None:
                positions[(account.id, order.symbol)] = position
            if order.side == OrderSide.buy.value:
                needed = self._reservation(
                    order.symbol, order_type, remaining, limit_price, stop_price, now
                )
                available = (
                    account.cash
                    - account.reserved_cash
                    - account.collateral_cash
                    + order.reserved_cash
                )
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
                free = (
                    position.quantity
                    - position.reserved_quantity
                    - position.pledged_quantity
                    + old_remaining
                )
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
            await store.write_core()
            return to_broker_order(order)

    async def _modify_option(
        self,
        store: PaperStore,
        account: PaperAccount,
        order: PaperOrder,
        changes: OrderChanges,
        now: datetime,
    ) -> None:
        """Change a working option order (the whole order: quantity, limit, time in force;
        a stop only on a single leg), hold again what it needs, then match it at once.
        ``store`` is in Core mode, with ``account`` and ``order`` read (locked) from it: the
        caller writes what changed (``write_core``)."""
        multi = order.legs is not None
        if changes.stop_price is not None and (multi or order.stop_price is None):
            raise broker_errors.UnsupportedOrder("this order has no stop price", broker="paper")
        if changes.time_in_force in (TimeInForce.ioc, TimeInForce.fok):
            raise broker_errors.UnsupportedOrder(
                "a resting order cannot become ioc or fok", broker="paper"
            )
        quantity = changes.quantity if changes.quantity is not None else order.quantity
        if quantity <= ZERO or quantity != quantity.to_integral_value():
            raise broker_errors.UnsupportedOrder(
                "option orders are in whole contracts (whole strategy units)", broker="paper"
            )
        limit_price = changes.limit_price if changes.limit_price is not None else order.limit_price
        stop_price = changes.stop_price if changes.stop_price is not None else order.stop_price
        order_type = OrderType(order.order_type)
        if multi:
            if changes.limit_price is not None and order_type is not OrderType.limit:
                raise broker_errors.UnsupportedOrder(
                    "a market order has no limit price", broker="paper"
                )
        else:
            _validate_shape(order_type, quantity, limit_price, stop_price)
        legs = _row_legs(order)
        positions = {
            (p.paper_account_id, p.symbol): p for p in await store.core_positions(account.id)
        }
        mine = _account_positions(positions, account.id)
        # Give back what the order holds, then plan it again as if new (a failure below
        # leaves the transaction uncommitted, so nothing of this survives it).
        account.reserved_cash -= order.reserved_cash
        order.reserved_cash = ZERO
        self._hold_closing(legs, order.quantity, mine, -1, now)
        plan = self._plan_option(
            account,
            legs,
            quantity,
            order_type,
            limit_price,
            stop_price,
            None if order.price_effect is None else PriceEffect(order.price_effect),
            mine,
            now,
        )
        if plan.problems:
            raise plan.problems[0]
        account.reserved_cash += plan.reservation
        order.reserved_cash = plan.reservation
        self._hold_closing(legs, quantity, mine, 1, now)
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

    async def cancel(
        self,
        owner: str,
        account_id: str,
        order_id: str,
        *,
        session: AsyncSession | None = None,
    ) -> BrokerOrder:
        """Cancel a working order; ``OrderNotModifiable`` once it is filled or closed.
        With ``session``, inside the caller's transaction (see ``place``)."""
        now = self.clock.now()
        async with self._writing(session) as session:
            core = PaperStore(session, core=True)
            account = await core.core_account(account_id, owner)
            if account is None:
                raise broker_errors.OrderNotFound("no such paper account", broker="paper")
            order = await core.core_order(account.id, order_id)
            if order is None:
                raise broker_errors.OrderNotFound("no such order", broker="paper")
            if not is_open(order.status):
                raise broker_errors.OrderNotModifiable(
                    f"the order is {order.status}", broker="paper"
                )
            if _is_option_order(order):
                positions = {p.symbol: p for p in await core.core_positions(account.id)}
                self._close_option(account, order, positions, OrderStatus.canceled, now, None)
                await core.write_core()
                return to_broker_order(order)
            position = await core.core_position(account.id, order.symbol)
            self._close(account, order, position, OrderStatus.canceled, now, None)
            await core.write_core()
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
            kind = fill.kind or fill.side
            if type_ not in (None, kind) and not (type_ == "trade" and fill.kind is None):
                continue
            value = fill.quantity * fill.price * _multiplier(fill.symbol)
            description = f"{fill.side} {fill.quantity} {fill.symbol} @ {fill.price}"
            if fill.kind is not None:
                description = f"{fill.kind.replace('_', ' ')}: {description}"
            found.append(
                Transaction(
                    transaction_id=fill.id,
                    type=kind,
                    occurred_at=fill.occurred_at,
                    amount=-value if fill.side == "buy" else value,
                    symbol=fill.symbol,
                    quantity=fill.quantity,
                    price=fill.price,
                    description=description,
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
        return changed + await self._settle_expirations(now)

    # --- option expiration -----------------------------------------------------------

    async def _settle_expirations(self, now: datetime) -> int:
        """Settle every option position whose expiry instant has passed; returns how many.

        Per account, underlying and expiration, at the underlying's price at the expiry
        instant: a contract in the money by at least $0.01 (the OCC's automatic exercise
        threshold) is exercised (long) or assigned (short) into 100 shares per contract at
        the strike; the rest expire worthless. Should the group's deliveries need shares
        the account does not have free or cash it does not have, the whole group settles in
        cash at its intrinsic value instead (what a broker's closing trade before expiry
        would do). Each settled position becomes an order the paper broker makes itself
        (``kind``: ``option_expiration``, ``option_exercise``, ``option_assignment`` or
        ``option_cash_settlement``) with its fills, so it is a transaction and, through the
        sink, an order-stream event. Working orders on an expired contract expire first.
        """
        settled = 0
        after: str | None = None
        while True:
            updates: list[OrderUpdate] = []
            async with self._sessionmaker() as session:
                store = PaperStore(session)
                accounts = await store.claim_accounts_with_expired_options(now, after, TICK_BATCH)
                if not accounts:
                    break
                by_id = {account.id: account for account in accounts}
                positions = {
                    (p.paper_account_id, p.symbol): p for p in await store.positions(list(by_id))
                }
                for order in await store.claim_open_orders(list(by_id)):
                    if _is_option_order(order) and any(
                        now >= _expiry_instant(leg.contract) for leg in _row_legs(order)
                    ):
                        account = by_id[order.paper_account_id]
                        self._close_option(
                            account,
                            order,
                            _account_positions(positions, account.id),
                            OrderStatus.expired,
                            now,
                            "the option contract expired",
                        )
                        updates.append(
                            OrderUpdate(
                                account_ref=account.id,
                                order=to_broker_order(order),
                                occurred_at=now,
                            )
                        )
                store.hold_fills()
                for account in accounts:
                    groups: dict[tuple[str, datetime], list[PaperPosition]] = {}
                    for symbol, row in sorted(_account_positions(positions, account.id).items()):
                        if row.expires_at is None or row.expires_at > now or row.quantity == ZERO:
                            continue
                        underlying = OptionContract.parse(symbol).underlying
                        groups.setdefault((underlying, row.expires_at), []).append(row)
                    for (underlying, expiry), rows in sorted(groups.items()):
                        updates.extend(
                            self._settle_group(
                                store, account, underlying, expiry, rows, positions, now
                            )
                        )
                        settled += len(rows)
                await session.flush()
                store.release_fills()
                await session.commit()
            await self._deliver(updates)
            after = accounts[-1].id
            if len(accounts) < TICK_BATCH:
                break
        return settled

    def _settle_group(
        self,
        store: PaperStore,
        account: PaperAccount,
        underlying: str,
        expiry: datetime,
        rows: Sequence[PaperPosition],
        positions: dict[PositionKey, PaperPosition],
        now: datetime,
    ) -> list[OrderUpdate]:
        spot = self.quote_source.quote(underlying, expiry).mid
        mine = _account_positions(positions, account.id)
        contracts = [(row, OptionContract.parse(row.symbol)) for row in rows]
        share_change = ZERO
        cash_change = ZERO
        for row, contract in contracts:
            if intrinsic(contract, spot) >= CENT:
                per_call = 1 if contract.right is OptionRight.call else -1
                shares = row.quantity * contract.multiplier * per_call
                share_change += shares
                cash_change -= shares * contract.strike
        stock = mine.get(underlying)
        free = ZERO if stock is None else stock.quantity - stock.reserved_quantity
        remaining = {
            symbol: holding
            for symbol, holding in _holdings(mine).items()
            if symbol not in {row.symbol for row in rows}
        }
        free_after = {**_free_shares(mine), underlying: free + share_change}
        needed = requirement(remaining.values(), free_after)
        # An account short the underlying settles its options in cash: a delivery never
        # meets short stock (its requirement and average entry stay the cover's to release).
        physical = (
            free + share_change >= ZERO
            and (stock is None or stock.quantity >= ZERO)
            and not needed.uncovered
            and account.cash + cash_change - account.reserved_cash - needed.cash >= ZERO
        )
        if not physical:
            needed = requirement(remaining.values(), _free_shares(mine))
        # Deliveries that add shares first, so the position never dips below zero.
        ordered = sorted(
            contracts,
            key=lambda item: (
                0 if (item[0].quantity > ZERO) == (item[1].right is OptionRight.call) else 1,
                item[0].symbol,
            ),
        )
        updates: list[OrderUpdate] = []
        for row, contract in ordered:
            updates.append(
                self._settle_position(
                    store, account, row, contract, spot, physical, positions, expiry, now
                )
            )
        self._set_cover(account, _account_positions(positions, account.id), needed, now)
        return updates

    def _settle_position(
        self,
        store: PaperStore,
        account: PaperAccount,
        row: PaperPosition,
        contract: OptionContract,
        spot: Decimal,
        physical: bool,
        positions: dict[PositionKey, PaperPosition],
        expiry: datetime,
        now: datetime,
    ) -> OrderUpdate:
        long = row.quantity > ZERO
        contracts = abs(row.quantity)
        value = intrinsic(contract, spot)
        in_the_money = value >= CENT
        if not in_the_money:
            kind, price = "option_expiration", ZERO
        elif physical:
            kind, price = ("option_exercise" if long else "option_assignment"), ZERO
        else:
            kind, price = "option_cash_settlement", value
        closing_side = OrderSide.sell if long else OrderSide.buy
        proceeds = contracts * price * contract.multiplier
        account.cash += proceeds if long else -proceeds
        gain = (price - row.avg_cost) * contracts * contract.multiplier
        row.realized_pl += gain if long else -gain
        row.quantity = ZERO
        row.avg_cost = ZERO
        row.reserved_quantity = ZERO
        row.updated_at = now
        account.cycles_completed += 1
        account.seq += 1
        order = PaperOrder(
            id=f"po_{account.seq:010d}_{account.id[-24:]}",
            seq=account.seq,
            paper_account_id=account.id,
            client_order_id=f"{kind}:{contract.symbol}",
            symbol=contract.symbol,
            side=closing_side.value,
            quantity=contracts,
            filled_quantity=contracts,
            avg_fill_price=price,
            order_type=OrderType.market.value,
            limit_price=None,
            stop_price=None,
            time_in_force=TimeInForce.day.value,
            extended_hours=False,
            stop_triggered=False,
            status=OrderStatus.filled.value,
            reject_reason=None,
            reserved_cash=ZERO,
            created_at=now,
            updated_at=now,
            expires_at=None,
            position_effect=PositionEffect.close.value,
            kind=kind,
        )
        store.add(order)
        option_fill = self._add_fill(
            store, account, order, contract.symbol, closing_side, contracts, price, expiry, kind
        )
        fills = [
            Fill(
                fill_id=option_fill.id,
                quantity=contracts,
                price=price,
                occurred_at=expiry,
                leg_symbol=contract.symbol,
            )
        ]
        if in_the_money and physical:
            receives = long == (contract.right is OptionRight.call)
            side = OrderSide.buy if receives else OrderSide.sell
            shares = contracts * contract.multiplier
            self._deliver_shares(
                store, account, contract.underlying, side, shares, contract.strike, positions, now
            )
            share_fill = self._add_fill(
                store,
                account,
                order,
                contract.underlying,
                side,
                shares,
                contract.strike,
                expiry,
                kind,
            )
            fills.append(
                Fill(
                    fill_id=share_fill.id,
                    quantity=shares,
                    price=contract.strike,
                    occurred_at=expiry,
                    leg_symbol=contract.underlying,
                )
            )
        account.updated_at = now
        return OrderUpdate(
            account_ref=account.id,
            order=to_broker_order(order),
            occurred_at=now,
            fills=tuple(fills),
            lifecycle=kind,
        )

    def _deliver_shares(
        self,
        store: PaperStore,
        account: PaperAccount,
        symbol: str,
        side: OrderSide,
        shares: Decimal,
        price: Decimal,
        positions: dict[PositionKey, PaperPosition],
        now: datetime,
    ) -> None:
        """Shares bought or sold at the strike by an exercise or an assignment."""
        key = (account.id, symbol)
        row = positions.get(key)
        value = shares * price
        if row is None:
            row = PaperPosition(
                paper_account_id=account.id,
                symbol=symbol,
                asset_class=self.quote_source.asset_class(symbol).value,
                quantity=ZERO,
                avg_cost=ZERO,
                realized_pl=ZERO,
                reserved_quantity=ZERO,
                pledged_quantity=ZERO,
                updated_at=now,
            )
            store.add(row)
            positions[key] = row
        if side is OrderSide.buy:
            account.cash -= value
            held = row.quantity
            row.avg_cost = ((held * row.avg_cost + value) / (held + shares)).quantize(
                PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
            )
            row.quantity = held + shares
        else:
            account.cash += value
            row.realized_pl += (price - row.avg_cost) * shares
            row.quantity -= shares
            if row.quantity == ZERO:
                account.cycles_completed += 1
                row.avg_cost = ZERO
        row.updated_at = now

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
        if _is_option_order(order):
            return self._evaluate_option(store, account, order, positions, now)
        key = (account.id, order.symbol)
        if order.expires_at is not None and now >= order.expires_at:
            self._close(account, order, positions.get(key), OrderStatus.expired, now, None)
            return _Outcome(True)
        quote = self.quote_source.quote(order.symbol, now)
        state = OrderState(
            side=OrderSide(order.side),
            order_type=OrderType(order.order_type),
            # A dollar-amount order executes at once (its quantity was computed at this quote).
            time_in_force=(
                TimeInForce.ioc if order.notional is not None else TimeInForce(order.time_in_force)
            ),
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
        """Book one fill; None (nothing booked) when it would overdraw the account (a buy)
        or exceed its buying power (a short sale's requirement)."""
        key = (account.id, order.symbol)
        position = positions.get(key)
        value = quantity * price
        remaining_before = order.quantity - order.filled_quantity
        if quantity == remaining_before:
            release = order.reserved_cash
        else:
            release = (order.reserved_cash * quantity / remaining_before).quantize(
                CENT, rounding=ROUND_HALF_EVEN
            )
            release = min(release, order.reserved_cash)
        free_cash = (
            account.cash
            - (account.reserved_cash - order.reserved_cash)
            - account.collateral_cash
            - account.short_requirement
        )
        short_sale = order.side == OrderSide.sell.value and order.position_effect == "open"
        cover = (
            order.side == OrderSide.buy.value
            and order.position_effect == PositionEffect.close.value
            and position is not None
            and position.quantity < ZERO
        )
        if short_sale:
            if SHORT_NET * value > free_cash:
                return None
            if position is None:
                position = self._new_position(store, account, order.symbol, positions, now)
            short = -position.quantity
            before = short * position.avg_cost
            position.avg_cost = ((before + value) / (short + quantity)).quantize(
                PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
            )
            position.quantity -= quantity
            account.cash += value
            # Kept equal to the sum of 1.5 x short quantity x average entry price, so a cover
            # (which releases 1.5 x quantity x average) gives back exactly what was held.
            account.short_requirement += SHORT_INITIAL * (
                (short + quantity) * position.avg_cost - before
            )
            account.reserved_cash -= release
            order.reserved_cash -= release
        elif cover:
            assert position is not None
            released = SHORT_INITIAL * quantity * position.avg_cost
            if value > free_cash + released:
                return None
            account.cash -= value
            account.short_requirement -= released
            account.reserved_cash -= release
            order.reserved_cash -= release
            position.realized_pl += (position.avg_cost - price) * quantity
            position.quantity += quantity
            position.reserved_quantity -= quantity
            if position.quantity == ZERO:
                account.cycles_completed += 1
                position.avg_cost = ZERO
        elif order.side == OrderSide.buy.value:
            if value > free_cash or (position is not None and position.quantity < ZERO):
                # (A plain buy never meets short stock: placement keeps the two apart.)
                return None
            account.cash -= value
            account.reserved_cash -= release
            order.reserved_cash -= release
            if position is None:
                position = self._new_position(store, account, order.symbol, positions, now)
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

    def _new_position(
        self,
        store: PaperStore,
        account: PaperAccount,
        symbol: str,
        positions: dict[PositionKey, PaperPosition],
        now: datetime,
    ) -> PaperPosition:
        position = PaperPosition(
            paper_account_id=account.id,
            symbol=symbol,
            asset_class=self.quote_source.asset_class(symbol).value,
            quantity=ZERO,
            avg_cost=ZERO,
            realized_pl=ZERO,
            reserved_quantity=ZERO,
            updated_at=now,
        )
        store.add(position)
        positions[(account.id, symbol)] = position
        return position

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
        account.reserved_cash -= order.reserved_cash
        order.reserved_cash = ZERO
        short_sale = order.side == OrderSide.sell.value and order.position_effect == "open"
        if position is not None and not short_sale:
            if order.side == OrderSide.sell.value or order.position_effect == "close":
                # A sell holds long shares; a cover holds short ones.
                position.reserved_quantity -= remaining
                position.updated_at = now
        order.status = status.value
        if reason is not None:
            order.reject_reason = reason
        order.updated_at = now
        account.updated_at = now

    # --- option matching -----------------------------------------------------------------

    def _evaluate_option(
        self,
        store: PaperStore,
        account: PaperAccount,
        order: PaperOrder,
        positions: dict[PositionKey, PaperPosition],
        now: datetime,
    ) -> _Outcome:
        """Match a working option order against the model quotes at ``now``.

        Option orders fill whole (the model quote shows no size limit), a combo with all its
        legs at once at its net price, or not at all; a contract past its expiry instant
        ends the order (``expired``).
        """
        legs = _row_legs(order)
        mine = _account_positions(positions, account.id)
        day_over = order.expires_at is not None and now >= order.expires_at
        if day_over or any(now >= _expiry_instant(leg.contract) for leg in legs):
            reason = None if day_over else "the option contract expired"
            self._close_option(account, order, mine, OrderStatus.expired, now, reason)
            return _Outcome(True)
        remaining = order.quantity - order.filled_quantity
        quotes = [self.options.quote(leg.contract, now) for leg in legs]
        changed = False
        if order.legs is None:
            model = quotes[0]
            decision = decide(
                OrderState(
                    side=OrderSide(order.side),
                    order_type=OrderType(order.order_type),
                    time_in_force=TimeInForce(order.time_in_force),
                    remaining=remaining,
                    limit_price=order.limit_price,
                    stop_price=order.stop_price,
                    stop_triggered=order.stop_triggered,
                ),
                PaperQuote(
                    symbol=order.symbol,
                    bid=model.bid,
                    ask=model.ask,
                    last=model.last,
                    bid_size=remaining,
                    ask_size=remaining,
                    as_of=model.as_of,
                    step=0,
                ),
            )
            if decision.stop_triggered and not order.stop_triggered:
                order.stop_triggered = True
                changed = True
            if not decision.fills:
                if decision.cancel_remainder:
                    self._close_option(
                        account, order, mine, OrderStatus.canceled, now, decision.reason
                    )
                    return _Outcome(True)
                if changed:
                    order.updated_at = now
                return _Outcome(changed)
            assert decision.fill_price is not None
            prices = [decision.fill_price]
        else:
            leg_quotes = [
                LegQuote(leg.side, leg.ratio, q.bid, q.ask)
                for leg, q in zip(legs, quotes, strict=True)
            ]
            effect = None if order.price_effect is None else PriceEffect(order.price_effect)
            credit = net_credit(leg_quotes)
            if not combo_marketable(OrderType(order.order_type), effect, order.limit_price, credit):
                return _Outcome(False)
            prices = [q.price for q in leg_quotes]
        booked = self._book_option_fill(store, account, order, legs, prices, positions, now)
        if isinstance(booked, str):
            self._close_option(account, order, mine, OrderStatus.canceled, now, booked)
            return _Outcome(True)
        order.status = OrderStatus.filled.value
        order.updated_at = now
        return _Outcome(True, booked)

    def _book_option_fill(
        self,
        store: PaperStore,
        account: PaperAccount,
        order: PaperOrder,
        legs: Sequence[_Leg],
        prices: Sequence[Decimal],
        positions: dict[PositionKey, PaperPosition],
        now: datetime,
    ) -> tuple[Fill, ...] | str:
        """Book the whole remaining quantity of an option order at ``prices`` (one per leg),
        all legs or none; the reason as a string (nothing booked) when the fill would leave
        a short option uncovered or overdraw the account."""
        quantity = order.quantity - order.filled_quantity
        mine = _account_positions(positions, account.id)
        after = _holdings(mine)
        cash_change = ZERO
        for leg, price in zip(legs, prices, strict=True):
            contracts = quantity * leg.ratio
            value = contracts * price * leg.contract.multiplier
            cash_change += value if leg.side is OrderSide.sell else -value
            before = after.get(leg.symbol)
            signed = contracts if leg.side is OrderSide.buy else -contracts
            after[leg.symbol] = OptionHolding(
                leg.contract, (ZERO if before is None else before.quantity) + signed
            )
        needed = requirement(after.values(), _free_shares(mine))
        if needed.uncovered:
            return "uncovered short option at the fill: " + "; ".join(needed.uncovered)
        free_cash = (
            account.cash
            + cash_change
            - (account.reserved_cash - order.reserved_cash)
            - needed.cash
            - account.short_requirement
        )
        if free_cash < ZERO:
            return "insufficient buying power at the fill price"
        account.cash += cash_change
        account.reserved_cash -= order.reserved_cash
        order.reserved_cash = ZERO
        multi = order.legs is not None
        fills: list[Fill] = []
        for leg, price in zip(legs, prices, strict=True):
            contracts = quantity * leg.ratio
            row = self._option_row(store, account, leg.contract, positions, now)
            self._trade_option(account, row, leg.side, leg.position_effect, contracts, price, now)
            fill = self._add_fill(
                store, account, order, leg.symbol, leg.side, contracts, price, now
            )
            fills.append(
                Fill(
                    fill_id=fill.id,
                    quantity=contracts,
                    price=price,
                    occurred_at=now,
                    leg_symbol=leg.symbol if multi else None,
                )
            )
        self._set_cover(account, _account_positions(positions, account.id), needed, now)
        order.filled_quantity += quantity
        if multi:
            credit = sum(
                (
                    price * leg.ratio * (1 if leg.side is OrderSide.sell else -1)
                    for leg, price in zip(legs, prices, strict=True)
                ),
                ZERO,
            )
            order.avg_fill_price = abs(credit)
            if order.price_effect is None:
                order.price_effect = _effect_of(credit).value
            order.legs = [
                {**stored, "avg_fill_price": str(price)}
                for stored, price in zip(order.legs or [], prices, strict=True)
            ]
        else:
            order.avg_fill_price = prices[0]
        account.updated_at = now
        return tuple(fills)

    def _option_row(
        self,
        store: PaperStore,
        account: PaperAccount,
        contract: OptionContract,
        positions: dict[PositionKey, PaperPosition],
        now: datetime,
    ) -> PaperPosition:
        key = (account.id, contract.symbol)
        row = positions.get(key)
        if row is None:
            row = PaperPosition(
                paper_account_id=account.id,
                symbol=contract.symbol,
                asset_class=AssetClass.option.value,
                quantity=ZERO,
                avg_cost=ZERO,
                realized_pl=ZERO,
                reserved_quantity=ZERO,
                pledged_quantity=ZERO,
                expires_at=_expiry_instant(contract),
                updated_at=now,
            )
            store.add(row)
            positions[key] = row
        return row

    @staticmethod
    def _trade_option(
        account: PaperAccount,
        row: PaperPosition,
        side: OrderSide,
        effect: PositionEffect,
        contracts: Decimal,
        price: Decimal,
        now: datetime,
    ) -> None:
        """Open (average the premium in) or close (realise the difference) ``contracts``.

        ``avg_cost`` is the premium per share; a position that returns to flat completes a
        round trip (the paper-first gate counts it, as for shares).
        """
        held = abs(row.quantity)
        signed = contracts if side is OrderSide.buy else -contracts
        if effect is PositionEffect.open:
            row.avg_cost = (
                (held * row.avg_cost + contracts * price) / (held + contracts)
            ).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)
        else:
            was_long = row.quantity > ZERO
            gain = (price - row.avg_cost) * contracts * OPTION_MULTIPLIER
            row.realized_pl += gain if was_long else -gain
            row.reserved_quantity -= contracts
        row.quantity += signed
        if effect is PositionEffect.close and row.quantity == ZERO:
            account.cycles_completed += 1
            # Stored as 0 exactly (not 0.0): the settlement pass looks for non-zero rows.
            row.quantity = ZERO
            row.avg_cost = ZERO
        row.updated_at = now

    @staticmethod
    def _add_fill(
        store: PaperStore,
        account: PaperAccount,
        order: PaperOrder,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        price: Decimal,
        now: datetime,
        kind: str | None = None,
    ) -> PaperFill:
        account.seq += 1
        fill = PaperFill(
            id=f"pf_{account.seq:010d}_{account.id[-24:]}",
            paper_order_id=order.id,
            paper_account_id=account.id,
            symbol=symbol,
            side=side.value,
            quantity=quantity,
            price=price,
            occurred_at=now,
            kind=kind,
        )
        store.add_fill(fill)
        return fill

    @staticmethod
    def _set_cover(
        account: PaperAccount,
        positions: dict[str, PaperPosition],
        needed: Requirement,
        now: datetime,
    ) -> None:
        """Record the cash held and the shares pledged against the account's short options."""
        account.collateral_cash = needed.cash
        for symbol, row in positions.items():
            if is_option_symbol(symbol):
                continue
            pledged = needed.pledged_shares.get(symbol, ZERO)
            if row.pledged_quantity != pledged:
                row.pledged_quantity = pledged
                row.updated_at = now

    @staticmethod
    def _close_option(
        account: PaperAccount,
        order: PaperOrder,
        positions: dict[str, PaperPosition],
        status: OrderStatus,
        now: datetime,
        reason: str | None,
    ) -> None:
        """End a working option order and give back the cash and contracts it held."""
        remaining = order.quantity - order.filled_quantity
        account.reserved_cash -= order.reserved_cash
        order.reserved_cash = ZERO
        PaperEngine._hold_closing(_row_legs(order), remaining, positions, -1, now)
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

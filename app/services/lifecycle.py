"""Option lifecycle events from live brokers: expiration, exercise and assignment as orders.

A broker ends an option's life on its own (it expires worthless, a long is exercised, a
short is assigned) and reports it as a transaction, not as an order of ours. This sweep
reads the recent transactions of the accounts that hold (or held) option positions and
turns each lifecycle transaction (``option_expiration``, ``option_exercise``,
``option_assignment``, ``option_cash_settlement``) into an ``OrderUpdate(lifecycle=...)``
fed to the same ``OrderUpdateIngest`` as the brokers' streams: the account gains a
``filled`` order (client order id ``<kind>:<our id>``, ``position_effect`` ``close``) and
its subscribers an ``order.filled`` event. The transaction's id is the order's
``broker_order_id``, so one transaction is adopted once, however often it is read again and
by whichever instance.

Which side closed is taken from what is known, never guessed:

* ``SIGNED_LIFECYCLE_BROKERS`` (Alpaca, tastytrade) state it: the quantity is the
  position's signed change.
* ``POSITION_SIDED_BROKERS`` (Schwab, SnapTrade) name the contract and give the event a
  stable id, but their documentation does not say what the quantity's sign means. The side
  is the one the account held in that contract: the option positions this sweep read within
  the lookback, the account's last good portfolio read (``portfolio_snapshots``), and the
  net of the gateway's own filled orders on the contract (the last two shared by every
  instance). Exactly one side held: adopted (an exercise must have closed a long,
  an assignment a short; a contradiction is refused). Both sides seen (the position flipped
  within the lookback), or none known for an expiration: logged, and left a transaction.
  A transaction another instance already adopted (its order exists) is not looked at again.
* ``DATE_MATCHED_BROKERS`` (Tradier) report an expiration as a history row with a date and
  a signed quantity but no contract and no id (``OPTEXP``). A row dated D is the expiry of
  a contract only when it can be known which: it is the only expiration row dated D, the
  account is known (the same three sources as above) to have held exactly one option
  contract expiring on D, on one side only, the row's sign agrees with that side (a long
  removed is negative) and its size with a quantity held. Then it is adopted under a
  broker id built from the account, D and the contract; otherwise logged, and left a
  transaction.
* IBKR's Web API reports no lifecycle event: it is not swept (README, "Option lifecycle
  events", says why).

Pacing: each account is looked at no more than once per its broker's interval
(``Settings.option_lifecycle_poll_seconds`` / ``..._by_broker``); a look costs one positions
read, plus one transactions read (the last ``option_lifecycle_lookback_days`` days) when the
account holds an option now, held one within the lookback (brokers post these events late:
end of day, nightly), or has not been looked at since this process started. One instance
sweeps at a time (a lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal

from app.brokers import errors as broker_errors
from app.brokers.base import (
    AssetClass,
    BrokerAdapter,
    BrokerOrder,
    InvalidOptionSymbol,
    OptionContract,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    PositionEffect,
    Support,
    Tier,
    TimeInForce,
    Transaction,
)
from app.db.leases import Leases, LocalLeases
from app.db.models import Account, Connection, Order
from app.db.repositories.connections import AccountRepository
from app.db.repositories.orders import OrderRepository
from app.db.repositories.portfolio import PortfolioSnapshotRepository
from app.services.clock import utcnow
from app.services.context import USABLE_CONNECTION_STATUSES, ServiceContext
from app.services.order_updates import OrderUpdateIngest

log = logging.getLogger(__name__)

LIFECYCLE_TYPES = frozenset(
    {"option_expiration", "option_exercise", "option_assignment", "option_cash_settlement"}
)
LEASE = "option-lifecycle-sweep"
_ZERO = Decimal(0)


# Brokers whose lifecycle transactions carry the position change signed (so the side of
# the closed position is known, not guessed): Alpaca's OPEXP/OPEXC/OPASN ``qty`` (docs
# "Non-trade activities for option events") and tastytrade's Receive Deliver rows (its
# mapping signs them by ``action``).
SIGNED_LIFECYCLE_BROKERS = frozenset({"alpaca", "tastytrade"})
# Brokers whose lifecycle transactions name the contract and have a stable id but do not
# state the side: Schwab's RECEIVE_AND_DELIVER "REMOVAL OF OPTION DUE TO ..." (the spec's
# ``TransferItem.amount`` has no documented sign convention; app/brokers/schwab/mapping.py)
# and SnapTrade's OPTIONEXPIRATION / OPTIONASSIGNMENT / OPTIONEXERCISE (``units`` "the number
# of units of the security", no sign stated; ../shared/specs/snaptrade-api.yaml
# UniversalActivity). The side comes from the account's positions (module docstring).
POSITION_SIDED_BROKERS = frozenset({"schwab", "snaptrade"})
# Brokers whose expiration rows name no contract: Tradier's history ``{"amount": 0, "date",
# "type": "option", "option": {"option_type": "OPTEXP", "description": "Expired",
# "quantity": -1.0}}`` (https://documentation.tradier.com/brokerage-api/accounts/
# get-account-history), nightly, dated by day, without an id. Matched by date to the one
# contract known held that expired that day (module docstring, ``_match_by_date``).
DATE_MATCHED_BROKERS = frozenset({"tradier"})
# Other brokers' lifecycle transactions stay readable through GET
# /v1/accounts/{id}/transactions but are not made orders (README, "Option lifecycle events").

# What an event closing each side of a position is as an order: a long is sold, a short bought.
_CLOSING = {1: OrderSide.sell, -1: OrderSide.buy}
_IMPLIED = {"option_exercise": OrderSide.sell, "option_assignment": OrderSide.buy}


def lifecycle_brokers(ctx: ServiceContext) -> list[str]:
    """The live brokers whose accounts can trade options and whose lifecycle transactions
    can be adopted (``SIGNED_LIFECYCLE_BROKERS``, ``POSITION_SIDED_BROKERS`` and
    ``DATE_MATCHED_BROKERS``). The paper broker reports its own expiries from its engine."""
    swept = SIGNED_LIFECYCLE_BROKERS | POSITION_SIDED_BROKERS | DATE_MATCHED_BROKERS
    return [
        spec.slug
        for spec in ctx.registry.all()
        if spec.tier is not Tier.paper
        and spec.slug in swept
        and spec.capabilities.asset_classes.get(AssetClass.option, Support.unsupported)
        is not Support.unsupported
    ]


def contract_symbol(symbol: str | None) -> str | None:
    """The contract's symbol in the gateway's (unpadded) form, None for anything else."""
    if not symbol:
        return None
    try:
        return OptionContract.parse(symbol).symbol
    except InvalidOptionSymbol:
        return None


def lifecycle_update(
    account_ref: str, tx: Transaction, *, held: frozenset[OrderSide] | None = None
) -> OrderUpdate | None:
    """The order a lifecycle transaction stands for, or None when it names no option
    contract or its direction cannot be known (logged, never guessed).

    ``held`` is None for a broker that signs the quantity: a signed quantity is the
    position's change (Alpaca: ``-2`` two longs gone, ``2`` two shorts gone); unsigned, an
    exercise closes a long and an assignment a short; an unsigned expiration is not adopted.

    Otherwise (``POSITION_SIDED_BROKERS``) the quantity's sign is ignored and ``held`` is
    the set of closing sides the account's known positions in the contract allow (``sell``:
    a long was held, ``buy``: a short). Adopted only when exactly one side was held, or,
    none being known, when the event itself implies it (exercise, assignment); a held side
    that contradicts the event is refused.
    """
    if tx.type not in LIFECYCLE_TYPES or not tx.symbol:
        return None
    try:
        contract = OptionContract.parse(tx.symbol)
    except InvalidOptionSymbol:
        log.warning(
            "lifecycle transaction without an option contract",
            extra={"transaction_id": tx.transaction_id, "type": tx.type},
        )
        return None
    quantity = tx.quantity
    side: OrderSide | None
    if held is not None:
        side = _side_from_positions(tx, held)
    elif quantity is not None and quantity < _ZERO:
        side = OrderSide.sell
    elif quantity is not None and quantity > _ZERO and tx.type != "option_exercise":
        side = OrderSide.buy
    else:
        side = _IMPLIED.get(tx.type)
    if side is None:
        log.warning(
            "lifecycle transaction without a known direction; not adopted",
            extra={"transaction_id": tx.transaction_id, "type": tx.type},
        )
        return None
    contracts = abs(quantity) if quantity else None
    if contracts is None:
        log.warning(
            "lifecycle transaction without a quantity; not adopted",
            extra={"transaction_id": tx.transaction_id, "type": tx.type},
        )
        return None
    price = tx.price if tx.price is not None else _ZERO
    report = BrokerOrder(
        # Its own namespace: a transaction id never matches one of our orders' broker ids
        # (at brokers where both are plain integers).
        broker_order_id=f"tx:{tx.transaction_id}",
        client_order_id=None,
        symbol=contract.symbol,
        side=side,
        quantity=contracts,
        filled_quantity=contracts,
        avg_fill_price=price,
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        status=OrderStatus.filled,
        limit_price=None,
        stop_price=None,
        created_at=tx.occurred_at,
        updated_at=tx.occurred_at,
        position_effect=PositionEffect.close,
    )
    return OrderUpdate(
        account_ref=account_ref, order=report, occurred_at=tx.occurred_at, lifecycle=tx.type
    )


def _side_from_positions(tx: Transaction, held: frozenset[OrderSide]) -> OrderSide | None:
    implied = _IMPLIED.get(tx.type)
    if len(held) > 1:
        log.warning(
            "lifecycle transaction of a contract held both long and short within the "
            "lookback; not adopted",
            extra={"transaction_id": tx.transaction_id, "type": tx.type},
        )
        return None
    if implied is not None and held and implied not in held:
        log.warning(
            "lifecycle transaction contradicts the side held; not adopted",
            extra={"transaction_id": tx.transaction_id, "type": tx.type},
        )
        return None
    if implied is not None:
        return implied
    return next(iter(held), None)


class LifecycleSweep:
    """One pass: each due account of a lifecycle broker looked at once (module docstring)."""

    def __init__(self, ctx: ServiceContext, *, leases: Leases | None = None) -> None:
        self._ctx = ctx
        self._leases = leases or LocalLeases()
        self._due: dict[str, datetime] = {}
        self._last_held: dict[str, datetime] = {}  # when the account last held an option
        self._looked: set[str] = set()  # accounts looked at since this process started
        # "<account>:<transaction>" ("<account>:<day>" for DATE_MATCHED_BROKERS) already fed
        # by this process, with when it happened; forgotten once older than the lookback (it
        # is no longer read).
        self._adopted: dict[str, datetime] = {}
        # account -> contract symbol -> {signed quantity held: when this sweep last saw it}
        # (the side and size evidence of POSITION_SIDED_BROKERS and DATE_MATCHED_BROKERS;
        # forgotten past the lookback).
        self._seen: dict[str, dict[str, dict[Decimal, datetime]]] = {}

    async def run_once(self, now: datetime | None = None) -> int:
        """Returns how many lifecycle transactions were fed to the ingest this pass."""
        now = now or utcnow()
        if not await self._leases.acquire(LEASE):
            return 0
        horizon = now - timedelta(days=self._ctx.settings.option_lifecycle_lookback_days + 1)
        self._adopted = {k: at for k, at in self._adopted.items() if at >= horizon}
        try:
            async with self._ctx.sessionmaker() as session:
                accounts = await AccountRepository.for_system(session).usable_on_brokers(
                    lifecycle_brokers(self._ctx), sorted(USABLE_CONNECTION_STATUSES)
                )
                adapters: list[tuple[Account, Connection, BrokerAdapter]] = []
                for account, connection in accounts:
                    if now < self._due.get(account.id, now):
                        continue
                    try:
                        adapter = await self._ctx.adapter_for(session, connection, for_order=False)
                    except Exception:
                        log.info(
                            "lifecycle sweep: no adapter for the account now",
                            extra={"account_id": account.id},
                        )
                        continue
                    adapters.append((account, connection, adapter))
            fed = 0
            for account, connection, adapter in adapters:
                self._due[account.id] = now + self._ctx.settings.option_lifecycle_interval(
                    connection.broker_slug
                )
                try:
                    fed += await self._look(account, connection, adapter, now)
                except broker_errors.BrokerError as exc:
                    log.info(
                        "lifecycle sweep: the broker did not answer",
                        extra={"account_id": account.id, "reason": exc.reason},
                    )
                except Exception:
                    log.exception(
                        "lifecycle sweep of an account failed", extra={"account_id": account.id}
                    )
            return fed
        finally:
            await self._leases.release(LEASE)

    async def _look(
        self, account: Account, connection: Connection, adapter: BrokerAdapter, now: datetime
    ) -> int:
        ref = account.broker_account_ref
        positions = await adapter.get_positions(ref)
        lookback = timedelta(days=self._ctx.settings.option_lifecycle_lookback_days)
        if any(p.asset_class is AssetClass.option for p in positions):
            self._last_held[account.id] = now
        self._remember_sides(account.id, positions, now, now - lookback)
        first = account.id not in self._looked
        self._looked.add(account.id)
        last_held = self._last_held.get(account.id)
        # Brokers post an expiry or assignment late (end of day, nightly): the account is
        # read for the whole lookback after it last held an option, not only once.
        if not first and (last_held is None or now - last_held > lookback):
            return 0
        transactions = await adapter.get_transactions(ref, now - lookback, None, None)
        ingest = OrderUpdateIngest(self._ctx.sessionmaker, connection.broker_slug)
        sided = connection.broker_slug in POSITION_SIDED_BROKERS
        dated = connection.broker_slug in DATE_MATCHED_BROKERS
        fed = 0
        snapshot: dict[str, set[int]] | None = None
        for tx in sorted(transactions, key=lambda t: (t.occurred_at, t.transaction_id)):
            if tx.type not in LIFECYCLE_TYPES:
                continue
            # A dated row's id is its place in the answer, which moves as rows are added:
            # it is known by its day instead (at most one row a day is ever adopted).
            day = tx.occurred_at.date()
            key = f"{account.id}:{day:%Y-%m-%d}" if dated else f"{account.id}:{tx.transaction_id}"
            if key in self._adopted:
                continue
            held: frozenset[OrderSide] | None = None
            if dated:
                if await self._recorded_on(account, day):  # adopted by another instance
                    self._adopted[key] = tx.occurred_at
                    continue
                matched = await self._match_by_date(account, tx, transactions)
                if matched is None:
                    continue
                tx, held = matched
            elif sided:
                if await self._recorded(account, tx):  # adopted by another instance
                    self._adopted[key] = tx.occurred_at
                    continue
                if snapshot is None:
                    snapshot = await self._known_sides(account, transactions)
                held = self._held(account.id, tx, snapshot)
            update = lifecycle_update(ref, tx, held=held)
            if update is None:
                continue
            # Idempotent: the transaction id is the broker order id, per account.
            await ingest(update, account_id=account.id)
            self._adopted[key] = tx.occurred_at
            fed += 1
        return fed

    def _remember_sides(
        self, account_id: str, positions: Iterable[Position], now: datetime, horizon: datetime
    ) -> None:
        seen = self._seen.setdefault(account_id, {})
        for p in positions:
            symbol = contract_symbol(p.symbol) if p.asset_class is AssetClass.option else None
            if symbol is not None and p.quantity != _ZERO:
                seen.setdefault(symbol, {})[p.quantity] = now
        for symbol in list(seen):
            held = {quantity: at for quantity, at in seen[symbol].items() if at >= horizon}
            if held:
                seen[symbol] = held
            else:
                del seen[symbol]

    def _held(
        self, account_id: str, tx: Transaction, snapshot: dict[str, set[int]]
    ) -> frozenset[OrderSide]:
        """The closing sides the known positions in the transaction's contract allow."""
        symbol = contract_symbol(tx.symbol)
        if symbol is None:
            return frozenset()
        seen = set(self._seen.get(account_id, {}).get(symbol, {}))
        signs = {_sign(q) for q in seen} | snapshot.get(symbol, set())
        return frozenset(_CLOSING[sign] for sign in signs)

    async def _known_sides(
        self, account: Account, transactions: Iterable[Transaction]
    ) -> dict[str, set[int]]:
        """The option sides the database knows the account held (shared by every
        instance) in each contract the transactions name (``_known_holdings``)."""
        wanted = {
            s
            for s in (contract_symbol(t.symbol) for t in transactions if t.type in LIFECYCLE_TYPES)
            if s is not None
        }

        async def filled(repo: OrderRepository) -> list[Order]:
            # A single-leg order's row carries the contract, a multi-leg one's its underlying.
            underlyings = {OptionContract.parse(s).underlying for s in wanted}
            return await repo.filled_on_symbols(account.id, sorted(wanted | underlyings))

        held = await self._known_holdings(account, wanted.__contains__, filled)
        return {symbol: {_sign(q) for q in quantities} for symbol, quantities in held.items()}

    async def _known_holdings(
        self,
        account: Account,
        keep: Callable[[str], bool],
        filled: Callable[[OrderRepository], Awaitable[list[Order]]],
    ) -> dict[str, set[Decimal]]:
        """The signed quantities the database knows the account held (shared by every
        instance) in the contracts ``keep`` accepts: the account's last good portfolio
        read, and the net of the gateway's own filled orders (those ``filled`` reads)."""
        async with self._ctx.sessionmaker() as session:
            found = await PortfolioSnapshotRepository.for_user(
                session, account.user_id
            ).for_accounts([account.id])
            orders = await filled(OrderRepository.for_system(session))
        held: dict[str, set[Decimal]] = {}
        snapshot = found.get(account.id)
        for row in snapshot.positions if snapshot is not None else []:
            symbol = contract_symbol(row.get("symbol"))
            if row.get("asset_class") != AssetClass.option.value or symbol is None:
                continue
            quantity = Decimal(row.get("quantity") or "0")
            if quantity != _ZERO and keep(symbol):
                held.setdefault(symbol, set()).add(quantity)
        for symbol, net in _net_filled(orders).items():
            if net != _ZERO and keep(symbol):
                held.setdefault(symbol, set()).add(net)
        return held

    async def _match_by_date(
        self, account: Account, tx: Transaction, transactions: Iterable[Transaction]
    ) -> tuple[Transaction, frozenset[OrderSide]] | None:
        """A ``DATE_MATCHED_BROKERS`` expiration row as the expiry of the one contract it can
        be known to be, with the side that closed; None (logged) when it cannot be known.

        The row's date is the contract's expiration date: Tradier's documented example is
        dated 2018-09-21T00:00:00Z, the September 2018 monthly expiration (a Friday), and
        nothing documents a later posting date (the history is updated nightly, so the row
        appears the next day, dated the day it expired). Its quantity is signed as the
        position's change, as in the history's trade rows (the documented sale of GE is
        ``"quantity": -1.0`` with a credit): a long expiring is negative. Were the sign the
        other way round, every row would be refused, never adopted on the wrong side.
        """
        day = tx.occurred_at.date()
        extra = {"transaction_id": tx.transaction_id, "type": tx.type, "date": day.isoformat()}
        if tx.type != "option_expiration":
            log.warning("dated lifecycle row that is not an expiration; not adopted", extra=extra)
            return None
        same_day = [t for t in transactions if t.type == tx.type and t.occurred_at.date() == day]
        if len(same_day) != 1:
            log.warning(
                "several expiration rows on one day name no contract; not adopted", extra=extra
            )
            return None
        quantity = tx.quantity
        if quantity is None or quantity == _ZERO:
            log.warning("expiration row without a quantity; not adopted", extra=extra)
            return None

        async def filled(repo: OrderRepository) -> list[Order]:
            return await repo.filled_on_expiration(account.id, day)

        held = await self._known_holdings(account, lambda s: _expires(s, day), filled)
        for seen_symbol, seen in self._seen.get(account.id, {}).items():
            if _expires(seen_symbol, day):
                held.setdefault(seen_symbol, set()).update(seen)
        if len(held) != 1:
            log.warning(
                "expiration row without a contract: "
                + ("none" if not held else "several")
                + " known held expiring that day; not adopted",
                extra=extra,
            )
            return None
        [(symbol, quantities)] = held.items()
        signs = {_sign(q) for q in quantities}
        if len(signs) > 1:
            log.warning(
                "expiration row of a contract held both long and short within the lookback; "
                "not adopted",
                extra={**extra, "symbol": symbol},
            )
            return None
        [sign] = signs
        if tx.symbol is not None and contract_symbol(tx.symbol) != symbol:
            log.warning(
                "expiration row names another contract than the one held; not adopted",
                extra={**extra, "symbol": symbol},
            )
            return None
        if _sign(quantity) != -sign or abs(quantity) not in {abs(q) for q in quantities}:
            log.warning(
                "expiration row's quantity disagrees with the contract held; not adopted",
                extra={**extra, "symbol": symbol},
            )
            return None
        # The broker id: one contract expires once, on its expiration date, so an account
        # has at most one expiration of a contract on a day; with the one-row-a-day rule
        # above, account + day + contract names this row and nothing else, however the
        # history is paged or re-read, and by whichever instance.
        named = replace(
            tx,
            transaction_id=f"{DATED_ID_PREFIX}{account.broker_account_ref}:{day:%Y-%m-%d}:{symbol}",
            symbol=symbol,
        )
        return named, frozenset({_CLOSING[sign]})

    async def _recorded_on(self, account: Account, day: date) -> bool:
        """Whether an expiration row of this day was adopted (by any instance)."""
        prefix = f"tx:{DATED_ID_PREFIX}{account.broker_account_ref}:{day:%Y-%m-%d}:"
        async with self._ctx.sessionmaker() as session:
            return await OrderRepository.for_system(session).has_broker_id_prefix(
                account.id, prefix
            )

    async def _recorded(self, account: Account, tx: Transaction) -> bool:
        """Whether the transaction's order already exists (any instance adopted it)."""
        async with self._ctx.sessionmaker() as session:
            found = await OrderRepository.for_system(session).find_by_broker_ids(
                [account.id], broker_order_id=f"tx:{tx.transaction_id}", client_order_id=None
            )
        return found is not None


DATED_ID_PREFIX = "optexp:"


def _sign(quantity: Decimal) -> int:
    return 1 if quantity > _ZERO else -1


def _expires(symbol: str, day: date) -> bool:
    try:
        return OptionContract.parse(symbol).expiration == day
    except InvalidOptionSymbol:
        return False


def _net_filled(orders: Iterable[Order]) -> dict[str, Decimal]:
    """Contracts bought minus sold by these orders, per contract symbol: a single-leg order's
    fill, a multi-leg order's per-leg fills (or, where the broker reported none per leg, the
    order's filled quantity times the leg's ratio). The orders this sweep made of lifecycle
    events are not the account's trades and are left out."""
    net: dict[str, Decimal] = {}

    def add(symbol: str | None, side: object, quantity: Decimal) -> None:
        contract = contract_symbol(symbol)
        if contract is not None and quantity > _ZERO:
            signed = quantity if side == OrderSide.buy.value else -quantity
            net[contract] = net.get(contract, _ZERO) + signed

    for order in orders:
        if order.client_order_id.partition(":")[0] in LIFECYCLE_TYPES:
            continue
        if not order.legs:
            add(order.symbol, order.side, order.filled_quantity)
            continue
        for leg in order.legs:
            leg_filled = Decimal(str(leg.get("filled_quantity") or "0"))
            if leg_filled == _ZERO:
                leg_filled = order.filled_quantity * Decimal(str(leg.get("ratio") or "0"))
            add(str(leg.get("symbol") or ""), leg.get("side"), leg_filled)
    return net


async def run_lifecycle(sweep: LifecycleSweep, interval: float, stop: asyncio.Event) -> None:
    """Run the sweep every ``interval`` seconds (each account paced by its own broker
    interval inside) until ``stop``."""
    while not stop.is_set():
        try:
            await sweep.run_once()
        except Exception:
            log.exception("option lifecycle sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)

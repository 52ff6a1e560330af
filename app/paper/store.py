"""All SQL on the paper tables; the engine decides, this module reads, locks and writes.

Locking: every write path locks the paper account row (``FOR UPDATE``) before it reads
cash, positions or orders, so two app instances on one Postgres serialise on the account
and never double-spend. The ticker claims accounts with ``FOR UPDATE SKIP LOCKED``: an
account busy with a placement, or being ticked by another instance, is skipped this round
and picked up on the next tick. Taking the account lock first, then its orders, everywhere
keeps the lock order fixed, so the paths cannot deadlock each other. SQLite ignores
``FOR UPDATE``; there the single writer (``BEGIN IMMEDIATE``) gives the same guarantees.

Statement budget (the order path is benchmarked, ``scripts/bench/order_profile.py``): an
equity placement or cancel reads with Core (the locked account, then its position: one
round trip on Postgres for a placement, ``core_account_and_position``, or none when the
order service's first statement read them under the lock and handed them over,
``adopt_locked``; a cancel also the locked order) and writes everything it changed with
``write_core``: one statement on Postgres (data-modifying CTEs), one per row on SQLite.
Reserved cash is a running figure on the account row, never a SUM over orders. Option
orders, modify, the ticker and expiry settlement still go through the ORM session.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Select, Table, bindparam, insert, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.brokers.base import OrderStatus
from app.db.deferred import DeferredPart, DeferredWrites
from app.db.models import PaperAccount, PaperFill, PaperOrder, PaperPosition
from app.db.paper_lock import (
    LockedPaperRows,
    labelled_columns,
    locked_account_and_position,
    rows_from,
)

_ACCOUNTS: Table = PaperAccount.__table__  # type: ignore[assignment]
_POSITIONS: Table = PaperPosition.__table__  # type: ignore[assignment]
_ORDERS: Table = PaperOrder.__table__  # type: ignore[assignment]
_FILLS: Table = PaperFill.__table__  # type: ignore[assignment]
_TABLES: dict[type[Any], Table] = {
    PaperAccount: _ACCOUNTS,
    PaperPosition: _POSITIONS,
    PaperOrder: _ORDERS,
    PaperFill: _FILLS,
}

OPEN_STATUSES: tuple[str, ...] = (OrderStatus.accepted.value, OrderStatus.partially_filled.value)


def is_open(status: str) -> bool:
    return status in OPEN_STATUSES


def _with_defaults(row: Any) -> Any:
    """``row`` with its unset columns at their scalar defaults (what the ORM's insert
    would give them), since a Core insert writes every column."""
    for column in _TABLES[type(row)].columns:
        default = column.default
        if getattr(row, column.key) is None and default is not None and default.is_scalar:
            setattr(row, column.key, default.arg)  # type: ignore[attr-defined]
    return row


def is_client_order_id_conflict(exc: IntegrityError) -> bool:
    """Whether ``exc`` is the (paper account, client order id) uniqueness of paper orders:
    a refusal, where any other integrity error is a failing write (the order row's own
    ``client_order_id`` uniqueness included)."""
    message = str(exc.orig)
    return any(name in message for name in _CLIENT_ORDER_ID_CONFLICTS)


# The (paper account, client order id) uniqueness as each database names its violation.
_CLIENT_ORDER_ID_CONFLICTS = (
    "uq_paper_orders_paper_account_id_client_order_id",
    "paper_orders.paper_account_id, paper_orders.client_order_id",
)


class ClientOrderIdTaken(Exception):
    """The account already has an order with this client order id (its unique constraint)."""


class PaperStore:
    """Queries on one session; the caller owns the transaction.

    ``core=True`` (the order path: equity placement and cancel): rows are read with Core
    statements as plain row objects outside the session (``core_account``,
    ``core_position``, ``core_order``), changed in place by the engine, and written back by
    ``write_core`` with statements built once per shape with bound parameters, never
    through the ORM unit of work. New rows (``add``, ``add_fill``) are kept for it too.
    """

    def __init__(self, session: AsyncSession, *, core: bool = False) -> None:
        self.session = session
        self._held_fills: list[PaperFill] | None = None
        self._core = core
        # Core mode: rows read (with their column values as read) and rows to insert.
        self._read: list[tuple[Any, tuple[Any, ...]]] = []
        self._new: list[Any] = []
        self._fills: list[PaperFill] = []

    def add(self, row: Any) -> None:
        if self._core:
            self._new.append(_with_defaults(row))
            return
        self.session.add(row)

    def hold_fills(self) -> None:
        """Keep new fills out of the session until ``release_fills``.

        Placement books the order's first fills before its own row is inserted (so that
        row goes in once, already in its final state); the fills must follow it, as they
        reference it.
        """
        self._held_fills = []

    def add_fill(self, fill: PaperFill) -> None:
        if self._core:
            self._fills.append(_with_defaults(fill))
        elif self._held_fills is None:
            self.session.add(fill)
        else:
            self._held_fills.append(fill)

    def release_fills(self) -> None:
        held, self._held_fills = self._held_fills or [], None
        self.session.add_all(held)

    # --- the order path's Core reads and writes ---

    def _keep(self, row: Any) -> Any:
        table = _TABLES[type(row)]
        self._read.append((row, tuple(getattr(row, c.key) for c in table.columns)))
        return row

    async def core_account(self, account_id: str, owner: str) -> PaperAccount | None:
        """The owner's account, locked (``FOR UPDATE``), as a plain row object."""
        found = await self.session.execute(
            _locked_account_statement(), {"a_id": account_id, "a_owner": owner}
        )
        row = found.mappings().one_or_none()
        return None if row is None else self._keep(PaperAccount(**row))

    async def core_position(self, account_id: str, symbol: str) -> PaperPosition | None:
        """The account's position in ``symbol``.

        Read after ``core_account`` holds the account lock, in a statement of its own on
        purpose: read in one statement with the lock (an outer join locking the account
        only), a placement that waited for the lock would see the position as it was
        before the lock holder committed (Postgres re-checks only the locked row after the
        wait), so a concurrent first order on the account would insert the position twice,
        and a sale could be sized against a stale quantity.
        """
        found = await self.session.execute(
            _position_statement(), {"p_account_id": account_id, "p_symbol": symbol}
        )
        row = found.mappings().one_or_none()
        return None if row is None else self._keep(PaperPosition(**row))

    async def core_account_and_position(
        self, account_id: str, owner: str, symbol: str
    ) -> tuple[PaperAccount | None, PaperPosition | None]:
        """``core_account`` then ``core_position``, in one round trip on Postgres.

        The position is still read after the lock is held, in a snapshot taken after it
        (``app.db.paper_lock``). SQLite, whose one writer serialises placements, reads
        twice.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            account = await self.core_account(account_id, owner)
            if account is None:
                return None, None
            return account, await self.core_position(account.id, symbol)
        found = await self.session.execute(
            _locked_account_and_position_statement(),
            {"a_id": account_id, "a_owner": owner, "p_symbol": symbol},
        )
        row = found.mappings().one_or_none()
        if row is None:
            return None, None
        return self.adopt_locked(
            rows_from(row, self.session, account_id=account_id, owner=owner, symbol=symbol)
        )

    def adopt_locked(
        self, rows: LockedPaperRows
    ) -> tuple[PaperAccount | None, PaperPosition | None]:
        """The account and position another statement read under the account's lock
        (``app.db.paper_lock``), kept as if this store had read them."""
        if rows.account is None:
            return None, None
        account = self._keep(PaperAccount(**rows.account))
        if rows.position is None:
            return account, None
        return account, self._keep(PaperPosition(**rows.position))

    async def core_positions(self, account_id: str) -> list[PaperPosition]:
        """Every position row of the account (read after its lock is held, as above)."""
        found = await self.session.execute(_positions_statement(), {"p_account_id": account_id})
        return [self._keep(PaperPosition(**row)) for row in found.mappings().all()]

    async def core_order(self, account_id: str, order_id: str) -> PaperOrder | None:
        """The account's order, locked (the account is locked first, by the caller)."""
        found = await self.session.execute(
            _locked_order_statement(), {"o_account_id": account_id, "o_id": order_id}
        )
        row = found.mappings().one_or_none()
        return None if row is None else self._keep(PaperOrder(**row))

    async def write_core(
        self, *, new_order: PaperOrder | None = None, deferred: DeferredWrites | None = None
    ) -> None:
        """Write what the engine changed since the ``core_*`` reads: an UPDATE per changed
        row, an INSERT per new position, ``new_order`` and the new fills (after the order
        they reference). On Postgres one statement (data-modifying CTEs; foreign keys are
        checked at its end), or with ``deferred`` none: the writes are handed to the
        caller's statement (``app.db.deferred``). SQLite, which has no data-modifying CTEs,
        one statement per row, always sent here.

        Raises ``ClientOrderIdTaken`` when ``new_order``'s client order id is taken (the
        caller rolls back); any other integrity error propagates. Deferred, the caller's
        statement raises the integrity error: ``is_client_order_id_conflict`` tells.
        """
        writes: list[tuple[str, Table, Any]] = []
        for row, before in self._read:
            table = _TABLES[type(row)]
            if tuple(getattr(row, c.key) for c in table.columns) != before:
                writes.append(("u", table, row))
        writes.extend(("i", _TABLES[type(row)], row) for row in self._new)
        if new_order is not None:
            writes.append(("i", _ORDERS, _with_defaults(new_order)))
        writes.extend(("i", _FILLS, fill) for fill in self._fills)
        self._read, self._new, self._fills = [], [], []
        if not writes:
            return
        params: dict[str, Any] = {}
        for n, (_, table, row) in enumerate(writes):
            params |= {f"w{n}_{c.key}": getattr(row, c.key) for c in table.columns}
        shape = tuple((kind, table.name) for kind, table, _ in writes)
        postgres = self.session.get_bind().dialect.name == "postgresql"
        if postgres and deferred is not None:
            deferred.add(DeferredPart(("paper", shape), _returning_statements(shape), params))
            return
        try:
            if postgres:
                await self.session.execute(_combined_statement(shape), params)
            else:
                for stmt in _write_statements(shape):
                    await self.session.execute(stmt, params)
        except IntegrityError as exc:
            # Only the (account, client_order_id) constraint is a refusal; anything else
            # (a failing write) is an error, whatever the driver calls it (SQLite reports
            # a trigger's RAISE(ABORT) as an integrity error too).
            if new_order is not None and is_client_order_id_conflict(exc):
                raise ClientOrderIdTaken(new_order.client_order_id) from exc
            raise

    # --- accounts ---

    async def account(
        self, account_id: str, *, owner: str | None = None, lock: bool = False
    ) -> PaperAccount | None:
        stmt = select(PaperAccount).where(PaperAccount.id == account_id)
        if owner is not None:
            stmt = stmt.where(PaperAccount.owner == owner)
        if lock:
            # Locked: the row as committed by whoever held the lock before, not a copy this
            # session already holds.
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def accounts_of(self, owner: str) -> Sequence[PaperAccount]:
        stmt = (
            select(PaperAccount)
            .where(PaperAccount.owner == owner)
            .order_by(PaperAccount.created_at, PaperAccount.id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def claim_accounts_with_open_orders(
        self, after_id: str | None, limit: int
    ) -> Sequence[PaperAccount]:
        """Lock up to ``limit`` accounts that have open orders, in id order, skipping busy ones."""
        has_open = (
            select(PaperOrder.paper_account_id)
            .where(PaperOrder.status.in_(OPEN_STATUSES))
            .scalar_subquery()
        )
        stmt = select(PaperAccount).where(PaperAccount.id.in_(has_open))
        if after_id is not None:
            stmt = stmt.where(PaperAccount.id > after_id)
        stmt = stmt.order_by(PaperAccount.id).limit(limit).with_for_update(skip_locked=True)
        return (await self.session.execute(stmt)).scalars().all()

    async def claim_accounts_with_expired_options(
        self, now: datetime, after_id: str | None, limit: int
    ) -> Sequence[PaperAccount]:
        """Lock up to ``limit`` accounts holding option positions whose expiry instant has
        passed, in id order, skipping busy ones (the ticker's settlement pass)."""
        has_expired = (
            select(PaperPosition.paper_account_id)
            .where(PaperPosition.expires_at <= now, PaperPosition.quantity != Decimal(0))
            .scalar_subquery()
        )
        stmt = select(PaperAccount).where(PaperAccount.id.in_(has_expired))
        if after_id is not None:
            stmt = stmt.where(PaperAccount.id > after_id)
        stmt = stmt.order_by(PaperAccount.id).limit(limit).with_for_update(skip_locked=True)
        return (await self.session.execute(stmt)).scalars().all()

    # --- positions ---

    async def position(self, account_id: str, symbol: str) -> PaperPosition | None:
        stmt = select(PaperPosition).where(
            PaperPosition.paper_account_id == account_id, PaperPosition.symbol == symbol
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def positions(self, account_ids: Sequence[str]) -> Sequence[PaperPosition]:
        """Every position row (flat ones included) of the given accounts."""
        stmt = (
            select(PaperPosition)
            .where(PaperPosition.paper_account_id.in_(account_ids))
            .order_by(PaperPosition.paper_account_id, PaperPosition.symbol)
        )
        return (await self.session.execute(stmt)).scalars().all()

    # --- orders ---

    async def has_open_order(
        self, account_id: str, symbol: str, side: str, position_effect: str | None
    ) -> bool:
        """Whether a working order of that side and position effect exists on the symbol."""
        effect = (
            PaperOrder.position_effect.is_(None)
            if position_effect is None
            else PaperOrder.position_effect == position_effect
        )
        stmt = (
            select(PaperOrder.id)
            .where(
                PaperOrder.paper_account_id == account_id,
                PaperOrder.symbol == symbol,
                PaperOrder.side == side,
                PaperOrder.status.in_(OPEN_STATUSES),
                effect,
            )
            .limit(1)
        )
        return (await self.session.execute(stmt)).first() is not None

    def _orders(self, account_id: str, owner: str | None) -> Select[PaperOrder]:
        stmt = select(PaperOrder).where(PaperOrder.paper_account_id == account_id)
        if owner is not None:
            stmt = stmt.join(PaperAccount, PaperAccount.id == PaperOrder.paper_account_id).where(
                PaperAccount.owner == owner
            )
        return stmt

    async def order(
        self, account_id: str, order_id: str, *, owner: str | None = None, lock: bool = False
    ) -> PaperOrder | None:
        stmt = self._orders(account_id, owner).where(PaperOrder.id == order_id)
        if lock:
            stmt = stmt.with_for_update(of=PaperOrder)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def order_by_client_id(
        self, account_id: str, client_order_id: str, *, owner: str | None = None
    ) -> PaperOrder | None:
        stmt = self._orders(account_id, owner).where(PaperOrder.client_order_id == client_order_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def orders(
        self,
        account_id: str,
        *,
        statuses: Sequence[str] | None = None,
        exclude_statuses: Sequence[str] | None = None,
        limit: int | None = None,
        newest_first: bool = True,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        symbol: str | None = None,
        owner: str | None = None,
    ) -> Sequence[PaperOrder]:
        stmt = self._orders(account_id, owner)
        if statuses is not None:
            stmt = stmt.where(PaperOrder.status.in_(statuses))
        if exclude_statuses is not None:
            stmt = stmt.where(PaperOrder.status.not_in(exclude_statuses))
        if created_from is not None:
            stmt = stmt.where(PaperOrder.created_at >= created_from)
        if created_to is not None:
            stmt = stmt.where(PaperOrder.created_at <= created_to)
        if symbol is not None:
            stmt = stmt.where(PaperOrder.symbol == symbol)
        stmt = stmt.order_by(PaperOrder.seq.desc() if newest_first else PaperOrder.seq)
        if limit is not None:
            stmt = stmt.limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def claim_open_orders(self, account_ids: Sequence[str]) -> Sequence[PaperOrder]:
        """Open orders of already-locked accounts, in matching order (account, then seq)."""
        stmt = (
            select(PaperOrder)
            .where(
                PaperOrder.paper_account_id.in_(account_ids),
                PaperOrder.status.in_(OPEN_STATUSES),
            )
            .order_by(PaperOrder.paper_account_id, PaperOrder.seq)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    # --- fills ---

    async def fills(
        self,
        account_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        order_id: str | None = None,
    ) -> Sequence[PaperFill]:
        stmt = select(PaperFill).where(PaperFill.paper_account_id == account_id)
        if order_id is not None:
            stmt = stmt.where(PaperFill.paper_order_id == order_id)
        if start is not None:
            stmt = stmt.where(PaperFill.occurred_at >= start)
        if end is not None:
            stmt = stmt.where(PaperFill.occurred_at <= end)
        # Fill ids embed the account's sequence number, so id order is the order they happened.
        stmt = stmt.order_by(PaperFill.occurred_at, PaperFill.id)
        return (await self.session.execute(stmt)).scalars().all()


# --- the order path's statements, built once per shape ------------------------------------


@functools.cache
def _locked_account_statement() -> Any:
    return (
        select(_ACCOUNTS)
        .where(_ACCOUNTS.c.id == bindparam("a_id"), _ACCOUNTS.c.owner == bindparam("a_owner"))
        .with_for_update()
    )


@functools.cache
def _locked_account_and_position_statement() -> Any:
    """Postgres: the locked account and, read after the lock, its position
    (``app.db.paper_lock``)."""
    locked, now = locked_account_and_position(
        bindparam("a_id"), bindparam("a_owner"), bindparam("p_symbol")
    )
    return select(*labelled_columns(locked, now)).select_from(locked.outerjoin(now, true()))


@functools.cache
def _position_statement() -> Any:
    return select(_POSITIONS).where(
        _POSITIONS.c.paper_account_id == bindparam("p_account_id"),
        _POSITIONS.c.symbol == bindparam("p_symbol"),
    )


@functools.cache
def _positions_statement() -> Any:
    return (
        select(_POSITIONS)
        .where(_POSITIONS.c.paper_account_id == bindparam("p_account_id"))
        .order_by(_POSITIONS.c.symbol)
    )


@functools.cache
def _locked_order_statement() -> Any:
    return (
        select(_ORDERS)
        .where(
            _ORDERS.c.paper_account_id == bindparam("o_account_id"),
            _ORDERS.c.id == bindparam("o_id"),
        )
        .with_for_update()
    )


_BY_NAME = {t.name: t for t in _TABLES.values()}


@functools.cache
def _write_statements(shape: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
    """One statement per write of ``shape`` (kind ``u``/``i``, table), parameters ``w<n>_``."""
    stmts: list[Any] = []
    for n, (kind, name) in enumerate(shape):
        table = _BY_NAME[name]

        def bind(column: Any, n: int = n) -> Any:
            # A JSON column's None is SQL NULL (as the ORM writes an unset one), not 'null'.
            kind = JSON(none_as_null=True) if isinstance(column.type, JSON) else column.type
            return bindparam(f"w{n}_{column.key}", type_=kind)

        if kind == "i":
            stmts.append(insert(table).values({c.key: bind(c) for c in table.columns}))
        else:
            keys = list(table.primary_key.columns)
            stmts.append(
                update(table)
                .where(*(c == bind(c) for c in keys))
                .values({c.key: bind(c) for c in table.columns if not c.primary_key})
            )
    return tuple(stmts)


@functools.cache
def _returning_statements(shape: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
    """``_write_statements`` each RETURNING its primary key, as a CTE needs."""
    return tuple(s.returning(*s.table.primary_key.columns) for s in _write_statements(shape))


@functools.cache
def _combined_statement(shape: tuple[tuple[str, str], ...]) -> Any:
    """Postgres: ``_write_statements`` as one statement, the last write its main part and
    the others data-modifying CTEs (each runs exactly once, read or not)."""
    stmts = _returning_statements(shape)
    main = stmts[-1]
    for n, stmt in enumerate(stmts[:-1]):
        main = main.add_cte(stmt.cte(f"w{n}"))
    return main

"""A paper account's lock and its position read, carried by whichever statement goes first.

An equity placement on the paper broker locks its paper account (``FOR UPDATE``) and reads
the position in the order's symbol after the lock is held, in a snapshot taken after it
(migration 0018's ``paper_account_locked`` and ``paper_position_now``, joined ``LATERAL``).
The paper store sends that as a statement of its own; the order service's first statement
(the account and its connection, ``AccountRepository.get_locking_paper``) can carry it
instead, saving a round trip. The rows it read are then handed to the paper engine as a
``LockedPaperRows``, which the engine takes in place of its own read only when they are
for the account, owner and symbol it would have read, in the transaction it is placing in.

Postgres only: SQLite has no functions (its one writer serialises placements, which read
with two statements of their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Label, Table, func
from sqlalchemy import column as sql_column
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.selectable import LateralFromClause

from app.db.models import PaperAccount, PaperPosition

_ACCOUNTS: Table = PaperAccount.__table__  # type: ignore[assignment]
_POSITIONS: Table = PaperPosition.__table__  # type: ignore[assignment]

SqlValue = ColumnElement[Any] | QueryableAttribute[Any]

ACCOUNT_PREFIX = "pa_"
POSITION_PREFIX = "pp_"


@dataclass(frozen=True, slots=True)
class LockedPaperRows:
    """What one statement read under the paper account's lock: the account's columns and
    the position's (by column key), either None when there is no such row. ``account_id``,
    ``owner`` and ``symbol`` say what was asked for; ``transaction`` is the session
    transaction that read them (and so holds the lock), compared by identity."""

    account_id: str
    owner: str
    symbol: str
    account: Mapping[str, Any] | None
    position: Mapping[str, Any] | None
    transaction: object

    def __repr__(self) -> str:
        return f"LockedPaperRows({self.account_id!r}, {self.symbol!r})"

    def is_for(self, account_id: str, owner: str, symbol: str, session: AsyncSession) -> bool:
        """Whether these rows stand for that read in ``session``'s current transaction:
        rows read before a commit or a rollback are no lock held now."""
        return (self.account_id, self.owner, self.symbol) == (
            account_id,
            owner,
            symbol,
        ) and current_transaction(session) is self.transaction


def current_transaction(session: AsyncSession) -> object:
    """The session's current transaction (None outside one), for ``LockedPaperRows``."""
    return session.sync_session.get_transaction()


def locked_account_and_position(
    account_id: SqlValue, owner: SqlValue, symbol: SqlValue
) -> tuple[LateralFromClause, LateralFromClause]:
    """The locked account (``paper_account_locked``) and, lateral to it, the position read
    after the lock (``paper_position_now``). A NULL ``account_id`` locks and reads nothing
    (both are STRICT, migration 0019: Postgres does not run them for it).
    Join them with ``LEFT JOIN ... ON true``."""
    locked = (
        func.paper_account_locked(account_id, owner)
        .table_valued(*(sql_column(c.name, c.type) for c in _ACCOUNTS.columns), name="pa")
        .lateral()
    )
    now = (
        func.paper_position_now(locked.c.id, symbol)
        .table_valued(*(sql_column(c.name, c.type) for c in _POSITIONS.columns), name="pp")
        .lateral()
    )
    return locked, now


def labelled_columns(locked: LateralFromClause, now: LateralFromClause) -> list[Label[Any]]:
    """The two rows' columns, labelled ``pa_<name>`` and ``pp_<name>`` (``rows_from``)."""
    return [
        *(locked.c[c.name].label(f"{ACCOUNT_PREFIX}{c.name}") for c in _ACCOUNTS.columns),
        *(now.c[c.name].label(f"{POSITION_PREFIX}{c.name}") for c in _POSITIONS.columns),
    ]


def rows_from(
    row: Mapping[Any, Any], session: AsyncSession, *, account_id: str, owner: str, symbol: str
) -> LockedPaperRows:
    """The account and position of a result row with ``labelled_columns``, just read in
    ``session``."""
    account = None
    if row[f"{ACCOUNT_PREFIX}{_ACCOUNTS.c.id.name}"] is not None:
        account = {c.key: row[f"{ACCOUNT_PREFIX}{c.name}"] for c in _ACCOUNTS.columns}
    position = None
    if row[f"{POSITION_PREFIX}{_POSITIONS.c.paper_account_id.name}"] is not None:
        position = {c.key: row[f"{POSITION_PREFIX}{c.name}"] for c in _POSITIONS.columns}
    return LockedPaperRows(
        account_id, owner, symbol, account, position, current_transaction(session)
    )

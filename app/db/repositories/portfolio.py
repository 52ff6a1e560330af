"""Queries on ``portfolio_snapshots``, scoped to one user.

A snapshot is written for every account a portfolio read reached, and read back for the
accounts it could not reach. Writes are one upsert per account that never replaces a newer
snapshot with an older one (two overlapping portfolio requests may finish out of order).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite

from app.db.models import PortfolioSnapshot
from app.db.repositories.scoped import UserScoped


class PortfolioSnapshotRepository(UserScoped):
    async def for_accounts(self, account_ids: Sequence[str]) -> dict[str, PortfolioSnapshot]:
        """The user's snapshots of these accounts, by account id (absent: never read)."""
        if not account_ids:
            return {}
        stmt = select(PortfolioSnapshot).where(
            PortfolioSnapshot.user_id == self.user_id,
            PortfolioSnapshot.account_id.in_(list(account_ids)),
        )
        rows = (await self.session.execute(stmt)).scalars().all()
        return {row.account_id: row for row in rows}

    async def save(self, snapshots: Sequence[PortfolioSnapshot]) -> None:
        """Insert or replace these snapshots (one cached statement, executemany), unless
        the stored one is newer.

        Rows go in account id order so two concurrent requests of one user lock them in the
        same order (no deadlock). Raises ``PermissionError`` for another user's row; the
        caller commits.
        """
        if not snapshots:
            return
        if any(s.user_id != self.user_id for s in snapshots):
            raise PermissionError("snapshot belongs to another user")
        postgres = self.session.get_bind().dialect.name == "postgresql"
        rows = [
            {column: getattr(s, column) for column in _COLUMNS}
            for s in sorted(snapshots, key=lambda s: s.account_id)
        ]
        # One statement built once, sent with every row's parameters (executemany): a
        # multi-row VALUES built per call had its cache key computed over every value.
        await self.session.execute(_upsert_statement(postgres), rows)


_COLUMNS = (
    "account_id",
    "user_id",
    "currency",
    "cash",
    "equity",
    "buying_power",
    "positions",
    "taken_at",
)


@functools.cache
def _upsert_statement(postgres: bool) -> Any:
    """Insert a snapshot, or replace the stored one unless that one is newer (or another
    user's), per row of an executemany."""
    table: Table = PortfolioSnapshot.__table__  # type: ignore[assignment]
    stmt = (postgresql.insert if postgres else sqlite.insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.account_id],
        set_={k: stmt.excluded[k] for k in _COLUMNS if k != "account_id"},
        where=(table.c.user_id == stmt.excluded.user_id)
        & (table.c.taken_at <= stmt.excluded.taken_at),
    )

"""Queries on the audit chain (``audit_entries`` and its one-row ``audit_chain_head``).

The chain spans every user, so this repository is not user-scoped: only the audit chain
(``app.security.audit``) and ops verification use it, never a request handler directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AuditChainHead, AuditEntry

HEAD_ID = 1


class AuditChainHeadMissing(RuntimeError):
    """The chain-head row is gone: appends stop rather than start a new, unanchored chain."""


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_head(self) -> AuditChainHead:
        """The chain head, locked until the transaction ends.

        ``FOR UPDATE`` makes concurrent appenders on Postgres queue here, each seeing the
        head its predecessor committed (READ COMMITTED re-reads the locked row). SQLite
        ignores ``FOR UPDATE``; there every write transaction holds the database's single
        write lock from ``BEGIN IMMEDIATE`` on. Raises ``AuditChainHeadMissing``.
        """
        stmt = (
            select(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        head = (await self.session.execute(stmt)).scalar_one_or_none()
        if head is None:
            raise AuditChainHeadMissing("the audit chain head row is missing")
        return head

    async def head(self) -> AuditChainHead | None:
        stmt = (
            select(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def add(self, entry: AuditEntry) -> None:
        self.session.add(entry)

    async def page(self, *, after_seq: int, limit: int) -> Sequence[AuditEntry]:
        """Entries with ``seq > after_seq`` in ``seq`` order (keyset pagination)."""
        stmt = (
            select(AuditEntry)
            .where(AuditEntry.seq > after_seq)
            .order_by(AuditEntry.seq)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def for_order(self, order_id: str) -> Sequence[AuditEntry]:
        stmt = select(AuditEntry).where(AuditEntry.order_id == order_id).order_by(AuditEntry.seq)
        return (await self.session.execute(stmt)).scalars().all()

"""Queries on the audit chains (``audit_entries`` and ``audit_chain_head``, a row per chain).

The chains span users only in the sense that ops verify them all: only the audit chain
(``app.security.audit``) and ops verification use this repository, never a request handler
directly. Each user's chain is named ``user:<user id>`` (``user_chain``); ``global`` is the
frozen chain of the entries written before chains were per user.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AuditChainHead, AuditEntry

LEGACY_CHAIN = "global"


def user_chain(user_id: str) -> str:
    """The chain that records ``user_id``'s live order actions."""
    return f"user:{user_id}"


_HEAD_PARAMS = {"chain": "h_chain", "last_seq": "h_zero", "last_hash": "h_genesis"}


def lock_head_params(chain: str, *, genesis_hash: str, now: datetime) -> dict[str, Any]:
    return {"h_chain": chain, "h_zero": 0, "h_genesis": genesis_hash, "h_now": now}


def _head_values() -> dict[str, Any]:
    table = AuditChainHead.__table__
    values = {k: bindparam(name, type_=table.c[k].type) for k, name in _HEAD_PARAMS.items()}
    values["updated_at"] = bindparam("h_now", type_=table.c.updated_at.type)
    return values


@functools.cache
def lock_head_statement(dialect: str, when: Any = None) -> Any:
    """``AuditRepository.lock_head``'s upsert (RETURNING ``last_seq``, ``last_hash``) with
    ``h_`` parameters (``lock_head_params``), built once. With ``when`` (a select that
    yields a row or none, e.g. a claim's CTE) the head is created or locked only if it
    yields one: ``OrderRepository.claim_and_insert`` sends it with the claim."""
    dialect_insert = postgres_insert if dialect == "postgresql" else sqlite_insert
    values = _head_values()
    # On the table, not the mapped class: an ORM-enabled insert is annotated again on every
    # execution, so its cache key would be computed per order.
    heads: Table = AuditChainHead.__table__  # type: ignore[assignment]
    if when is None:
        new_head = dialect_insert(heads).values(values)
    else:
        source = select(*(v.label(k) for k, v in values.items())).where(when.exists())
        new_head = dialect_insert(heads).from_select(list(values), source)
    return new_head.on_conflict_do_update(
        index_elements=[heads.c.chain],
        set_={"updated_at": new_head.excluded.updated_at},
    ).returning(heads.c.last_seq, heads.c.last_hash)


class AuditChainHeadMissing(RuntimeError):
    """A chain's head row is gone (or was rewound) while its entries remain: appends stop
    rather than start the chain again."""


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_head(self, chain: str, *, genesis_hash: str, now: datetime) -> tuple[int, str]:
        """``chain``'s (last seq, last hash), its head row locked until the transaction ends.

        One statement: an upsert that creates the head of a new chain at (0, genesis) and
        otherwise touches the existing row, which takes its row lock on Postgres, so
        concurrent appenders to the same chain queue here and each reads the head its
        predecessor committed (an upsert's update applies to the latest row version).
        Different chains never wait for each other. SQLite serializes every write
        transaction on its one write lock (``BEGIN IMMEDIATE``).
        """
        upsert = lock_head_statement(self.session.get_bind().dialect.name)
        params = lock_head_params(chain, genesis_hash=genesis_hash, now=now)
        row = (await self.session.execute(upsert, params)).one()
        return int(row.last_seq), str(row.last_hash)

    async def advance_head(self, chain: str, *, seq: int, entry_hash: str, now: datetime) -> None:
        await self.session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.chain == chain)
            .values(last_seq=seq, last_hash=entry_hash, updated_at=now)
        )

    async def head(self, chain: str) -> AuditChainHead | None:
        stmt = (
            select(AuditChainHead)
            .where(AuditChainHead.chain == chain)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def heads(self, *, after_chain: str | None, limit: int) -> Sequence[AuditChainHead]:
        """Chain heads in chain-name order (keyset pagination)."""
        stmt = select(AuditChainHead).order_by(AuditChainHead.chain).limit(limit)
        if after_chain is not None:
            stmt = stmt.where(AuditChainHead.chain > after_chain)
        return (
            (await self.session.execute(stmt.execution_options(populate_existing=True)))
            .scalars()
            .all()
        )

    async def chains_without_head(self) -> Sequence[str]:
        """Chains that have entries but no head row (the head was deleted)."""
        heads = select(AuditChainHead.chain)
        stmt = (
            select(AuditEntry.chain)
            .where(AuditEntry.chain.not_in(heads))
            .distinct()
            .order_by(AuditEntry.chain)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def insert(self, entry: AuditEntry) -> None:
        """Insert ``entry`` with one statement (it stays a plain object, not in the session);
        raises ``IntegrityError`` when its (chain, seq) is taken."""
        columns = {c.key: getattr(entry, c.key) for c in AuditEntry.__table__.columns}
        await self.session.execute(insert(AuditEntry).values(**columns))

    async def append_entry(self, entry: AuditEntry, *, now: datetime) -> None:
        """Insert ``entry`` and move its chain's head to it; raises ``IntegrityError`` when
        its (chain, seq) is taken (nothing changed then).

        On Postgres one statement (a data-modifying CTE moves the head, the outer statement
        inserts the entry: one round trip); SQLite has no data-modifying CTE, so two.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            await self.insert(entry)
            await self.advance_head(
                entry.chain, seq=entry.seq, entry_hash=entry.entry_hash, now=now
            )
            return
        columns = {c.key: getattr(entry, c.key) for c in AuditEntry.__table__.columns}
        head = (
            update(AuditChainHead)
            .where(AuditChainHead.chain == entry.chain)
            .values(last_seq=entry.seq, last_hash=entry.entry_hash, updated_at=now)
            .returning(AuditChainHead.chain)
            .cte("moved_head")
        )
        stmt = insert(AuditEntry).values(**columns).add_cte(head)
        await self.session.execute(stmt)

    async def page(self, chain: str, *, after_seq: int, limit: int) -> Sequence[AuditEntry]:
        """``chain``'s entries with ``seq > after_seq`` in ``seq`` order (keyset pagination)."""
        stmt = (
            select(AuditEntry)
            .where(AuditEntry.chain == chain, AuditEntry.seq > after_seq)
            .order_by(AuditEntry.seq)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def for_order(self, order_id: str) -> Sequence[AuditEntry]:
        stmt = (
            select(AuditEntry)
            .where(AuditEntry.order_id == order_id)
            .order_by(AuditEntry.occurred_at, AuditEntry.seq)
        )
        return (await self.session.execute(stmt)).scalars().all()

"""Cluster-wide leases: one holder across every app instance sharing a database.

Used where two instances doing the same work would be wrong or wasteful, such as holding a
broker's upstream order stream open (brokers cap streams per key; two streams per account
double every update). On Postgres a lease is a session-level advisory lock held on one
dedicated connection per ``AdvisoryLeases``: if that connection dies, Postgres releases every
lock it held, so another instance can take over, and this instance learns it lost them at its
next ``check()``. On SQLite (embedded mode, one instance) every lease is granted.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)


class Leases(Protocol):
    async def check(self) -> bool:
        """True while every lease granted so far is still held; False means all are lost."""
        ...

    async def acquire(self, name: str) -> bool:
        """Take the lease if nobody holds it; True when this holder has it."""
        ...

    async def release(self, name: str) -> None: ...

    async def close(self) -> None: ...


def lease_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a lease name."""
    digest = hashlib.blake2b(f"lease:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def owner_lease(owner: str) -> str:
    """The lease a process holds for its whole life under its owner id: free means gone."""
    return f"owner:{owner}"


class LocalLeases:
    """One instance owns everything (SQLite, embedded mode)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def check(self) -> bool:
        return True

    async def acquire(self, name: str) -> bool:
        self._held.add(name)
        return True

    async def release(self, name: str) -> None:
        self._held.discard(name)

    async def close(self) -> None:
        self._held.clear()


class AdvisoryLeases:
    """Postgres session-level advisory locks on one dedicated connection.

    Any database error on the lease connection is treated as losing every lease: the
    connection is dropped (Postgres releases its locks) and the caller must stop the work
    those leases guarded before taking new ones.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._held: set[str] = set()
        self._lost = False  # leases were dropped since the last check()

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self._engine.connect()
            # Each statement commits by itself: advisory locks are session-level and must not
            # leave a transaction open for the lifetime of the lease.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if self._held:
            self._lost = True
        self._held.clear()
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception:
                log.debug("closing a broken lease connection failed", exc_info=True)

    async def check(self) -> bool:
        if self._lost:
            self._lost = False
            return False
        if self._conn is None:
            return True
        try:
            await self._conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            log.warning("the lease connection failed; every lease is lost", exc_info=True)
            await self._drop()
            self._lost = False
            return False
        return True

    async def acquire(self, name: str) -> bool:
        if name in self._held:
            return True
        try:
            conn = await self._connection()
            got = (
                await conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": lease_key(name)}
                )
            ).scalar_one()
        except (SQLAlchemyError, OSError):
            log.warning("taking a lease failed", exc_info=True, extra={"lease": name})
            await self._drop()
            return False
        if got:
            self._held.add(name)
        return bool(got)

    async def release(self, name: str) -> None:
        if name not in self._held or self._conn is None:
            self._held.discard(name)
            return
        self._held.discard(name)
        try:
            await self._conn.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": lease_key(name)}
            )
        except (SQLAlchemyError, OSError):
            log.warning("releasing a lease failed", exc_info=True, extra={"lease": name})
            await self._drop()

    async def close(self) -> None:
        await self._drop()
        self._lost = False


def leases_for(engine: AsyncEngine) -> Leases:
    if engine.dialect.name == "postgresql":
        return AdvisoryLeases(engine)
    return LocalLeases()

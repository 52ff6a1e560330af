"""Engines and sessions. Services own transaction boundaries; nothing commits implicitly."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

SessionMaker = async_sessionmaker[AsyncSession]


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Hand transaction control to SQLAlchemy's "begin" hook (the documented aiosqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 30.0
) -> AsyncEngine:
    """Build the async engine for Postgres (asyncpg) or SQLite (aiosqlite)."""
    if url.startswith("sqlite"):
        # hide_parameters: a failed statement's error (and so an unhandled-error log line)
        # never carries the bound values, which may be user input or sealed credentials.
        engine = create_async_engine(url, connect_args={"timeout": 10}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        # SQLite has one writer; BEGIN IMMEDIATE takes the write lock up front so two
        # transactions never deadlock upgrading from a read lock.
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    # No pre-ping: it costs a round trip on every checkout, and an order placement checks
    # out three times. A connection that died (a Postgres restart) fails its first statement
    # instead; SQLAlchemy then invalidates every connection older than that failure, and
    # the order path is safe against a failed statement at any step (before the broker
    # call nothing was sent; after it, reconciliation adopts the broker's order).
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=False,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args={"server_settings": {"application_name": "brokerage-gateway"}},
    )


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


_OWNER = "brokerage.owner"


def create_sessionmaker(engine: AsyncEngine, *, owner: str | None = None) -> SessionMaker:
    """Sessions of one process; ``owner`` (the process's id) is stamped on what it claims."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info={_OWNER: owner})


def session_owner(session: AsyncSession) -> str | None:
    """The id of the process whose sessionmaker made this session (None: not recorded)."""
    owner = session.info.get(_OWNER)
    return owner if isinstance(owner, str) else None


def database_key(url: Any) -> str:
    """Identify one SQLite database file across engines of this process (absolute path)."""
    database = str(getattr(url, "database", None) or "")
    if database and database != ":memory:" and not database.startswith("file:"):
        return os.path.abspath(database)
    return database

"""Cluster-wide leases on a real Postgres: one holder at a time, released when it dies."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.leases import AdvisoryLeases, LocalLeases, lease_key, leases_for

pytestmark = pytest.mark.postgres_only


async def test_a_lease_has_one_holder_until_released(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    first, second = AdvisoryLeases(engine), AdvisoryLeases(engine)
    try:
        assert await first.acquire("stream:a")
        assert await first.acquire("stream:a")  # re-entrant for its holder
        assert not await second.acquire("stream:a")
        assert await second.acquire("stream:b")
        await first.release("stream:a")
        assert await second.acquire("stream:a")
        assert await first.check()
        assert await second.check()
    finally:
        await first.close()
        await second.close()
        await engine.dispose()


async def test_a_dead_lease_connection_frees_every_lease_and_its_holder_learns_it(
    postgres_url: str,
) -> None:
    engine = create_async_engine(postgres_url)
    admin = create_async_engine(postgres_url)
    holder, other = AdvisoryLeases(engine), AdvisoryLeases(engine)
    try:
        assert await holder.acquire("stream:x")
        assert await holder.acquire("stream:y")
        async with admin.connect() as conn:
            killed = (
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks "
                        "WHERE locktype = 'advisory' AND granted AND objid = :low "
                        "AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    ),
                    {"low": lease_key("stream:x") & 0xFFFFFFFF},
                )
            ).all()
            assert killed == [(True,)]
        # Postgres released the locks with the session: another holder takes them at once.
        assert await other.acquire("stream:x")
        assert await other.acquire("stream:y")
        # The old holder is told it lost everything, and cannot take them back.
        assert not await holder.check()
        assert not await holder.acquire("stream:x")
        assert await holder.check()
    finally:
        await holder.close()
        await other.close()
        await engine.dispose()
        await admin.dispose()


async def test_leases_follow_the_database_kind(postgres_engine: AsyncEngine) -> None:
    assert isinstance(leases_for(postgres_engine), AdvisoryLeases)
    sqlite = create_async_engine("sqlite+aiosqlite:///:memory:")
    try:
        local = leases_for(sqlite)
        assert isinstance(local, LocalLeases)
        assert await local.acquire("stream:a")
        assert await local.acquire("stream:a")
        assert await local.check()
    finally:
        await sqlite.dispose()

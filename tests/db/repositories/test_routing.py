"""``routing_rules``, ``order_routes``, ``route_attempts``: tenant-scoped; migration 0007."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from app.db.migrate import alembic_config, upgrade
from app.db.models import OrderRoute, RouteAttempt
from app.db.repositories.routing import RouteRepository, RoutingRuleRepository
from app.db.session import create_engine
from app.ids import new_id
from tests.conftest import new_user
from tests.harness import Harness

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def test_replace_upserts_and_drops_the_classes_not_named(harness: Harness) -> None:
    user = new_user()
    sessionmaker = harness.state.ctx.sessionmaker
    async with sessionmaker() as session:
        repo = RoutingRuleRepository.for_user(session, user)
        await repo.replace({"equity": ["acc_a", "acc_b"], "crypto": ["acc_c"]}, T0)
        await session.commit()
    async with sessionmaker() as session:
        repo = RoutingRuleRepository.for_user(session, user)
        await repo.replace({"equity": ["acc_b"]}, T0 + timedelta(minutes=1))
        await session.commit()
    async with sessionmaker() as session:
        rows = await RoutingRuleRepository.for_user(session, user).all()
    assert [(r.asset_class, r.account_ids) for r in rows] == [("equity", ["acc_b"])]
    assert rows[0].updated_at == T0 + timedelta(minutes=1)
    assert rows[0].created_at == T0  # the same row, updated in place


async def test_rules_are_scoped_to_their_user(harness: Harness) -> None:
    owner, other = new_user("owner"), new_user("other")
    sessionmaker = harness.state.ctx.sessionmaker
    async with sessionmaker() as session:
        await RoutingRuleRepository.for_user(session, owner).replace({"equity": ["acc_a"]}, T0)
        await session.commit()
    async with sessionmaker() as session:
        repo = RoutingRuleRepository.for_user(session, other)
        assert await repo.all() == []
        assert await repo.get("equity") is None
        await repo.replace({}, T0)  # clearing the other user's rules touches only theirs
        await session.commit()
    async with sessionmaker() as session:
        kept = await RoutingRuleRepository.for_user(session, owner).get("equity")
    assert kept is not None
    assert kept.account_ids == ["acc_a"]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_concurrent_replaces_never_collide(harness: Harness) -> None:
    user = new_user()
    sessionmaker = harness.state.ctx.sessionmaker

    async def replace(accounts: list[str]) -> None:
        async with sessionmaker() as session:
            await RoutingRuleRepository.for_user(session, user).replace({"equity": accounts}, T0)
            await session.commit()

    await asyncio.gather(*(replace([f"acc_{i}"]) for i in range(6)))
    async with sessionmaker() as session:
        rows = await RoutingRuleRepository.for_user(session, user).all()
    assert len(rows) == 1


async def test_routes_are_scoped_to_their_user(harness: Harness) -> None:
    owner, other = new_user("owner"), new_user("other")
    _, account = await harness.paper_account(owner)
    route = OrderRoute(
        id=new_id("rte"),
        user_id=owner,
        selection="auto",
        mode="paper",
        asset_class="equity",
        request_fingerprint="0" * 64,
        decision={},
        created_at=T0,
    )
    attempt = RouteAttempt(
        id=new_id("rat"),
        route_id=route.id,
        user_id=owner,
        seq=1,
        account_id=account,
        broker_slug="paper",
        order_id=None,
        outcome="skipped",
        code="unknown_symbol",
        detail=None,
        created_at=T0,
        updated_at=T0,
    )
    sessionmaker = harness.state.ctx.sessionmaker
    async with sessionmaker() as session:
        repo = RouteRepository.for_user(session, owner)
        repo.add(route)
        await session.flush()
        repo.add_attempt(attempt)
        await session.commit()
    async with sessionmaker() as session:
        theirs = RouteRepository.for_user(session, other)
        assert await theirs.get(route.id) is None
        assert await theirs.attempts(route.id) == []
        with pytest.raises(PermissionError):
            theirs.add(route)
        mine = RouteRepository.for_user(session, owner)
        assert await mine.get(route.id) is not None
        assert [(a.seq, o) for a, o in await mine.attempts(route.id)] == [(1, None)]


async def test_the_migration_goes_down_and_up_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/migrate.db"
    await asyncio.to_thread(upgrade, url)
    routing_tables = {"routing_rules", "order_routes", "route_attempts"}

    def tables(sync_conn: object) -> set[str]:
        return set(inspect(sync_conn).get_table_names())

    async def table_names() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(tables)
        finally:
            await engine.dispose()

    assert routing_tables <= await table_names()
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")
    assert not routing_tables & await table_names()
    await asyncio.to_thread(upgrade, url)
    assert routing_tables <= await table_names()

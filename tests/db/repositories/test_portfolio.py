"""``portfolio_snapshots``: tenant-scoped, newest read wins, and its migration round-trips."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import inspect

from app.db.migrate import upgrade
from app.db.models import PortfolioSnapshot
from app.db.repositories.portfolio import PortfolioSnapshotRepository
from app.db.session import create_engine
from tests.conftest import new_user
from tests.harness import Harness

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def snapshot(account_id: str, user_id: str, cash: str, at: datetime) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        account_id=account_id,
        user_id=user_id,
        currency="USD",
        cash=Decimal(cash),
        equity=Decimal(cash),
        buying_power=Decimal(cash),
        positions=[{"symbol": "AAPL", "quantity": "0.123456789"}],
        taken_at=at,
    )


async def test_a_newer_snapshot_replaces_an_older_one_never_the_reverse(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    sessionmaker = harness.state.ctx.sessionmaker
    for cash, at in (("1.5", T0), ("3.25", T0 + timedelta(seconds=5)), ("2", T0)):
        async with sessionmaker() as session:
            await PortfolioSnapshotRepository.for_user(session, user).save(
                [snapshot(account, user, cash, at)]
            )
            await session.commit()
    async with sessionmaker() as session:
        found = await PortfolioSnapshotRepository.for_user(session, user).for_accounts([account])
    assert found[account].cash == Decimal("3.25")  # the late, older write did not win
    assert found[account].taken_at == T0 + timedelta(seconds=5)
    assert found[account].positions == [{"symbol": "AAPL", "quantity": "0.123456789"}]


async def test_snapshots_are_scoped_to_their_user(harness: Harness) -> None:
    owner, other = new_user("owner"), new_user("other")
    _, account = await harness.paper_account(owner)
    sessionmaker = harness.state.ctx.sessionmaker
    async with sessionmaker() as session:
        await PortfolioSnapshotRepository.for_user(session, owner).save(
            [snapshot(account, owner, "10", T0)]
        )
        await session.commit()
    async with sessionmaker() as session:
        repo = PortfolioSnapshotRepository.for_user(session, other)
        assert await repo.for_accounts([account]) == {}
        with pytest.raises(PermissionError):
            await repo.save([snapshot(account, owner, "99", T0 + timedelta(days=1))])
        # A row claiming the other user for the owner's account id is not written over it.
        await repo.save([snapshot(account, other, "99", T0 + timedelta(days=1))])
        await session.commit()
    async with sessionmaker() as session:
        kept = await PortfolioSnapshotRepository.for_user(session, owner).for_accounts([account])
    assert kept[account].cash == Decimal(10)


async def test_the_migration_goes_down_and_up_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/migrate.db"
    await asyncio.to_thread(upgrade, url)

    def tables(sync_conn: object) -> list[str]:
        return list(inspect(sync_conn).get_table_names())

    async def table_names() -> list[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(tables)
        finally:
            await engine.dispose()

    assert "portfolio_snapshots" in await table_names()
    from alembic import command

    from app.db.migrate import alembic_config

    await asyncio.to_thread(command.downgrade, alembic_config(url), "0001")
    assert "portfolio_snapshots" not in await table_names()
    await asyncio.to_thread(upgrade, url)
    assert "portfolio_snapshots" in await table_names()

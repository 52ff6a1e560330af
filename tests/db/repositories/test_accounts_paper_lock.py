"""``AccountRepository.get_locking_paper``: a placement's first statement reads the account
and its connection and, on the paper broker only, locks the paper account and reads the
position after the lock (``app.db.paper_lock``); on SQLite the paper engine reads them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.db.models import Account
from app.db.repositories.connections import AccountRepository
from tests.conftest import new_user
from tests.harness import Harness


async def _paper_ref(h: Harness, account_id: str) -> str:
    async with h.state.ctx.sessionmaker() as session:
        row = (await session.execute(select(Account).where(Account.id == account_id))).scalar_one()
        return row.broker_account_ref


async def _lockable_now(h: Harness, paper_account: str) -> bool:
    """Whether another transaction can lock the paper account at once (NOWAIT)."""
    async with h.state.ctx.sessionmaker() as other:
        try:
            await other.execute(
                text("SELECT 1 FROM paper_accounts WHERE id = :id FOR UPDATE NOWAIT"),
                {"id": paper_account},
            )
        except DBAPIError as exc:
            refused = str(exc)
        else:
            refused = ""
        finally:
            await other.rollback()
        if refused:
            assert "could not obtain lock" in refused, refused
        return not refused


@pytest.mark.parametrize("backend", ["postgres"])
async def test_the_paper_account_is_locked_and_its_position_read_with_the_account(
    harness: Harness,
) -> None:
    h, user = harness, new_user()
    _, account = await h.paper_account(user)
    bought = await h.place(user, account, symbol="AAPL", quantity="3")
    assert bought.status_code == 201, bought.text
    paper = await _paper_ref(h, account)

    async with h.state.ctx.sessionmaker() as session:
        found = await AccountRepository.for_user(session, user).get_locking_paper(
            account, paper_slug="paper", symbol="AAPL"
        )
        assert found is not None
        row, connection, rows = found
        assert (row.id, connection.id) == (account, row.connection_id)
        assert rows is not None
        assert rows.is_for(paper, user, "AAPL", session)
        assert rows.account is not None
        assert rows.account["id"] == paper
        assert rows.account["cash"] < Decimal("100000")
        assert rows.position is not None
        assert rows.position["quantity"] == Decimal(3)
        # The lock is held until this transaction ends.
        assert not await _lockable_now(h, paper)
        await session.rollback()
        # Read in a transaction that is over: no longer rows held under a lock.
        assert not rows.is_for(paper, user, "AAPL", session)
    assert await _lockable_now(h, paper)

    async with h.state.ctx.sessionmaker() as session:
        found = await AccountRepository.for_user(session, user).get_locking_paper(
            account, paper_slug="paper", symbol="MSFT"
        )
        assert found is not None
        assert found[2] is not None
        assert found[2].account is not None
        assert found[2].position is None
        await session.rollback()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_connection_on_another_broker_locks_nothing(harness: Harness) -> None:
    """The lock is taken only where the connection is on the paper broker: the same
    account read as if the paper broker had another slug locks and reads no paper rows."""
    h, user = harness, new_user()
    _, account = await h.paper_account(user)
    paper = await _paper_ref(h, account)
    async with h.state.ctx.sessionmaker() as session:
        found = await AccountRepository.for_user(session, user).get_locking_paper(
            account, paper_slug="not-this-broker", symbol="AAPL"
        )
        assert found is not None
        assert found[0].id == account
        assert found[2] is None
        assert await _lockable_now(h, paper)
        await session.rollback()


async def test_another_user_s_account_is_not_found_and_nothing_is_locked(
    harness: Harness,
) -> None:
    h, owner, other = harness, new_user("owner"), new_user("other")
    _, account = await h.paper_account(owner)
    paper = await _paper_ref(h, account)
    async with h.state.ctx.sessionmaker() as session:
        repo = AccountRepository.for_user(session, other)
        assert await repo.get_locking_paper(account, paper_slug="paper", symbol="AAPL") is None
        if h.state.ctx.settings.database_url.startswith("postgresql"):
            assert await _lockable_now(h, paper)
        await session.rollback()


async def test_sqlite_and_postgres_give_the_same_account_and_connection(
    harness: Harness,
) -> None:
    """SQLite reads the account and connection alone (the paper engine reads its rows)."""
    h, user = harness, new_user()
    _, account = await h.paper_account(user)
    async with h.state.ctx.sessionmaker() as session:
        plain = await AccountRepository.for_user(session, user).get_with_connection(account)
        assert plain is not None
    async with h.state.ctx.sessionmaker() as session:
        repo = AccountRepository.for_user(session, user)
        found = await repo.get_locking_paper(account, paper_slug="paper", symbol="AAPL")
        assert found is not None
        assert (found[0].id, found[0].connection_id) == (plain[0].id, plain[0].connection_id)
        assert (found[1].id, found[1].broker_slug) == (plain[1].id, "paper")
        postgres = session.get_bind().dialect.name == "postgresql"
        assert (found[2] is not None) is postgres
        # Without a symbol (an option order's placement locks its own rows) nothing is read.
        without = await repo.get_locking_paper(account, paper_slug="paper", symbol=None)
        assert without is not None
        assert without[2] is None
        await session.rollback()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_the_paper_lock_functions_are_not_run_for_a_null_account(harness: Harness) -> None:
    """Every other broker's account is read with a NULL paper account id: the functions are
    STRICT (migration 0019), so Postgres answers those calls with no rows, unrun."""
    async with harness.state.ctx.sessionmaker() as session:
        strict = await session.execute(
            text(
                "SELECT proname, proisstrict FROM pg_proc "
                "WHERE proname IN ('paper_account_locked', 'paper_position_now') ORDER BY 1"
            )
        )
        assert strict.all() == [("paper_account_locked", True), ("paper_position_now", True)]
        rows = await session.execute(text("SELECT * FROM paper_account_locked(NULL, 'someone')"))
        assert rows.all() == []
        await session.rollback()

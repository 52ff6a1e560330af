"""Queries on ``connections`` and ``accounts``, scoped to one user."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select, true, update

from app.db.models import Account, Connection
from app.db.paper_lock import (
    LockedPaperRows,
    labelled_columns,
    locked_account_and_position,
    rows_from,
)
from app.db.repositories.scoped import UserScoped


class ConnectionRepository(UserScoped):
    async def get(self, connection_id: str, *, for_update: bool = False) -> Connection | None:
        stmt = select(Connection).where(Connection.id == connection_id)
        if not self.is_system:
            stmt = stmt.where(Connection.user_id == self.user_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def page(self, *, limit: int, after: tuple[datetime, str] | None) -> Sequence[Connection]:
        stmt = select(Connection).where(Connection.user_id == self.user_id)
        if after is not None:
            stmt = stmt.where(
                (Connection.created_at > after[0])
                | ((Connection.created_at == after[0]) & (Connection.id > after[1]))
            )
        stmt = stmt.order_by(Connection.created_at, Connection.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def count_by_broker_and_status(self) -> list[tuple[str, str, int]]:
        """Ops summary across all users (system scope only): (broker, status, count)."""
        if not self.is_system:
            raise PermissionError("the connection health summary spans every user")
        stmt = (
            select(Connection.broker_slug, Connection.status, func.count())
            .group_by(Connection.broker_slug, Connection.status)
            .order_by(Connection.broker_slug, Connection.status)
        )
        return [(b, s, int(n)) for b, s, n in (await self.session.execute(stmt)).all()]

    async def usable_accounts(
        self, broker_slugs: Sequence[str]
    ) -> list[tuple[Connection, Account]]:
        """Active or expiring connections of these brokers with each of their accounts.

        System scope: the upstream stream supervisor runs for every user.
        """
        if not broker_slugs:
            return []
        stmt = (
            select(Connection, Account)
            .join(Account, Account.connection_id == Connection.id)
            .where(
                Connection.status.in_(("active", "expiring")),
                Connection.broker_slug.in_(list(broker_slugs)),
            )
            .order_by(Connection.created_at, Account.id)
        )
        if not self.is_system:
            stmt = stmt.where(Connection.user_id == self.user_id)
        return [(c, a) for c, a in (await self.session.execute(stmt)).all()]

    async def find_active(self, *, broker_slug: str, ownership: str) -> Connection | None:
        """The user's first not-revoked connection to this broker with this ownership."""
        stmt = (
            select(Connection)
            .where(
                Connection.user_id == self.user_id,
                Connection.broker_slug == broker_slug,
                Connection.ownership == ownership,
                Connection.status != "revoked",
            )
            .order_by(Connection.created_at, Connection.id)
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def due_for_refresh(
        self,
        broker_slugs: Sequence[str],
        *,
        now: datetime,
        access_before: datetime,
        expiring_before: datetime,
        limit: int,
        after_id: str | None = None,
    ) -> list[str]:
        """System: ids of usable connections of these brokers with token work to do.

        Due: the access token expires before ``access_before``; or an ``active`` connection's
        refresh token expires before ``expiring_before`` (it becomes ``expiring``); or the
        refresh token has expired. In id order, after ``after_id``.
        """
        if not self.is_system:
            raise PermissionError("the refresher spans every user")
        if not broker_slugs:
            return []
        stmt = select(Connection.id).where(
            Connection.status.in_(("active", "expiring")),
            Connection.broker_slug.in_(list(broker_slugs)),
            or_(
                Connection.expires_at <= access_before,
                and_(
                    Connection.status == "active",
                    Connection.refresh_expires_at <= expiring_before,
                ),
                Connection.refresh_expires_at <= now,
            ),
        )
        if after_id is not None:
            stmt = stmt.where(Connection.id > after_id)
        stmt = stmt.order_by(Connection.id).limit(limit)
        return list((await self.session.execute(stmt)).scalars().all())

    async def of_broker(self, broker_slug: str, statuses: Sequence[str]) -> Sequence[Connection]:
        """The user's connections to one broker in these statuses, oldest first."""
        stmt = (
            select(Connection)
            .where(
                Connection.user_id == self.user_id,
                Connection.broker_slug == broker_slug,
                Connection.status.in_(list(statuses)),
            )
            .order_by(Connection.created_at, Connection.id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def pending_confirmation(self, outcome: str, *, limit: int) -> list[tuple[str, str]]:
        """System: (user id, connection id) of broken connections whose credential waits
        for the user at the broker (``last_refresh_outcome == outcome``), oldest check first."""
        if not self.is_system:
            raise PermissionError("the confirmation pass spans every user")
        stmt = (
            select(Connection.user_id, Connection.id)
            .where(Connection.status == "broken", Connection.last_refresh_outcome == outcome)
            .order_by(Connection.last_refresh_at, Connection.id)
            .limit(limit)
        )
        return [(u, c) for u, c in (await self.session.execute(stmt)).all()]

    async def renewal_due(
        self, broker_slugs: Iterable[str], before: datetime, *, limit: int
    ) -> list[tuple[str, str]]:
        """System: (user id, connection id) of active connections to these brokers whose
        credential expires before ``before``, soonest first (the credential renewal pass)."""
        if not self.is_system:
            raise PermissionError("the renewal pass spans every user")
        slugs = list(broker_slugs)
        if not slugs:
            return []
        stmt = (
            select(Connection.user_id, Connection.id)
            .where(
                Connection.status == "active",
                Connection.broker_slug.in_(slugs),
                Connection.expires_at.is_not(None),
                Connection.expires_at <= before,
            )
            .order_by(Connection.expires_at, Connection.id)
            .limit(limit)
        )
        return [(u, c) for u, c in (await self.session.execute(stmt)).all()]

    def add(self, connection: Connection) -> None:
        if connection.user_id != self.user_id:
            raise PermissionError("connection belongs to another user")
        self.session.add(connection)


class AccountRepository(UserScoped):
    async def get(self, account_id: str) -> Account | None:
        stmt = select(Account).where(Account.id == account_id)
        if not self.is_system:
            stmt = stmt.where(Account.user_id == self.user_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_with_connection(
        self, account_id: str, *, fresh: bool = False
    ) -> tuple[Account, Connection] | None:
        """The account and its connection; ``fresh`` re-reads rows the session already holds
        (a connection revoked since they were loaded)."""
        stmt = _account_with_connection_statement(scoped=not self.is_system, fresh=fresh)
        params = {"a_id": account_id}
        if not self.is_system:
            params["a_user_id"] = self.user_id
        row = (await self.session.execute(stmt, params)).first()
        return None if row is None else (row[0], row[1])

    async def get_locking_paper(
        self, account_id: str, *, paper_slug: str, symbol: str | None
    ) -> tuple[Account, Connection, LockedPaperRows | None] | None:
        """``get_with_connection``, and when the connection is on the paper broker
        (``paper_slug``) its paper account locked and the position in ``symbol`` read after
        the lock, in the same statement (Postgres; ``app.db.paper_lock``). The paper rows
        are None for any other broker, without a ``symbol``, and on SQLite, where the paper
        engine reads them itself. The lock is held until the transaction ends, whatever is
        done next."""
        if symbol is None or self.session.get_bind().dialect.name != "postgresql":
            found = await self.get_with_connection(account_id)
            return None if found is None else (*found, None)
        params = {"a_id": account_id, "paper_slug": paper_slug, "p_symbol": symbol}
        if not self.is_system:
            params["a_user_id"] = self.user_id
        stmt = _account_with_connection_locking_paper_statement(scoped=not self.is_system)
        row = (await self.session.execute(stmt, params)).first()
        if row is None:
            return None
        account, connection = row[0], row[1]
        if connection.broker_slug != paper_slug:
            return account, connection, None
        paper = rows_from(
            row._mapping,
            self.session,
            account_id=account.broker_account_ref,
            owner=connection.user_id,
            symbol=symbol,
        )
        return account, connection, paper

    async def usable_on_brokers(
        self, slugs: Sequence[str], statuses: Sequence[str]
    ) -> list[tuple[Account, Connection]]:
        """System: every account on these brokers whose connection has one of ``statuses``
        (the option lifecycle sweep), oldest first."""
        assert self.is_system
        stmt = (
            select(Account, Connection)
            .join(Connection, Connection.id == Account.connection_id)
            .where(Connection.broker_slug.in_(list(slugs)), Connection.status.in_(list(statuses)))
            .order_by(Account.created_at, Account.id)
        )
        return [(a, c) for a, c in (await self.session.execute(stmt)).all()]

    async def all_with_connections(self) -> list[tuple[Account, Connection]]:
        """Every account of the user with its connection, oldest first, whatever its status."""
        stmt = (
            select(Account, Connection)
            .join(Connection, Connection.id == Account.connection_id)
            .where(Account.user_id == self.user_id, Connection.user_id == self.user_id)
            .order_by(Account.created_at, Account.id)
        )
        return [(a, c) for a, c in (await self.session.execute(stmt)).all()]

    async def page(self, *, limit: int, after: tuple[datetime, str] | None) -> Sequence[Account]:
        stmt = select(Account).where(Account.user_id == self.user_id)
        if after is not None:
            stmt = stmt.where(
                (Account.created_at > after[0])
                | ((Account.created_at == after[0]) & (Account.id > after[1]))
            )
        stmt = stmt.order_by(Account.created_at, Account.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def ids_for_connection(self, connection_id: str) -> list[str]:
        stmt = (
            select(Account.id)
            .where(Account.user_id == self.user_id, Account.connection_id == connection_id)
            .order_by(Account.created_at, Account.id)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def refs_for_connection(self, connection_id: str) -> list[str]:
        """The broker's own account ids (``broker_account_ref``) of the connection's accounts."""
        stmt = (
            select(Account.broker_account_ref)
            .where(Account.user_id == self.user_id, Account.connection_id == connection_id)
            .order_by(Account.created_at, Account.id)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def ids_for_connections(self, connection_ids: Sequence[str]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {cid: [] for cid in connection_ids}
        if not connection_ids:
            return result
        stmt = (
            select(Account.connection_id, Account.id)
            .where(Account.user_id == self.user_id, Account.connection_id.in_(connection_ids))
            .order_by(Account.created_at, Account.id)
        )
        for connection_id, account_id in (await self.session.execute(stmt)).all():
            result[connection_id].append(account_id)
        return result

    async def ids_by_broker_ref(self, broker_slug: str, broker_account_ref: str) -> list[str]:
        """System lookup for upstream updates: the broker names its account, not our user.

        More than one row can match (a reconnect of the same broker account keeps the old
        row; two users may link one account), so every match is returned, oldest first.
        """
        stmt = select(Account.id).where(
            Account.broker_slug == broker_slug, Account.broker_account_ref == broker_account_ref
        )
        if not self.is_system:
            stmt = stmt.where(Account.user_id == self.user_id)
        stmt = stmt.order_by(Account.created_at, Account.id)
        return list((await self.session.execute(stmt)).scalars().all())

    async def for_connection(self, connection_id: str) -> Sequence[Account]:
        """The user's accounts of one connection, oldest first."""
        stmt = (
            select(Account)
            .where(Account.user_id == self.user_id, Account.connection_id == connection_id)
            .order_by(Account.created_at, Account.id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def disable_trading(self, connection_id: str) -> None:
        await self.session.execute(
            update(Account)
            .where(Account.user_id == self.user_id, Account.connection_id == connection_id)
            .values(can_trade=False)
        )

    def add(self, account: Account) -> None:
        if account.user_id != self.user_id:
            raise PermissionError("account belongs to another user")
        self.session.add(account)


@functools.cache
def _account_with_connection_locking_paper_statement(*, scoped: bool) -> Any:
    """The account and its connection and, on the paper broker only (a NULL account id
    locks nothing elsewhere), its paper account locked and the position read after it."""
    paper_account = case(
        (Connection.broker_slug == bindparam("paper_slug"), Account.broker_account_ref),
        else_=None,
    )
    locked, now = locked_account_and_position(
        paper_account, Connection.user_id, bindparam("p_symbol")
    )
    stmt = (
        select(Account, Connection, *labelled_columns(locked, now))
        .select_from(Account)
        .join(Connection, Connection.id == Account.connection_id)
        .outerjoin(locked, true())
        .outerjoin(now, true())
        .where(Account.id == bindparam("a_id"))
    )
    if scoped:
        stmt = stmt.where(Account.user_id == bindparam("a_user_id"))
    return stmt


@functools.cache
def _account_with_connection_statement(*, scoped: bool, fresh: bool) -> Any:
    """Built once per shape with bound parameters: every order reads its account through
    it, and a statement built per call has its cache key computed per call."""
    stmt = (
        select(Account, Connection)
        .join(Connection, Connection.id == Account.connection_id)
        .where(Account.id == bindparam("a_id"))
    )
    if fresh:
        stmt = stmt.execution_options(populate_existing=True)
    if scoped:
        stmt = stmt.where(Account.user_id == bindparam("a_user_id"))
    return stmt

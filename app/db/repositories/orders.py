"""Queries on ``orders`` and the ``order_events`` outbox, scoped to one user."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, insert, literal, select, true, union_all, update
from sqlalchemy.exc import IntegrityError

from app.db.models import Account, AuditEntry, IdempotencyKey, Order, OrderEvent
from app.db.repositories.audit import AuditChainHeadMissing, AuditRepository
from app.db.repositories.scoped import UserScoped
from app.streaming.outbox import note_core_append

_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_EVENTS: Table = OrderEvent.__table__  # type: ignore[assignment]
_KEYS: Table = IdempotencyKey.__table__  # type: ignore[assignment]
_ORDER_COLUMNS = tuple(c.key for c in _ORDERS.columns)
# What an order change may write: everything but its identity and creation.
_FIXED = frozenset({"id", "user_id", "account_id", "client_order_id", "created_at"})
_CHANGING_COLUMNS = tuple(k for k in _ORDER_COLUMNS if k not in _FIXED)


@dataclass(frozen=True, slots=True)
class HeadLock:
    """An audit chain head to lock (``AuditRepository.lock_head``) with a new order."""

    chain: str
    genesis_hash: str
    now: datetime


@dataclass(frozen=True, slots=True)
class KeyCompletion:
    """The stored response that completes an in-flight Idempotency-Key claim."""

    record_id: str
    status: int
    body: dict[str, Any]
    order_id: str | None


def order_values(order: Order) -> dict[str, Any]:
    """Every column of ``order`` (a plain, transient row object)."""
    return {key: getattr(order, key) for key in _ORDER_COLUMNS}


class OrderRepository(UserScoped):
    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        stmt = select(Order).where(Order.id == order_id)
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        if for_update:
            # populate_existing: the session may already hold this row from before the lock;
            # without it the locked re-read would hand back that stale copy.
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def find_by_broker_ids(
        self,
        account_ids: Sequence[str],
        *,
        broker_order_id: str | None,
        client_order_id: str | None,
        for_update: bool = False,
    ) -> Order | None:
        """The order with this client (preferred) or broker order id on any of the accounts.

        Several account rows can share one broker account (a reconnect keeps the old,
        revoked row), so the lookup spans all of them.
        """
        if not account_ids:
            return None
        stmt = select(Order).where(Order.account_id.in_(account_ids))
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        if client_order_id:
            stmt = stmt.where(Order.client_order_id == client_order_id)
        elif broker_order_id:
            stmt = stmt.where(Order.broker_order_id == broker_order_id)
        else:
            return None
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt.order_by(Order.created_at))).scalars().first()

    async def broker_ids_near(
        self,
        account_ids: Sequence[str],
        *,
        since: datetime,
        until: datetime,
        exclude_order_id: str,
    ) -> frozenset[str]:
        """System: broker order ids already held by orders on these accounts created in the
        span (fingerprint reconciliation must not adopt a broker order twice)."""
        if not account_ids:
            return frozenset()
        stmt = select(Order.broker_order_id).where(
            Order.account_id.in_(account_ids),
            Order.broker_order_id.is_not(None),
            Order.created_at >= since,
            Order.created_at <= until,
            Order.id != exclude_order_id,
        )
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        rows = (await self.session.execute(stmt)).scalars().all()
        return frozenset(r for r in rows if r is not None)

    async def list_for_account(
        self,
        account_id: str,
        *,
        statuses: Sequence[str] | None,
        limit: int,
        before: tuple[datetime, str] | None,
    ) -> Sequence[Order]:
        """Newest first; ``before`` is the (created_at, id) of the last row of the prior page."""
        stmt = select(Order).where(Order.user_id == self.user_id, Order.account_id == account_id)
        if statuses is not None:
            stmt = stmt.where(Order.status.in_(statuses))
        if before is not None:
            stmt = stmt.where(
                (Order.created_at < before[0])
                | ((Order.created_at == before[0]) & (Order.id < before[1]))
            )
        stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def list_in_statuses(
        self, statuses: Sequence[str], *, limit: int, after_id: str | None = None
    ) -> Sequence[Order]:
        """System: orders in these statuses in id order, after ``after_id`` (a sweep cursor).

        Id order with a moving cursor, not age: orders that cannot be resolved yet never
        hold back the ones behind them.
        """
        stmt = select(Order).where(Order.status.in_(statuses))
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        if after_id is not None:
            stmt = stmt.where(Order.id > after_id)
        stmt = stmt.order_by(Order.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def unresolved_summary(
        self, statuses: Sequence[str]
    ) -> list[tuple[str, str, int, datetime]]:
        """Ops summary across all users (system scope only): (broker, status, count, oldest
        ``updated_at``) of the orders in ``statuses``."""
        if not self.is_system:
            raise PermissionError("the order summary spans every user")
        stmt = (
            select(Account.broker_slug, Order.status, func.count(), func.min(Order.updated_at))
            .join(Account, Account.id == Order.account_id)
            .where(Order.status.in_(statuses))
            .group_by(Account.broker_slug, Order.status)
        )
        return [(b, st, int(n), at) for b, st, n, at in (await self.session.execute(stmt)).all()]

    async def working_on_accounts(self, account_ids: Sequence[str]) -> list[str]:
        """Ids of the orders on these accounts that the broker is still working."""
        if not account_ids:
            return []
        stmt = select(Order.id).where(
            Order.account_id.in_(account_ids),
            Order.status.in_(("submitted", "accepted", "partially_filled")),
            Order.broker_order_id.is_not(None),
        )
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        return list((await self.session.execute(stmt.order_by(Order.id))).scalars().all())

    async def unfinished_on_accounts(
        self, account_ids: Sequence[str], statuses: Sequence[str]
    ) -> list[Order]:
        """The orders on these accounts in one of ``statuses``, oldest first."""
        if not account_ids:
            return []
        stmt = select(Order).where(Order.account_id.in_(account_ids), Order.status.in_(statuses))
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        return list((await self.session.execute(stmt.order_by(Order.created_at))).scalars().all())

    def add(self, order: Order) -> None:
        if not self.is_system and order.user_id != self.user_id:
            raise PermissionError("order belongs to another user")
        self.session.add(order)

    async def get_row(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order as a plain row object outside the session (Core select, no identity
        map): the hot path changes it and writes it back with ``write``."""
        stmt = select(_ORDERS).where(_ORDERS.c.id == order_id)
        if not self.is_system:
            stmt = stmt.where(_ORDERS.c.user_id == self.user_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).mappings().one_or_none()
        return None if row is None else Order(**row)

    async def claim_and_insert(
        self, claim: Any, order: Order, *, head: HeadLock | None = None
    ) -> tuple[bool, tuple[int, str] | None]:
        """Claim the request's Idempotency-Key (``IdempotencyRepository.claim_statement``)
        and, only if that claim is new, insert ``order`` and lock the audit chain ``head``
        (``AuditRepository.lock_head``).

        Returns whether the key was claimed and the head's (last seq, last hash) when one
        was locked. On Postgres one statement (data-modifying CTEs: the order insert and the
        head lock select from the claim, so neither happens when the key is held, and the
        claim comes first: a request waiting for the same key holds no chain lock); SQLite
        sends them one after the other.
        """
        if not self.is_system and order.user_id != self.user_id:
            raise PermissionError("order belongs to another user")
        if self.session.get_bind().dialect.name != "postgresql":
            if (await self.session.execute(claim)).scalar_one_or_none() is None:
                return False, None
            await self.session.execute(insert(_ORDERS).values(order_values(order)))
            if head is None:
                return True, None
            audit = AuditRepository(self.session)
            return True, await audit.lock_head(
                head.chain, genesis_hash=head.genesis_hash, now=head.now
            )
        claimed = claim.cte("claimed")
        values = order_values(order)
        source = select(
            *(literal(values[c.key], c.type).label(c.key) for c in _ORDERS.columns)
        ).where(select(claimed.c.id).exists())
        new_order = (
            insert(_ORDERS)
            .from_select(list(_ORDER_COLUMNS), source)
            .returning(_ORDERS.c.id)
            .cte("new_order")
        )
        if head is None:
            stmt = select(claimed.c.id).add_cte(new_order)
            return (await self.session.execute(stmt)).first() is not None, None
        locked = (
            AuditRepository(self.session)
            .lock_head_statement(
                head.chain,
                genesis_hash=head.genesis_hash,
                now=head.now,
                when=select(claimed.c.id),
            )
            .cte("locked_head")
        )
        stmt = (
            select(claimed.c.id, locked.c.last_seq, locked.c.last_hash)
            .select_from(claimed.outerjoin(locked, true()))
            .add_cte(new_order)
        )
        row = (await self.session.execute(stmt)).first()
        if row is None:
            return False, None
        return True, (int(row.last_seq), str(row.last_hash))

    async def write(
        self,
        *,
        new: Order | None = None,
        changed: Order | None = None,
        events: Sequence[dict[str, Any]] = (),
        complete_key: KeyCompletion | None = None,
        audit: AuditEntry | None = None,
        audit_now: datetime | None = None,
    ) -> None:
        """Write an order change with Core statements: a ``new`` order row, or the
        ``changed`` columns of an existing one (locked by the caller), its ``events``
        (``order_event_values``) and the completion of the request's Idempotency-Key.

        The events go in last (they take the outbox lock, see ``app.streaming.outbox``):
        the caller commits right after. On Postgres everything is one statement (the row
        and key writes are data-modifying CTEs of the event insert); SQLite, which has no
        data-modifying CTE, takes one statement per table.

        ``audit``: the entry that follows the chain head the caller locked (in this
        transaction), appended with the head moved to it (``audit_now``); raises
        ``AuditChainHeadMissing`` when its (chain, seq) is taken.
        """
        for row in (new, changed):
            if row is not None and not self.is_system and row.user_id != self.user_id:
                raise PermissionError("order belongs to another user")
        writes: list[Any] = []
        if new is not None:
            writes.append(insert(_ORDERS).values(order_values(new)))
        if changed is not None:
            writes.append(
                update(_ORDERS)
                .where(_ORDERS.c.id == changed.id, _ORDERS.c.user_id == changed.user_id)
                .values({key: getattr(changed, key) for key in _CHANGING_COLUMNS})
            )
        if complete_key is not None:
            key_update = update(_KEYS).where(_KEYS.c.id == complete_key.record_id)
            if not self.is_system:
                key_update = key_update.where(_KEYS.c.user_id == self.user_id)
            writes.append(
                key_update.values(
                    state="completed",
                    response_status=complete_key.status,
                    response_body=complete_key.body,
                    order_id=complete_key.order_id,
                )
            )
        dialect = self.session.get_bind().dialect.name
        try:
            if dialect == "postgresql" and events:
                await self._write_combined(writes, events, audit, audit_now)
                return
            for write in writes:
                await self.session.execute(write)
            if audit is not None:
                await AuditRepository(self.session).append_entry(
                    audit, now=audit_now or audit.occurred_at
                )
            if events:
                # One statement for all the events (insertmanyvalues: one multi-row insert,
                # rows numbered in their order by the single writer); the highest id is
                # what the hub is told.
                stmt = insert(_EVENTS).returning(_EVENTS.c.id)
                ids = (await self.session.execute(stmt, list(events))).scalars().all()
                note_core_append(self.session.sync_session, max(ids))
        except IntegrityError as exc:
            if audit is not None and "audit_entries" in str(exc.orig):
                raise AuditChainHeadMissing(
                    f"the head of audit chain {audit.chain} is missing or rewound: "
                    f"entry {audit.seq} exists"
                ) from exc
            raise

    async def _write_combined(
        self,
        writes: list[Any],
        events: Sequence[dict[str, Any]],
        audit: AuditEntry | None,
        audit_now: datetime | None,
    ) -> None:
        """Postgres: ``write`` as one statement. Each event is an insert of one row (a
        multi-row VALUES has no compiled-cache key); with several, the statement selects
        their ids in append order (a UNION ALL runs its branches in order, so the ids are
        drawn in that order); the other writes are CTEs, run after the event inserts in
        the same statement."""
        ctes = [w.returning(w.table.c.id) for w in writes]
        if audit is not None:
            head, entry = AuditRepository.append_statements(
                audit, now=audit_now or audit.occurred_at
            )
            ctes += [head, entry.returning(entry.table.c.seq)]
        inserts = [insert(_EVENTS).values(event).returning(_EVENTS.c.id) for event in events]
        stmt: Any
        if len(inserts) == 1:
            stmt = inserts[0]
        else:
            parts = [i.cte(f"e{n}") for n, i in enumerate(inserts)]
            stmt = union_all(*(select(part.c.id) for part in parts))
        for n, write in enumerate(ctes):
            stmt = stmt.add_cte(write.cte(f"w{n}_{write.table.name}"))
        ids = (await self.session.execute(stmt)).scalars().all()
        note_core_append(self.session.sync_session, max(ids))


class OrderEventRepository(UserScoped):
    def append(
        self,
        *,
        user_id: str,
        type_: str,
        payload: dict[str, Any],
        occurred_at: datetime,
        account_id: str | None = None,
        order_id: str | None = None,
        connection_id: str | None = None,
    ) -> OrderEvent:
        if not self.is_system and user_id != self.user_id:
            raise PermissionError("event belongs to another user")
        event = OrderEvent(
            user_id=user_id,
            account_id=account_id,
            order_id=order_id,
            connection_id=connection_id,
            type=type_,
            payload=payload,
            occurred_at=occurred_at,
        )
        self.session.add(event)
        return event

    async def list_after(
        self, after: int, *, limit: int, account_ids: Sequence[str] | None = None
    ) -> Sequence[OrderEvent]:
        """Events with ``id > after`` in id order; system scope reads every user's (the hub)."""
        stmt = select(OrderEvent).where(OrderEvent.id > after)
        if not self.is_system:
            stmt = stmt.where(OrderEvent.user_id == self.user_id)
        if account_ids is not None:
            stmt = stmt.where(OrderEvent.account_id.in_(account_ids))
        stmt = stmt.order_by(OrderEvent.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def latest_id(self) -> int:
        """The newest event id (the user's, or anyone's in system scope); 0 when none."""
        stmt = select(func.max(OrderEvent.id))
        if not self.is_system:
            stmt = stmt.where(OrderEvent.user_id == self.user_id)
        return int((await self.session.execute(stmt)).scalar_one_or_none() or 0)

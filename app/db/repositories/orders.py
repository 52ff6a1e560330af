"""Queries on ``orders`` and the ``order_events`` outbox, scoped to one user."""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    String,
    Table,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from app.db.deferred import DeferredPart, DeferredWrites
from app.db.models import (
    Account,
    AuditChainHead,
    AuditEntry,
    IdempotencyKey,
    Order,
    OrderEvent,
)
from app.db.repositories.audit import (
    AuditChainHeadMissing,
    AuditRepository,
    lock_head_params,
    lock_head_statement,
)
from app.db.repositories.idempotency import (
    CLAIM_COLUMNS,
    claim_statement,
    claim_statement_when,
)
from app.db.repositories.scoped import UserScoped
from app.streaming.outbox import note_core_append

_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_EVENTS: Table = OrderEvent.__table__  # type: ignore[assignment]
_KEYS: Table = IdempotencyKey.__table__  # type: ignore[assignment]
_AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
_HEADS: Table = AuditChainHead.__table__  # type: ignore[assignment]
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


@dataclass(frozen=True, slots=True)
class ClaimedOrder:
    """What ``claim_and_insert`` did: whether the key was claimed (and the order inserted),
    the audit chain head it locked (last seq, last hash), and on Postgres the inserted
    row's version (its ``xmin``), which ``write_if_unchanged`` checks."""

    claimed: bool
    head: tuple[int, str] | None = None
    row_version: str | None = None


@dataclass(frozen=True, slots=True)
class RowGuard:
    """What ``write_if_unchanged`` expects to find: the order row at ``row_version``
    (nobody has written it since) and, with ``chain``, that chain's head still at
    (``head_seq``, ``head_hash``) (nobody has appended since)."""

    order_id: str
    row_version: str
    chain: str | None = None
    head_seq: int = 0
    head_hash: str = ""


class KeyHeld(Exception):
    """The Idempotency-Key a ``write`` inserted completed is held already (by this user):
    the caller rolls back and answers the held key."""


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

    async def find_on_broker_account(
        self,
        broker_slug: str,
        broker_account_ref: str,
        *,
        broker_order_id: str | None,
        client_order_id: str | None,
    ) -> Order | None:
        """System: ``find_by_broker_ids(ids_by_broker_ref(...), ..., for_update=True)`` in one
        statement, built once: the order a broker stream names by its account number and its
        client (preferred) or broker order id, on any of our account rows of that broker
        account, locked. None when there is none (the caller then needs the account rows)."""
        if not self.is_system:
            raise PermissionError("a broker stream's lookup spans every user")
        if client_order_id:
            stmt, value = _on_broker_account_statement(by_client_id=True), client_order_id
        elif broker_order_id:
            stmt, value = _on_broker_account_statement(by_client_id=False), broker_order_id
        else:
            return None
        params = {"b_slug": broker_slug, "b_ref": broker_account_ref, "b_order": value}
        return (await self.session.execute(stmt, params)).scalars().first()

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

    async def filled_on_symbols(self, account_id: str, symbols: Sequence[str]) -> list[Order]:
        """The account's orders on these symbols with something filled, oldest first (a
        multi-leg order's row carries its underlying's symbol)."""
        if not symbols:
            return []
        stmt = select(Order).where(
            Order.account_id == account_id,
            Order.filled_quantity > Decimal(0),
            Order.symbol.in_(list(symbols)),
        )
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        return list((await self.session.execute(stmt.order_by(Order.created_at))).scalars().all())

    async def filled_on_expiration(self, account_id: str, expiration: date) -> list[Order]:
        """The account's orders with something filled that may trade an option contract
        expiring on ``expiration``, oldest first: a single-leg order whose symbol, or a
        multi-leg order whose legs, hold the OCC date ``YYMMDD`` followed by ``C`` or ``P``.
        A prefilter: the caller parses each contract and keeps the ones that do expire then."""
        patterns = [f"%{expiration:%y%m%d}{right}%" for right in ("C", "P")]
        legs = cast(Order.legs, String)
        stmt = select(Order).where(
            Order.account_id == account_id,
            Order.filled_quantity > Decimal(0),
            or_(*(Order.symbol.like(p) for p in patterns), *(legs.like(p) for p in patterns)),
        )
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        return list((await self.session.execute(stmt.order_by(Order.created_at))).scalars().all())

    async def has_broker_id_prefix(self, account_id: str, prefix: str) -> bool:
        """Whether an order of the account has a broker order id starting with ``prefix``."""
        stmt = select(Order.id).where(
            Order.account_id == account_id,
            Order.broker_order_id.startswith(prefix, autoescape=True),
        )
        if not self.is_system:
            stmt = stmt.where(Order.user_id == self.user_id)
        return (await self.session.execute(stmt.limit(1))).first() is not None

    def add(self, order: Order) -> None:
        if not self.is_system and order.user_id != self.user_id:
            raise PermissionError("order belongs to another user")
        self.session.add(order)

    async def get_row(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order as a plain row object outside the session (Core select, no identity
        map): the hot path changes it and writes it back with ``write``."""
        stmt = _get_row_statement(scoped=not self.is_system, for_update=for_update)
        params = {"o_id": order_id}
        if not self.is_system:
            params["o_user_id"] = self.user_id
        row = (await self.session.execute(stmt, params)).mappings().one_or_none()
        return None if row is None else Order(**row)

    async def get_row_locking_head(
        self, order_id: str, head: HeadLock | None
    ) -> tuple[Order | None, tuple[int, str] | None]:
        """``get_row(order_id, for_update=True)`` and, when the order is found, the audit
        chain ``head`` locked after it: its (last seq, last hash), None without ``head``.

        On Postgres one statement (the head upsert selects from the locked row, so the row
        lock is always taken first, as every other writer of both does); SQLite sends them
        one after the other."""
        dialect = self.session.get_bind().dialect.name
        if head is None or dialect != "postgresql":
            row = await self.get_row(order_id, for_update=True)
            if row is None or head is None:
                return row, None
            audit = AuditRepository(self.session)
            return row, await audit.lock_head(
                head.chain, genesis_hash=head.genesis_hash, now=head.now
            )
        params = {"o_id": order_id}
        if not self.is_system:
            params["o_user_id"] = self.user_id
        params |= lock_head_params(head.chain, genesis_hash=head.genesis_hash, now=head.now)
        stmt = _row_and_head_statement(scoped=not self.is_system)
        found = (await self.session.execute(stmt, params)).mappings().one_or_none()
        if found is None:
            return None, None
        order = Order(**{column: found[column] for column in _ORDER_COLUMNS})
        return order, (int(found["h_last_seq"]), str(found["h_last_hash"]))

    async def claim_and_insert(
        self, claim: dict[str, Any], order: Order, *, head: HeadLock | None = None
    ) -> ClaimedOrder:
        """Claim the request's Idempotency-Key (``claim``: ``IdempotencyRepository.
        claim_params``) and, only if that claim is new, insert ``order``; with ``head``, lock
        that audit chain head (``AuditRepository.lock_head``) first, whether or not the key
        is held.

        On Postgres one statement (data-modifying CTEs): the head is locked first, as on
        every path that takes a chain head and a key, then the key claimed, and the order
        insert selects from the claim, so it does not happen when the key is held (the head
        stays locked until the transaction ends). SQLite sends them one after the other.
        """
        if not self.is_system and order.user_id != self.user_id:
            raise PermissionError("order belongs to another user")
        dialect = self.session.get_bind().dialect.name
        values = _prefixed("n_", order_values(order))
        if dialect != "postgresql":
            found = await self.session.execute(claim_statement(dialect), claim)
            if found.scalar_one_or_none() is None:
                return ClaimedOrder(False)
            await self.session.execute(_insert_order_statement(), values)
            if head is None:
                return ClaimedOrder(True)
            audit = AuditRepository(self.session)
            locked = await audit.lock_head(head.chain, genesis_hash=head.genesis_hash, now=head.now)
            return ClaimedOrder(True, locked)
        params = claim | values
        if head is not None:
            params |= lock_head_params(head.chain, genesis_hash=head.genesis_hash, now=head.now)
        row = (
            await self.session.execute(_claim_and_insert_statement(head is not None), params)
        ).first()
        if row is None or row.id is None:
            return ClaimedOrder(False)
        return ClaimedOrder(
            True,
            None if head is None else (int(row.last_seq), str(row.last_hash)),
            str(row.row_version),
        )

    async def claim_and_write(
        self,
        claim: dict[str, Any],
        order: Order,
        *,
        event: dict[str, Any],
        audit: AuditEntry | None,
        audit_now: datetime,
    ) -> ClaimedOrder | None:
        """Postgres: ``claim_and_insert`` with ``write(events=[event], audit=audit)`` in one
        statement. With an ``audit`` entry hashed against a head remembered from before
        (``AuditChain.remembered_head``), the head is locked only if it is still the one
        ``audit`` follows (seq - 1, its prev hash), and the key claimed only then; without
        one (no chain: a platform account's order), the key is claimed at once. The order,
        the entry, the head's move and the event are written only if the key was claimed.

        None when the head was elsewhere: nothing was done, and the caller takes the
        locking path (``claim_and_insert``, then ``write``). Otherwise the claim's outcome;
        when the key is held, nothing else was written (and a head locked stays locked
        until the transaction ends). Raises ``ValueError`` on another database.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            raise ValueError("claim_and_write is for Postgres only")
        if event["order_id"] != order.id or (audit is not None and audit.order_id != order.id):
            raise ValueError("the entry and the event must be this order's")
        params = claim | self._write_params(
            new=order, events=[event], audit=audit, audit_now=audit_now
        )
        if audit is not None:
            params |= {"g_chain": audit.chain, "g_seq": audit.seq - 1, "g_hash": audit.prev_hash}
        stmt = _claim_and_write_statement(audit is not None)
        try:
            row = (await self.session.execute(stmt, params)).first()
        except IntegrityError as exc:
            if audit is not None and "audit_entries" in str(exc.orig):
                raise _head_missing(audit) from exc
            raise
        if audit is None:
            return ClaimedOrder(False) if row is None else ClaimedOrder(True, None, row.row_version)
        if row is None:
            return None
        if row.id is None:
            return ClaimedOrder(False)
        return ClaimedOrder(True, (audit.seq - 1, audit.prev_hash), str(row.row_version))

    async def write(
        self,
        *,
        new: Order | None = None,
        changed: Order | None = None,
        events: Sequence[dict[str, Any]] = (),
        complete_key: KeyCompletion | None = None,
        completed_key: dict[str, Any] | None = None,
        audit: AuditEntry | None = None,
        audit_now: datetime | None = None,
        deferred: DeferredWrites | None = None,
    ) -> None:
        """Write an order change with Core statements: a ``new`` order row, or the
        ``changed`` columns of an existing one (locked by the caller), its ``events``
        (``order_event_values``) and the completion of the request's Idempotency-Key:
        ``complete_key`` completes a record claimed earlier in flight, ``completed_key``
        (``IdempotencyRepository.completed_params``) inserts it completed, first of the
        writes; raises ``KeyHeld`` when this user holds that key already (a holder still in
        flight makes the insert wait for its outcome).

        The events go in last (they take the outbox lock, see ``app.streaming.outbox``):
        the caller commits right after. On Postgres everything is one statement (the row
        and key writes are data-modifying CTEs of the event inserts); SQLite, which has no
        data-modifying CTE, takes one statement per table. Every statement is built once
        per shape with bound parameters (``_write_statements``), so neither its cache key
        nor its SQL is made again per order.

        ``audit``: the entry that follows the chain head the caller locked (in this
        transaction), appended with the head moved to it (``audit_now``); raises
        ``AuditChainHeadMissing`` when its (chain, seq) is taken.

        ``deferred``: writes another store handed over (``app.db.deferred``; the paper
        books of a paper placement), sent in this statement on Postgres, before the others
        on SQLite. Their integrity errors propagate as they are.
        """
        params = self._write_params(
            new=new,
            changed=changed,
            events=events,
            complete_key=complete_key,
            completed_key=completed_key,
            audit=audit,
            audit_now=audit_now,
        )
        shape = _Shape(
            new=new is not None,
            changed=changed is not None,
            key=None if complete_key is None else not self.is_system,
            new_key=completed_key is not None,
            audit=audit is not None,
            events=len(events),
        )
        parts = () if deferred is None else tuple(deferred.parts)
        for part in parts:
            params |= part.params
        dialect = self.session.get_bind().dialect.name
        try:
            if dialect == "postgresql" and events:
                result = await self.session.execute(_combined_with(shape, parts), params)
                ids = result.scalars().all()
            else:
                for part in parts:
                    for stmt in part.statements:
                        await self.session.execute(stmt, part.params)
                for stmt in _write_statements(shape):
                    if stmt.table is not _EVENTS:
                        await self.session.execute(stmt, params)
                ids = []
                if events:
                    # One insertmanyvalues statement for all of them (one multi-row insert,
                    # rows numbered in their order by the single writer).
                    result = await self.session.execute(_insert_events_statement(), list(events))
                    ids = list(result.scalars().all())
        except IntegrityError as exc:
            if completed_key is not None and _is_key_conflict(exc):
                raise KeyHeld(completed_key["k_key"]) from exc
            if audit is not None and "audit_entries" in str(exc.orig):
                raise _head_missing(audit) from exc
            raise
        if ids:
            note_core_append(self.session.sync_session, max(ids))

    def _write_params(
        self,
        *,
        new: Order | None = None,
        changed: Order | None = None,
        events: Sequence[dict[str, Any]] = (),
        complete_key: KeyCompletion | None = None,
        completed_key: dict[str, Any] | None = None,
        audit: AuditEntry | None = None,
        audit_now: datetime | None = None,
    ) -> dict[str, Any]:
        """The bound parameters of a ``write`` (see there), the rows' owner checked."""
        for row in (new, changed):
            if row is not None and not self.is_system and row.user_id != self.user_id:
                raise PermissionError("order belongs to another user")
        params: dict[str, Any] = {}
        if new is not None:
            params |= _prefixed("n_", order_values(new))
        if changed is not None:
            params |= _prefixed("c_", {k: getattr(changed, k) for k in _CHANGING_COLUMNS})
            params |= {"c_id": changed.id, "c_user_id": changed.user_id}
        if complete_key is not None:
            params |= {
                "q_id": complete_key.record_id,
                "q_status": complete_key.status,
                "q_body": complete_key.body,
                "q_order_id": complete_key.order_id,
            }
            if not self.is_system:
                params["q_user_id"] = self.user_id
        if completed_key is not None:
            if not self.is_system and completed_key["k_user_id"] != self.user_id:
                raise PermissionError("idempotency key belongs to another user")
            params |= completed_key
        if audit is not None:
            params |= _prefixed("a_", {k: getattr(audit, k) for k in _AUDIT_COLUMNS})
            params["a_now"] = audit_now or audit.occurred_at
        for n, event in enumerate(events):
            params |= _prefixed(f"e{n}_", event)
        return params

    async def write_if_unchanged(
        self,
        guard: RowGuard,
        *,
        changed: Order,
        events: Sequence[dict[str, Any]],
        complete_key: KeyCompletion | None = None,
        audit: AuditEntry | None = None,
        audit_now: datetime | None = None,
    ) -> bool:
        """Postgres: ``write(changed=..., events=..., complete_key=..., audit=...)`` as one
        statement that writes only if ``guard`` holds, and whether it did.

        The statement first locks the order row if it is still at ``guard.row_version``,
        then the chain head if it is still where ``guard`` says: the same lock order as
        every other writer of both. A row or head that another transaction changes
        meanwhile is re-read after that one commits and no longer matches (Postgres
        re-checks a locking read's conditions on the newest version). When the guard
        fails, nothing at all is written and the caller takes the locking path
        (``get_row_locking_head`` and ``write``). Run it outside a transaction
        (autocommit): it is then the whole transaction, one round trip.

        ``audit`` must follow the head in ``guard``; ``events`` must not be empty (they
        tell whether the statement wrote). Raises ``ValueError`` on another database.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            raise ValueError("write_if_unchanged is for Postgres only")
        if not events:
            raise ValueError("write_if_unchanged needs at least one event")
        if (audit is None) != (guard.chain is None):
            raise ValueError("an audit entry needs a guarded chain head, and only one")
        if guard.order_id != changed.id:
            raise ValueError("the guard is for another order")
        if audit is not None and (
            audit.chain != guard.chain
            or audit.seq != guard.head_seq + 1
            or audit.prev_hash != guard.head_hash
        ):
            raise ValueError("the audit entry does not follow the guarded head")
        params = self._write_params(
            changed=changed,
            events=events,
            complete_key=complete_key,
            audit=audit,
            audit_now=audit_now,
        )
        params |= {"g_id": guard.order_id, "g_user_id": changed.user_id}
        params["g_version"] = guard.row_version
        if audit is not None:
            params |= {"g_chain": guard.chain, "g_seq": guard.head_seq, "g_hash": guard.head_hash}
        shape = _Shape(
            new=False,
            changed=True,
            key=None if complete_key is None else not self.is_system,
            new_key=False,
            audit=audit is not None,
            events=len(events),
        )
        try:
            result = await self.session.execute(_guarded_statement(shape), params)
        except IntegrityError as exc:
            if audit is not None and "audit_entries" in str(exc.orig):
                raise _head_missing(audit) from exc
            raise
        return bool(result.scalars().all())


# --- the hot path's statements, built once per shape ---------------------------------------


# The (user, key) uniqueness of idempotency_keys as each database names its violation.
_KEY_CONFLICTS = (
    "uq_idempotency_keys_user_id_key",
    "idempotency_keys.user_id, idempotency_keys.key",
)


def _head_missing(audit: AuditEntry) -> AuditChainHeadMissing:
    """An entry's (chain, seq) is taken: the chain's head row was deleted or rewound."""
    return AuditChainHeadMissing(
        f"the head of audit chain {audit.chain} is missing or rewound: entry {audit.seq} exists"
    )


def _is_key_conflict(exc: IntegrityError) -> bool:
    message = str(exc.orig)
    return any(name in message for name in _KEY_CONFLICTS)


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in values.items()}


def _binds(prefix: str, table: Table, columns: Sequence[str]) -> dict[str, Any]:
    return {c: bindparam(f"{prefix}{c}", type_=table.c[c].type) for c in columns}


_AUDIT_COLUMNS = tuple(c.key for c in _AUDIT.columns)
_EVENT_COLUMNS = (
    "user_id",
    "account_id",
    "order_id",
    "connection_id",
    "type",
    "payload",
    "occurred_at",
)


@dataclass(frozen=True, slots=True)
class _Shape:
    new: bool
    changed: bool
    key: bool | None  # None: no key completion; else whether it is user-scoped
    new_key: bool  # the key inserted completed
    audit: bool
    events: int


@functools.cache
def _on_broker_account_statement(*, by_client_id: bool) -> Any:
    """``find_on_broker_account``'s statement: the orders rows locked (not the accounts')."""
    accounts = select(Account.id).where(
        Account.broker_slug == bindparam("b_slug"),
        Account.broker_account_ref == bindparam("b_ref"),
    )
    order_id = Order.client_order_id if by_client_id else Order.broker_order_id
    return (
        select(Order)
        .where(Order.account_id.in_(accounts.scalar_subquery()), order_id == bindparam("b_order"))
        .order_by(Order.created_at)
        .with_for_update(of=Order)
        .execution_options(populate_existing=True)
    )


@functools.cache
def _get_row_statement(*, scoped: bool, for_update: bool) -> Any:
    stmt = select(_ORDERS).where(_ORDERS.c.id == bindparam("o_id"))
    if scoped:
        stmt = stmt.where(_ORDERS.c.user_id == bindparam("o_user_id"))
    return stmt.with_for_update() if for_update else stmt


@functools.cache
def _row_and_head_statement(*, scoped: bool) -> Any:
    """Postgres: the order row locked, then (selecting from it) the audit chain head."""
    locked = _get_row_statement(scoped=scoped, for_update=True).cte("locked_order")
    head = lock_head_statement("postgresql", select(locked.c.id)).cte("locked_head")
    return select(
        *locked.c, head.c.last_seq.label("h_last_seq"), head.c.last_hash.label("h_last_hash")
    ).select_from(locked.outerjoin(head, true()))


@functools.cache
def _insert_events_statement() -> Any:
    return insert(_EVENTS).returning(_EVENTS.c.id)


@functools.cache
def _insert_order_statement() -> Any:
    return insert(_ORDERS).values(_binds("n_", _ORDERS, _ORDER_COLUMNS))


@functools.cache
def _claim_and_insert_statement(head: bool) -> Any:
    """Postgres: with ``head``, the audit chain head locked (created at the genesis if new),
    then (selecting from it) the claim, then (selecting from the claim) the order insert;
    without, the claim and the order insert. The head comes before the key on every path
    that takes both (``_claim_and_write_statement`` too), so two requests with one key
    never wait for each other in opposite orders."""
    order = _binds("n_", _ORDERS, _ORDER_COLUMNS)

    def new_order_after(claimed: Any) -> Any:
        source = select(*(v.label(k) for k, v in order.items())).where(
            select(claimed.c.id).exists()
        )
        return (
            insert(_ORDERS)
            .from_select(list(order), source)
            .returning(_ORDERS.c.id, _row_version().label("row_version"))
            .cte("new_order")
        )

    if not head:
        claimed = claim_statement("postgresql").cte("claimed")
        new_order = new_order_after(claimed)
        return select(claimed.c.id, new_order.c.row_version).select_from(
            claimed.outerjoin(new_order, true())
        )
    locked = lock_head_statement("postgresql").cte("locked_head")
    claimed = claim_statement_when(select(locked.c.last_seq).exists()).cte("claimed")
    new_order = new_order_after(claimed)
    return select(
        claimed.c.id, locked.c.last_seq, locked.c.last_hash, new_order.c.row_version
    ).select_from(locked.outerjoin(claimed, true()).outerjoin(new_order, true()))


@functools.cache
def _claim_and_write_statement(head: bool) -> Any:
    """Postgres: ``claim_and_write``'s statement. With ``head``, ``g_head`` locks the chain
    head only at its expected seq and hash and the claim selects from it; the order row,
    the audit entry, the head's move and the event select from the claim. Its one row
    says whether the head was there (no row: nothing done), whether the key was claimed
    (``id``), and the new row's version. Without, the claim and the row and event after
    it (no row: the key is held)."""
    guard: Any = None
    if head:
        guard = (
            select(_HEADS.c.chain)
            .where(
                _HEADS.c.chain == bindparam("g_chain", type_=_HEADS.c.chain.type),
                _HEADS.c.last_seq == bindparam("g_seq", type_=_HEADS.c.last_seq.type),
                _HEADS.c.last_hash == bindparam("g_hash", type_=_HEADS.c.last_hash.type),
            )
            .with_for_update()
            .cte("g_head")
        )
        claimed = claim_statement_when(select(guard.c.chain).exists()).cte("claimed")
    else:
        claimed = claim_statement("postgresql").cte("claimed")
    made = select(claimed.c.id).exists()

    def rows(prefix: str, table: Table, columns: Sequence[str]) -> Any:
        binds = _binds(prefix, table, columns)
        source = select(*(v.label(k) for k, v in binds.items())).where(made)
        return insert(table).from_select(list(binds), source)

    new_order = (
        rows("n_", _ORDERS, _ORDER_COLUMNS)
        .returning(_ORDERS.c.id, _row_version().label("row_version"))
        .cte("new_order")
    )
    writes: list[Any] = []
    if head:
        writes.append(rows("a_", _AUDIT, _AUDIT_COLUMNS).returning(_AUDIT.c.seq))
        writes.append(_head_move().where(made).returning(_HEADS.c.chain))
    writes.append(rows("e0_", _EVENTS, _EVENT_COLUMNS).returning(_EVENTS.c.id))
    if head:
        stmt = select(guard.c.chain, claimed.c.id, new_order.c.row_version).select_from(
            guard.outerjoin(claimed, true()).outerjoin(new_order, true())
        )
    else:
        stmt = select(claimed.c.id, new_order.c.row_version).select_from(
            claimed.join(new_order, true())
        )
    for n, write in enumerate(writes):
        stmt = stmt.add_cte(write.cte(f"w{n}_{write.table.name}"))
    return stmt


def _row_version() -> Any:
    """Postgres: an order row's version, its ``xmin`` (the transaction that wrote this
    version of it) as text. Any write to the row makes a new version with a new ``xmin``;
    a lock does not. https://www.postgresql.org/docs/15/ddl-system-columns.html"""
    return cast(literal_column("orders.xmin"), String)


def _key_completion(scoped: bool) -> Any:
    """The in-flight key's completion with its stored response (``q_`` parameters)."""
    key = update(_KEYS).where(_KEYS.c.id == bindparam("q_id"))
    if scoped:
        key = key.where(_KEYS.c.user_id == bindparam("q_user_id"))
    return key.values(
        state="completed",
        response_status=bindparam("q_status", type_=_KEYS.c.response_status.type),
        response_body=bindparam("q_body", type_=_KEYS.c.response_body.type),
        order_id=bindparam("q_order_id", type_=_KEYS.c.order_id.type),
    )


def _head_move() -> Any:
    """The chain head moved to the new entry (``a_`` parameters)."""
    return (
        update(_HEADS)
        .where(_HEADS.c.chain == bindparam("a_chain"))
        .values(
            last_seq=bindparam("a_seq", type_=_HEADS.c.last_seq.type),
            last_hash=bindparam("a_entry_hash", type_=_HEADS.c.last_hash.type),
            updated_at=bindparam("a_now", type_=_HEADS.c.updated_at.type),
        )
    )


@functools.cache
def _write_statements(shape: _Shape) -> tuple[Any, ...]:
    """The statements of a ``write`` of this shape, in order: a key inserted first (a held
    one fails before anything else is written), events last."""
    stmts: list[Any] = []
    if shape.new_key:
        completed = _binds("k_", _KEYS, (*CLAIM_COLUMNS, "response_status", "response_body"))
        stmts.append(insert(_KEYS).values(completed))
    if shape.new:
        stmts.append(_insert_order_statement())
    if shape.changed:
        stmts.append(
            update(_ORDERS)
            .where(_ORDERS.c.id == bindparam("c_id"), _ORDERS.c.user_id == bindparam("c_user_id"))
            .values(_binds("c_", _ORDERS, _CHANGING_COLUMNS))
        )
    if shape.key is not None:
        stmts.append(_key_completion(shape.key))
    if shape.audit:
        stmts.append(insert(_AUDIT).values(_binds("a_", _AUDIT, _AUDIT_COLUMNS)))
        stmts.append(_head_move())
    for n in range(shape.events):
        stmts.append(
            insert(_EVENTS)
            .values(_binds(f"e{n}_", _EVENTS, _EVENT_COLUMNS))
            .returning(_EVENTS.c.id)
        )
    return tuple(stmts)


@functools.cache
def _combined_statement(shape: _Shape) -> Any:
    """Postgres: ``_write_statements`` as one statement. Each event is an insert of one
    row; with several, the statement selects their ids in append order (a UNION ALL runs
    its branches in order, so the ids are drawn in that order). The other writes are
    CTEs that the statement does not read: Postgres runs them after it, in the same
    statement (rows this transaction holds already, or new ones)."""
    stmts = _write_statements(shape)
    writes = [s for s in stmts if s.table is not _EVENTS]
    inserts = [s for s in stmts if s.table is _EVENTS]
    stmt: Any
    if len(inserts) == 1:
        stmt = inserts[0]
    else:
        parts = [part.cte(f"e{n}") for n, part in enumerate(inserts)]
        stmt = union_all(*(select(part.c.id) for part in parts))
    for n, write in enumerate(writes):
        pk = next(iter(write.table.primary_key.columns))
        stmt = stmt.add_cte(write.returning(pk).cte(f"w{n}_{write.table.name}"))
    return stmt


@functools.cache
def _guarded_statement(shape: _Shape) -> Any:
    """Postgres: ``write_if_unchanged``'s statement. ``g_order`` locks the order row only at
    its expected version, ``g_head`` (selecting from it) the chain head only at its expected
    seq and hash; every write selects from the last of them, so either all run or none.
    The events are the statement's result (their ids in append order, as in
    ``_combined_statement``); the other writes are CTEs it does not read."""
    if shape.new or shape.new_key or not shape.changed or not shape.events:
        raise ValueError(f"no guarded statement for {shape}")
    guard: Any = (
        select(_ORDERS.c.id)
        .where(
            _ORDERS.c.id == bindparam("g_id"),
            _ORDERS.c.user_id == bindparam("g_user_id"),
            _row_version() == bindparam("g_version", type_=String),
        )
        .with_for_update()
        .cte("g_order")
    )
    if shape.audit:
        guard = (
            select(_HEADS.c.chain)
            .where(
                _HEADS.c.chain == bindparam("g_chain", type_=_HEADS.c.chain.type),
                _HEADS.c.last_seq == bindparam("g_seq", type_=_HEADS.c.last_seq.type),
                _HEADS.c.last_hash == bindparam("g_hash", type_=_HEADS.c.last_hash.type),
                select(guard.c.id).exists(),
            )
            .with_for_update()
            .cte("g_head")
        )
    holds = select(next(iter(guard.c))).exists()

    def rows(prefix: str, table: Table, columns: Sequence[str]) -> Any:
        binds = _binds(prefix, table, columns)
        source = select(*(v.label(k) for k, v in binds.items())).where(holds)
        return insert(table).from_select(list(binds), source)

    writes: list[Any] = [
        update(_ORDERS)
        .where(
            _ORDERS.c.id == bindparam("c_id"), _ORDERS.c.user_id == bindparam("c_user_id"), holds
        )
        .values(_binds("c_", _ORDERS, _CHANGING_COLUMNS))
        .returning(_ORDERS.c.id)
    ]
    if shape.key is not None:
        writes.append(_key_completion(shape.key).where(holds).returning(_KEYS.c.id))
    if shape.audit:
        writes.append(rows("a_", _AUDIT, _AUDIT_COLUMNS).returning(_AUDIT.c.seq))
        writes.append(_head_move().where(holds).returning(_HEADS.c.chain))
    inserts = [
        rows(f"e{n}_", _EVENTS, _EVENT_COLUMNS).returning(_EVENTS.c.id) for n in range(shape.events)
    ]
    stmt: Any
    if len(inserts) == 1:
        stmt = inserts[0]
    else:
        parts = [part.cte(f"e{n}") for n, part in enumerate(inserts)]
        stmt = union_all(*(select(part.c.id) for part in parts))
    for n, write in enumerate(writes):
        stmt = stmt.add_cte(write.cte(f"w{n}_{write.table.name}"))
    return stmt


# (shape, deferred parts' keys) -> ``_combined_statement`` with the parts as CTEs. The
# order paths produce a few shapes; past _COMBINED_WITH_MAX (never seen) one is built per use.
_COMBINED_WITH: dict[tuple[_Shape, tuple[Hashable, ...]], Any] = {}
_COMBINED_WITH_MAX = 256


def _combined_with(shape: _Shape, parts: tuple[DeferredPart, ...]) -> Any:
    """``_combined_statement`` carrying ``parts``' writes as data-modifying CTEs too."""
    if not parts:
        return _combined_statement(shape)
    key = (shape, tuple(part.key for part in parts))
    stmt = _COMBINED_WITH.get(key)
    if stmt is None:
        stmt = _combined_statement(shape)
        for i, part in enumerate(parts):
            for j, write in enumerate(part.statements):
                stmt = stmt.add_cte(write.cte(f"d{i}_{j}_{write.table.name}"))
        if len(_COMBINED_WITH) < _COMBINED_WITH_MAX:
            _COMBINED_WITH[key] = stmt
    return stmt


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

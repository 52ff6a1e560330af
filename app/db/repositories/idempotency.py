"""Queries on ``idempotency_keys``: the (user, key) pair is the lookup key, never the key alone."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.db.models import IdempotencyKey
from app.db.repositories.scoped import UserScoped
from app.db.session import session_owner

CLAIM_COLUMNS = (
    "order_id",
    "id",
    "user_id",
    "key",
    "method",
    "path",
    "fingerprint",
    "state",
    "locked_at",
    "created_at",
    "expires_at",
    "owner",
)


@functools.cache
def claim_statement(dialect: str) -> Any:
    """The claim (insert in flight, nothing when the user holds the key; RETURNING the
    record id), built once per dialect with ``k_<column>`` parameters: its compiled form and
    cache key are reused by every request."""
    table: Table = IdempotencyKey.__table__  # type: ignore[assignment]
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # On the table, not the mapped class (an ORM-enabled insert is annotated again, and its
    # cache key computed, on every execution).
    return (
        insert(table)
        .values({c: bindparam(f"k_{c}", type_=table.c[c].type) for c in CLAIM_COLUMNS})
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(table.c.id)
    )


def claim_statement_when(when: Any) -> Any:
    """Postgres: ``claim_statement`` that inserts only if ``when`` (a boolean SQL expression,
    e.g. ``EXISTS`` over a lock taken before it in the same statement) holds: the order
    hot path's combined statements take the user's audit chain head before the key. Not
    cached here: the callers build their statements once."""
    table: Table = IdempotencyKey.__table__  # type: ignore[assignment]
    values = {c: bindparam(f"k_{c}", type_=table.c[c].type) for c in CLAIM_COLUMNS}
    source = select(*(v.label(k) for k, v in values.items())).where(when)
    return (
        postgresql.insert(table)
        .from_select(list(values), source)
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(table.c.id)
    )


class IdempotencyRepository(UserScoped):
    async def claim(
        self,
        *,
        record_id: str,
        key: str,
        method: str,
        path: str,
        fingerprint: str,
        now: datetime,
        expires_at: datetime,
        order_id: str | None = None,
    ) -> bool:
        """Insert the key as in flight; False if this user already holds it (concurrency-safe).

        ``order_id`` names the order this request will create, so the key and the order
        row go in together without a second statement.
        """
        params = self.claim_params(
            record_id=record_id,
            key=key,
            method=method,
            path=path,
            fingerprint=fingerprint,
            now=now,
            expires_at=expires_at,
            order_id=order_id,
        )
        stmt = claim_statement(self.session.get_bind().dialect.name)
        return (await self.session.execute(stmt, params)).scalar_one_or_none() is not None

    def claim_params(
        self,
        *,
        record_id: str,
        key: str,
        method: str,
        path: str,
        fingerprint: str,
        now: datetime,
        expires_at: datetime,
        order_id: str | None = None,
    ) -> dict[str, Any]:
        """The parameters of ``claim_statement`` (for a caller that sends the claim combined
        with its own writes: ``OrderRepository.claim_and_insert``)."""
        values = {
            "order_id": order_id,
            "id": record_id,
            "user_id": self.user_id,
            "key": key,
            "method": method,
            "path": path,
            "fingerprint": fingerprint,
            "state": "in_flight",
            "locked_at": now,
            "created_at": now,
            "expires_at": expires_at,
            "owner": session_owner(self.session),
        }
        return {f"k_{name}": value for name, value in values.items()}

    def completed_params(
        self, claim: dict[str, Any], *, status: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``claim`` (``claim_params``) as a record inserted already completed with its
        stored response: a request whose every write commits at once (a paper order)
        claims its key with the answer, in its one transaction."""
        return claim | {
            "k_state": "completed",
            "k_response_status": status,
            "k_response_body": body,
        }

    async def get(self, key: str) -> IdempotencyKey | None:
        stmt = select(IdempotencyKey).where(
            IdempotencyKey.user_id == self.user_id, IdempotencyKey.key == key
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def delete_expired_key(self, key: str, now: datetime) -> None:
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.user_id == self.user_id,
                IdempotencyKey.key == key,
                IdempotencyKey.expires_at <= now,
            )
        )

    async def complete(
        self, record_id: str, *, status: int, body: dict[str, Any], order_id: str | None
    ) -> None:
        stmt = update(IdempotencyKey).where(IdempotencyKey.id == record_id)
        if not self.is_system:
            stmt = stmt.where(IdempotencyKey.user_id == self.user_id)
        await self.session.execute(
            stmt.values(
                state="completed", response_status=status, response_body=body, order_id=order_id
            )
        )

    async def point_at_order(self, record_id: str, order_id: str) -> None:
        """Name the order an in-flight claim now waits on (the router's next attempt), so
        reconciliation completes the claim if the process stops before the request does."""
        await self.session.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.id == record_id,
                IdempotencyKey.user_id == self.user_id,
                IdempotencyKey.state == "in_flight",
            )
            .values(order_id=order_id)
        )

    async def release(self, record_id: str) -> None:
        """Forget a claim whose request did nothing (refused before any order was written)."""
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == record_id,
                IdempotencyKey.user_id == self.user_id,
                IdempotencyKey.state == "in_flight",
            )
        )

    async def in_flight_for_order(self, order_id: str) -> IdempotencyKey | None:
        """System: the open claim of an order that reconciliation just resolved."""
        stmt = select(IdempotencyKey).where(
            IdempotencyKey.order_id == order_id, IdempotencyKey.state == "in_flight"
        )
        if not self.is_system:
            stmt = stmt.where(IdempotencyKey.user_id == self.user_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def in_flight_owned_by_others(
        self, owner: str | None, limit: int
    ) -> list[IdempotencyKey]:
        """System: in-flight keys claimed by another process (an owner that may be gone)."""
        stmt = select(IdempotencyKey).where(
            IdempotencyKey.state == "in_flight", IdempotencyKey.owner.is_not(None)
        )
        if owner is not None:
            stmt = stmt.where(IdempotencyKey.owner != owner)
        stmt = stmt.order_by(IdempotencyKey.locked_at).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def release_orphan(self, record_id: str) -> None:
        """System: forget an in-flight claim whose request wrote nothing (no order row)."""
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == record_id, IdempotencyKey.state == "in_flight"
            )
        )

    async def purge_expired(self, now: datetime) -> int:
        """System: drop keys past their retention."""
        result = await self.session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)

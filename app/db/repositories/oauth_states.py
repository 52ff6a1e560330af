"""Queries on ``oauth_states`` (pending OAuth authorizations).

Authorize runs as the user (``for_user``). The callback has no bearer token (the broker
redirects the browser), so it finds its row by the state's hash alone (``for_system``): the
state is the capability, and the row's browser binding is checked before anything is used.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update

from app.db.models import OAuthState
from app.db.repositories.scoped import UserScoped


class OAuthStateRepository(UserScoped):
    def add(self, state: OAuthState) -> None:
        if state.user_id != self.user_id:
            raise PermissionError("state belongs to another user")
        self.session.add(state)

    async def count_pending(self, now: datetime) -> int:
        """The user's authorizations not yet used and not yet expired."""
        stmt = select(func.count()).where(
            OAuthState.user_id == self.user_id,
            OAuthState.consumed_at.is_(None),
            OAuthState.expires_at > now,
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def get_by_hash(self, state_hash: str) -> OAuthState | None:
        stmt = select(OAuthState).where(OAuthState.state_hash == state_hash)
        if not self.is_system:
            stmt = stmt.where(OAuthState.user_id == self.user_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def consume(self, state_hash: str, now: datetime) -> bool:
        """Mark the state used; True for exactly one caller, however many race.

        One conditional UPDATE: Postgres re-checks ``consumed_at IS NULL`` on the locked row
        after waiting for a concurrent consumer, SQLite has a single writer.
        """
        stmt = (
            update(OAuthState)
            .where(OAuthState.state_hash == state_hash, OAuthState.consumed_at.is_(None))
            .values(consumed_at=now)
        )
        if not self.is_system:
            stmt = stmt.where(OAuthState.user_id == self.user_id)
        result = cast(CursorResult[Any], await self.session.execute(stmt))
        return result.rowcount == 1

    async def purge(self, before: datetime) -> int:
        """System: delete states that expired before ``before``; returns how many."""
        if not self.is_system:
            raise PermissionError("purging spans every user")
        result = cast(
            CursorResult[Any],
            await self.session.execute(delete(OAuthState).where(OAuthState.expires_at < before)),
        )
        return result.rowcount

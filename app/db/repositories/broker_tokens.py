"""Queries on ``broker_tokens`` (encrypted credentials), scoped to one user.

Only ``TokenVault`` uses this repository: it never decrypts anything, it only finds rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from app.db.models import BrokerToken
from app.db.repositories.scoped import UserScoped


class BrokerTokenRepository(UserScoped):
    def add(self, token: BrokerToken) -> None:
        if not self.is_system and token.user_id != self.user_id:
            raise PermissionError("token belongs to another user")
        self.session.add(token)

    async def active_for_connection(
        self, connection_id: str, *, for_update: bool = False
    ) -> BrokerToken | None:
        """The newest unrevoked token of the connection, if any."""
        stmt = select(BrokerToken).where(
            BrokerToken.connection_id == connection_id, BrokerToken.revoked_at.is_(None)
        )
        if not self.is_system:
            stmt = stmt.where(BrokerToken.user_id == self.user_id)
        if for_update:
            stmt = stmt.with_for_update()
        stmt = stmt.order_by(BrokerToken.created_at.desc(), BrokerToken.id.desc()).limit(1)
        return (await self.session.execute(stmt)).scalars().first()

    async def active_for_connections(self, connection_ids: Sequence[str]) -> dict[str, BrokerToken]:
        """The newest unrevoked token of each of these connections that has one."""
        if not connection_ids:
            return {}
        stmt = select(BrokerToken).where(
            BrokerToken.connection_id.in_(list(connection_ids)), BrokerToken.revoked_at.is_(None)
        )
        if not self.is_system:
            stmt = stmt.where(BrokerToken.user_id == self.user_id)
        stmt = stmt.order_by(BrokerToken.created_at.desc(), BrokerToken.id.desc())
        found: dict[str, BrokerToken] = {}
        for token in (await self.session.execute(stmt)).scalars():
            found.setdefault(token.connection_id, token)
        return found

    async def exists_for_connection(self, connection_id: str) -> bool:
        """Whether the connection has any token, revoked or not (tells revoked from missing)."""
        stmt = select(BrokerToken.id).where(BrokerToken.connection_id == connection_id)
        if not self.is_system:
            stmt = stmt.where(BrokerToken.user_id == self.user_id)
        return (await self.session.execute(stmt.limit(1))).first() is not None

    async def revoke_for_connection(self, connection_id: str, at: datetime) -> int:
        """Mark every unrevoked token of the connection revoked; returns how many."""
        stmt = (
            update(BrokerToken)
            .where(BrokerToken.connection_id == connection_id, BrokerToken.revoked_at.is_(None))
            .values(revoked_at=at, updated_at=at)
        )
        if not self.is_system:
            stmt = stmt.where(BrokerToken.user_id == self.user_id)
        result = cast(CursorResult[Any], await self.session.execute(stmt))
        return result.rowcount

    async def needing_rewrap(
        self, primary_version: int, *, limit: int = 500, after_id: str | None = None
    ) -> Sequence[BrokerToken]:
        """System: tokens (revoked ones too) not wrapped under ``primary_version``, by id."""
        stmt = select(BrokerToken).where(BrokerToken.key_version != primary_version)
        if not self.is_system:
            stmt = stmt.where(BrokerToken.user_id == self.user_id)
        if after_id is not None:
            stmt = stmt.where(BrokerToken.id > after_id)
        stmt = stmt.order_by(BrokerToken.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

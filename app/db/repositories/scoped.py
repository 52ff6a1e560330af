"""Tenant scoping: every repository on user-owned tables is built for one user.

``UserScoped.for_user(session, user_id)`` is the normal path (API requests). Background
work that must see rows of every user (reconciliation, upstream order updates) uses
``for_system(session)``, which is explicit at each call site and never reachable from a
request handler.
"""

from __future__ import annotations

from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession

SYSTEM = object()


class UserScoped:
    def __init__(self, session: AsyncSession, user_id: str | None) -> None:
        self.session = session
        self._user_id = user_id

    @classmethod
    def for_user(cls, session: AsyncSession, user_id: str) -> Self:
        if not user_id:
            raise ValueError("a user-scoped repository needs a user id")
        return cls(session, user_id)

    @classmethod
    def for_system(cls, session: AsyncSession) -> Self:
        return cls(session, None)

    @property
    def user_id(self) -> str:
        if self._user_id is None:
            raise PermissionError("this repository was built for system work, not for a user")
        return self._user_id

    @property
    def is_system(self) -> bool:
        return self._user_id is None

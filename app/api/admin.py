"""Routes under /v1/admin: ops summaries. Every route needs the ``admin`` role (403 otherwise)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import API_PREFIX
from app.api.deps import AdminUser, State
from app.api.problems import problem_responses
from app.schemas.accounts import ConnectionHealth

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])


@router.get(
    "/connections/health",
    name="get_connection_health",
    responses=problem_responses(401, 403),
)
async def get_connection_health(_admin: AdminUser, state: State) -> ConnectionHealth:
    """How many connections each broker has in each status, across every user."""
    return await state.connections.health()

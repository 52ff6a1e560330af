"""Routes under /v1/admin: ops summaries. Every route needs the ``admin`` role (403 otherwise)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import API_PREFIX
from app.api.deps import AdminUser, State
from app.api.problems import problem_responses
from app.schemas.accounts import ConnectionHealth
from app.schemas.admin import AuditVerification, KillSwitches

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])


@router.get(
    "/connections/health",
    name="get_connection_health",
    responses=problem_responses(401, 403),
)
async def get_connection_health(_admin: AdminUser, state: State) -> ConnectionHealth:
    """How many connections each broker has in each status, across every user."""
    return await state.connections.health()


@router.get("/kill-switches", name="get_kill_switches", responses=problem_responses(401, 403))
async def get_kill_switches(_admin: AdminUser, state: State) -> KillSwitches:
    """The kill-switches in force now, read from the environment at request time."""
    return state.admin.kill_switches()


@router.get("/audit/verify", name="verify_audit_chain", responses=problem_responses(401, 403))
async def verify_audit_chain(_admin: AdminUser, state: State) -> AuditVerification:
    """Check the whole audit chain of live BYOB order actions. A broken chain is still a
    200 answer: ``ok`` is false and ``first_bad_seq`` names the first bad entry."""
    return await state.admin.verify_audit()

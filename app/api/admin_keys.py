"""``GET /v1/admin/keys``: where a key rotation stands (admin role required)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import API_PREFIX
from app.api.deps import AdminUser, State
from app.api.problems import problem_responses
from app.schemas.keys import KeyStatusOut, KeyVersionCount, RewrapRunOut

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])


@router.get("/keys", name="get_key_status", responses=problem_responses(401, 403))
async def get_key_status(_admin: AdminUser, state: State) -> KeyStatusOut:
    """Tokens per key-encryption-key version and the re-wrap's progress.

    After `brokerage keys rotate`, `pending_rewrap` falls to 0 as the background re-wrap
    (or `brokerage keys rewrap`) works through the tokens; then `brokerage keys retire
    --below <primary>` can retire the old versions.
    """
    status = await state.keys.status()
    last = status.last_run
    return KeyStatusOut(
        primary_version=status.primary_version,
        min_decryption_version=status.min_decryption_version,
        tokens_by_version=[
            KeyVersionCount(version=v, tokens=n)
            for v, n in sorted(status.tokens_by_version.items())
        ],
        pending_rewrap=status.pending_rewrap,
        rewrap_running_here=status.rewrap_running,
        last_run_here=None
        if last is None
        else RewrapRunOut(
            primary_version=last.primary_version,
            rewrapped=last.rewrapped,
            batches=last.batches,
            remaining=last.remaining,
            failed=len(last.failed),
            stopped=last.stopped,
            seconds=round(last.seconds, 3),
        ),
    )

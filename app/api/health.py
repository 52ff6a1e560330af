"""Liveness, readiness and metrics (outside /v1, no auth)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api.deps import State
from app.api.problems import problem_response, problem_responses
from app.db.migrate import current_revision, head_revision
from app.errors import ServiceUnavailable

router = APIRouter(tags=["operations"])


@router.get("/healthz", name="healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", name="readyz", responses=problem_responses(503))
async def readyz(state: State) -> JSONResponse:
    """The database answers and its schema is at the migrations' head."""
    try:
        async with state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        revision = await current_revision(state.engine)
    except Exception:
        return problem_response(ServiceUnavailable("the database is not reachable"))
    if revision != head_revision():
        return problem_response(ServiceUnavailable("database migrations are not at head"))
    return JSONResponse({"status": "ready", "revision": revision})


@router.get("/metrics", name="metrics", response_class=Response)
async def metrics(state: State) -> Response:
    await state.ops_gauges.refresh(state.ctx.clock())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

"""Liveness, readiness and metrics (outside /v1, no auth)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api.deps import State
from app.api.problems import problem_response, problem_responses
from app.db.migrate import current_revision, head_revision
from app.errors import NotFound, ServiceUnavailable, Unauthorized

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


@router.get(
    "/metrics", name="metrics", response_class=Response, responses=problem_responses(401, 404)
)
async def metrics(
    state: State,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Prometheus metrics, as ``BROKERAGE_METRICS_EXPOSURE`` allows (README, "Operations")."""
    settings = state.settings
    if settings.metrics_exposure == "port":
        return problem_response(NotFound("metrics are served on the metrics port"))
    if settings.metrics_exposure == "token":
        assert settings.metrics_token is not None  # Settings refuses "token" without one
        expected = f"Bearer {settings.metrics_token.get_secret_value()}"
        if authorization is None or not hmac.compare_digest(
            authorization.encode(), expected.encode()
        ):
            return problem_response(Unauthorized("the metrics token is required"))
    await state.ops_gauges.refresh(state.ctx.clock())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

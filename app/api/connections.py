"""Connections: create (paper, API key), list, get, disconnect."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.schemas.accounts import ConnectionCreate, ConnectionOut, ConnectionPage

router = APIRouter(prefix=API_PREFIX, tags=["connections"])

Limit = Annotated[int, Query(ge=1, le=500)]


@router.post(
    "/connections",
    name="create_connection",
    status_code=201,
    responses=problem_responses(400, 401, 413, 422, 503),
)
async def create_connection(
    body: ConnectionCreate, user: CurrentUser, state: State
) -> ConnectionOut:
    return await state.connections.create(user_id=user.user_id, body=body)


@router.get("/connections", name="list_connections", responses=problem_responses(400, 401, 422))
async def list_connections(
    user: CurrentUser, state: State, limit: Limit = 100, cursor: str | None = None
) -> ConnectionPage:
    return await state.connections.page(user_id=user.user_id, limit=limit, cursor=cursor)


@router.get(
    "/connections/{connection_id}", name="get_connection", responses=problem_responses(401, 404)
)
async def get_connection(connection_id: str, user: CurrentUser, state: State) -> ConnectionOut:
    return await state.connections.get(user_id=user.user_id, connection_id=connection_id)


@router.delete(
    "/connections/{connection_id}",
    name="delete_connection",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 404, 503),
)
async def delete_connection(connection_id: str, user: CurrentUser, state: State) -> Response:
    """Disconnect: revoke the credential where possible; the accounts stop taking orders."""
    await state.connections.revoke(user_id=user.user_id, connection_id=connection_id)
    return Response(status_code=204)

"""Connections: create (paper, API key, aggregator), list, get, disconnect; aggregator
connections also get a portal URL and a refresh from the aggregator."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.schemas.accounts import (
    ConnectionCreate,
    ConnectionOut,
    ConnectionPage,
    CredentialsReplace,
    PortalOut,
    PortalRequest,
)
from app.services.aggregators import AggregatorConnections

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
    """Aggregator brokers (``"auth": "aggregator"``, SnapTrade) take no credentials: the
    answer is a ``broken`` connection (nothing linked yet) with a ``portal`` URL where the
    user links the brokerage; ``options.brokerage`` (e.g. ``"SCHWAB"``) goes straight to it.
    """
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
    """Disconnect: revoke the credential where possible; the accounts stop taking orders.

    The token is revoked here first (final: reconnecting makes a new connection), then at
    the broker where it has a revoke endpoint (Alpaca API keys have none: the user deletes
    the key in Alpaca's dashboard). The broker's answer, a failure included, shows in the
    connection's `last_refresh_outcome`; it never makes the old credential usable again.
    """
    await state.connections.revoke(user_id=user.user_id, connection_id=connection_id)
    return Response(status_code=204)


@router.put(
    "/connections/{connection_id}/credentials",
    name="replace_connection_credentials",
    responses=problem_responses(400, 401, 404, 409, 413, 422, 429, 503),
)
async def replace_connection_credentials(
    connection_id: str, body: CredentialsReplace, user: CurrentUser, state: State
) -> ConnectionOut:
    """Re-connect with a fresh API key (the answer to `rotation_due`).

    The key is validated against the broker first and must belong to the same broker
    account; the connection keeps its id and accounts, the old key is forgotten, and
    `rotation_due` is cleared. Same key again or another account's key: 422
    `invalid_credentials`. A revoked connection: 409 `connection_broken` (connect anew).
    """
    return await state.connections.replace_credentials(
        user_id=user.user_id, connection_id=connection_id, body=body
    )


@router.post(
    "/connections/{connection_id}/portal",
    name="connection_portal",
    responses=problem_responses(400, 401, 404, 409, 413, 422, 429, 503),
)
async def connection_portal(
    connection_id: str,
    user: CurrentUser,
    state: State,
    body: Annotated[PortalRequest | None, Body()] = None,
) -> PortalOut:
    """A new portal URL for an aggregator connection: to link a brokerage, or to relink the
    one the aggregator disabled (the connection is ``broken`` until then). Valid once, for
    a few minutes (SnapTrade: 5)."""
    return await AggregatorConnections(state.ctx).portal(
        user_id=user.user_id,
        connection_id=connection_id,
        institution=body.brokerage if body is not None else None,
    )


@router.post(
    "/connections/{connection_id}/refresh",
    name="refresh_connection",
    responses=problem_responses(401, 404, 409, 422, 429, 503),
)
async def refresh_connection(connection_id: str, user: CurrentUser, state: State) -> ConnectionOut:
    """Read an aggregator connection back from the aggregator now (status, display,
    accounts; its open orders are looked up too). Call it when the portal sends the browser
    back; the aggregator's webhooks trigger the same."""
    return await AggregatorConnections(state.ctx).refresh(
        user_id=user.user_id, connection_id=connection_id
    )

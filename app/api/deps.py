"""Annotated dependencies: the caller, the app state, the Idempotency-Key header."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app import errors
from app.api.state import AppState
from app.security.jwt import Principal

_bearer = HTTPBearer(auto_error=False, description="JWT from the identity service")


# Dependencies are ``async def`` even where nothing is awaited: FastAPI runs a plain ``def``
# dependency in a worker thread, a thread hand-off on every request.


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.brokerage
    return state


State = Annotated[AppState, Depends(get_state)]


async def get_principal(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise errors.Unauthorized("a bearer token is required")
    return await state.verifier.verify(credentials.credentials)


CurrentUser = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: CurrentUser) -> Principal:
    if not principal.is_admin:
        raise errors.Forbidden("this route needs the admin role")
    return principal


AdminUser = Annotated[Principal, Depends(get_admin)]


async def get_idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="1..255 printable ASCII characters; keys are kept for 7 days",
        ),
    ] = None,
) -> str:
    if idempotency_key is None or idempotency_key == "":
        raise errors.IdempotencyKeyRequired()
    if (
        len(idempotency_key) > 255
        or not idempotency_key.isascii()
        or not idempotency_key.isprintable()
    ):
        raise errors.InvalidIdempotencyKey()
    return idempotency_key


IdempotencyKey = Annotated[str, Depends(get_idempotency_key)]

"""Plaid Link (Tier C, read-only import) and Plaid's webhooks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.schemas.accounts import ConnectionOut
from app.schemas.plaid import LinkTokenOut, PublicTokenExchange, WebhookOut

router = APIRouter(prefix=API_PREFIX, tags=["plaid"])


@router.post(
    "/plaid/link-token",
    name="create_plaid_link_token",
    responses=problem_responses(401, 422, 429, 503),
)
async def create_plaid_link_token(user: CurrentUser, state: State) -> LinkTokenOut:
    """A Link token for the investments product; the frontend opens Plaid Link with it."""
    return await state.plaid.link_token(user_id=user.user_id)


@router.post(
    "/plaid/exchange",
    name="exchange_plaid_public_token",
    status_code=201,
    responses=problem_responses(400, 401, 413, 422, 429, 503),
)
async def exchange_plaid_public_token(
    body: PublicTokenExchange, user: CurrentUser, state: State
) -> ConnectionOut:
    """Exchange Link's public token: the Linked connection and its investment accounts
    (read-only: orders on them answer 403 ``read_only_account``). Re-linking the same
    login keeps the connection's account ids."""
    return await state.plaid.exchange(user_id=user.user_id, public_token=body.public_token)


@router.post(
    "/webhooks/plaid",
    name="receive_plaid_webhook",
    responses=problem_responses(400, 401, 413, 422, 503),
)
async def receive_plaid_webhook(
    request: Request,
    state: State,
    plaid_verification: Annotated[
        str | None, Header(alias="Plaid-Verification", max_length=4096)
    ] = None,
    user: Annotated[str | None, Query(max_length=255)] = None,
) -> WebhookOut:
    """Called by Plaid, not by users: authenticated by the ES256 JWT in
    ``Plaid-Verification`` (no bearer token). HOLDINGS and INVESTMENTS_TRANSACTIONS
    DEFAULT_UPDATE refresh the Item's accounts; ITEM ERROR ITEM_LOGIN_REQUIRED marks the
    connection broken. A signature that does not verify is 401 and nothing is done."""
    body = await request.body()
    return await state.plaid.webhook(body=body, verification=plaid_verification, user=user)

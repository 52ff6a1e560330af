"""Orders: place (Idempotency-Key), list, get, modify, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from app.api import API_PREFIX
from app.api.deps import CurrentUser, IdempotencyKey, State
from app.api.problems import problem_responses
from app.errors import PROBLEM_JSON
from app.schemas.options import OrderPreviewOut
from app.schemas.orders import Order, OrderCreate, OrderListStatus, OrderPage, OrderUpdateBody

router = APIRouter(prefix=API_PREFIX, tags=["orders"])

Limit = Annotated[int, Query(ge=1, le=500)]


@router.post(
    "/accounts/{account_id}/orders",
    name="place_order",
    status_code=201,
    response_model=Order,
    responses={
        202: {"model": Order, "description": "Sent, outcome unknown: waiting for reconciliation"},
        **problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
    },
)
async def place_order(
    account_id: str,
    body: OrderCreate,
    request: Request,
    user: CurrentUser,
    state: State,
    idempotency_key: IdempotencyKey,
) -> JSONResponse:
    """Place an order. A repeated Idempotency-Key replays the first response exactly."""
    stored = await state.orders.place(
        user_id=user.user_id,
        account_id=account_id,
        body=body,
        idempotency_key=idempotency_key,
        path=request.url.path,
    )
    media_type = PROBLEM_JSON if stored.status >= 400 else "application/json"
    return JSONResponse(
        stored.body, status_code=stored.status, headers=stored.headers, media_type=media_type
    )


@router.post(
    "/accounts/{account_id}/orders/preview",
    name="preview_order",
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def preview_order(
    account_id: str, body: OrderCreate, user: CurrentUser, state: State
) -> OrderPreviewOut:
    """What the order would do (cash and buying-power effect, fees, the broker's warnings and
    rejections), placing nothing and writing nothing; no Idempotency-Key. The same body and
    the same validation and capability gates as placing; kill-switches and the paper-first
    gate do not apply (a preview sends no order). ``source``: ``broker`` where the broker has
    its own preview, else ``estimate`` (the gateway's, from quotes)."""
    return await state.options.preview(user_id=user.user_id, account_id=account_id, body=body)


@router.get(
    "/accounts/{account_id}/orders",
    name="list_account_orders",
    responses=problem_responses(400, 401, 404, 422),
)
async def list_account_orders(
    account_id: str,
    user: CurrentUser,
    state: State,
    status: OrderListStatus = "all",
    limit: Limit = 100,
    cursor: str | None = None,
) -> OrderPage:
    return await state.orders.list_for_account(
        user_id=user.user_id, account_id=account_id, status=status, limit=limit, cursor=cursor
    )


@router.get("/orders/{order_id}", name="get_order", responses=problem_responses(401, 404))
async def get_order(order_id: str, user: CurrentUser, state: State) -> Order:
    return await state.orders.get(user_id=user.user_id, order_id=order_id)


@router.patch(
    "/orders/{order_id}",
    name="modify_order",
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def modify_order(
    order_id: str, body: OrderUpdateBody, user: CurrentUser, state: State
) -> Order:
    """Change quantity, prices or time in force; a replacing broker returns the new order."""
    return await state.orders.modify(user_id=user.user_id, order_id=order_id, body=body)


@router.delete(
    "/orders/{order_id}",
    name="cancel_order",
    responses=problem_responses(401, 404, 409, 429, 503),
)
async def cancel_order(order_id: str, user: CurrentUser, state: State) -> Order:
    return await state.orders.cancel(user_id=user.user_id, order_id=order_id)

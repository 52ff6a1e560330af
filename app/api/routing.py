"""Multi-broker routing: place with a route decision, preview the decision, routing rules."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api import API_PREFIX
from app.api.deps import CurrentUser, IdempotencyKey, State
from app.api.problems import problem_responses
from app.errors import PROBLEM_JSON
from app.schemas.routing import (
    Route,
    RouteDecision,
    RoutedOrder,
    RoutedOrderCreate,
    RoutingRules,
    RoutingRulesIn,
)

router = APIRouter(prefix=API_PREFIX, tags=["routing"])


@router.post(
    "/orders",
    name="place_routed_order",
    status_code=201,
    response_model=RoutedOrder,
    responses={
        202: {
            "model": RoutedOrder,
            "description": "Sent, outcome unknown: waiting for reconciliation; no failover",
        },
        **problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
    },
)
async def place_routed_order(
    body: RoutedOrderCreate,
    request: Request,
    user: CurrentUser,
    state: State,
    idempotency_key: IdempotencyKey,
) -> JSONResponse:
    """Place an order where the router decides (``"account_id": "auto"``), failing over
    only when a broker definitively did not take it, or on a named account. The response
    carries the route: the decision, every account passed over and every attempt."""
    stored = await state.routing.place(
        user_id=user.user_id,
        body=body,
        idempotency_key=idempotency_key,
        path=request.url.path,
    )
    media_type = PROBLEM_JSON if stored.status >= 400 else "application/json"
    return JSONResponse(
        stored.body, status_code=stored.status, headers=stored.headers, media_type=media_type
    )


@router.post(
    "/orders/route",
    name="decide_route",
    responses=problem_responses(400, 401, 404, 413, 422),
)
async def decide_route(body: RoutedOrderCreate, user: CurrentUser, state: State) -> RouteDecision:
    """The route decision alone: no order is written and no broker is called."""
    return await state.routing.decide(user_id=user.user_id, body=body)


@router.get("/routes/{route_id}", name="get_route", responses=problem_responses(401, 404))
async def get_route(route_id: str, user: CurrentUser, state: State) -> Route:
    return await state.routing.get_route(user_id=user.user_id, route_id=route_id)


@router.get("/routing/rules", name="get_routing_rules", responses=problem_responses(401))
async def get_routing_rules(user: CurrentUser, state: State) -> RoutingRules:
    return await state.routing.rules(user_id=user.user_id)


@router.put(
    "/routing/rules",
    name="put_routing_rules",
    responses=problem_responses(400, 401, 403, 413, 422),
)
async def put_routing_rules(body: RoutingRulesIn, user: CurrentUser, state: State) -> RoutingRules:
    """Replace your routing rules: per asset class, your accounts in preference order."""
    return await state.routing.replace_rules(user_id=user.user_id, body=body)

"""Broker webhooks. Authenticated by the broker's signature, not by a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api import API_PREFIX
from app.api.deps import State
from app.api.problems import problem_responses
from app.services.aggregators import AggregatorConnections

router = APIRouter(prefix=API_PREFIX, tags=["webhooks"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "SnapTrade's webhook payload "
                    "(https://docs.snaptrade.com/docs/webhooks)",
                }
            }
        },
    }
}


@router.post(
    "/webhooks/snaptrade",
    name="snaptrade_webhook",
    status_code=204,
    response_class=Response,
    responses=problem_responses(400, 401, 404, 413),
    openapi_extra=_BODY,
)
async def snaptrade_webhook(request: Request, state: State) -> Response:
    """SnapTrade's webhook: the ``Signature`` header must be the HMAC-SHA256 of the payload
    under this deployment's consumer key, and ``eventTimestamp`` recent; otherwise 401
    ``invalid_webhook_signature`` and nothing is processed. A verified event about a
    connection's links, accounts or orders refreshes that connection."""
    await AggregatorConnections(state.ctx).webhook(
        slug="snaptrade", body=await request.body(), headers=request.headers
    )
    return Response(status_code=204)

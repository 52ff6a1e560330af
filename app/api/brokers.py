"""GET /v1/brokers."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.schemas.accounts import BrokerList

router = APIRouter(prefix=API_PREFIX, tags=["brokers"])


@router.get("/brokers", name="list_brokers", responses=problem_responses(401))
async def list_brokers(_user: CurrentUser, state: State) -> BrokerList:
    """Brokers offered for new connections; switched-off or unconfigured ones are absent."""
    return state.connections.list_brokers()

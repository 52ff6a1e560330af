"""The aggregate portfolio across every account of the caller."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.schemas.portfolio import PortfolioOut

router = APIRouter(prefix=API_PREFIX, tags=["portfolio"])


@router.get(
    "/portfolio",
    name="get_portfolio",
    responses=problem_responses(401),
    summary="Balances and positions across all accounts",
    description=(
        "Every account is read at once, each within its broker's timeout. Totals and "
        "per-symbol rows are per currency and mode (paper is never added to live); each "
        "per-symbol row carries its per-account breakdown, never netted. Accounts that "
        "could not be read are listed under `unavailable` with a reason code and their "
        "last good data, which no total includes."
    ),
)
async def get_portfolio(user: CurrentUser, state: State) -> PortfolioOut:
    return await state.portfolio.portfolio(user_id=user.user_id)

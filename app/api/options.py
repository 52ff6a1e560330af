"""Options discovery: expirations and chains of an account's broker."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.brokers.base import OptionRight
from app.schemas.common import DecimalStr
from app.schemas.options import ExpirationList, OptionChain
from app.services.options import DEFAULT_CHAIN_LIMIT, MAX_CHAIN_LIMIT, ChainFilter

router = APIRouter(prefix=API_PREFIX, tags=["options"])

Underlying = Annotated[
    str, Query(min_length=1, max_length=10, pattern=r"^[A-Za-z0-9./]+$", description="AAPL")
]


@router.get(
    "/accounts/{account_id}/options/expirations",
    name="list_option_expirations",
    responses=problem_responses(401, 404, 409, 422, 429, 503),
)
async def list_option_expirations(
    account_id: str, underlying: Underlying, user: CurrentUser, state: State
) -> ExpirationList:
    """The underlying's listed expirations, soonest first. A broker without option discovery
    answers 422 ``options_chain_unsupported``."""
    return await state.options.expirations(
        user_id=user.user_id, account_id=account_id, underlying=underlying
    )


@router.get(
    "/accounts/{account_id}/options/chain",
    name="get_option_chain",
    responses=problem_responses(400, 401, 404, 409, 422, 429, 503),
)
async def get_option_chain(
    account_id: str,
    underlying: Underlying,
    user: CurrentUser,
    state: State,
    expiration: date | None = None,
    right: OptionRight | None = None,
    strike_gte: Annotated[DecimalStr | None, Query()] = None,
    strike_lte: Annotated[DecimalStr | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_CHAIN_LIMIT)] = DEFAULT_CHAIN_LIMIT,
    cursor: str | None = None,
) -> OptionChain:
    """Contracts with their quotes (bid/ask/last, greeks and implied volatility where the
    broker has them, each tagged with its source and time), ordered by expiration, strike,
    call before put; every filter is applied by the gateway whatever the broker can do.
    Cached per account for a few seconds (``BROKERAGE_OPTION_CHAIN_CACHE_SECONDS``, 5 by
    default). A broker without a chain answers 422 ``options_chain_unsupported``."""
    return await state.options.chain(
        user_id=user.user_id,
        account_id=account_id,
        wanted=ChainFilter(
            underlying=underlying,
            expiration=expiration,
            right=right,
            strike_gte=strike_gte,
            strike_lte=strike_lte,
        ),
        limit=limit,
        cursor=cursor,
    )

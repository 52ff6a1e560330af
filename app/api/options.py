"""Options: discovery (expirations and chains of an account's broker) and exercise
instructions for held positions."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from app.api import API_PREFIX
from app.api.deps import CurrentUser, IdempotencyKey, State
from app.api.problems import problem_responses
from app.brokers.base import OptionRight
from app.errors import PROBLEM_JSON
from app.schemas.common import DecimalStr
from app.schemas.options import ExerciseCreate, ExerciseOut, ExpirationList, OptionChain
from app.services.exercise import ExerciseService
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


@router.post(
    "/accounts/{account_id}/positions/{symbol}/exercise",
    name="exercise_option",
    response_model=ExerciseOut,
    responses={
        202: {"model": ExerciseOut, "description": "Sent, the broker's answer was lost"},
        **problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
    },
)
async def exercise_option(
    account_id: str,
    symbol: str,
    body: ExerciseCreate,
    request: Request,
    user: CurrentUser,
    state: State,
    idempotency_key: IdempotencyKey,
) -> JSONResponse:
    """An exercise instruction for a held long option position (``symbol``: its OCC symbol,
    padded or unpadded): ``exercise`` now, or ``do_not_exercise`` automatically at expiry.
    Only where the broker takes them (``capabilities.options.exercise`` is ``native``:
    Alpaca); elsewhere 422 ``unsupported_order`` before any request. Gated like an order
    (403 ``read_only_account``, 503 ``live_trading_disabled``), audited, and an
    Idempotency-Key is required with the orders' semantics. The broker's refusal (no long
    position, a short one, outside its hours) is 422 ``broker_rejected``. What an exercise
    does to the account arrives as transactions and order events (``lifecycle``)."""
    stored = await ExerciseService(state.ctx).instruct(
        user_id=user.user_id,
        account_id=account_id,
        symbol=symbol,
        body=body,
        idempotency_key=idempotency_key,
        path=request.url.path,
    )
    media_type = PROBLEM_JSON if stored.status >= 400 else "application/json"
    return JSONResponse(
        stored.body, status_code=stored.status, headers=stored.headers, media_type=media_type
    )

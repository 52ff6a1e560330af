"""Accounts, balances, positions, transactions, quotes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.schemas.accounts import (
    AccountOut,
    AccountPage,
    BalancesOut,
    PositionList,
    PositionOut,
    QuotesOut,
    TransactionList,
)
from app.schemas.common import QueryDateTime, as_utc

router = APIRouter(prefix=API_PREFIX, tags=["accounts"])

Limit = Annotated[int, Query(ge=1, le=500)]


@router.get("/accounts", name="list_accounts", responses=problem_responses(400, 401, 422))
async def list_accounts(
    user: CurrentUser, state: State, limit: Limit = 100, cursor: str | None = None
) -> AccountPage:
    return await state.accounts.page(user_id=user.user_id, limit=limit, cursor=cursor)


@router.get("/accounts/{account_id}", name="get_account", responses=problem_responses(401, 404))
async def get_account(account_id: str, user: CurrentUser, state: State) -> AccountOut:
    return await state.accounts.get(user_id=user.user_id, account_id=account_id)


@router.get(
    "/accounts/{account_id}/balances",
    name="get_balances",
    responses=problem_responses(401, 404, 409, 429, 503),
)
async def get_balances(account_id: str, user: CurrentUser, state: State) -> BalancesOut:
    return await state.accounts.balances(user_id=user.user_id, account_id=account_id)


@router.get(
    "/accounts/{account_id}/positions",
    name="list_positions",
    responses=problem_responses(401, 404, 409, 429, 503),
)
async def list_positions(account_id: str, user: CurrentUser, state: State) -> PositionList:
    return await state.accounts.positions(user_id=user.user_id, account_id=account_id)


@router.get(
    "/accounts/{account_id}/positions/{symbol}",
    name="get_position",
    responses=problem_responses(401, 404, 409, 429, 503),
)
async def get_position(
    account_id: str, symbol: str, user: CurrentUser, state: State
) -> PositionOut:
    return await state.accounts.position(user_id=user.user_id, account_id=account_id, symbol=symbol)


@router.get(
    "/accounts/{account_id}/transactions",
    name="list_transactions",
    responses=problem_responses(401, 404, 409, 422, 429, 503),
)
async def list_transactions(
    account_id: str,
    user: CurrentUser,
    state: State,
    start: QueryDateTime | None = None,
    end: QueryDateTime | None = None,
    type: Annotated[str | None, Query(max_length=40)] = None,
) -> TransactionList:
    return await state.accounts.transactions(
        user_id=user.user_id,
        account_id=account_id,
        start=as_utc(start, "start"),
        end=as_utc(end, "end"),
        type_=type,
    )


@router.get("/quotes", name="get_quotes", responses=problem_responses(401, 404, 409, 422, 429, 503))
async def get_quotes(
    user: CurrentUser,
    state: State,
    symbols: Annotated[str, Query(min_length=1, max_length=1000, description="AAPL,MSFT")],
    account_id: str | None = None,
) -> QuotesOut:
    return await state.accounts.quotes(
        user_id=user.user_id, symbols=symbols.split(","), account_id=account_id
    )

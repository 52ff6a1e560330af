"""Accounts, balances, positions, transactions and quotes, read through each account's adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import (
    AssetClass,
    BrokerAdapter,
    OptionContract,
    Position,
    is_option_symbol,
)
from app.brokers.environments import SANDBOX_LABEL, SANDBOX_MODE
from app.brokers.rows import is_partial
from app.brokers.symbols import normalize_symbol
from app.db.models import Account
from app.db.repositories.connections import AccountRepository
from app.schemas.accounts import (
    AccountOut,
    AccountPage,
    BalancesOut,
    PositionList,
    PositionOut,
    QuoteOut,
    QuotesOut,
    TransactionList,
    TransactionOut,
)
from app.schemas.common import decode_time_cursor, encode_time_cursor
from app.schemas.options import ContractOut
from app.services.broker_errors import to_app_error
from app.services.connections import mark_broken
from app.services.context import ServiceContext

T = TypeVar("T")
MAX_QUOTE_SYMBOLS = 50


def account_out(account: Account) -> AccountOut:
    label = {"A": "Live", "B": "Live", "C": "Linked", "paper": "Paper"}[account.tier]
    if account.mode == SANDBOX_MODE:
        label = SANDBOX_LABEL
    return AccountOut(
        id=account.id,
        connection_id=account.connection_id,
        broker=account.broker_slug,
        tier=account.tier,  # type: ignore[arg-type]
        label=label,  # type: ignore[arg-type]
        mode=account.mode,  # type: ignore[arg-type]
        name=account.name,
        number_masked=account.number_masked,
        currency=account.currency,
        can_trade=account.can_trade,
    )


def position_contract(position: Position) -> OptionContract | None:
    """An option position's contract: the adapter's, else parsed from its OCC symbol."""
    if position.contract is not None:
        return position.contract
    if position.asset_class is AssetClass.option and is_option_symbol(position.symbol):
        return OptionContract.parse(position.symbol)
    return None


def position_out(position: Position) -> PositionOut:
    contract = position_contract(position)
    return PositionOut(
        symbol=position.symbol,
        asset_class=position.asset_class,
        quantity=position.quantity,
        avg_cost=position.avg_cost,
        current_price=position.current_price,
        market_value=position.market_value,
        unrealized_pl=position.unrealized_pl,
        as_of=position.as_of,
        contract=ContractOut.of(contract) if contract is not None else None,
    )


class AccountService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def page(self, *, user_id: str, limit: int, cursor: str | None) -> AccountPage:
        after = decode_time_cursor(cursor)
        async with self._ctx.sessionmaker() as session:
            rows = await AccountRepository.for_user(session, user_id).page(
                limit=limit + 1, after=after
            )
        page = rows[:limit]
        next_cursor = (
            encode_time_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        )
        return AccountPage(items=[account_out(a) for a in page], next_cursor=next_cursor)

    async def get(self, *, user_id: str, account_id: str) -> AccountOut:
        async with self._ctx.sessionmaker() as session:
            account = await AccountRepository.for_user(session, user_id).get(account_id)
        if account is None:
            raise errors.NotFound("no such account")
        return account_out(account)

    async def _read(
        self,
        user_id: str,
        account_id: str,
        call: Callable[[BrokerAdapter, str], Awaitable[T]],
    ) -> T:
        return await self._ctx.with_fresh_tokens(lambda: self._read_once(user_id, account_id, call))

    async def _read_once(
        self,
        user_id: str,
        account_id: str,
        call: Callable[[BrokerAdapter, str], Awaitable[T]],
    ) -> T:
        async with self._ctx.sessionmaker() as session:
            found = await AccountRepository.for_user(session, user_id).get_with_connection(
                account_id
            )
            if found is None:
                raise errors.NotFound("no such account")
            account, connection = found
            if connection.status == "revoked":
                raise errors.ConnectionBroken("the connection was disconnected")
            adapter = await self._ctx.adapter_for(session, connection, for_order=False)
        try:
            return await call(adapter, account.broker_account_ref)
        except broker_errors.ReauthorizationRequired as exc:
            # Definitive until the user signs in again (Plaid ITEM_LOGIN_REQUIRED).
            await mark_broken(self._ctx, user_id, connection.id, exc.reason)
            raise to_app_error(exc) from exc
        except broker_errors.BrokerError as exc:
            raise to_app_error(exc) from exc

    async def balances(self, *, user_id: str, account_id: str) -> BalancesOut:
        b = await self._read(user_id, account_id, lambda a, ref: a.get_balances(ref))
        return BalancesOut(
            cash=b.cash,
            equity=b.equity,
            buying_power=b.buying_power,
            currency=b.currency,
            as_of=b.as_of,
        )

    async def positions(self, *, user_id: str, account_id: str) -> PositionList:
        items = await self._read(user_id, account_id, lambda a, ref: a.get_positions(ref))
        return PositionList(items=[position_out(p) for p in items], partial=is_partial(items))

    async def position(self, *, user_id: str, account_id: str, symbol: str) -> PositionOut:
        wanted = normalize_symbol(symbol)
        if is_option_symbol(wanted):  # padded or not: the canonical form
            wanted = OptionContract.parse(wanted).symbol
        found = await self._read(user_id, account_id, lambda a, ref: a.get_position(ref, wanted))
        if found is None:
            raise errors.NotFound(f"no position in {wanted}")
        return position_out(found)

    async def transactions(
        self,
        *,
        user_id: str,
        account_id: str,
        start: datetime | None,
        end: datetime | None,
        type_: str | None,
    ) -> TransactionList:
        items = await self._read(
            user_id, account_id, lambda a, ref: a.get_transactions(ref, start, end, type_)
        )
        return TransactionList(
            items=[
                TransactionOut(
                    id=t.transaction_id,
                    type=t.type,
                    occurred_at=t.occurred_at,
                    amount=t.amount,
                    symbol=t.symbol,
                    quantity=t.quantity,
                    price=t.price,
                    description=t.description,
                )
                for t in items
            ],
            partial=is_partial(items),
        )

    async def quotes(
        self, *, user_id: str, symbols: list[str], account_id: str | None
    ) -> QuotesOut:
        wanted = sorted({normalize_symbol(s) for s in symbols if s.strip()})
        if not wanted:
            raise errors.ValidationFailed("give at least one symbol")
        if len(wanted) > MAX_QUOTE_SYMBOLS:
            raise errors.ValidationFailed(f"at most {MAX_QUOTE_SYMBOLS} symbols")
        if account_id is not None:
            quotes = await self._read(user_id, account_id, lambda a, _ref: a.get_quotes(wanted))
        else:
            try:
                quotes = await self._ctx.paper_engine.quotes(wanted)
            except broker_errors.BrokerError as exc:
                raise to_app_error(exc) from exc
        return QuotesOut(
            quotes={
                symbol: QuoteOut(bid=q.bid, ask=q.ask, last=q.last, as_of=q.as_of)
                for symbol, q in quotes.items()
            }
        )

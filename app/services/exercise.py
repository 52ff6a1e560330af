"""Exercise instructions for a held option position, where the broker takes them (Alpaca).

``POST /v1/accounts/{account_id}/positions/{symbol}/exercise`` with ``{"action": "exercise"
| "do_not_exercise"}`` is gated like an order (app/services/orders.py), in the same order:

1. the account is the caller's (404 otherwise) and its connection active (409
   ``connection_broken``);
2. its tier allows orders and the vault hands out an order credential (403
   ``read_only_account``);
3. kill-switches, read now (503 ``live_trading_disabled``; BYOB only);
4. the capability: ``capabilities.options.exercise`` is ``native`` and the adapter implements
   ``SupportsOptionExercise`` (422 ``unsupported_order`` otherwise), then the symbol: an OCC
   contract (422 ``invalid_option_symbol``) that has not expired (422 ``option_expired``).

The paper-first gate does not apply: an instruction opens nothing, it only ends a position
the user already holds. All of this runs before anything is written or sent.

The ``Idempotency-Key`` has the orders' semantics (replay of the stored answer, 422
``idempotency_key_reused`` for another body or another contract, 409 while in flight, the
key released when nothing reached the broker). On a live BYOB connection the instruction is
appended to the audit chain (action ``exercise``) once before the broker call (outcome
``pending:<action>``) and once with its result (``accepted:<action>``,
``rejected:<action>:<code>``, ``unknown:<action>``); the entries' ``order_id`` is the
instruction's id (``exr_...``), which the response returns.

An instruction whose answer is lost (timeout, 5xx after sending) is answered 202 with
``status: unknown`` and is not re-sent by the gateway: what the broker did shows in the
position and, for an exercise, in the account's transactions and the order stream (the
lifecycle step of app/services/lifecycle.py).
"""

from __future__ import annotations

import functools
import logging
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import (
    BrokerAdapter,
    InvalidOptionSymbol,
    OptionContract,
    Support,
    SupportsOptionExercise,
)
from app.db.models import Account, Connection
from app.db.repositories.connections import AccountRepository
from app.db.repositories.idempotency import IdempotencyRepository
from app.ids import new_id
from app.schemas.options import ContractOut, ExerciseAction, ExerciseCreate, ExerciseOut
from app.security.audit import AuditRecord, request_fingerprint
from app.services.broker_errors import to_app_error
from app.services.clock import utcnow
from app.services.context import ServiceContext, ensure_usable
from app.services.kill_switches import is_live_byob
from app.services.orders import (
    SendOutcome,
    SendResult,
    StoredResponse,
    answer_existing,
    ensure_live_orders_allowed,
    market_today,
)

log = logging.getLogger(__name__)

AUDIT_ACTION: Literal["exercise"] = "exercise"


def parse_contract(symbol: str) -> OptionContract:
    try:
        return OptionContract.parse(symbol)
    except InvalidOptionSymbol as exc:
        raise errors.InvalidOptionSymbol(str(exc)) from None


class ExerciseService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def instruct(
        self,
        *,
        user_id: str,
        account_id: str,
        symbol: str,
        body: ExerciseCreate,
        idempotency_key: str,
        path: str,
    ) -> StoredResponse:
        return await self._ctx.with_fresh_tokens(
            lambda: self._instruct(
                user_id=user_id,
                account_id=account_id,
                symbol=symbol,
                body=body,
                idempotency_key=idempotency_key,
                path=path,
            )
        )

    async def _instruct(
        self,
        *,
        user_id: str,
        account_id: str,
        symbol: str,
        body: ExerciseCreate,
        idempotency_key: str,
        path: str,
    ) -> StoredResponse:
        # The path names the contract: a padded and an unpadded spelling of one contract
        # are one request (the fingerprint uses the canonical form when there is one).
        try:
            canonical = OptionContract.parse(symbol).symbol
        except InvalidOptionSymbol:
            canonical = symbol
        fingerprint = request_fingerprint(
            "POST",
            f"/v1/accounts/{account_id}/positions/{canonical}/exercise",
            body.model_dump(mode="json"),
        )
        async with self._ctx.sessionmaker() as session:
            keys = IdempotencyRepository.for_user(session, user_id)
            try:
                account, connection, adapter, contract = await self._gate(
                    session, user_id, account_id, symbol
                )
            except errors.AppError:
                await session.rollback()
                answer = await self._held(keys, idempotency_key, fingerprint)
                if answer is not None:
                    return answer
                raise

            now = utcnow()
            record_id = new_id("idem")
            claim = functools.partial(
                keys.claim,
                record_id=record_id,
                key=idempotency_key,
                method="POST",
                path=path,
                fingerprint=fingerprint,
                now=now,
                expires_at=now + self._ctx.settings.idempotency_ttl,
            )
            if is_live_byob(connection.ownership, connection.tier):
                await self._ctx.audit.lock_before_claim(session, user_id)
            if not await claim():
                answer = await self._held(keys, idempotency_key, fingerprint)
                if answer is not None:
                    return answer
                if not await claim():
                    await session.rollback()
                    raise errors.RequestInProgress(headers={"Retry-After": "1"})

            instruction_id = new_id("exr")
            action = body.action
            await self._audit(
                session, connection, account, instruction_id, fingerprint, f"pending:{action}"
            )
            await session.commit()

            failure = await _send(adapter, account, contract, action, instruction_id)
            now = utcnow()
            result = SendResult(None, failure)
            outcome = SendOutcome.accepted if failure is None else result.outcome
            if outcome is SendOutcome.not_sent:
                # Nothing reached the broker: the key is released so a retry sends afresh.
                assert result.failure is not None
                problem = to_app_error(result.failure)
                await keys.release(record_id)
                await self._audit(
                    session,
                    connection,
                    account,
                    instruction_id,
                    fingerprint,
                    f"rejected:{action}:{problem.code}",
                )
                await session.commit()
                raise problem
            if outcome is SendOutcome.rejected:
                assert result.failure is not None
                problem = to_app_error(result.failure)
                response = StoredResponse(
                    problem.status,
                    problem.to_problem() | {"exercise_id": instruction_id},
                    problem.headers,
                )
                audit_outcome = f"rejected:{action}:{problem.code}"
            else:
                status: Literal["accepted", "unknown"] = (
                    "accepted" if outcome is SendOutcome.accepted else "unknown"
                )
                out = ExerciseOut(
                    id=instruction_id,
                    account_id=account.id,
                    symbol=contract.symbol,
                    contract=ContractOut.of(contract),
                    action=action,
                    status=status,
                    requested_at=now,
                )
                response = StoredResponse(
                    200 if status == "accepted" else 202, out.model_dump(mode="json")
                )
                audit_outcome = f"{status}:{action}"
            await keys.complete(
                record_id, status=response.status, body=response.body, order_id=None
            )
            await self._audit(
                session, connection, account, instruction_id, fingerprint, audit_outcome
            )
            await session.commit()
            return response

    async def _gate(
        self, session: AsyncSession, user_id: str, account_id: str, symbol: str
    ) -> tuple[Account, Connection, SupportsOptionExercise, OptionContract]:
        # 1. ownership, connection active
        found = await AccountRepository.for_user(session, user_id).get_with_connection(account_id)
        if found is None:
            raise errors.NotFound("no such account")
        account, connection = found
        ensure_usable(connection)
        # 2. the tier allows orders; the vault hands out an order credential
        spec = self._ctx.spec_for(connection)
        if account.tier == "C" or not spec.capabilities.place_orders:
            raise errors.ReadOnlyAccount()
        adapter: BrokerAdapter = await self._ctx.adapter_for(session, connection, for_order=True)
        if not account.can_trade:
            raise errors.ConnectionBroken("this account does not accept orders")
        # 3. kill-switches
        ensure_live_orders_allowed(connection)
        # 4. the capability, then the contract
        if spec.capabilities.options.exercise is not Support.native or not isinstance(
            adapter, SupportsOptionExercise
        ):
            raise errors.UnsupportedOrder(
                f"{spec.name} takes no exercise instructions through its API"
            )
        contract = parse_contract(symbol)
        if contract.is_expired(market_today(utcnow())):
            raise errors.OptionExpired(
                f"{contract.symbol} expired on {contract.expiration.isoformat()}"
            )
        return account, connection, adapter, contract

    async def _held(
        self, keys: IdempotencyRepository, key: str, fingerprint: str
    ) -> StoredResponse | None:
        existing = await keys.get(key)
        if existing is None:
            return None
        now = utcnow()
        answer = answer_existing(existing, fingerprint, now)
        if answer is None:
            await keys.delete_expired_key(key, now)
        return answer

    async def _audit(
        self,
        session: AsyncSession,
        connection: Connection,
        account: Account,
        instruction_id: str,
        fingerprint: str,
        outcome: str,
    ) -> None:
        if not is_live_byob(connection.ownership, connection.tier):
            return
        record = AuditRecord(
            user_id=account.user_id,
            action=AUDIT_ACTION,
            order_id=instruction_id,
            account_id=account.id,
            connection_id=connection.id,
            broker_slug=connection.broker_slug,
            request_fingerprint=fingerprint,
            outcome=outcome,
        )
        await self._ctx.audit.append(session, record, occurred_at=utcnow())


async def _send(
    adapter: SupportsOptionExercise,
    account: Account,
    contract: OptionContract,
    action: ExerciseAction,
    instruction_id: str,
) -> broker_errors.BrokerError | None:
    """Send the instruction once; never raises (like ``send_order``)."""
    try:
        if action is ExerciseAction.exercise:
            await adapter.exercise_option(account.broker_account_ref, contract.symbol)
        else:
            await adapter.do_not_exercise(account.broker_account_ref, contract.symbol)
    except broker_errors.BrokerError as exc:
        return exc
    except Exception:
        log.exception("exercise instruction failed unexpectedly", extra={"id": instruction_id})
        return broker_errors.OutcomeUnknown("unexpected error during an exercise instruction")
    return None

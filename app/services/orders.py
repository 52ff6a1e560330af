"""Placing, changing and cancelling orders: at most once, never silently lost.

Placement (ARCHITECTURE.md, "Orders"): an existing Idempotency-Key is answered first
(replay, 422 on a changed body, 409 while in flight); then the gates; then the order row
(``pending_submit``) and the key are committed *before* the broker is called; the broker's
answer (or ``unknown`` when the outcome cannot be known) is committed with its event and
the stored response before the client hears anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import (
    BrokerAdapter,
    BrokerOrder,
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Support,
    TimeInForce,
)
from app.brokers.symbols import normalize_symbol
from app.db.models import Account, Connection, IdempotencyKey, Order
from app.db.repositories.connections import AccountRepository
from app.db.repositories.idempotency import IdempotencyRepository
from app.db.repositories.orders import OrderRepository
from app.ids import client_order_id_for, new_id
from app.observability import ORDERS_TOTAL
from app.schemas.common import decode_time_cursor, encode_time_cursor
from app.schemas.orders import Order as OrderOut
from app.schemas.orders import OrderCreate, OrderListStatus, OrderPage, OrderUpdateBody
from app.services.broker_errors import to_app_error
from app.services.clock import utcnow
from app.services.context import ServiceContext, ensure_usable
from app.services.order_state import CLOSED, OPEN, TERMINAL
from app.services.order_updates import append_order_event, apply_broker_order, set_status
from app.services.pretrade import check_order

log = logging.getLogger(__name__)

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response exactly as first sent, replayed for a repeated Idempotency-Key."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def request_fingerprint(method: str, path: str, body: OrderCreate) -> str:
    canonical = json.dumps(
        {"method": method, "path": path, "body": body.model_dump(mode="json")},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _is_fractional(body: OrderCreate) -> bool:
    return body.quantity != body.quantity.to_integral_value()


class OrderService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    # --- place -----------------------------------------------------------------------

    async def place(
        self, *, user_id: str, account_id: str, body: OrderCreate, idempotency_key: str, path: str
    ) -> StoredResponse:
        return await self._ctx.with_fresh_tokens(
            lambda: self._place(
                user_id=user_id,
                account_id=account_id,
                body=body,
                idempotency_key=idempotency_key,
                path=path,
            )
        )

    async def _place(
        self, *, user_id: str, account_id: str, body: OrderCreate, idempotency_key: str, path: str
    ) -> StoredResponse:
        fingerprint = request_fingerprint("POST", path, body)
        async with self._ctx.sessionmaker() as session:
            keys = IdempotencyRepository.for_user(session, user_id)
            existing = await keys.get(idempotency_key)
            if existing is not None:
                answer = _answer_existing(existing, fingerprint, utcnow())
                if answer is not None:
                    return answer
                await keys.delete_expired_key(idempotency_key, utcnow())

            account, connection, adapter = await self._gate(session, user_id, account_id, body)

            now = utcnow()
            record_id = new_id("idem")
            order = _new_order(user_id, account, body, now)
            claimed = await keys.claim(
                record_id=record_id,
                key=idempotency_key,
                method="POST",
                path=path,
                fingerprint=fingerprint,
                now=now,
                expires_at=now + self._ctx.settings.idempotency_ttl,
                order_id=order.id,
            )
            if not claimed:
                await session.rollback()
                raced = await keys.get(idempotency_key)
                answer = None if raced is None else _answer_existing(raced, fingerprint, now)
                if answer is not None:
                    return answer
                raise errors.RequestInProgress(headers={"Retry-After": "1"})

            OrderRepository.for_user(session, user_id).add(order)
            await session.flush()
            append_order_event(session, order, now)
            await session.commit()

            response = await self._submit(session, adapter, account, order, record_id)
            ORDERS_TOTAL.labels(broker=connection.broker_slug, outcome=str(order.status)).inc()
            return response

    async def _gate(
        self, session: AsyncSession, user_id: str, account_id: str, body: OrderCreate
    ) -> tuple[Account, Connection, BrokerAdapter]:
        found = await AccountRepository.for_user(session, user_id).get_with_connection(account_id)
        if found is None:
            raise errors.NotFound("no such account")
        account, connection = found
        spec = self._ctx.spec_for(connection)
        if account.tier == "C" or not spec.capabilities.place_orders:
            raise errors.ReadOnlyAccount()
        ensure_usable(connection)
        if not account.can_trade:
            raise errors.ConnectionBroken("this account does not accept orders")
        check_order(
            spec.capabilities,
            symbol=normalize_symbol(body.symbol),
            order_type=body.order_type,
            time_in_force=body.time_in_force,
            quantity_is_fractional=_is_fractional(body),
            extended_hours=body.extended_hours,
        )
        adapter = await self._ctx.adapter_for(session, connection, for_order=True)
        try:
            await adapter.check_symbol(normalize_symbol(body.symbol))
        except broker_errors.BrokerError as exc:
            raise to_app_error(exc) from exc
        return account, connection, adapter

    async def _submit(
        self,
        session: AsyncSession,
        adapter: BrokerAdapter,
        account: Account,
        order: Order,
        record_id: str,
    ) -> StoredResponse:
        request = OrderRequest(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=OrderSide(order.side),
            quantity=order.quantity,
            order_type=OrderType(order.order_type),
            time_in_force=TimeInForce(order.time_in_force),
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            extended_hours=order.extended_hours,
        )
        report = None
        failure: broker_errors.BrokerError | None = None
        try:
            report = await adapter.place_order(account.broker_account_ref, request)
        except broker_errors.BrokerError as exc:
            failure = exc
        except Exception:
            # A bug or an unexpected library error after the request may have left: treat
            # it as an unknown outcome (reconciliation looks the order up), never as a 500
            # that would leave the order and its key hanging.
            log.exception("placement failed unexpectedly", extra={"order_id": order.id})
            failure = broker_errors.OutcomeUnknown("unexpected error during placement")

        repo = OrderRepository.for_system(session)
        fresh = await repo.get(order.id, for_update=True)
        assert fresh is not None  # committed above, and orders are never deleted
        now = utcnow()
        keys = IdempotencyRepository.for_user(session, fresh.user_id)
        if report is not None:
            apply_broker_order(session, fresh, report, now)
            response = StoredResponse(201, OrderOut.from_row(fresh).model_dump(mode="json"))
        elif isinstance(failure, broker_errors.Transient):
            # Nothing reached the broker and a retry is safe: the key is released so the
            # client's retry (same key, after Retry-After) places the order afresh.
            problem = to_app_error(failure)
            if fresh.status == OrderStatus.pending_submit.value:
                set_status(session, fresh, OrderStatus.rejected, now, reject_reason=failure.reason)
            await keys.release(record_id)
            await session.commit()
            order.status = fresh.status
            body = problem.to_problem() | {"order_id": fresh.id}
            return StoredResponse(problem.status, body, problem.headers)
        elif isinstance(
            failure,
            broker_errors.Rejected
            | broker_errors.AuthenticationFailed
            | broker_errors.NotSupported,
        ):
            # Definitive: the broker did not take the order.
            problem = to_app_error(failure)
            if fresh.status == OrderStatus.pending_submit.value:
                set_status(session, fresh, OrderStatus.rejected, now, reject_reason=failure.reason)
            body = problem.to_problem() | {"order_id": fresh.id}
            response = StoredResponse(problem.status, body, problem.headers)
        else:
            # OutcomeUnknown: the order may exist at the broker; reconciliation decides.
            log.warning(
                "order outcome unknown; waiting for reconciliation",
                extra={"order_id": fresh.id, "broker": account.broker_slug},
            )
            if fresh.status == OrderStatus.pending_submit.value:
                set_status(session, fresh, OrderStatus.unknown, now)
            response = StoredResponse(202, OrderOut.from_row(fresh).model_dump(mode="json"))
        await keys.complete(
            record_id, status=response.status, body=response.body, order_id=fresh.id
        )
        await session.commit()
        order.status = fresh.status
        return response

    # --- read ------------------------------------------------------------------------

    async def get(self, *, user_id: str, order_id: str) -> OrderOut:
        async with self._ctx.sessionmaker() as session:
            order = await OrderRepository.for_user(session, user_id).get(order_id)
            if order is None:
                raise errors.NotFound("no such order")
            return OrderOut.from_row(order)

    async def list_for_account(
        self,
        *,
        user_id: str,
        account_id: str,
        status: OrderListStatus,
        limit: int,
        cursor: str | None,
    ) -> OrderPage:
        before = decode_time_cursor(cursor)
        statuses: list[str] | None = None
        if status == "open":
            statuses = [s.value for s in OPEN]
        elif status == "closed":
            statuses = [s.value for s in CLOSED]
        async with self._ctx.sessionmaker() as session:
            if await AccountRepository.for_user(session, user_id).get(account_id) is None:
                raise errors.NotFound("no such account")
            rows = await OrderRepository.for_user(session, user_id).list_for_account(
                account_id, statuses=statuses, limit=limit + 1, before=before
            )
        items = [OrderOut.from_row(row) for row in rows[:limit]]
        next_cursor = (
            encode_time_cursor(rows[limit - 1].created_at, rows[limit - 1].id)
            if len(rows) > limit
            else None
        )
        return OrderPage(items=items, next_cursor=next_cursor)

    # --- modify / cancel ---------------------------------------------------------------

    async def modify(self, *, user_id: str, order_id: str, body: OrderUpdateBody) -> OrderOut:
        return await self._ctx.with_fresh_tokens(
            lambda: self._modify(user_id=user_id, order_id=order_id, body=body)
        )

    async def _modify(self, *, user_id: str, order_id: str, body: OrderUpdateBody) -> OrderOut:
        changes = OrderChanges(
            quantity=body.quantity,
            limit_price=body.limit_price,
            stop_price=body.stop_price,
            time_in_force=body.time_in_force,
        )
        async with self._ctx.sessionmaker() as session:
            order, account, connection = await self._load_for_change(session, user_id, order_id)
            ensure_usable(connection)
            if self._ctx.spec_for(connection).capabilities.modify is Support.unsupported:
                raise errors.UnsupportedOrder("this broker cannot change a working order")
            if order.broker_order_id is None or order.status not in _MODIFIABLE:
                raise errors.OrderNotModifiable(f"an order that is {order.status} cannot change")
            _check_changes(order, changes)
            adapter = await self._ctx.adapter_for(session, connection, for_order=True)
            previous = OrderStatus(order.status)
            broker_order_id = order.broker_order_id
            set_status(session, order, OrderStatus.pending_replace, utcnow())
            await session.commit()

            try:
                report = await adapter.modify_order(
                    account.broker_account_ref, broker_order_id, changes
                )
            except Exception as exc:
                await self._after_failed_change(session, order.id, previous, exc, adapter, account)
                raise AssertionError("unreachable") from exc  # _after_failed_change raises

            fresh = await OrderRepository.for_system(session).get(order.id, for_update=True)
            assert fresh is not None
            now = utcnow()
            if report.broker_order_id != fresh.broker_order_id:
                replacement = _replacement(fresh, report, now)
                OrderRepository.for_system(session).add(replacement)
                await session.flush()
                fresh.replaced_by_order_id = replacement.id
                set_status(session, fresh, OrderStatus.replaced, now)
                append_order_event(session, replacement, now)
                await session.commit()
                return OrderOut.from_row(replacement)
            # Changed in place: the report (new terms, pending_replace -> its status) is news
            # even when the status word is the one the order had before.
            if not apply_broker_order(session, fresh, report, now):
                if fresh.status == OrderStatus.pending_replace.value:
                    set_status(session, fresh, previous, now)
            await session.commit()
            return OrderOut.from_row(fresh)

    async def cancel(self, *, user_id: str, order_id: str) -> OrderOut:
        """Cancel at the broker. Works on a broken or disconnected connection too, as long
        as the broker still accepts the credential: a user must always be able to stop an
        order."""
        return await self._ctx.with_fresh_tokens(
            lambda: self._cancel(user_id=user_id, order_id=order_id)
        )

    async def _cancel(self, *, user_id: str, order_id: str) -> OrderOut:
        async with self._ctx.sessionmaker() as session:
            order, account, connection = await self._load_for_change(session, user_id, order_id)
            status = OrderStatus(order.status)
            if status in TERMINAL or status in (OrderStatus.canceled, OrderStatus.expired):
                raise errors.OrderNotModifiable(
                    f"an order that is {order.status} cannot be canceled"
                )
            if order.broker_order_id is None:
                raise errors.OrderNotModifiable(
                    "the order has not reached the broker yet; try again shortly"
                )
            adapter = await self._ctx.adapter_for(session, connection, for_order=True)
            broker_order_id = order.broker_order_id
            set_status(session, order, OrderStatus.pending_cancel, utcnow())
            await session.commit()
            try:
                report = await adapter.cancel_order(account.broker_account_ref, broker_order_id)
            except Exception as exc:
                await self._after_failed_change(session, order.id, status, exc, adapter, account)
                raise AssertionError("unreachable") from exc
            fresh = await OrderRepository.for_system(session).get(order.id, for_update=True)
            assert fresh is not None
            apply_broker_order(session, fresh, report, utcnow())
            await session.commit()
            return OrderOut.from_row(fresh)

    async def _load_for_change(
        self, session: AsyncSession, user_id: str, order_id: str
    ) -> tuple[Order, Account, Connection]:
        """The order locked for the change (a fill committing meanwhile waits, then wins)."""
        order = await OrderRepository.for_user(session, user_id).get(order_id, for_update=True)
        if order is None:
            raise errors.NotFound("no such order")
        found = await AccountRepository.for_user(session, user_id).get_with_connection(
            order.account_id
        )
        if found is None:  # pragma: no cover - orders reference existing accounts
            raise errors.NotFound("no such order")
        account, connection = found
        return order, account, connection

    async def _after_failed_change(
        self,
        session: AsyncSession,
        order_id: str,
        previous: OrderStatus,
        exc: Exception,
        adapter: BrokerAdapter,
        account: Account,
    ) -> None:
        """A modify or cancel failed: record what we know, then raise the mapped error.

        A definitive failure (rejected, refused credentials, not supported, nothing sent)
        changed nothing at the broker: the broker's current view is applied where we can
        read it, else the order goes back to where it was. Anything else may have changed
        the order: it becomes ``unknown`` for reconciliation.
        """
        await session.rollback()
        fresh = await OrderRepository.for_system(session).get(order_id, for_update=True)
        assert fresh is not None
        now = utcnow()
        if isinstance(exc, _DEFINITIVE_REFUSALS | broker_errors.Transient):
            report = None
            if fresh.broker_order_id is not None:
                try:
                    report = await adapter.get_order(
                        account.broker_account_ref, fresh.broker_order_id
                    )
                except Exception:
                    report = None
            if report is None or not apply_broker_order(session, fresh, report, now):
                if fresh.status in (
                    OrderStatus.pending_cancel.value,
                    OrderStatus.pending_replace.value,
                ):
                    set_status(session, fresh, previous, now)
        else:
            if not isinstance(exc, broker_errors.BrokerError):
                log.exception("order change failed unexpectedly", extra={"order_id": fresh.id})
            set_status(session, fresh, OrderStatus.unknown, now)
        await session.commit()
        if isinstance(exc, broker_errors.BrokerError):
            raise to_app_error(exc)
        raise errors.BrokerUnavailable("the broker's answer was lost; the order is being checked")


# Broker answers that say for certain the request changed nothing.
_DEFINITIVE_REFUSALS = (
    broker_errors.Rejected | broker_errors.AuthenticationFailed | broker_errors.NotSupported
)

_MODIFIABLE = frozenset(
    s.value for s in (OrderStatus.accepted, OrderStatus.partially_filled, OrderStatus.submitted)
)


def _check_changes(order: Order, changes: OrderChanges) -> None:
    if changes.limit_price is not None and order.order_type not in ("limit", "stop_limit"):
        raise errors.ValidationFailed(f"a {order.order_type} order has no limit_price")
    if changes.stop_price is not None and order.order_type not in ("stop", "stop_limit"):
        raise errors.ValidationFailed(f"a {order.order_type} order has no stop_price")
    if changes.quantity is not None and changes.quantity <= order.filled_quantity:
        raise errors.ValidationFailed("quantity must stay above what has already filled")


def _answer_existing(
    existing: IdempotencyKey, fingerprint: str, now: datetime
) -> StoredResponse | None:
    """The answer for a key already held, or None if it expired and counts as new."""
    if existing.expires_at <= now:
        return None
    if existing.fingerprint != fingerprint:
        raise errors.IdempotencyKeyReused()
    if existing.state != "completed" or existing.response_status is None:
        raise errors.RequestInProgress(headers={"Retry-After": "1"})
    headers = {}
    body = existing.response_body or {}
    if existing.response_status == 429 and "retry_after" in body:
        headers["Retry-After"] = str(body["retry_after"])
    return StoredResponse(existing.response_status, body, headers)


def _new_order(user_id: str, account: Account, body: OrderCreate, now: datetime) -> Order:
    order_id = new_id("ord")
    return Order(
        id=order_id,
        user_id=user_id,
        account_id=account.id,
        client_order_id=client_order_id_for(order_id),
        broker_order_id=None,
        symbol=normalize_symbol(body.symbol),
        side=body.side.value,
        quantity=body.quantity,
        filled_quantity=_ZERO,
        avg_fill_price=None,
        order_type=body.order_type.value,
        limit_price=body.limit_price,
        stop_price=body.stop_price,
        time_in_force=body.time_in_force.value,
        extended_hours=body.extended_hours,
        status=OrderStatus.pending_submit.value,
        reject_reason=None,
        created_at=now,
        updated_at=now,
    )


def _replacement(old: Order, report: BrokerOrder, now: datetime) -> Order:
    order_id = new_id("ord")
    return Order(
        id=order_id,
        user_id=old.user_id,
        account_id=old.account_id,
        client_order_id=report.client_order_id or client_order_id_for(order_id),
        broker_order_id=report.broker_order_id,
        symbol=old.symbol,
        side=old.side,
        quantity=report.quantity,
        filled_quantity=report.filled_quantity,
        avg_fill_price=report.avg_fill_price,
        order_type=old.order_type,
        limit_price=report.limit_price,
        stop_price=report.stop_price,
        time_in_force=report.time_in_force.value,
        extended_hours=old.extended_hours,
        status=report.status.value,
        reject_reason=None,
        replaces_order_id=old.id,
        created_at=now,
        updated_at=now,
    )

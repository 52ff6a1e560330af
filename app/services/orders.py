"""Placing, changing and cancelling orders: at most once, never silently lost.

Placement (ARCHITECTURE.md, "Orders"): an existing Idempotency-Key is answered first
(replay, 422 on a changed body, 409 while in flight); then the gates; then the order row
(``pending_submit``) and the key are committed *before* the broker is called; the broker's
answer (or ``unknown`` when the outcome cannot be known) is committed with its event and
the stored response before the client hears anything. The paper broker is the exception:
its books are in our database, so a paper placement, modify or cancel runs the paper engine
inside the order's own transaction (``PaperAdapter.place_order_in`` and siblings) and
commits the paper books, the order row, the completed key and the events at once; there is
no ``unknown`` for paper. Its key is claimed last, inserted with the stored response: a key
held already rolls the whole placement back and is answered as first sent.

The gates run in the order ARCHITECTURE.md gives, each before anything reaches the broker:

1. the connection is the caller's (404 otherwise) and active (409 ``connection_broken``);
2. its tier allows orders: not Tier C / Linked, and the vault hands out an order credential
   (403 ``read_only_account``, 409 ``connection_broken`` for a revoked one);
3. kill-switches, read from the environment now (503 ``live_trading_disabled``; BYOB only);
4. paper-first: enough round trips on our paper broker (403 ``paper_first_required``; live
   BYOB placements only);
5. capabilities (422 ``unsupported_order``), then the broker's own symbol check.

Modify runs 1-3 and 5 (paper-first guards new live orders; a modified order passed it when
placed). Cancel runs 1 (owned; a broken connection may still cancel) and 2 only: a user
must always be able to reduce risk, whatever switch is on.

Every live order action on a user-supplied credential (BYOB, Tier A/B) appends to the audit
chain in the same transaction as the order change it records: one entry when the order
change is committed before the broker call (outcome ``pending_submit``,
``pending_replace``, ``pending_cancel``), one with the result (the order's status, then
``:<error code>`` on failure or ``:<new order id>`` for a replacement).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import (
    BrokerAdapter,
    BrokerOrder,
    OrderChanges,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
    Support,
    SupportsOrderCheck,
    TimeInForce,
)
from app.brokers.environments import is_practice
from app.brokers.symbols import normalize_symbol
from app.db.deferred import DeferredWrites
from app.db.models import Account, AuditEntry, Connection, IdempotencyKey, Order
from app.db.paper_lock import LockedPaperRows
from app.db.repositories.audit import AuditRepository, user_chain
from app.db.repositories.connections import AccountRepository
from app.db.repositories.idempotency import IdempotencyRepository
from app.db.repositories.orders import (
    ClaimedOrder,
    HeadLock,
    KeyCompletion,
    KeyHeld,
    OrderRepository,
    RowGuard,
    order_values,
)
from app.ids import client_order_id_for, new_id
from app.observability import ORDERS_TOTAL
from app.paper.adapter import PaperAdapter
from app.paper.store import is_client_order_id_conflict
from app.schemas.common import decode_time_cursor, encode_time_cursor
from app.schemas.orders import Order as OrderOut
from app.schemas.orders import OrderCreate, OrderListStatus, OrderPage, OrderUpdateBody
from app.security.audit import GENESIS_HASH, AuditAction, AuditRecord
from app.security.audit import request_fingerprint as canonical_fingerprint
from app.services.broker_errors import to_app_error
from app.services.clock import utcnow
from app.services.context import ServiceContext, ensure_usable
from app.services.kill_switches import KillSwitches, is_live_byob
from app.services.order_state import CLOSED, OPEN, TERMINAL
from app.services.order_updates import (
    adopt_replacement_row,
    append_order_event,
    apply_broker_order,
    new_leg_state,
    set_status,
)
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
    """SHA-256 of the canonical request: the Idempotency-Key check and the audit chain."""
    return canonical_fingerprint(method, path, body.model_dump(mode="json"))


def _order_path(order_id: str) -> str:
    return f"/v1/orders/{order_id}"


def quantity_is_fractional(body: OrderCreate) -> bool:
    return body.quantity != body.quantity.to_integral_value()


# Option contracts expire at the end of their expiration day in the market's time zone
# (US listed options trade on it until the close): "today" is the date in New York.
MARKET_TIME_ZONE = ZoneInfo("America/New_York")


def market_today(now: datetime) -> date:
    return now.astimezone(MARKET_TIME_ZONE).date()


def check_option_terms(body: OrderCreate, now: datetime) -> None:
    """After the capability gate: no contract the order names has expired by the service
    clock (422 ``option_expired``), and a single-leg option order says whether it opens or
    closes (422 ``position_effect_required``).

    A closing order on an expired contract is refused too: what is left of it is settled by
    the broker (exercise, assignment or expiry), not traded.
    """
    today = market_today(now)
    for contract in body.contracts():
        if contract.is_expired(today):
            raise errors.OptionExpired(
                f"{contract.symbol} expired on {contract.expiration.isoformat()}"
            )
    if body.legs is None and body.is_option and body.position_effect is None:
        raise errors.PositionEffectRequired("an option order needs position_effect: open or close")


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
        # A paper placement that met its key held by an expired record (deleted now) is
        # placed afresh, once; a racing request that took the key meanwhile is answered.
        # An account read outside a transaction and found on the paper broker is placed
        # again in one, once.
        retried: set[type[Exception]] = set()
        while True:
            try:
                return await self._place_once(
                    user_id=user_id,
                    account_id=account_id,
                    body=body,
                    idempotency_key=idempotency_key,
                    path=path,
                )
            except (_KeyFreed, _OnPaper) as again:
                if type(again) in retried:
                    break
                retried.add(type(again))
        raise errors.RequestInProgress(headers={"Retry-After": "1"})

    async def _place_once(
        self, *, user_id: str, account_id: str, body: OrderCreate, idempotency_key: str, path: str
    ) -> StoredResponse:
        fingerprint = request_fingerprint("POST", path, body)
        async with self._ctx.sessionmaker() as session:
            # Postgres, an account not known to be on the paper broker: the gate's read and
            # the order's one write run outside a transaction (autocommit): no BEGIN or
            # COMMIT round trip. The paper broker's placement and any locking path run in one.
            outside = (
                account_id not in self._ctx.paper_accounts
                and session.get_bind().dialect.name == "postgresql"
            )
            if outside:
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            keys = IdempotencyRepository.for_user(session, user_id)
            # A key already held is answered as first sent (replay, 422, 409), whatever the
            # gates would say now, so a gate's refusal looks for a held key before it is
            # raised.
            try:
                account, connection, adapter, paper_rows = await self._gate(
                    session, user_id, account_id, body, lock_paper=not outside
                )
            except errors.AppError:
                await session.rollback()
                answer = await self._answer_held_key(keys, idempotency_key, fingerprint)
                if answer is not None:
                    return answer
                raise

            now = utcnow()
            record_id = new_id("idem")
            order = new_order_row(user_id, account, body, now)
            claim_terms = keys.claim_params(
                record_id=record_id,
                key=idempotency_key,
                method="POST",
                path=path,
                fingerprint=fingerprint,
                now=now,
                expires_at=now + self._ctx.settings.idempotency_ttl,
                order_id=order.id,
            )
            paper = paper_broker(adapter)
            target = _AuditTarget.of(connection)
            if paper is not None and outside:
                # Read without the paper account's lock (released with the statement): place
                # it again, in a transaction from its first read on.
                self._ctx.note_paper_account(account_id)
                raise _OnPaper
            if paper is not None:
                # Claim last, with the answer: the whole placement is one transaction, and
                # a held key rolls it all back (nothing placed twice).
                response, placed = await self._place_paper(
                    session,
                    paper,
                    account.broker_account_ref,
                    order,
                    _PaperClaim(keys, claim_terms, idempotency_key, fingerprint),
                    paper_rows,
                )
                if placed:  # not when the held key's first answer was given
                    ORDERS_TOTAL.labels(broker=target.broker_slug, outcome=str(order.status)).inc()
                return response

            # Another placement of this user in progress here may move the chain head under
            # this one: then the head is locked wherever it is, without trying the one
            # remembered first.
            chain = user_chain(user_id) if target.live_byob else None
            crowded = chain is not None and self._ctx.audit.start_placing(chain)
            try:
                orders = OrderRepository.for_user(session, user_id)
                events: list[dict[str, Any]] = []
                append_order_event(session, order, now, events)
                claimed = ClaimedOrder(False)
                entry: AuditEntry | None = None
                # Postgres, with the user's chain head this process last saw committed (or no
                # chain at all: a platform account's order): the head locked if it is still
                # there, the key, the row, the entry and the event in one statement.
                remembered = None if crowded else self._remembered_head(session, target, user_id)
                unchained = not target.live_byob and outside
                if remembered is not None or unchained:
                    entry = self._audit_entry(
                        target, order, "place", fingerprint, order.status, now, remembered
                    )
                    found = await orders.claim_and_write(
                        claim_terms,
                        order,
                        event=events[0],
                        audit=entry,
                        audit_now=self._ctx.audit.now(),
                    )
                    if found is not None and found.claimed:
                        claimed = found
                    elif found is not None:  # the key is held: nothing else was written
                        answer = await self._answer_held_key(keys, idempotency_key, fingerprint)
                        if answer is not None:
                            return answer
                        # It had expired and is gone now: the locking path claims it afresh.

                if not claimed.claimed:
                    # The locking path: the head locked wherever it is, then the key and the
                    # row in one statement, then the event and the entry in another (Postgres),
                    # in a transaction (leaving autocommit costs no round trip).
                    if outside:
                        await session.commit()

                    async def claim() -> bool:
                        nonlocal claimed
                        claimed = await orders.claim_and_insert(
                            claim_terms, order, head=self._head_lock(target, user_id)
                        )
                        return claimed.claimed

                    if not await claim():
                        answer = await self._answer_held_key(keys, idempotency_key, fingerprint)
                        if answer is not None:
                            return answer
                        # The key had expired and is gone now: claim it afresh (once; a racing
                        # request that took it meanwhile makes this one wait and retry).
                        if not await claim():
                            await session.rollback()
                            raise errors.RequestInProgress(headers={"Retry-After": "1"})
                    entry = self._audit_entry(
                        target, order, "place", fingerprint, order.status, now, claimed.head
                    )
                    await orders.write(events=events, audit=entry, audit_now=self._ctx.audit.now())
                # The order is committed before the broker is called.
                await session.commit()
                self._remember(entry)

                # What the second transaction expects to find unchanged (Postgres): the row as
                # committed here and the chain head at this entry.
                guard = None
                if claimed.row_version is not None:
                    guard = RowGuard(
                        order.id,
                        claimed.row_version,
                        chain=None if entry is None else entry.chain,
                        head_seq=0 if entry is None else entry.seq,
                        head_hash="" if entry is None else entry.entry_hash,
                    )
                response = await self._submit(
                    session, adapter, account, connection, order, record_id, fingerprint, guard
                )
                ORDERS_TOTAL.labels(broker=connection.broker_slug, outcome=str(order.status)).inc()
                return response
            finally:
                if chain is not None:
                    self._ctx.audit.end_placing(chain)

    async def _place_paper(
        self,
        session: AsyncSession,
        paper: PaperAdapter,
        account_ref: str,
        order: Order,
        held: _PaperClaim,
        paper_rows: LockedPaperRows | None,
    ) -> tuple[StoredResponse, bool]:
        """Place on the paper broker inside this transaction: the paper books, the order
        row, its events and the idempotency record with its stored response commit
        together or not at all. ``paper_rows``: what the gate's read took under the paper
        account's lock, handed to the paper engine.

        The paper broker's books are in our database, so there is no answer to lose and no
        ``unknown``: a refusal rolls everything back and is recorded on its own (the
        rejected order, its events and the stored 4xx, again in one transaction); any other
        failure rolls everything back and leaves nothing, the key included. The key is
        inserted with the answer, last: when the user holds it already (a concurrent
        request with it makes the insert wait for that one's outcome), everything is
        rolled back and the held key answered.
        """
        paper_books = DeferredWrites()
        try:
            report = await paper.place_order_in(
                session,
                account_ref,
                order_request_for(order),
                deferred=paper_books,
                locked=paper_rows,
            )
        except broker_errors.BrokerError as exc:
            await session.rollback()
            return await self._record_paper_refusal(session, order, held, exc)
        events: list[dict[str, Any]] = []
        append_order_event(session, order, order.created_at, events)
        pending = order_values(order)
        apply_broker_order(session, order, report, utcnow(), events=events)
        response = StoredResponse(201, OrderOut.from_row(order).model_dump(mode="json"))
        # The paper books, the key, the order and its events in one statement on Postgres
        # (the paper store handed its writes over), two on SQLite.
        try:
            return await self._commit_paper(session, order, events, held, response, paper_books)
        except IntegrityError as exc:
            if not is_client_order_id_conflict(exc):
                raise
            await session.rollback()
            # The refusal is recorded on the order as it was before the broker's answer.
            for key, value in pending.items():
                setattr(order, key, value)
            taken = broker_errors.Rejected("client_order_id must be unique", broker="paper")
            return await self._record_paper_refusal(session, order, held, taken)

    async def _record_paper_refusal(
        self,
        session: AsyncSession,
        order: Order,
        held: _PaperClaim,
        exc: broker_errors.BrokerError,
    ) -> tuple[StoredResponse, bool]:
        """The paper broker refused the order (its transaction is rolled back): record the
        rejected order, its events and the stored answer in a transaction of their own."""
        problem = to_app_error(exc)
        events: list[dict[str, Any]] = []
        append_order_event(session, order, order.created_at, events)
        set_status(
            session,
            order,
            OrderStatus.rejected,
            utcnow(),
            reject_reason=exc.reason,
            events=events,
        )
        body = problem.to_problem() | {"order_id": order.id}
        response = StoredResponse(problem.status, body, problem.headers)
        return await self._commit_paper(session, order, events, held, response)

    async def _commit_paper(
        self,
        session: AsyncSession,
        order: Order,
        events: list[dict[str, Any]],
        held: _PaperClaim,
        response: StoredResponse,
        paper_books: DeferredWrites | None = None,
    ) -> tuple[StoredResponse, bool]:
        """Write the key with ``response``, the order and its events (with the paper
        books' writes handed over, if any), and commit: (the answer, whether this order
        was recorded). A key the user holds already rolls everything back and is answered
        as first sent (not recorded). Raises ``_KeyFreed`` when that key had expired (its
        record is deleted, committed)."""
        completed = held.keys.completed_params(
            held.claim, status=response.status, body=response.body
        )
        try:
            await OrderRepository.for_user(session, order.user_id).write(
                completed_key=completed, new=order, events=events, deferred=paper_books
            )
        except KeyHeld:
            await session.rollback()
            answer = await self._answer_held_key(held.keys, held.key, held.fingerprint)
            if answer is not None:
                return answer, False
            await session.commit()
            raise _KeyFreed from None
        await session.commit()
        return response, True

    async def _answer_held_key(
        self, keys: IdempotencyRepository, key: str, fingerprint: str
    ) -> StoredResponse | None:
        """The answer for a key this user already holds: its stored response, 422 for a
        changed body, 409 while in flight. None when nobody holds it or it expired, in
        which case the expired record is deleted (in the caller's transaction, or at once
        when the caller runs outside one) so the key can be claimed.
        """
        existing = await keys.get(key)
        if existing is None:
            return None
        now = utcnow()
        answer = answer_existing(existing, fingerprint, now)
        if answer is None:
            await keys.delete_expired_key(key, now)
        return answer

    async def _gate(
        self,
        session: AsyncSession,
        user_id: str,
        account_id: str,
        body: OrderCreate,
        *,
        lock_paper: bool = True,
    ) -> tuple[Account, Connection, BrokerAdapter, LockedPaperRows | None]:
        """The pre-trade gates of a placement, in order (see the module docstring), and on
        the paper broker its account's rows, read and locked by the same statement as the
        account (Postgres): the paper engine needs that lock next, and taking it before
        the gates saves a round trip; a gate's refusal rolls it back. Without
        ``lock_paper`` (a read outside a transaction, where a lock would not outlive it)
        only the account and its connection are read."""
        # 1. (ownership) the account is the caller's
        # An option order's paper placement locks and reads its own rows (every leg's).
        found = await AccountRepository.for_user(session, user_id).get_locking_paper(
            account_id,
            paper_slug=PaperAdapter.slug,
            symbol=None if body.is_option or not lock_paper else order_symbol(body),
        )
        if found is None:
            raise errors.NotFound("no such account")
        account, connection, paper_rows = found
        # The credential is opened at gate 2 (one vault read), not checked there and
        # opened again after gate 5.
        adapter = await self.check_gates(
            session, user_id, account, connection, body, open_credential=True
        )
        assert adapter is not None
        await check_at_broker(adapter, account.broker_account_ref, body)
        return account, connection, adapter, paper_rows

    async def check_gates(
        self,
        session: AsyncSession,
        user_id: str,
        account: Account,
        connection: Connection,
        body: OrderCreate,
        *,
        open_credential: bool = False,
    ) -> BrokerAdapter | None:
        """Gates 1-5 of the module docstring for an account already known to be the caller's,
        without a broker call.

        Without ``open_credential`` (the order router weighing accounts) the credential is
        checked, not opened, and None is returned; with it, gate 2 opens it and the
        connection's adapter is returned. Raises the ``AppError`` the placement would answer
        with (its ``code`` is what the order router reports for an account it passes over).
        """
        # 1. connection active
        ensure_usable(connection)
        # 2. tier allows orders (the vault refuses a read-only or revoked credential)
        spec = self._ctx.spec_for(connection)
        if account.tier == "C" or not spec.capabilities.place_orders:
            raise errors.ReadOnlyAccount()
        adapter = None
        if open_credential:
            adapter = await self._ctx.adapter_for(session, connection, for_order=True)
        else:
            await self._ctx.ensure_order_credential(session, connection)
        if not account.can_trade:
            raise errors.ConnectionBroken("this account does not accept orders")
        # 3. kill-switches
        ensure_live_orders_allowed(connection)
        # 4. paper-first (live BYOB only)
        await self._ensure_paper_first(session, user_id, connection)
        # 5. capabilities, then the option terms (a broker without options answers that
        # first: the contract does not matter there)
        check_order(
            spec.capabilities,
            symbol=order_symbol(body),
            order_type=body.order_type,
            time_in_force=body.time_in_force,
            quantity_is_fractional=quantity_is_fractional(body),
            extended_hours=body.extended_hours,
            legs=len(body.legs or ()),
            price_effect=body.price_effect,
            notional=body.notional is not None,
            short_sale=body.is_short_sale,
        )
        check_option_terms(body, utcnow())
        return adapter

    async def _ensure_paper_first(
        self, session: AsyncSession, user_id: str, connection: Connection
    ) -> None:
        """Refuse a live BYOB order until the user completed enough paper round trips.

        Only cycles on our paper broker count (summed over the user's paper accounts),
        never a broker's own paper or sandbox environment: the platform's default
        connection and paper connections are not gated.
        """
        required = self._ctx.settings.paper_first_cycles
        if required == 0 or not is_live_byob(connection.ownership, connection.tier):
            return
        if is_practice(connection.environment):  # the broker's own sandbox: no live money
            return
        completed = await self._ctx.paper_engine.cycles_completed(user_id, session)
        if completed < required:
            raise errors.PaperFirstRequired(
                f"complete {required - completed} more round trip(s) on the paper broker "
                "before trading live",
                extra={"completed_cycles": completed, "required_cycles": required},
            )

    def _head_lock(self, target: _AuditTarget, user_id: str) -> HeadLock | None:
        """The audit chain head an order action on ``target`` locks (live BYOB only)."""
        if not target.live_byob:
            return None
        return HeadLock(user_chain(user_id), GENESIS_HASH, self._ctx.audit.now())

    def _remembered_head(
        self, session: AsyncSession, target: _AuditTarget, user_id: str
    ) -> tuple[int, str] | None:
        """The head of the user's chain this process last saw committed, for a live BYOB
        action on Postgres (``OrderRepository.claim_and_write``); None otherwise."""
        if not target.live_byob or session.get_bind().dialect.name != "postgresql":
            return None
        return self._ctx.audit.remembered_head(user_chain(user_id))

    async def _lock_head(
        self, session: AsyncSession, target: _AuditTarget, user_id: str
    ) -> tuple[int, str] | None:
        lock = self._head_lock(target, user_id)
        if lock is None:
            return None
        return await AuditRepository(session).lock_head(
            lock.chain, genesis_hash=lock.genesis_hash, now=lock.now
        )

    def _audit_entry(
        self,
        target: _AuditTarget,
        order: Order,
        action: AuditAction,
        fingerprint: str,
        outcome: str,
        now: datetime,
        head: tuple[int, str] | None,
    ) -> AuditEntry | None:
        """The audit entry of a live action on a user-supplied credential, following the
        chain ``head`` this transaction locked (``_head_lock``); None for any other."""
        if not target.live_byob:
            return None
        assert head is not None
        record = _audit_record(target, order, action, fingerprint, outcome)
        return self._ctx.audit.next_entry(record, *head, occurred_at=now)

    async def _write_audited(
        self,
        session: AsyncSession,
        orders: OrderRepository,
        target: _AuditTarget,
        order: Order,
        action: AuditAction,
        fingerprint: str,
        outcome: str,
        now: datetime,
        events: list[dict[str, Any]],
        *,
        new: Order | None = None,
    ) -> None:
        """Write a change of ``order`` (and a ``new`` replacement) with its events and, live
        on a user-supplied credential, its audit entry: the chain head is locked first (the
        order row is locked already), then one statement writes the rest (Postgres)."""
        head = await self._lock_head(session, target, order.user_id)
        entry = self._audit_entry(target, order, action, fingerprint, outcome, now, head)
        await orders.write(
            new=new, changed=order, events=events, audit=entry, audit_now=self._ctx.audit.now()
        )
        self._remember(entry)  # a hint: before the commit, so it may be ahead of the chain

    async def audit(
        self,
        session: AsyncSession,
        target: Connection | _AuditTarget,
        order: Order,
        action: AuditAction,
        fingerprint: str,
        outcome: str,
        now: datetime,
    ) -> None:
        """Append to the audit chain when the action is live on a user-supplied credential.

        Call it last before the commit of the order change it records: it takes the
        chain-head lock, held until that commit.
        """
        if isinstance(target, Connection):
            target = _AuditTarget.of(target)
        if not target.live_byob:
            return
        record = _audit_record(target, order, action, fingerprint, outcome)
        await self._ctx.audit.append(session, record, occurred_at=now)

    async def _submit(
        self,
        session: AsyncSession,
        adapter: BrokerAdapter,
        account: Account,
        connection: Connection,
        order: Order,
        record_id: str,
        fingerprint: str,
        guard: RowGuard | None = None,
    ) -> StoredResponse:
        """Send the committed ``order`` to the broker and record its answer.

        With ``guard`` (Postgres), the answer is first recorded by one guarded statement
        outside a transaction (``_record_if_unchanged``); when something changed the row
        or the chain meanwhile (a stream update, another audited action), nothing was
        written and the answer is applied to the row read again under its lock."""
        result = await send_order(adapter, account, order)
        repo = OrderRepository.for_user(session, order.user_id)
        target = _AuditTarget.of(connection)
        # Skipped when this process has moved the chain head since (another placement of
        # the user): the guard would fail.
        unmoved = guard is not None and (
            guard.chain is None
            or self._ctx.audit.remembered_head(guard.chain) == (guard.head_seq, guard.head_hash)
        )
        if guard is not None and unmoved and result.outcome is not SendOutcome.not_sent:
            answer = await self._record_if_unchanged(
                session, repo, target, order, guard, result, record_id, fingerprint
            )
            if answer is not None:
                return answer
        # The row, then the chain head: one statement on Postgres.
        fresh, head = await repo.get_row_locking_head(
            order.id, self._head_lock(target, order.user_id)
        )
        assert fresh is not None  # committed above, and orders are never deleted
        now = utcnow()
        keys = IdempotencyRepository.for_user(session, fresh.user_id)
        events: list[dict[str, Any]] = []
        problem = record_send_result(session, fresh, result, now, events=events)
        if result.outcome is SendOutcome.not_sent:
            # Nothing reached the broker and a retry is safe: the key is released so the
            # client's retry (same key, after Retry-After) places the order afresh.
            assert problem is not None
            await keys.release(record_id)
            outcome = audit_outcome(fresh, problem.code)
            entry = self._audit_entry(target, fresh, "place", fingerprint, outcome, now, head)
            await repo.write(
                changed=fresh, events=events, audit=entry, audit_now=self._ctx.audit.now()
            )
            await session.commit()
            self._remember(entry)
            order.status = fresh.status
            body = problem.to_problem() | {"order_id": fresh.id}
            return StoredResponse(problem.status, body, problem.headers)
        response, outcome = _placement_answer(fresh, result, problem)
        entry = self._audit_entry(target, fresh, "place", fingerprint, outcome, now, head)
        await repo.write(
            changed=fresh,
            events=events,
            complete_key=KeyCompletion(record_id, response.status, response.body, fresh.id),
            audit=entry,
            audit_now=self._ctx.audit.now(),
        )
        await session.commit()
        self._remember(entry)
        order.status = fresh.status
        return response

    def _remember(self, entry: AuditEntry | None) -> None:
        """Note a committed entry as its chain's head (``AuditChain.remember_head``)."""
        if entry is not None:
            self._ctx.audit.remember_head(entry.chain, entry.seq, entry.entry_hash)

    async def _record_if_unchanged(
        self,
        session: AsyncSession,
        repo: OrderRepository,
        target: _AuditTarget,
        order: Order,
        guard: RowGuard,
        result: SendResult,
        record_id: str,
        fingerprint: str,
    ) -> StoredResponse | None:
        """The broker's answer recorded in one round trip: applied to the row as the first
        transaction committed it (``order``, unchanged here), and written with its event,
        the key's stored response and the audit entry after ``guard``'s head by one
        autocommit statement that writes only if neither the row nor the chain moved
        since. None when they did (nothing written): the caller takes the locking path."""
        fresh = Order(**order_values(order))
        now = utcnow()
        events: list[dict[str, Any]] = []
        problem = record_send_result(session, fresh, result, now, events=events)
        if not events:  # nothing new to record (a stale answer): the locking path decides
            return None
        response, outcome = _placement_answer(fresh, result, problem)
        head = None if guard.chain is None else (guard.head_seq, guard.head_hash)
        # The statement is its own transaction: no BEGIN or COMMIT round trip.
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        entry = self._audit_entry(target, fresh, "place", fingerprint, outcome, now, head)
        written = await repo.write_if_unchanged(
            guard,
            changed=fresh,
            events=events,
            complete_key=KeyCompletion(record_id, response.status, response.body, fresh.id),
            audit=entry,
            audit_now=self._ctx.audit.now(),
        )
        # Hands the autocommit connection back (no round trip): a fallback begins afresh.
        await session.commit()
        if not written:
            return None
        self._remember(entry)
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
        fingerprint = canonical_fingerprint(
            "PATCH", _order_path(order_id), body.model_dump(mode="json")
        )
        async with self._ctx.sessionmaker() as session:
            # 1. owned and active; 2. tier allows orders (vault); 3. kill-switches
            order, account, connection = await self._load_for_change(session, user_id, order_id)
            ensure_usable(connection)
            adapter = await self._ctx.adapter_for(session, connection, for_order=True)
            ensure_live_orders_allowed(connection)
            # 5. capabilities (and what the order's state allows)
            if self._ctx.spec_for(connection).capabilities.modify is Support.unsupported:
                raise errors.UnsupportedOrder("this broker cannot change a working order")
            if order.broker_order_id is None or order.status not in _MODIFIABLE:
                raise errors.OrderNotModifiable(f"an order that is {order.status} cannot change")
            _check_changes(order, changes)
            previous = OrderStatus(order.status)
            broker_order_id = order.broker_order_id
            now = utcnow()
            orders = OrderRepository.for_user(session, user_id)
            events: list[dict[str, Any]] = []
            set_status(session, order, OrderStatus.pending_replace, now, events=events)
            paper = paper_broker(adapter)
            if paper is not None:
                # One transaction with the paper books (see _place_paper).
                try:
                    report = await paper.modify_order_in(
                        session, account.broker_account_ref, broker_order_id, changes
                    )
                except broker_errors.BrokerError as exc:
                    await session.rollback()
                    raise to_app_error(exc) from exc
                if not apply_broker_order(session, order, report, utcnow(), events=events):
                    if order.status == OrderStatus.pending_replace.value:
                        set_status(session, order, previous, utcnow(), events=events)
                await session.flush()  # the paper books first, the events last
                await orders.write(changed=order, events=events)
                await session.commit()
                return OrderOut.from_row(order)
            target = _AuditTarget.of(connection)
            await self._write_audited(
                session, orders, target, order, "modify", fingerprint, order.status, now, events
            )
            await session.commit()

            try:
                report = await adapter.modify_order(
                    account.broker_account_ref, broker_order_id, changes
                )
            except Exception as exc:
                audit = _ChangeAudit(_AuditTarget.of(connection), "modify", fingerprint)
                await self._after_failed_change(
                    session, order.id, previous, exc, adapter, account, audit
                )
                raise AssertionError("unreachable") from exc  # _after_failed_change raises

            fresh = await orders.get_row(order.id, for_update=True)
            assert fresh is not None
            now = utcnow()
            events = []
            if report.broker_order_id != fresh.broker_order_id:
                replacement, new = await adopt_replacement_row(session, fresh, report, now, events)
                outcome = audit_outcome(fresh, replacement.id)
                await self._write_audited(
                    session,
                    orders,
                    target,
                    fresh,
                    "modify",
                    fingerprint,
                    outcome,
                    now,
                    events,
                    new=replacement if new else None,
                )
                await session.commit()
                return OrderOut.from_row(replacement)
            # Changed in place: the report (new terms, pending_replace -> its status) is news
            # even when the status word is the one the order had before.
            if not apply_broker_order(session, fresh, report, now, events=events):
                if fresh.status == OrderStatus.pending_replace.value:
                    set_status(session, fresh, previous, now, events=events)
            await self._write_audited(
                session, orders, target, fresh, "modify", fingerprint, fresh.status, now, events
            )
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
        fingerprint = canonical_fingerprint("DELETE", _order_path(order_id), None)
        async with self._ctx.sessionmaker() as session:
            # Owned (404 otherwise) and a credential the vault hands out for orders; no
            # kill-switch and no paper-first gate: cancelling reduces risk.
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
            now = utcnow()
            orders = OrderRepository.for_user(session, user_id)
            events: list[dict[str, Any]] = []
            set_status(session, order, OrderStatus.pending_cancel, now, events=events)
            paper = paper_broker(adapter)
            if paper is not None:
                # One transaction with the paper books (see _place_paper).
                try:
                    report = await paper.cancel_order_in(
                        session, account.broker_account_ref, broker_order_id
                    )
                except broker_errors.BrokerError as exc:
                    await session.rollback()
                    raise to_app_error(exc) from exc
                if not apply_broker_order(session, order, report, utcnow(), events=events):
                    if order.status == OrderStatus.pending_cancel.value:
                        set_status(session, order, status, utcnow(), events=events)
                await session.flush()  # the paper books first, the events last
                await orders.write(changed=order, events=events)
                await session.commit()
                return OrderOut.from_row(order)
            target = _AuditTarget.of(connection)
            await self._write_audited(
                session, orders, target, order, "cancel", fingerprint, order.status, now, events
            )
            await session.commit()
            try:
                report = await adapter.cancel_order(account.broker_account_ref, broker_order_id)
            except Exception as exc:
                audit = _ChangeAudit(_AuditTarget.of(connection), "cancel", fingerprint)
                await self._after_failed_change(
                    session, order.id, status, exc, adapter, account, audit
                )
                raise AssertionError("unreachable") from exc
            fresh = await orders.get_row(order.id, for_update=True)
            assert fresh is not None
            now = utcnow()
            events = []
            apply_broker_order(session, fresh, report, now, events=events)
            await self._write_audited(
                session, orders, target, fresh, "cancel", fingerprint, fresh.status, now, events
            )
            await session.commit()
            return OrderOut.from_row(fresh)

    async def _load_for_change(
        self, session: AsyncSession, user_id: str, order_id: str
    ) -> tuple[Order, Account, Connection]:
        """The order locked for the change (a fill committing meanwhile waits, then wins), as
        a plain row (``OrderRepository.get_row``: written back with ``write``)."""
        order = await OrderRepository.for_user(session, user_id).get_row(order_id, for_update=True)
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
        audit: _ChangeAudit,
    ) -> None:
        """A modify or cancel failed: record what we know, then raise the mapped error.

        A definitive failure (rejected, refused credentials, not supported, nothing sent)
        changed nothing at the broker: the broker's current view is applied where we can
        read it, else the order goes back to where it was. Anything else may have changed
        the order: it becomes ``unknown`` for reconciliation.
        """
        account_ref = account.broker_account_ref  # read before a rollback expires it
        await session.rollback()
        definitive = isinstance(exc, _DEFINITIVE_REFUSALS | broker_errors.Transient)
        report = None
        if definitive:
            # The broker is read before the order row is locked: on SQLite every transaction
            # holds the one write lock, which the paper broker's read needs too (it waited
            # out the 10 s busy timeout, then failed).
            current = await OrderRepository.for_system(session).get(order_id)
            broker_order_id = None if current is None else current.broker_order_id
            await session.rollback()
            if broker_order_id is not None:
                try:
                    report = await adapter.get_order(account_ref, broker_order_id)
                except Exception:
                    report = None
        fresh = await OrderRepository.for_system(session).get(order_id, for_update=True)
        assert fresh is not None
        now = utcnow()
        if definitive:
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
        problem: errors.AppError = (
            to_app_error(exc)
            if isinstance(exc, broker_errors.BrokerError)
            else errors.BrokerUnavailable(_ANSWER_LOST)
        )
        await self.audit(
            session,
            audit.target,
            fresh,
            audit.action,
            audit.fingerprint,
            audit_outcome(fresh, problem.code),
            now,
        )
        await session.commit()
        raise problem


@dataclass(frozen=True, slots=True)
class _PaperClaim:
    """A paper placement's Idempotency-Key, claimed with the answer when it commits."""

    keys: IdempotencyRepository
    claim: dict[str, Any]  # IdempotencyRepository.claim_params
    key: str
    fingerprint: str


class _KeyFreed(Exception):
    """A paper placement met its key held by an expired record, deleted now: place again."""


class _OnPaper(Exception):
    """The account read outside a transaction is on the paper broker (noted now): place
    again, in a transaction."""


def _audit_record(
    target: _AuditTarget, order: Order, action: AuditAction, fingerprint: str, outcome: str
) -> AuditRecord:
    """What the audit chain records of an order action on ``target``."""
    return AuditRecord(
        user_id=order.user_id,
        action=action,
        order_id=order.id,
        account_id=order.account_id,
        connection_id=target.connection_id,
        broker_slug=target.broker_slug,
        request_fingerprint=fingerprint,
        outcome=outcome,
    )


def paper_broker(adapter: BrokerAdapter) -> PaperAdapter | None:
    """The paper broker itself, whose books are in our database and so change inside the
    order's transaction. A subclass (a test's stand-in for an outside broker, with its own
    faults and lost answers) takes the outside-broker path: commit, then call."""
    return adapter if type(adapter) is PaperAdapter else None


@dataclass(frozen=True, slots=True)
class _ChangeAudit:
    """What a failed modify or cancel needs to record its outcome in the audit chain
    (plain values: the ORM rows may be expired by the time it is used)."""

    target: _AuditTarget
    action: AuditAction
    fingerprint: str


@dataclass(frozen=True, slots=True)
class _AuditTarget:
    """The connection an order action runs on, as the audit chain needs it."""

    connection_id: str
    broker_slug: str
    live_byob: bool

    @classmethod
    def of(cls, connection: Connection) -> _AuditTarget:
        return cls(
            connection_id=connection.id,
            broker_slug=connection.broker_slug,
            live_byob=is_live_byob(connection.ownership, connection.tier),
        )


class SendOutcome(StrEnum):
    """What one placement call at a broker came to, as far as failover is concerned."""

    accepted = "accepted"  # the broker answered with the order
    rejected = "rejected"  # the broker definitively refused it (nothing was created)
    not_sent = "not_sent"  # it never reached the broker (429, refused connection)
    unknown = "unknown"  # it may exist at the broker (timeout or 5xx after sending)


@dataclass(frozen=True, slots=True)
class SendResult:
    report: BrokerOrder | None
    failure: broker_errors.BrokerError | None

    @property
    def outcome(self) -> SendOutcome:
        if self.report is not None:
            return SendOutcome.accepted
        if isinstance(self.failure, broker_errors.Transient):
            return SendOutcome.not_sent
        if isinstance(self.failure, _DEFINITIVE_REFUSALS):
            return SendOutcome.rejected
        # OutcomeUnknown, UnknownBrokerValue (an answer we cannot read may describe an order
        # that exists), anything unexpected: never treated as "not placed".
        return SendOutcome.unknown


def order_request_for(order: Order) -> OrderRequest:
    return OrderRequest(
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=OrderSide(order.side),
        quantity=order.quantity,
        order_type=OrderType(order.order_type),
        time_in_force=TimeInForce(order.time_in_force),
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        extended_hours=order.extended_hours,
        position_effect=PositionEffect(order.position_effect) if order.position_effect else None,
        legs=tuple(
            OrderLeg(
                symbol=str(leg["symbol"]),
                side=OrderSide(leg["side"]),
                ratio=int(leg["ratio"]),
                position_effect=PositionEffect(leg["position_effect"]),
            )
            for leg in order.legs or ()
        ),
        price_effect=PriceEffect(order.price_effect) if order.price_effect else None,
        notional=order.notional,
    )


def order_symbol(body: OrderCreate) -> str:
    """The symbol the order row carries: the normalized symbol (an option's canonical OCC
    symbol), or a multi-leg order's underlying."""
    return normalize_symbol(body.instrument)


async def check_at_broker(adapter: BrokerAdapter, account_ref: str, body: OrderCreate) -> None:
    """The broker's own checks before anything is written, with reads only: every symbol
    (each leg of a multi-leg order) is one it lists, and where what it takes depends on the
    account (``SupportsOrderCheck``: SnapTrade's linked brokerage) the order itself. Raises
    the ``AppError`` the placement answers with."""
    try:
        for symbol in order_symbols(body):
            await adapter.check_symbol(symbol)
        if isinstance(adapter, SupportsOrderCheck):
            await adapter.check_order(account_ref, order_request_for_body(body, "check"))
    except broker_errors.BrokerError as exc:
        raise to_app_error(exc) from exc


def order_symbols(body: OrderCreate) -> list[str]:
    """The symbols the broker is asked about before anything is written."""
    if body.legs is not None:
        return [leg.symbol for leg in body.legs]
    return [order_symbol(body)]


def order_request_for_body(body: OrderCreate, client_order_id: str) -> OrderRequest:
    """The request an order body would send (the preview sends it without placing it)."""
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=order_symbol(body),
        side=body.order_side,
        quantity=body.quantity,
        order_type=body.order_type,
        time_in_force=body.time_in_force,
        limit_price=body.limit_price,
        stop_price=body.stop_price,
        extended_hours=body.extended_hours,
        position_effect=body.position_effect,
        legs=tuple(
            OrderLeg(
                symbol=leg.symbol,
                side=leg.side,
                ratio=leg.ratio,
                position_effect=leg.position_effect,
            )
            for leg in body.legs or ()
        ),
        price_effect=body.price_effect,
        notional=body.notional,
    )


async def send_order(adapter: BrokerAdapter, account: Account, order: Order) -> SendResult:
    """Send a committed ``pending_submit`` order once; never raises.

    A bug or an unexpected library error after the request may have left counts as an
    unknown outcome (reconciliation looks the order up), never as a 500 that would leave
    the order and its key hanging.
    """
    exc: broker_errors.BrokerError
    try:
        report = await adapter.place_order(account.broker_account_ref, order_request_for(order))
    except broker_errors.BrokerError as refused:
        exc = refused
    except Exception:
        log.exception("placement failed unexpectedly", extra={"order_id": order.id})
        exc = broker_errors.OutcomeUnknown("unexpected error during placement")
    else:
        return SendResult(report, None)
    result = SendResult(None, exc)
    if result.outcome is SendOutcome.unknown:
        # Here, once per send: recording the result may take two tries.
        log.warning(
            "order outcome unknown; waiting for reconciliation",
            extra={"order_id": order.id, "reason": exc.reason},
        )
    return result


def record_send_result(
    session: AsyncSession,
    order: Order,
    result: SendResult,
    now: datetime,
    *,
    events: list[dict[str, Any]] | None = None,
) -> errors.AppError | None:
    """Apply a placement's result to the (locked, fresh) order row with its event.

    Returns the client-facing error for a refusal (``rejected`` / ``not_sent``), None when
    the broker took the order or the outcome is unknown. The row only moves from
    ``pending_submit``: an update that arrived meanwhile (a stream, reconciliation) wins.
    """
    outcome = result.outcome
    if result.report is not None:
        apply_broker_order(session, order, result.report, now, events=events)
        return None
    assert result.failure is not None
    if outcome is SendOutcome.unknown:
        if order.status == OrderStatus.pending_submit.value:
            set_status(session, order, OrderStatus.unknown, now, events=events)
        return None
    if order.status == OrderStatus.pending_submit.value:
        set_status(
            session,
            order,
            OrderStatus.rejected,
            now,
            reject_reason=result.failure.reason,
            events=events,
        )
    return to_app_error(result.failure)


def _placement_answer(
    order: Order, result: SendResult, problem: errors.AppError | None
) -> tuple[StoredResponse, str]:
    """The stored response and the audit outcome of a placement the broker answered
    (accepted, rejected or unknown; ``not_sent`` releases its key instead), after
    ``record_send_result`` applied ``result`` to ``order``."""
    if result.outcome is SendOutcome.rejected:
        # Definitive: the broker did not take the order.
        assert problem is not None
        body = problem.to_problem() | {"order_id": order.id}
        return StoredResponse(problem.status, body, problem.headers), audit_outcome(
            order, problem.code
        )
    if result.outcome is SendOutcome.accepted:
        return StoredResponse(201, OrderOut.from_row(order).model_dump(mode="json")), (
            audit_outcome(order)
        )
    # Unknown: the order may exist at the broker; reconciliation decides.
    return StoredResponse(202, OrderOut.from_row(order).model_dump(mode="json")), (
        audit_outcome(order)
    )


def ensure_live_orders_allowed(connection: Connection) -> None:
    """The kill-switch gate: the environment is read now, on every request that a switch
    can cover (a live BYOB connection; paper and platform connections never are)."""
    if not is_live_byob(connection.ownership, connection.tier):
        return
    KillSwitches.from_environ().ensure_live_orders_allowed(
        slug=connection.broker_slug, ownership=connection.ownership, tier=connection.tier
    )


def audit_outcome(order: Order, detail: str | None = None) -> str:
    """An audit outcome: the order's status, then ``:<error code or new order id>``."""
    return order.status if detail is None else f"{order.status}:{detail}"


_ANSWER_LOST = "the broker's answer was lost; the order is being checked"

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
    if changes.quantity is not None and order.notional is not None:
        raise errors.ValidationFailed("a notional order has no quantity to change")
    if changes.quantity is not None and changes.quantity <= order.filled_quantity:
        raise errors.ValidationFailed("quantity must stay above what has already filled")


def answer_existing(
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


def new_order_row(user_id: str, account: Account, body: OrderCreate, now: datetime) -> Order:
    order_id = new_id("ord")
    return Order(
        id=order_id,
        user_id=user_id,
        account_id=account.id,
        client_order_id=client_order_id_for(order_id),
        broker_order_id=None,
        symbol=order_symbol(body),
        side=body.order_side.value,
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
        position_effect=body.position_effect.value if body.position_effect else None,
        price_effect=body.price_effect.value if body.price_effect else None,
        notional=body.notional,
        legs=(
            [
                new_leg_state(leg.symbol, leg.side.value, leg.ratio, leg.position_effect.value)
                for leg in body.legs
            ]
            if body.legs is not None
            else None
        ),
    )

"""Resolving orders whose outcome we do not know, without ever resending them.

An order is left ``unknown`` when a submit timed out or failed after it may have reached
the broker, and ``pending_submit`` when the process stopped between committing the intent
and hearing the broker. Reconciliation asks the broker for the order by our client order id
(or, for brokers without client order ids, by the order's fingerprint near its submit time:
``capabilities.client_order_ids`` says which) and adopts what it finds. Only when the
broker has had ample time and still does not know the order is it marked ``rejected``; it
is never sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.brokers import errors as broker_errors
from app.brokers.base import (
    BrokerAdapter,
    BrokerOrder,
    FingerprintLookup,
    OrderFingerprint,
    OrderStatus,
    Support,
    Tier,
)
from app.db.leases import Leases, LocalLeases, owner_lease
from app.db.models import Account, IdempotencyKey, Order
from app.db.repositories.connections import AccountRepository
from app.db.repositories.idempotency import IdempotencyRepository
from app.db.repositories.orders import OrderRepository
from app.errors import BrokerRejected
from app.observability import RECONCILE_LAST_PASS, RECONCILE_PASSES
from app.schemas.orders import Order as OrderOut
from app.services.clock import utcnow
from app.services.context import ServiceContext
from app.services.order_updates import adopt_replacement, apply_broker_order, set_status
from app.services.orders import order_request_for
from app.services.routing import routed_key_response

log = logging.getLogger(__name__)

# A pending_submit order younger than this may still be in its submitting request.
PENDING_SUBMIT_GRACE = timedelta(seconds=60)
# An unknown order the broker still does not know after this is declared not placed.
UNKNOWN_GIVE_UP = timedelta(minutes=2)
# Orders created this close to a fingerprint lookup's order may hold its broker order.
CLAIM_SPAN = timedelta(hours=1)
BATCH = 200

_SWEEPS: dict[str, list[str]] = {
    "waiting": [OrderStatus.unknown.value, OrderStatus.pending_submit.value],
    "changing": [OrderStatus.pending_cancel.value, OrderStatus.pending_replace.value],
    "open": [
        OrderStatus.submitted.value,
        OrderStatus.accepted.value,
        OrderStatus.partially_filled.value,
    ],
}


class Reconciler:
    """Brings our order rows in line with the broker, on a schedule and at start-up.

    Three kinds of order are looked at, each with its own sweep cursor so a batch of orders
    that cannot be resolved yet never holds back the rest:

    * waiting (``unknown``, ``pending_submit``): looked up by broker order id when we have
      it, else by client order id (by fingerprint where the broker has no client ids);
      declared not placed only when no broker id is known and the broker still does not
      know the order after the give-up window;
    * changing (``pending_cancel``, ``pending_replace``) past the grace period: the change
      request's answer was lost, so the broker's current view is applied;
    * open (``submitted``, ``accepted``, ``partially_filled``): a fill whose update never
      arrived (a dropped stream, a crash between a broker commit and its delivery) is found
      here. Each pass reads a bounded slice, so the whole book is covered over time.
    """

    def __init__(
        self, ctx: ServiceContext, *, owner: str | None = None, leases: Leases | None = None
    ) -> None:
        """``owner``: this process's id (its own in-flight keys are never settled here);
        ``leases``: where an owner's liveness is read (its process holds ``owner_lease``)."""
        self._ctx = ctx
        self._owner = owner
        self._leases = leases or LocalLeases()
        self._cursors: dict[str, str | None] = {"waiting": None, "changing": None, "open": None}
        # Open orders are looked up at most once per their broker's poll interval
        # (Settings.open_order_poll_interval): when each is next due, by order id. Forgotten
        # for orders a whole sweep of the open book no longer saw (they closed).
        self._open_due: dict[str, datetime] = {}
        self._open_seen: set[str] = set()

    async def run_once(self, now: datetime | None = None) -> int:
        """One pass over each kind of order; returns how many rows changed.

        ``now`` (default: the wall clock) decides which orders are old enough to look up
        and when a lookup that finds nothing means the order never reached the broker.
        """
        now = now or utcnow()
        unknown_after = timedelta(seconds=self._ctx.settings.reconcile_unknown_after_seconds)
        changed = 0
        for kind, statuses in _SWEEPS.items():
            batch = await self._next_batch(kind, statuses)
            if kind == "open":
                self._note_open_sweep(batch)
            for order in batch:
                age = now - order.updated_at
                status = OrderStatus(order.status)
                if status is OrderStatus.pending_submit and age < PENDING_SUBMIT_GRACE:
                    continue
                if status is not OrderStatus.pending_submit and age < unknown_after:
                    continue
                if kind == "open" and now < self._open_due.get(order.id, now):
                    continue
                try:
                    changed += await self._resolve(order, now, scheduled=True)
                except Exception:
                    log.exception("reconciliation of an order failed", extra={"order_id": order.id})
        RECONCILE_PASSES.inc()
        RECONCILE_LAST_PASS.set_to_current_time()
        return changed

    async def run_for_accounts(
        self, account_ids: Sequence[str], now: datetime | None = None
    ) -> int:
        """Look at every unfinished order of these accounts now; returns how many changed.

        For brokers that say *that* something changed but not *what* (an aggregator's
        webhook): the same lookups as ``run_once``, without waiting for the schedule.
        Orders still within their submit's grace period are left to the submit.
        """
        now = now or utcnow()
        statuses = [s for kind in _SWEEPS.values() for s in kind]
        async with self._ctx.sessionmaker() as session:
            orders = await OrderRepository.for_system(session).unfinished_on_accounts(
                account_ids, statuses
            )
        changed = 0
        for order in orders:
            if (
                order.status == OrderStatus.pending_submit.value
                and now - order.updated_at < PENDING_SUBMIT_GRACE
            ):
                continue
            try:
                changed += await self._resolve(order, now)
            except Exception:
                log.exception("reconciliation of an order failed", extra={"order_id": order.id})
        return changed

    async def close(self) -> None:
        await self._leases.close()

    async def settle_orphaned_keys(self, now: datetime | None = None) -> int:
        """Settle the in-flight Idempotency-Keys of processes that are gone; returns how many.

        A key stays ``in_flight`` while its request runs. When the process running it dies
        (a crash, a forced kill), nobody will finish it: without this the client's retry
        hears 409 ``request_in_progress`` until the normal sweep gives up on the order
        (``UNKNOWN_GIVE_UP``, two minutes). An owner is gone when its liveness lease is free
        (Postgres: the advisory lock its process holds for its lifetime, released by
        Postgres with the process's connection; SQLite: one process, so every other owner).
        Its orders are reconciled first, by the same broker lookups as ``run_once``; an
        order the broker does not know is declared not placed once it is
        ``orphan_give_up_seconds`` old (a dead process sends nothing more). Then the key
        gets the order's answer, which the client's retry replays. A claim without an order
        row wrote nothing and is released, so the retry runs afresh.
        """
        now = now or utcnow()
        async with self._ctx.sessionmaker() as session:
            keys = await IdempotencyRepository.for_system(session).in_flight_owned_by_others(
                self._owner, limit=BATCH
            )
        dead: dict[str, bool] = {}
        settled = 0
        for key in keys:
            assert key.owner is not None
            if key.owner not in dead:
                dead[key.owner] = await self._owner_is_gone(key.owner)
            if not dead[key.owner]:
                continue
            try:
                settled += await self._settle_key(key, now)
            except Exception:
                log.exception("settling an orphaned idempotency key failed", extra={"key": key.id})
        for owner, gone in dead.items():
            if gone:
                await self._leases.release(owner_lease(owner))
        if settled:
            log.info("orphaned idempotency keys settled", extra={"count": settled})
        return settled

    async def _owner_is_gone(self, owner: str) -> bool:
        # Taking the owner's lease succeeds only when no live process holds it. It is kept
        # until the pass ends, so the owner cannot come back meanwhile (it never does:
        # every process start has a new id).
        return await self._leases.acquire(owner_lease(owner))

    async def _settle_key(self, key: IdempotencyKey, now: datetime) -> int:
        order = None
        if key.order_id is not None:
            async with self._ctx.sessionmaker() as session:
                order = await OrderRepository.for_system(session).get(key.order_id)
        if order is None:
            async with self._ctx.sessionmaker() as session:
                await IdempotencyRepository.for_system(session).release_orphan(key.id)
                await session.commit()
            return 1
        if order.status in _SWEEPS["waiting"]:
            give_up = self._ctx.settings.orphan_give_up
            await self._ctx.with_fresh_tokens(
                lambda: self._resolve_once(order, now, give_up=give_up)
            )
        async with self._ctx.sessionmaker() as session:
            fresh = await OrderRepository.for_system(session).get(order.id, for_update=True)
            if fresh is None or fresh.status in _SWEEPS["waiting"]:
                return 0  # not resolved yet (the broker was unreachable): the next pass
            await self._complete_key(session, fresh)
            await session.commit()
        return 1

    def _note_open_sweep(self, batch: Sequence[Order]) -> None:
        self._open_seen.update(order.id for order in batch)
        if self._cursors["open"] is None:  # the sweep wrapped: the open book was seen whole
            self._open_due = {
                order_id: due
                for order_id, due in self._open_due.items()
                if order_id in self._open_seen
            }
            self._open_seen = set()

    async def _next_batch(self, kind: str, statuses: list[str]) -> list[Order]:
        async with self._ctx.sessionmaker() as session:
            repo = OrderRepository.for_system(session)
            batch = list(
                await repo.list_in_statuses(statuses, limit=BATCH, after_id=self._cursors[kind])
            )
            # A short batch reached the end: the next pass starts again from the first order.
            self._cursors[kind] = batch[-1].id if len(batch) == BATCH else None
        return batch

    async def _resolve(self, order: Order, now: datetime, *, scheduled: bool = False) -> int:
        return await self._ctx.with_fresh_tokens(
            lambda: self._resolve_once(order, now, scheduled=scheduled)
        )

    async def _resolve_once(
        self,
        order: Order,
        now: datetime,
        *,
        give_up: timedelta | None = None,
        scheduled: bool = False,
    ) -> int:
        """Look ``order`` up at its broker and apply what it says; 1 when the row changed.

        ``scheduled`` (``run_once``'s sweep): an open order at an outside broker that streams
        its order changes is first looked up one poll interval after its last change, not
        at the first pass that sees it.
        """
        async with self._ctx.sessionmaker() as session:
            found = await AccountRepository.for_system(session).get_with_connection(
                order.account_id
            )
            if found is None:
                return 0
            account, connection = found
            spec = self._ctx.spec_for(connection)
            capabilities = spec.capabilities
            by_fingerprint = capabilities.client_order_ids is Support.unsupported
            if order.status in _SWEEPS["open"]:
                streamed = capabilities.order_stream is not Support.unsupported
                interval = self._ctx.settings.open_order_poll_interval(
                    connection.broker_slug, streamed=streamed
                )
                if (
                    scheduled
                    and streamed
                    and spec.tier is not Tier.paper
                    and order.id not in self._open_due
                    and now < order.updated_at + interval
                ):
                    # The stream reports this order's changes; the lookup is its safety
                    # net, and spends the credential's rate budget, which the user's own
                    # orders share. A new order is not followed by a lookup at once (the
                    # paper broker's lookups are reads of our own database: not deferred).
                    self._open_due[order.id] = order.updated_at + interval
                    return 0
                self._open_due[order.id] = now + interval
            adapter = await self._ctx.adapter_for(session, connection, for_order=False)
            claimed: frozenset[str] = frozenset()
            if order.broker_order_id is None and by_fingerprint:
                claimed = await self._claimed(session, account, order)
            await session.commit()
            report: BrokerOrder | None
            try:
                if order.broker_order_id is not None:
                    report = await adapter.get_order(
                        account.broker_account_ref, order.broker_order_id
                    )
                elif by_fingerprint:
                    report = await _find_by_fingerprint(adapter, account, order, claimed)
                else:
                    report = await adapter.find_order_by_client_id(
                        account.broker_account_ref, order.client_order_id
                    )
                # A replace whose answer was lost: the broker's replacement is read now, so
                # it can be recorded in the same transaction as the old order's change.
                replacement = None
                if (
                    report is not None
                    and report.status is OrderStatus.replaced
                    and report.replaced_by is not None
                ):
                    replacement = await adapter.get_order(
                        account.broker_account_ref, report.replaced_by
                    )
            except broker_errors.OrderNotFound:
                report = None
            except broker_errors.BrokerError as exc:
                log.warning(
                    "broker lookup failed during reconciliation; will retry",
                    extra={"order_id": order.id, "reason": exc.reason},
                )
                return 0
            fresh = await OrderRepository.for_system(session).get(order.id, for_update=True)
            if fresh is None or fresh.status != order.status:
                return 0  # something else moved it meanwhile; the next pass looks again
            if report is not None:
                if by_fingerprint and fresh.broker_order_id is None:
                    if report.broker_order_id in await self._claimed(session, account, fresh):
                        return 0  # adopted by another order meanwhile; look again next pass
                applied = apply_broker_order(session, fresh, report, now)
                if replacement is not None and fresh.replaced_by_order_id is None:
                    await adopt_replacement(session, fresh, replacement, now)
                elif not applied:
                    return 0
            elif (
                fresh.broker_order_id is None
                and fresh.status in (OrderStatus.unknown.value, OrderStatus.pending_submit.value)
                and now - fresh.created_at
                >= (max(UNKNOWN_GIVE_UP, PENDING_SUBMIT_GRACE) if give_up is None else give_up)
            ):
                set_status(
                    session,
                    fresh,
                    OrderStatus.rejected,
                    now,
                    reject_reason="the broker never received the order",
                )
            else:
                return 0
            await self._complete_key(session, fresh)
            await session.commit()
            log.info("order reconciled", extra={"order_id": fresh.id, "status": fresh.status})
            return 1

    async def _claimed(
        self, session: AsyncSession, account: Account, order: Order
    ) -> frozenset[str]:
        """Broker order ids other orders of the same broker account already hold."""
        account_ids = await AccountRepository.for_system(session).ids_by_broker_ref(
            account.broker_slug, account.broker_account_ref
        )
        return await OrderRepository.for_system(session).broker_ids_near(
            account_ids,
            since=order.created_at - CLAIM_SPAN,
            until=order.created_at + CLAIM_SPAN,
            exclude_order_id=order.id,
        )

    async def _complete_key(self, session: AsyncSession, order: Order) -> None:
        keys = IdempotencyRepository.for_system(session)
        record = await keys.in_flight_for_order(order.id)
        if record is None:
            return
        # An order placed by the router (the process stopped mid-route): the key gets the
        # route's answer, never a second route.
        routed = await routed_key_response(session, order)
        if routed is not None:
            await keys.complete(
                record.id, status=routed.status, body=routed.body, order_id=order.id
            )
            return
        if order.status == OrderStatus.rejected.value:
            problem = BrokerRejected(order.reject_reason or "the order was not placed")
            await keys.complete(
                record.id,
                status=problem.status,
                body=problem.to_problem() | {"order_id": order.id},
                order_id=order.id,
            )
        else:
            await keys.complete(
                record.id,
                status=201,
                body=OrderOut.from_row(order).model_dump(mode="json"),
                order_id=order.id,
            )


async def _find_by_fingerprint(
    adapter: BrokerAdapter, account: Account, order: Order, claimed: frozenset[str]
) -> BrokerOrder | None:
    """The broker's order for our row, found by what it is and when it was submitted."""
    if not isinstance(adapter, FingerprintLookup):
        raise broker_errors.NotSupported(
            "the broker has no client order ids and its adapter no fingerprint lookup"
        )
    fingerprint = OrderFingerprint.of(order_request_for(order), order.created_at)
    return await adapter.find_order_by_fingerprint(account.broker_account_ref, fingerprint, claimed)


async def run_reconciler(reconciler: Reconciler, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await reconciler.settle_orphaned_keys()
            await reconciler.run_once()
        except Exception:
            log.exception("reconciliation pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)

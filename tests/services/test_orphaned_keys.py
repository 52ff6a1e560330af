"""Idempotency-Keys left in flight by a process that died are settled by the next one.

The claims are written as the dead process wrote them (the order row committed as
``pending_submit`` with its key, stamped with the process's owner id), then a reconciler of
a live process settles them. tests/server/test_crash_recovery.py kills a real process.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db.leases import AdvisoryLeases, leases_for, owner_lease
from app.db.models import IdempotencyKey
from app.db.repositories.connections import AccountRepository
from app.db.repositories.idempotency import IdempotencyRepository
from app.db.repositories.orders import OrderRepository
from app.db.session import SessionMaker, create_sessionmaker
from app.ids import new_id
from app.schemas.orders import OrderCreate
from app.services.clock import utcnow
from app.services.orders import new_order_row, request_fingerprint
from app.services.reconciliation import Reconciler
from tests.conftest import new_user
from tests.harness import Harness

BODY = {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}


async def _claim_as(
    harness: Harness, owner: str, user: str, account_id: str, *, with_order: bool = True
) -> tuple[str, str | None]:
    """What a process with id ``owner`` commits before it calls the broker."""
    engine = harness.state.engine
    sessionmaker: SessionMaker = create_sessionmaker(engine, owner=owner)
    key = uuid.uuid4().hex
    path = f"/v1/accounts/{account_id}/orders"
    body = OrderCreate.model_validate(BODY)
    now = utcnow()
    async with sessionmaker() as session:
        account = await AccountRepository.for_user(session, user).get(account_id)
        assert account is not None
        order = new_order_row(user, account, body, now)
        if with_order:
            OrderRepository.for_user(session, user).add(order)
            await session.flush()
        claimed = await IdempotencyRepository.for_user(session, user).claim(
            record_id=new_id("idem"),
            key=key,
            method="POST",
            path=path,
            fingerprint=request_fingerprint("POST", path, body),
            now=now,
            expires_at=now + timedelta(days=1),
            order_id=order.id if with_order else None,
        )
        assert claimed
        await session.commit()
    return key, order.id if with_order else None


async def _key_state(harness: Harness, user: str, key: str) -> IdempotencyKey | None:
    async with harness.state.ctx.sessionmaker() as session:
        return await IdempotencyRepository.for_user(session, user).get(key)


def _reconciler(harness: Harness) -> Reconciler:
    return Reconciler(
        harness.state.ctx, owner=new_id("own"), leases=leases_for(harness.state.engine)
    )


async def test_the_process_stamps_its_claims_with_its_owner_id(harness: Harness) -> None:
    user = new_user("orphan")
    _connection, account_id = await harness.paper_account(user)
    key = uuid.uuid4().hex
    assert (await harness.place(user, account_id, key=key)).status_code == 201
    async with harness.state.ctx.sessionmaker() as session:
        owner = (
            await session.execute(select(IdempotencyKey.owner).where(IdempotencyKey.key == key))
        ).scalar_one()
    assert owner is not None
    assert owner.startswith("own_")


async def test_an_order_the_broker_never_got_is_settled_as_not_placed(harness: Harness) -> None:
    user = new_user("orphan")
    _connection, account_id = await harness.paper_account(user)
    key, order_id = await _claim_as(harness, new_id("own"), user, account_id)
    reconciler = _reconciler(harness)
    try:
        # Within the give-up a live sender could still be mid-call: nothing is decided.
        assert await reconciler.settle_orphaned_keys() == 0
        in_flight = await harness.place(user, account_id, key=key)
        assert in_flight.status_code == 409
        assert in_flight.json()["code"] == "request_in_progress"
        later = utcnow() + harness.settings.orphan_give_up + timedelta(seconds=1)
        assert await reconciler.settle_orphaned_keys(now=later) == 1
    finally:
        await reconciler.close()
    retried = await harness.place(user, account_id, key=key)
    assert retried.status_code == 422, retried.text
    assert retried.json()["order_id"] == order_id
    order = await harness.client.get(f"/v1/orders/{order_id}", headers=harness.auth(user))
    assert order.json()["status"] == "rejected"


async def test_a_claim_that_wrote_no_order_is_released(harness: Harness) -> None:
    user = new_user("orphan")
    _connection, account_id = await harness.paper_account(user)
    key, _ = await _claim_as(harness, new_id("own"), user, account_id, with_order=False)
    reconciler = _reconciler(harness)
    try:
        assert await reconciler.settle_orphaned_keys() == 1
    finally:
        await reconciler.close()
    assert await _key_state(harness, user, key) is None
    placed = await harness.place(user, account_id, key=key)
    assert placed.status_code == 201  # the retry runs afresh


@pytest.mark.parametrize("backend", ["postgres"])
async def test_the_keys_of_a_live_process_are_left_alone(harness: Harness) -> None:
    user = new_user("orphan")
    _connection, account_id = await harness.paper_account(user)
    owner = new_id("own")
    alive = AdvisoryLeases(harness.state.engine)
    assert await alive.acquire(owner_lease(owner))
    try:
        key, _ = await _claim_as(harness, owner, user, account_id, with_order=False)
        reconciler = _reconciler(harness)
        try:
            assert await reconciler.settle_orphaned_keys(now=utcnow() + timedelta(hours=1)) == 0
            record = await _key_state(harness, user, key)
            assert record is not None
            assert record.state == "in_flight"
        finally:
            await reconciler.close()
    finally:
        await alive.close()  # the process dies: its lease is free
    reconciler = _reconciler(harness)
    try:
        assert await reconciler.settle_orphaned_keys() == 1
    finally:
        await reconciler.close()
    assert await _key_state(harness, user, key) is None

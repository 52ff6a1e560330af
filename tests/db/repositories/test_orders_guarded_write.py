"""The live order path's guarded statements. ``OrderRepository.write_if_unchanged``: a live
order's answer recorded by one statement that writes only if the order row is still at the
version the first transaction committed and its chain head still at that transaction's
entry, and otherwise writes nothing. ``claim_and_write``: the key, the row, the entry and the
event in one statement against a remembered head, nothing at all when the head moved; the
order every path takes the chain head and the key in; and a broker stream's lookup of the
order it names.

The rows come from a real live placement (the fake Alpaca over HTTP); the tests then
change them the ways another writer would: an update committed before the statement, one
committed while the statement waits for its lock, a lock alone, another audited action.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app.db.models import AuditChainHead, AuditEntry, IdempotencyKey, Order, OrderEvent
from app.db.repositories.audit import user_chain
from app.db.repositories.connections import AccountRepository
from app.db.repositories.idempotency import IdempotencyRepository
from app.db.repositories.orders import (
    ClaimedOrder,
    HeadLock,
    KeyCompletion,
    OrderRepository,
    RowGuard,
)
from app.db.session import create_engine, create_sessionmaker
from app.ids import new_id
from app.schemas.orders import OrderCreate
from app.security.audit import GENESIS_HASH, AuditRecord
from app.services.order_updates import order_event_values
from app.services.orders import new_order_row
from tests.conftest import new_user
from tests.services.support import LiveGateway, live_gateway, verify_chains

postgres_only = pytest.mark.parametrize("backend", ["postgres"])


@dataclass
class Placed:
    gw: LiveGateway
    user: str
    account: str
    order_id: str


@pytest.fixture
async def placed(db_url: str) -> AsyncIterator[Placed]:
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        response = await gw.harness.place(
            user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        assert response.status_code == 201, response.text
        yield Placed(gw, user, account, response.json()["id"])


async def _guard(p: Placed) -> RowGuard:
    """The guard for the rows as they are now (what a first transaction would hand over)."""
    async with p.gw.harness.state.ctx.sessionmaker() as session:
        version = await session.scalar(
            text("SELECT xmin::text FROM orders WHERE id = :id"), {"id": p.order_id}
        )
        head = (
            await session.execute(
                select(AuditChainHead).where(AuditChainHead.chain == user_chain(p.user))
            )
        ).scalar_one()
        return RowGuard(p.order_id, str(version), user_chain(p.user), head.last_seq, head.last_hash)


async def _snapshot(p: Placed) -> dict[str, Any]:
    """What the statement may write: the row, the key, the chain and the events."""
    async with p.gw.harness.state.ctx.sessionmaker() as session:
        order = (await session.execute(select(Order).where(Order.id == p.order_id))).scalar_one()
        key = (
            await session.execute(
                select(IdempotencyKey).where(IdempotencyKey.order_id == p.order_id)
            )
        ).scalar_one()
        head = (
            await session.execute(
                select(AuditChainHead).where(AuditChainHead.chain == user_chain(p.user))
            )
        ).scalar_one()
        return {
            "reject_reason": order.reject_reason,
            "updated_at": order.updated_at,
            "key_body": key.response_body,
            "head": (head.last_seq, head.last_hash),
            "entries": await session.scalar(
                select(func.count()).where(AuditEntry.user_id == p.user)
            ),
            "events": await session.scalar(
                select(func.count()).where(OrderEvent.order_id == p.order_id)
            ),
        }


def _record(order: Order, outcome: str) -> AuditRecord:
    """What a placement's entry says (the connection named for the test)."""
    return AuditRecord(
        user_id=order.user_id,
        action="place",
        order_id=order.id,
        account_id=order.account_id,
        connection_id="conn-under-test",
        broker_slug="alpaca",
        request_fingerprint="f" * 64,
        outcome=outcome,
    )


async def _write(p: Placed, guard: RowGuard, note: str) -> bool:
    """The order's answer written again under ``guard`` (a recognisable change: its reject
    reason and the key's body carry ``note``), in autocommit as the order path sends it."""
    ctx = p.gw.harness.state.ctx
    async with ctx.sessionmaker() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        repo = OrderRepository.for_user(session, p.user)
        order = await repo.get_row(p.order_id)
        assert order is not None
        now = datetime.now(UTC)
        order.reject_reason, order.updated_at = note, now
        key_id = await session.scalar(
            select(IdempotencyKey.id).where(IdempotencyKey.order_id == p.order_id)
        )
        assert guard.chain is not None
        record = _record(order, note)
        entry = ctx.audit.next_entry(record, guard.head_seq, guard.head_hash, occurred_at=now)
        written = await repo.write_if_unchanged(
            guard,
            changed=order,
            events=[order_event_values(order, now)],
            complete_key=KeyCompletion(str(key_id), 201, {"note": note}, order.id),
            audit=entry,
            audit_now=now,
        )
        await session.commit()
        return written


async def _other_writer(p: Placed) -> Any:
    """A session of another transaction (an ingest, a reconciliation)."""
    return p.gw.harness.state.ctx.sessionmaker()


async def _waiting(p: Placed, query_start: str, count: int) -> None:
    """Until ``count`` sessions whose statement starts with ``query_start`` wait for a lock."""
    async with asyncio.timeout(10):
        while True:
            async with await _other_writer(p) as observer:
                waiting = await observer.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE :start"
                    ),
                    {"start": query_start + "%"},
                )
            if waiting == count:
                return
            await asyncio.sleep(0.02)


@postgres_only
async def test_an_unchanged_row_and_head_get_every_write(placed: Placed) -> None:
    before = await _snapshot(placed)
    assert await _write(placed, await _guard(placed), "probe-1") is True
    after = await _snapshot(placed)
    assert after["reject_reason"] == "probe-1"
    assert after["key_body"] == {"note": "probe-1"}
    assert after["head"][0] == before["head"][0] + 1
    assert after["entries"] == before["entries"] + 1
    assert after["events"] == before["events"] + 1
    chain = await verify_chains(placed.gw)
    assert chain["ok"] is True, chain


@postgres_only
async def test_a_row_changed_before_the_statement_gets_nothing(placed: Placed) -> None:
    guard = await _guard(placed)
    async with await _other_writer(placed) as other:
        await other.execute(
            text("UPDATE orders SET updated_at = updated_at WHERE id = :id"),
            {"id": placed.order_id},
        )
        await other.commit()
    before = await _snapshot(placed)
    assert await _write(placed, guard, "probe-2") is False
    assert await _snapshot(placed) == before


@postgres_only
async def test_a_moved_chain_head_gets_nothing(placed: Placed) -> None:
    guard = await _guard(placed)
    again = await placed.gw.harness.place(
        placed.user, placed.account, order_type="limit", limit_price="1.00", time_in_force="gtc"
    )
    assert again.status_code == 201, again.text  # two more entries on the user's chain
    before = await _snapshot(placed)
    assert await _write(placed, guard, "probe-3") is False
    assert await _snapshot(placed) == before


@postgres_only
async def test_a_row_changed_while_the_statement_waits_gets_nothing(placed: Placed) -> None:
    """The other transaction holds the row's lock with its update: the statement waits,
    then re-reads the row that transaction committed, whose version no longer matches."""
    guard = await _guard(placed)
    async with await _other_writer(placed) as other:
        await other.execute(
            text("UPDATE orders SET updated_at = updated_at WHERE id = :id"),
            {"id": placed.order_id},
        )
        writing = asyncio.create_task(_write(placed, guard, "probe-4"))
        await _waiting(placed, "WITH g_order AS", 1)
        before = await _snapshot(placed)
        await other.commit()
    assert await writing is False
    after = await _snapshot(placed)
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }


@postgres_only
async def test_a_lock_alone_is_no_change(placed: Placed) -> None:
    """Another transaction only locks the row (a reader that locks, then lets go): the
    statement waits for it and then writes everything."""
    guard = await _guard(placed)
    async with await _other_writer(placed) as other:
        await other.execute(
            text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": placed.order_id}
        )
        writing = asyncio.create_task(_write(placed, guard, "probe-5"))
        await _waiting(placed, "WITH g_order AS", 1)
        await other.rollback()
    assert await writing is True
    assert (await _snapshot(placed))["reject_reason"] == "probe-5"


async def test_another_database_is_refused(sqlite_url: str) -> None:
    """The guard needs Postgres' row versions and locking reads: SQLite takes the locking
    path, and a call there is a programming error, refused before anything is sent."""
    engine = create_engine(sqlite_url)
    try:
        async with create_sessionmaker(engine)() as session:
            order = Order(id="ord-x", user_id="user-x")
            with pytest.raises(ValueError, match="Postgres only"):
                await OrderRepository.for_user(session, "user-x").write_if_unchanged(
                    RowGuard("ord-x", "1"), changed=order, events=[{}]
                )
    finally:
        await engine.dispose()


@postgres_only
async def test_a_guard_that_does_not_fit_the_write_is_refused(placed: Placed) -> None:
    """No events (nothing would tell whether it wrote), an entry without a guarded head, a
    guard for another order: refused before anything is sent."""
    guard = await _guard(placed)
    async with placed.gw.harness.state.ctx.sessionmaker() as session:
        repo = OrderRepository.for_user(session, placed.user)
        order = await repo.get_row(placed.order_id)
        assert order is not None
        event = order_event_values(order, datetime.now(UTC))
        with pytest.raises(ValueError, match="at least one event"):
            await repo.write_if_unchanged(guard, changed=order, events=[])
        with pytest.raises(ValueError, match="guarded chain head"):
            await repo.write_if_unchanged(guard, changed=order, events=[event])
        other = RowGuard("ord-other", guard.row_version)
        with pytest.raises(ValueError, match="another order"):
            await repo.write_if_unchanged(other, changed=order, events=[event])
    assert (await _snapshot(placed))["reject_reason"] is None


# --- claim_and_write, and the order of the chain head and the key -------------------------


async def _new_claim(p: Placed, session: Any, key: str) -> tuple[dict[str, Any], Order]:
    """A new order on the placed account with the claim of ``key``, as the order path
    builds them."""
    account = await AccountRepository.for_user(session, p.user).get(p.account)
    assert account is not None
    body = OrderCreate.model_validate(
        {
            "symbol": "AAPL",
            "side": "buy",
            "quantity": "1",
            "order_type": "limit",
            "limit_price": "1.00",
            "time_in_force": "gtc",
        }
    )
    now = datetime.now(UTC)
    order = new_order_row(p.user, account, body, now)
    terms = IdempotencyRepository.for_user(session, p.user).claim_params(
        record_id=new_id("idem"),
        key=key,
        method="POST",
        path=f"/v1/accounts/{p.account}/orders",
        fingerprint="f" * 64,
        now=now,
        expires_at=now + timedelta(days=1),
        order_id=order.id,
    )
    return terms, order


async def _claim_and_write(p: Placed, key: str, head: tuple[int, str]) -> ClaimedOrder | None:
    """``claim_and_write`` of a new order with ``key`` against ``head``, committed."""
    ctx = p.gw.harness.state.ctx
    async with ctx.sessionmaker() as session:
        terms, order = await _new_claim(p, session, key)
        now = datetime.now(UTC)
        entry = ctx.audit.next_entry(_record(order, "pending_submit"), *head, occurred_at=now)
        found = await OrderRepository.for_user(session, p.user).claim_and_write(
            terms, order, event=order_event_values(order, now), audit=entry, audit_now=now
        )
        await session.commit()
        return found


async def _keys_named(p: Placed, key: str) -> int:
    async with p.gw.harness.state.ctx.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(IdempotencyKey.user_id == p.user, IdempotencyKey.key == key)
        )
        return int(count or 0)


@postgres_only
async def test_claim_and_write_at_the_head_writes_everything(placed: Placed) -> None:
    guard = await _guard(placed)
    assert guard.chain is not None
    before = await _snapshot(placed)
    found = await _claim_and_write(placed, "cw-1", (guard.head_seq, guard.head_hash))
    assert found is not None
    assert found.claimed is True
    assert found.row_version is not None
    assert await _keys_named(placed, "cw-1") == 1
    after = await _snapshot(placed)
    assert after["head"][0] == before["head"][0] + 1
    assert after["entries"] == before["entries"] + 1
    chain = await verify_chains(placed.gw)
    assert chain["ok"] is True, chain


@postgres_only
async def test_claim_and_write_off_the_head_does_nothing_not_even_the_claim(
    placed: Placed,
) -> None:
    guard = await _guard(placed)
    before = await _snapshot(placed)
    stale = (guard.head_seq - 1, "0" * 64)
    assert await _claim_and_write(placed, "cw-2", stale) is None
    assert await _keys_named(placed, "cw-2") == 0
    assert await _snapshot(placed) == before


@postgres_only
async def test_claim_and_write_on_a_held_key_writes_nothing_else(placed: Placed) -> None:
    guard = await _guard(placed)
    head = (guard.head_seq, guard.head_hash)
    first = await _claim_and_write(placed, "cw-3", head)
    assert first is not None
    assert first.claimed is True
    now_head = await _guard(placed)
    before = await _snapshot(placed)
    again = await _claim_and_write(placed, "cw-3", (now_head.head_seq, now_head.head_hash))
    assert again == ClaimedOrder(False)
    assert await _snapshot(placed) == before
    assert await _keys_named(placed, "cw-3") == 1


@postgres_only
async def test_both_paths_take_the_head_before_the_key(placed: Placed) -> None:
    """Two requests with one key, one on each path, queued behind a third transaction that
    holds the user's chain head. Were the locking path to claim the key before the head, the
    first to get the head would then wait for the key the other holds while it waits for the
    head: a deadlock, one of them failed. Both take the head first, so the first claims the
    key and the other finds it held."""
    guard = await _guard(placed)
    assert guard.chain is not None
    ctx = placed.gw.harness.state.ctx
    async with await _other_writer(placed) as holder:
        await holder.execute(
            text("SELECT 1 FROM audit_chain_head WHERE chain = :c FOR UPDATE"),
            {"c": guard.chain},
        )
        combined = asyncio.create_task(
            _claim_and_write(placed, "cw-4", (guard.head_seq, guard.head_hash))
        )
        await _waiting(placed, "WITH g_head AS", 1)

        async def locking_path() -> ClaimedOrder:
            async with ctx.sessionmaker() as session:
                terms, order = await _new_claim(placed, session, "cw-4")
                head = HeadLock(guard.chain or "", GENESIS_HASH, datetime.now(UTC))
                found = await OrderRepository.for_user(session, placed.user).claim_and_insert(
                    terms, order, head=head
                )
                await session.rollback()
                return found

        locking = asyncio.create_task(locking_path())
        await _waiting(placed, "WITH ", 2)  # both queued behind the holder
        await holder.rollback()
    first, second = await asyncio.wait_for(asyncio.gather(combined, locking), timeout=15)
    assert first is not None
    assert first.claimed is True
    assert second.claimed is False
    assert await _keys_named(placed, "cw-4") == 1


# --- a broker stream's news of the order: found and locked by one statement ---------------


@postgres_only
async def test_a_stream_finds_and_locks_the_order_by_its_account_number(placed: Placed) -> None:
    ctx = placed.gw.harness.state.ctx
    async with ctx.sessionmaker() as session:
        row = await OrderRepository.for_system(session).get_row(placed.order_id)
        account = await AccountRepository.for_system(session).get(placed.account)
        assert row is not None
        assert account is not None
        ref = account.broker_account_ref
    async with ctx.sessionmaker() as session:
        orders = OrderRepository.for_system(session)
        by_client = await orders.find_on_broker_account(
            "alpaca", ref, broker_order_id="ignored", client_order_id=row.client_order_id
        )
        assert by_client is not None
        assert by_client.id == placed.order_id
        async with await _other_writer(placed) as other:
            with pytest.raises(DBAPIError, match="could not obtain lock"):
                await other.execute(
                    text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE NOWAIT"),
                    {"id": placed.order_id},
                )
            await other.rollback()
            # The account rows are read, not locked.
            await other.execute(
                text("SELECT 1 FROM accounts WHERE id = :id FOR UPDATE NOWAIT"),
                {"id": placed.account},
            )
            await other.rollback()
        await session.rollback()
    async with ctx.sessionmaker() as session:
        orders = OrderRepository.for_system(session)
        by_broker = await orders.find_on_broker_account(
            "alpaca", ref, broker_order_id=row.broker_order_id, client_order_id=None
        )
        assert by_broker is not None
        assert by_broker.id == placed.order_id
        for slug, account_ref, client_id in (
            ("tradier", ref, row.client_order_id),  # the same number at another broker
            ("alpaca", "PA-NOT-OURS", row.client_order_id),
            ("alpaca", ref, "c-not-ours"),
        ):
            found = await orders.find_on_broker_account(
                slug, account_ref, broker_order_id=None, client_order_id=client_id
            )
            assert found is None
        assert (
            await orders.find_on_broker_account(
                "alpaca", ref, broker_order_id=None, client_order_id=None
            )
            is None
        )
        with pytest.raises(PermissionError):
            await OrderRepository.for_user(session, placed.user).find_on_broker_account(
                "alpaca", ref, broker_order_id=None, client_order_id=row.client_order_id
            )

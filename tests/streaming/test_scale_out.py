"""Several instances on one Postgres: cross-instance delivery, slow subscribers, a killed
LISTEN connection, and isolation between users. Real sockets, real database."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from app.streaming.config import StreamSettings
from app.streaming.hub import CATCH_UPS
from tests.conftest import new_user
from tests.postgres import _as_asyncpg_dsn
from tests.streaming.support import (
    Instance,
    StreamClient,
    append_events,
    event_ids,
    eventually,
    serve,
    stream_client,
)

pytestmark = pytest.mark.postgres_only


def cursors(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["cursor"]) for e in events]


async def test_an_order_placed_on_instance_a_is_delivered_on_instance_b(
    pg_a: Instance, pg_b: Instance
) -> None:
    user = new_user()
    account = await pg_a.paper_account(user)
    async with pg_b.client() as client:
        await client.auth(pg_b.token(user))
        await client.subscribe([account], after=None)
        placed = await pg_a.place(user, account, symbol="MSFT", quantity="2")
        received = await client.events(2)
    assert [e["type"] for e in received] == ["order.pending_submit", f"order.{placed['status']}"]
    assert all(e["order_id"] == placed["id"] for e in received)
    assert received[-1]["order"] == placed | {"status": placed["status"]}


async def test_fills_reported_through_the_upstream_seam_reach_every_instance(
    pg_a: Instance, pg_b: Instance
) -> None:
    """A large order fills over several ticks; each fill goes through OrderUpdateIngest."""
    user = new_user()
    account = await pg_a.paper_account(user, starting_cash="100000000")
    start = (await event_ids(pg_a.sessionmaker, user))[-1]
    async with pg_a.client() as on_a, pg_b.client() as on_b:
        for client, instance in ((on_a, pg_a), (on_b, pg_b)):
            await client.auth(instance.token(user))
            await client.subscribe("*", after=str(start))
        placed = await pg_a.place(user, account, symbol="SPY", quantity="20000")
        status = placed["status"]
        for _ in range(100):
            if status == "filled":
                break
            await pg_a.tick()
            status = (
                await pg_a.http.get(f"/v1/orders/{placed['id']}", headers=pg_a.auth(user))
            ).json()["status"]
        assert status == "filled"
        truth = await event_ids(pg_a.sessionmaker, user, after=start)
        assert len(truth) >= 3  # pending_submit, partial fill(s) at placement/ticks, filled
        got_a = await on_a.events(len(truth))
        got_b = await on_b.events(len(truth))
    assert cursors(got_a) == cursors(got_b) == truth
    assert got_b[-1]["type"] == "order.filled"
    assert got_b[-1]["order"]["filled_quantity"] == "20000"


async def test_a_user_never_receives_another_users_events(pg_a: Instance, pg_b: Instance) -> None:
    victim, attacker = new_user("victim"), new_user("attacker")
    victim_account = await pg_a.paper_account(victim)
    attacker_account = await pg_a.paper_account(attacker)
    async with pg_b.client() as client:
        await client.auth(pg_b.token(attacker))
        # Another user's account answers exactly like a missing one.
        await client.send({"type": "subscribe", "accounts": [victim_account], "after": None})
        assert await client.recv_type("error") == {
            "type": "error",
            "code": "not_found",
            "detail": f"no such account: {victim_account}",
        }
        await client.send({"type": "subscribe", "accounts": ["acc_missing"], "after": None})
        assert (await client.recv_type("error"))["detail"] == "no such account: acc_missing"
        await client.send(
            {"type": "subscribe", "accounts": [attacker_account, victim_account], "after": None}
        )
        assert (await client.recv_type("error"))["code"] == "not_found"
        # Everything from the beginning is only ever the attacker's own history.
        await client.subscribe("*", after="0")
        own_history = await event_ids(pg_a.sessionmaker, attacker)
        await pg_a.place(victim, victim_account)
        await append_events(pg_a.sessionmaker, victim, victim_account, 5)
        await append_events(pg_a.sessionmaker, victim, None, 2, type_="connection.expiring")
        [marker] = await append_events(pg_a.sessionmaker, attacker, attacker_account, 1)
        received = await client.events_until(str(marker))
    assert all(int(e["cursor"]) in [*own_history, marker] for e in received)
    assert cursors(received)[-1] == marker
    assert victim_account not in {e["account_id"] for e in received}


async def test_a_slow_subscriber_is_resynced_and_never_delays_the_fast_ones(
    pg_a: Instance,
) -> None:
    user = new_user()
    account = await pg_a.paper_account(user)
    settings = StreamSettings(queue_size=128, heartbeat_seconds=3600)
    async with serve(pg_a.settings, settings) as instance:
        start = (await event_ids(instance.sessionmaker, user))[-1]
        async with instance.client() as f1, instance.client() as f2, instance.client() as f3:
            fast = [f1, f2, f3]
            for client in fast:
                await client.auth(instance.token(user))
                await client.subscribe("*", after=str(start))

            # Baseline: the fast ones alone.
            baseline: list[float] = []
            ids = await _paced_burst(instance, user, account, 200, fast, baseline)

            # The slow one reads nothing: a tiny receive window and a one-message client
            # queue, so the server's socket fills up and its writer blocks.
            slow_sock = _small_window_socket(instance.port)
            async with stream_client(
                instance.ws_url, sock=slow_sock, max_queue=1, compression=None
            ) as slow:
                await slow.auth(instance.token(user))
                await slow.subscribe("*", after=str(ids[-1]))
                beside_slow: list[float] = []
                # 700 events of 16 KB that do not compress: more than the socket buffers
                # (the kernel grows the server's send buffer to ~4 MB) and the queue hold.
                ids = await _paced_burst(instance, user, account, 700, fast, beside_slow)
                # Every fast subscriber got all 700 while the slow one had read nothing.
                assert slow.ws.protocol.state.name == "OPEN"

                # Now the slow one reads: a resync on the way, and every event exactly once.
                assert await _collect(slow, len(ids), [], within=60) == ids
                assert slow.resyncs
                assert all(int(r["after"]) < ids[-1] for r in slow.resyncs)
    assert not any(client.resyncs for client in fast)
    p99_baseline = statistics.quantiles(baseline, n=100)[98]
    p99_beside_slow = statistics.quantiles(beside_slow, n=100)[98]
    # Generous: only a fast subscriber that waited on the slow one would blow this (it would
    # wait until the slow one started reading, after the whole burst).
    assert p99_beside_slow <= max(3 * p99_baseline, p99_baseline + 0.25), (
        p99_baseline,
        p99_beside_slow,
    )


async def _paced_burst(
    instance: Instance,
    user: str,
    account: str,
    count: int,
    readers: list[StreamClient],
    latencies: list[float],
) -> list[int]:
    """Commit ``count`` events in small transactions while ``readers`` read them all."""

    async def produce() -> list[int]:
        ids: list[int] = []
        while len(ids) < count:
            ids += await append_events(instance.sessionmaker, user, account, 10, pad=16384)
            await asyncio.sleep(0.005)  # pacing the producer, not a timing assertion
        return ids

    producer = asyncio.create_task(produce())
    results = await asyncio.gather(*(_collect(r, count, latencies) for r in readers))
    ids = await producer
    for received in results:
        assert received == ids
    return ids


def _small_window_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive window (set before connecting, so it sticks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def _collect(
    client: StreamClient, count: int, latencies: list[float], within: float = 60
) -> list[int]:
    """Read ``count`` events, noting each one's delay from ``occurred_at`` to receipt."""
    received: list[int] = []
    async with asyncio.timeout(within):
        while len(received) < count:
            [event] = await client.events(1, within, allow_resync=True)
            latencies.append(time.time() - datetime.fromisoformat(event["occurred_at"]).timestamp())
            received.append(int(event["cursor"]))
    return received


async def test_a_subscriber_that_reads_nothing_is_closed_and_released(pg_a: Instance) -> None:
    user = new_user()
    account = await pg_a.paper_account(user)
    # 3 s: long enough for the healthy reader, which shares this event loop with the server.
    settings = StreamSettings(queue_size=32, send_timeout_seconds=3, heartbeat_seconds=3600)
    async with serve(pg_a.settings, settings) as instance:
        stuck_sock = _small_window_socket(instance.port)
        async with (
            stream_client(instance.ws_url, sock=stuck_sock, max_queue=1, compression=None) as stuck,
            instance.client() as healthy,
        ):
            for client in (stuck, healthy):
                await client.auth(instance.token(user))
                await client.subscribe("*", after=None)
            hub = instance.state.stream.hub
            assert hub.subscriber_count == 2
            # ~10 MB that does not compress: more than the kernel buffers (~4 MB) hold.
            ids = await append_events(
                instance.sessionmaker, user, account, 600, per_transaction=20, pad=16384
            )
            # (A burst bigger than its small queue may resync the healthy one too: allowed.)
            assert cursors(await healthy.events(600, 60, allow_resync=True)) == ids

            async def released() -> bool:
                return hub.subscriber_count == 1

            await eventually(released, within=30)
            # The healthy one still streams.
            more = await append_events(instance.sessionmaker, user, account, 2)
            assert cursors(await healthy.events(2)) == more
            # Whatever the stuck client reads now ends in a closed connection, in order.
            code, before = await stuck.closed(within=60)
            assert code in (4408, 1006, None)
            got = [int(m["event"]["cursor"]) for m in before if m["type"] == "event"]
            assert got == ids[: len(got)]


async def test_killing_the_listener_loses_nothing(pg_a: Instance) -> None:
    """The LISTEN backend is terminated mid-stream; events committed while nobody listened
    arrive after the reconnect, in order, once. Polling is off, so only the reconnect's
    catch-up can deliver them."""
    user = new_user()
    account = await pg_a.paper_account(user)
    settings = StreamSettings(poll_seconds=3600, reconnect_min_seconds=1.0)
    async with serve(pg_a.settings, settings) as instance:
        listener = instance.state.stream.listener
        assert listener is not None
        assert listener.connected
        start = (await event_ids(instance.sessionmaker, user))[-1]
        async with instance.client() as client:
            await client.auth(instance.token(user))
            await client.subscribe("*", after=str(start))
            first = await append_events(instance.sessionmaker, user, account, 5)
            assert cursors(await client.events(5)) == first

            # A producer keeps committing while the listener dies and comes back.
            stop = asyncio.Event()

            async def produce() -> list[int]:
                ids: list[int] = []
                while not stop.is_set():
                    ids += await append_events(instance.sessionmaker, user, account, 3)
                    await asyncio.sleep(0.01)
                return ids

            producer = asyncio.create_task(produce())
            connects = listener.connects
            pid = listener.backend_pid
            assert pid is not None
            admin = await asyncpg.connect(_as_asyncpg_dsn(instance.settings.database_url))
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            async with asyncio.timeout(10):
                await listener.wait_disconnected()
            during = await append_events(instance.sessionmaker, user, account, 4)
            assert listener.connects == connects  # committed while nobody listened
            async with asyncio.timeout(30):
                await listener.wait_connected()
            assert listener.backend_pid not in (None, pid)
            stop.set()
            produced = await producer
            after = await append_events(instance.sessionmaker, user, account, 2)
            truth = await event_ids(instance.sessionmaker, user, after=first[-1])
            assert set(during) | set(produced) | set(after) == set(truth)
            assert cursors(await client.events(len(truth), 30)) == truth


async def test_concurrent_appends_commit_in_id_order(pg_a: Instance) -> None:
    """Transaction 1 inserts first and commits last, transaction 2 commits in between
    without waiting for it: ids are given at COMMIT, so transaction 2's event gets the lower
    id, the subscriber gets both in commit order with rising cursors, and nothing is skipped
    (under ids drawn at insert, 1's lower id would arrive after the cursor passed it)."""
    user = new_user()
    account = await pg_a.paper_account(user)
    from app.db.repositories.orders import OrderEventRepository
    from app.services.clock import utcnow

    sessionmaker = pg_a.sessionmaker
    start = (await event_ids(sessionmaker, user))[-1]
    async with pg_a.client() as client:
        await client.auth(pg_a.token(user))
        await client.subscribe("*", after=str(start))
        async with sessionmaker() as first:
            row1 = OrderEventRepository.for_system(first).append(
                user_id=user,
                type_="order.accepted",
                payload={"n": 1},
                occurred_at=utcnow(),
                account_id=account,
            )
            await first.flush()
            async with sessionmaker() as second:
                row2 = OrderEventRepository.for_system(second).append(
                    user_id=user,
                    type_="order.filled",
                    payload={"n": 2},
                    occurred_at=utcnow(),
                    account_id=account,
                )
                await second.commit()
            assert row1.id > row2.id  # provisional ids, drawn in insert order (counting down)
            [id2] = await event_ids(sessionmaker, user, after=start)
            [early] = await client.events(1)
            assert early["order"]["n"] == 2
            assert early["cursor"] == str(id2)
            await first.commit()
        [id2_again, id1] = await event_ids(sessionmaker, user, after=start)
        assert id2_again == id2
        assert id1 > id2
        [late] = await client.events(1)
    assert late["cursor"] == str(id1)
    assert late["order"]["n"] == 1


async def test_without_the_lock_a_sequence_commits_out_of_order(pg_a: Instance) -> None:
    """Why ids are given at commit under the lock: ids drawn at insert commit out of id
    order, and a reader at "id > cursor" would skip the earlier id for good. (Only a
    superuser can bypass the trigger, by switching triggers off for its session.)"""
    dsn = _as_asyncpg_dsn(pg_a.settings.database_url)
    one, two, reader = [await asyncpg.connect(dsn) for _ in range(3)]
    for writer in (one, two):
        await writer.execute("SET session_replication_role = replica")
    user = new_user("raw")
    # Triggers off, the id is drawn at insert from the sequence readers' ids come from.
    insert = (
        "INSERT INTO order_events (id, user_id, type, payload, occurred_at) "
        "VALUES (nextval('order_events_id_seq'), $1, 'order.accepted', '{}', now()) "
        "RETURNING id"
    )
    try:
        tx1, tx2 = one.transaction(), two.transaction()
        await tx1.start()
        await tx2.start()
        early = await one.fetchval(insert, user)
        late = await two.fetchval(insert, user)
        await tx2.commit()
        seen = [
            r["id"]
            for r in await reader.fetch(
                "SELECT id FROM order_events WHERE user_id = $1 ORDER BY id", user
            )
        ]
        assert seen == [late]  # a reader now at cursor `late` ...
        await tx1.commit()
        after_cursor = await reader.fetch(
            "SELECT id FROM order_events WHERE user_id = $1 AND id > $2", user, late
        )
        assert early < late
        assert after_cursor == []
    finally:
        for conn in (one, two, reader):
            await conn.close()


def _catch_ups(source: str) -> float:
    return CATCH_UPS.labels(source)._value.get()


async def test_a_subscriber_that_fell_behind_catches_up_from_memory(pg_a: Instance) -> None:
    """A resync is served from the hub's recent frames: no database read per lagging
    subscriber, so database connections never grow with the subscribers that fall behind."""
    user = new_user()
    account = await pg_a.paper_account(user)
    settings = StreamSettings(queue_size=16, heartbeat_seconds=3600)
    async with serve(pg_a.settings, settings) as instance:
        slow_sock = _small_window_socket(instance.port)
        async with stream_client(
            instance.ws_url, sock=slow_sock, max_queue=1, compression=None
        ) as slow:
            await slow.auth(instance.token(user))
            await slow.subscribe("*", after=None)
            from_database = _catch_ups("database")
            from_memory = _catch_ups("memory")
            # ~5 MB that does not compress: more than the socket buffers and the queue hold.
            ids = await append_events(
                instance.sessionmaker, user, account, 300, per_transaction=10, pad=16384
            )
            assert await _collect(slow, len(ids), [], within=60) == ids
            assert slow.resyncs  # it did fall behind
            assert _catch_ups("memory") > from_memory
            assert _catch_ups("database") == from_database

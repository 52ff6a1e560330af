"""The Postgres outbox trigger (migration 0017), checked on raw connections: an insert takes
no lock and gets a provisional (negative) id; at COMMIT the deferred trigger takes the
ordering lock, gives each row its reader-visible id and announces it, never on rollback.
Ids therefore become visible in commit order, whatever order the inserts ran in."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from app.streaming.outbox import OUTBOX_CHANNEL, OUTBOX_LOCK_KEY
from tests.conftest import new_user
from tests.postgres import _as_asyncpg_dsn

_INSERT = (
    "INSERT INTO order_events (user_id, type, payload, occurred_at) "
    "SELECT $1, 'order.accepted', $2, now() FROM generate_series(1, $3) RETURNING id"
)
_READ = "SELECT id FROM order_events WHERE user_id = $1 AND id > $2 ORDER BY id"


async def _waiting_on_advisory_lock(observer: asyncpg.Connection, pid: int) -> None:
    # Postgres is polled: it has no event for "a backend started waiting".
    while not await observer.fetchval(  # noqa: ASYNC110
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = $1",
        pid,
    ):
        await asyncio.sleep(0.01)


async def test_the_insert_takes_no_lock_and_the_commit_draws_its_id_under_it(
    postgres_url: str,
) -> None:
    dsn = _as_asyncpg_dsn(postgres_url)
    holder, writer, other = [await asyncpg.connect(dsn) for _ in range(3)]
    user = new_user()
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK_KEY)
        writing = writer.transaction()
        await writing.start()
        # The insert does not wait for the lock: its id is provisional.
        (provisional,) = [r["id"] for r in await writer.fetch(_INSERT, user, "{}", 1)]
        assert provisional < 0
        committing = asyncio.create_task(writing.commit())
        await _waiting_on_advisory_lock(other, writer.get_server_pid())
        drawn_meanwhile = await other.fetchval("SELECT nextval('order_events_id_seq')")
        assert not committing.done()
        assert await other.fetch(_READ, user, -(2**62)) == []  # not visible while waiting
        await held.commit()
        await asyncio.wait_for(committing, 10)
        (published,) = [r["id"] for r in await other.fetch(_READ, user, -(2**62))]
        # Drawn before the lock, the published id would be below the one drawn meanwhile.
        assert published > drawn_meanwhile
    finally:
        for conn in (holder, writer, other):
            await conn.close()


async def test_ids_follow_commit_order_and_a_reader_at_a_cursor_skips_nothing(
    postgres_url: str,
) -> None:
    """Two writers insert in one order and commit in the other, the later one held open
    after its insert: the reader that saw the first commit, resuming after its id, still
    gets the held transaction's event when it commits (under a plain sequence it would have
    the lower id and be skipped)."""
    dsn = _as_asyncpg_dsn(postgres_url)
    first, second, reader = [await asyncpg.connect(dsn) for _ in range(3)]
    user = new_user()
    try:
        slow = first.transaction()
        await slow.start()
        (slow_provisional,) = [r["id"] for r in await first.fetch(_INSERT, user, "{}", 1)]
        fast = second.transaction()
        await fast.start()
        (fast_provisional,) = [r["id"] for r in await second.fetch(_INSERT, user, "{}", 1)]
        assert slow_provisional > fast_provisional  # drawn first (the sequence counts down)
        await fast.commit()  # while the slow one is still open after its insert

        delivered = [r["id"] for r in await reader.fetch(_READ, user, 0)]
        assert len(delivered) == 1
        cursor = delivered[-1]

        await slow.commit()
        after_cursor = [r["id"] for r in await reader.fetch(_READ, user, cursor)]
        assert len(after_cursor) == 1
        assert after_cursor[0] > cursor
        assert await reader.fetchval("SELECT count(*) FROM order_events WHERE id < 0") == 0
    finally:
        for conn in (first, second, reader):
            await conn.close()


async def test_each_published_id_is_announced_at_commit_only(postgres_url: str) -> None:
    dsn = _as_asyncpg_dsn(postgres_url)
    listener, writer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(OUTBOX_CHANNEL, lambda *args: heard.put_nowait(args[3]))
    user = new_user()
    try:
        rolled_back = writer.transaction()
        await rolled_back.start()
        await writer.fetch(_INSERT, user, json.dumps({}), 2)
        await rolled_back.rollback()

        async with writer.transaction():
            await writer.fetch(_INSERT, user, json.dumps({}), 3)
            await writer.fetch(_INSERT, user, json.dumps({}), 0)  # no rows: nothing to say
            savepoint = writer.transaction()  # a savepoint rolled back: its row is gone
            await savepoint.start()
            await writer.fetch(_INSERT, user, json.dumps({}), 1)
            await savepoint.rollback()
        (last,) = await writer.fetch(_INSERT, user, json.dumps({}), 1)
        assert last["id"] < 0  # what the insert returns is provisional

        ids = [r["id"] for r in await writer.fetch(_READ, user, 0)]
        assert len(ids) == 4  # three, then one; nothing from rollbacks
        # Announcements arrive in commit order, one per published id: one from the
        # rolled-back transaction or savepoint would come first or in between.
        for expected in ids:
            assert int(await asyncio.wait_for(heard.get(), 10)) == expected
        assert heard.empty()
    finally:
        await listener.close()
        await writer.close()


async def test_an_explicit_id_is_kept_and_announced(postgres_url: str) -> None:
    dsn = _as_asyncpg_dsn(postgres_url)
    listener, writer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(OUTBOX_CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        explicit = 2**40
        await writer.execute(
            "INSERT INTO order_events (id, user_id, type, payload, occurred_at) "
            "VALUES ($1, $2, 'order.accepted', '{}', now())",
            explicit,
            new_user(),
        )
        assert await writer.fetchval("SELECT id FROM order_events WHERE id = $1", explicit)
        assert int(await asyncio.wait_for(heard.get(), 10)) == explicit
    finally:
        await listener.close()
        await writer.close()

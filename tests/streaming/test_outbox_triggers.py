"""The Postgres outbox triggers (migration 0008), checked on raw connections: whoever
inserts into ``order_events`` takes the ordering lock before an id is drawn, and the
highest id of each statement is announced at commit, never on rollback."""

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


async def test_an_id_is_drawn_only_after_the_ordering_lock_is_held(postgres_url: str) -> None:
    dsn = _as_asyncpg_dsn(postgres_url)
    holder, writer, other = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK_KEY)
        blocked = asyncio.create_task(writer.fetchval(_INSERT, new_user(), json.dumps({}), 1))
        # The writer must be waiting on the lock, not past it (Postgres is polled: it has
        # no event for "a backend started waiting").
        while not await other.fetchval(  # noqa: ASYNC110
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND pid = $1",
            writer.get_server_pid(),
        ):
            await asyncio.sleep(0.01)
        drawn_meanwhile = await other.fetchval("SELECT nextval('order_events_id_seq')")
        assert not blocked.done()
        await held.commit()
        written = await asyncio.wait_for(blocked, 10)
        # Drawn before the lock, the writer's id would be below the one drawn meanwhile.
        assert written > drawn_meanwhile
    finally:
        for conn in (holder, writer, other):
            await conn.close()


async def test_each_statement_announces_its_highest_id_at_commit_only(postgres_url: str) -> None:
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
            ids = [row["id"] for row in await writer.fetch(_INSERT, user, json.dumps({}), 3)]
            await writer.fetch(_INSERT, user, json.dumps({}), 0)  # no rows: nothing to say

        (last,) = await writer.fetch(_INSERT, user, json.dumps({}), 1)

        # Announcements arrive in commit order: one from the rolled-back or the empty
        # statement would come before these.
        assert int(await asyncio.wait_for(heard.get(), 10)) == max(ids)
        assert int(await asyncio.wait_for(heard.get(), 10)) == last["id"]
    finally:
        await listener.close()
        await writer.close()

"""The small pieces on their own: subscription queues, cursors, the in-process notifier, and
the embedded (SQLite) mode's delivery paths."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.orm import Session

from app.db.repositories.orders import OrderEventRepository
from app.db.session import create_engine, create_sessionmaker, database_key
from app.streaming.config import StreamSettings
from app.streaming.hub import RecentFrames, Subscription
from app.streaming.outbox import LocalNotifier
from app.streaming.pg_listener import asyncpg_dsn
from app.streaming.protocol import InvalidCursorError, parse_cursor
from tests.conftest import new_user
from tests.harness import settings_for_tests
from tests.streaming.support import Instance, append_events, serve


async def test_a_subscription_filters_queues_and_overflows() -> None:
    sub = Subscription("u", frozenset({"a"}), max_queue=3)
    sub.offer(1, "b", "x")  # not its account
    sub.offer(2, None, "x")  # connection-level: only for "*" subscriptions
    assert sub.pending == 0
    for i in range(3, 6):
        sub.offer(i, "a", f"f{i}")
    assert sub.take() == [(3, "f3"), (4, "f4"), (5, "f5")]
    assert sub.take() == []
    for i in range(6, 10):
        sub.offer(i, "a", "f")
    assert sub.overflowed
    assert sub.pending == 0
    sub.offer(10, "a", "f")
    assert sub.pending == 0  # ignored until the writer resynchronises
    sub.clear_overflow()
    sub.offer(11, "a", "f11")
    assert sub.take() == [(11, "f11")]

    everything = Subscription("u", None, max_queue=3)
    everything.offer(1, None, "c")
    everything.offer(2, "z", "o")
    assert everything.take() == [(1, "c"), (2, "o")]


async def test_wait_returns_on_offer_and_on_poke() -> None:
    sub = Subscription("u", None, max_queue=2)
    waiter = asyncio.create_task(sub.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    sub.offer(1, None, "f")
    await asyncio.wait_for(waiter, 5)
    sub.take()
    waiter = asyncio.create_task(sub.wait())
    await asyncio.sleep(0)
    sub.poke()
    await asyncio.wait_for(waiter, 5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("42", 42), (42, 42), ("9223372036854775807", 2**63 - 1), ("007", 7)],
)
def test_good_cursors(value: str | int, expected: int) -> None:
    assert parse_cursor(value) == expected


@pytest.mark.parametrize(
    "value", ["", "-1", -1, "1.0", "abc", "\uff19", "9223372036854775808", 2**63, True, " 1", "1e3"]
)
def test_bad_cursors(value: str | int) -> None:
    with pytest.raises(InvalidCursorError):
        parse_cursor(value)


def test_listener_dsn_and_database_keys() -> None:
    assert (
        asyncpg_dsn("postgresql+asyncpg://u:p%40ss@h:5433/db?ssl=require")
        == "postgresql://u:p%40ss@h:5433/db?ssl=require"
    )

    class Url:
        database = "./var/x.db"

    assert database_key(Url()).endswith("/var/x.db")
    assert database_key(Url()).startswith("/")


async def test_local_notifier_delivers_on_the_hubs_loop_from_any_thread(
    tmp_path: Path,
) -> None:
    key = str(tmp_path / f"nowhere-{uuid.uuid4().hex}.db")
    got: list[tuple[int, int]] = []
    arrived = asyncio.Event()

    def callback(event_id: int) -> None:
        got.append((event_id, threading.get_ident()))
        arrived.set()

    token = LocalNotifier.register(key, callback)
    try:
        LocalNotifier.publish(key, 1)  # same thread and loop: direct call
        thread = threading.Thread(target=LocalNotifier.publish, args=(key, 2))
        thread.start()
        thread.join()
        async with asyncio.timeout(5):
            while len(got) < 2:
                arrived.clear()
                await arrived.wait()
    finally:
        LocalNotifier.unregister(key, token)
    LocalNotifier.publish(key, 3)  # nobody listens: nothing happens
    assert [g[0] for g in got] == [1, 2]
    assert {g[1] for g in got} == {threading.get_ident()}


# --- the embedded mode --------------------------------------------------------------------


async def test_sqlite_any_engine_of_the_process_wakes_the_hub(
    sqlite_instance: Instance, sqlite_url: str
) -> None:
    """A write through another engine (another sessionmaker, even a sync session in a
    thread) of this process reaches the in-process hub without waiting for its poll."""
    user = new_user()
    account = await sqlite_instance.paper_account(user)
    other = create_engine(sqlite_url)
    try:
        async with sqlite_instance.client() as client:
            await client.auth(sqlite_instance.token(user))
            await client.subscribe([account], after=None)
            [via_other_engine] = await append_events(create_sessionmaker(other), user, account, 1)
            [event] = await client.events(1)
            assert event["cursor"] == str(via_other_engine)

            sync_engine = create_sync_engine(sqlite_url.replace("+aiosqlite", ""))

            def write_in_thread() -> int:
                with Session(sync_engine) as session:
                    row = OrderEventRepository.for_system(session).append(  # type: ignore[arg-type]
                        user_id=user,
                        type_="order.accepted",
                        payload={"from": "thread"},
                        occurred_at=datetime.now(UTC),
                        account_id=account,
                    )
                    session.commit()
                    return row.id

            from_thread = await asyncio.to_thread(write_in_thread)
            sync_engine.dispose()
            [event] = await client.events(1)
            assert event["cursor"] == str(from_thread)
    finally:
        await other.dispose()


async def test_sqlite_poll_catches_writes_nobody_announced(sqlite_url: str) -> None:
    """A write that bypasses the ORM (another process, a raw connection) announces nothing;
    the hub's safety poll still delivers it."""
    async with serve(settings_for_tests(sqlite_url), StreamSettings(poll_seconds=0.2)) as inst:
        user = new_user()
        account = await inst.paper_account(user)
        async with inst.client() as client:
            await client.auth(inst.token(user))
            await client.subscribe("*", after=None)
            path = sqlite_url.split("///", 1)[1]

            def raw_insert() -> int:
                with sqlite3.connect(path, timeout=10) as conn:
                    cursor = conn.execute(
                        "INSERT INTO order_events (user_id, account_id, type, payload, occurred_at)"
                        " VALUES (?, ?, 'order.accepted', '{}', ?)",
                        (user, account, datetime.now(UTC).isoformat()),
                    )
                    return int(cursor.lastrowid or 0)

            raw_id = await asyncio.to_thread(raw_insert)
            [event] = await client.events(1)
            assert event["cursor"] == str(raw_id)


@given(
    events=st.lists(
        st.tuples(st.sampled_from(["a", "b", None]), st.booleans()), min_size=0, max_size=60
    ),
    size=st.integers(min_value=1, max_value=20),
    floor=st.integers(min_value=0, max_value=5),
    cursor=st.integers(min_value=0, max_value=80),
    accounts=st.sampled_from([None, frozenset({"a"}), frozenset({"a", "b"})]),
)
def test_recent_frames_answer_exactly_the_held_range_or_nothing(
    events: list[tuple[str | None, bool]],
    size: int,
    floor: int,
    cursor: int,
    accounts: frozenset[str] | None,
) -> None:
    """Whatever was appended and evicted: either every event after the cursor (for the
    accounts, oldest first), or None when some of them may have been evicted."""
    recent = RecentFrames(floor, size)
    appended: list[tuple[int, str | None]] = []
    event_id = floor
    for account, skip in events:
        event_id += 2 if skip else 1  # ids have gaps (other users' events)
        recent.append(event_id, account, f"frame-{event_id}")
        appended.append((event_id, account))
    found = recent.after(cursor, accounts, limit=1000)
    evicted = appended[: max(0, len(appended) - size)]
    if evicted and cursor < evicted[-1][0]:
        assert found is None
        return
    if cursor < floor:
        assert found is None
        return
    assert found == [
        (i, f"frame-{i}")
        for i, account in appended
        if i > cursor and (accounts is None or account in accounts)
    ]

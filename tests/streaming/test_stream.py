"""``WS /v1/stream`` over a real socket, on Postgres and SQLite: delivery and resume.

Every test compares what a subscriber received with the truth in the database (the user's
committed event ids), so "in order, none missing, none twice" is checked exactly.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal

from app.db.repositories.orders import OrderEventRepository
from app.services.events import SENT
from tests.conftest import new_user
from tests.streaming.support import Instance, append_events, event_ids

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def cursors(events: list[dict[str, object]]) -> list[int]:
    return [int(str(e["cursor"])) for e in events]


async def test_backlog_then_live_in_cursor_order(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    await instance.place(user, account)
    await instance.place(user, account, symbol="MSFT", quantity="2")
    backlog = await event_ids(instance.sessionmaker, user)
    assert len(backlog) >= 4

    async with instance.client() as client:
        await client.auth(instance.token(user))
        subscribed = await client.subscribe("*", after="0")
        assert subscribed == {"type": "subscribed", "accounts": "*", "after": "0"}
        received = await client.events(len(backlog))
        assert cursors(received) == backlog

        placed = await instance.place(user, account, symbol="MSFT", quantity="3")
        truth = await event_ids(instance.sessionmaker, user)
        live = await client.events(len(truth) - len(backlog))
        assert cursors(received + live) == truth
        assert {e["order_id"] for e in live} == {placed["id"]}

    event = live[-1]
    assert set(event) >= {"cursor", "type", "account_id", "order_id", "order", "occurred_at"}
    assert event["type"] == f"order.{event['order']['status']}"
    assert event["account_id"] == account
    assert RFC3339_UTC.match(event["occurred_at"])
    order = event["order"]
    assert order["quantity"] == "3"
    assert isinstance(order["filled_quantity"], str)
    assert Decimal(order["avg_fill_price"]) > 0
    assert RFC3339_UTC.match(order["updated_at"])


async def test_after_null_starts_at_the_newest_event_live_only(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    await instance.place(user, account)
    before = await event_ids(instance.sessionmaker, user)

    async with instance.client() as client:
        await client.auth(instance.token(user))
        subscribed = await client.subscribe("*", after=None)
        assert subscribed["after"] == str(before[-1])
        await instance.place(user, account)
        truth = await event_ids(instance.sessionmaker, user, after=before[-1])
        assert cursors(await client.events(len(truth))) == truth


async def test_reconnect_with_cursor_gets_exactly_the_missed_events(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    async with instance.client() as client:
        await client.auth(instance.token(user))
        await client.subscribe("*", after="0")
        await instance.place(user, account)
        seen = await client.events(len(await event_ids(instance.sessionmaker, user)))
    last = seen[-1]["cursor"]

    # Offline: orders and an upstream-style append happen without us.
    await instance.place(user, account, quantity="2")
    await append_events(instance.sessionmaker, user, account, 3)
    missed = await event_ids(instance.sessionmaker, user, after=int(last))
    assert len(missed) >= 5

    async with instance.client() as client:
        await client.auth(instance.token(user))
        assert (await client.subscribe("*", after=last))["after"] == last
        assert cursors(await client.events(len(missed))) == missed
        # Then live, and nothing in between was repeated.
        await instance.place(user, account, quantity="4")
        after_live = await event_ids(instance.sessionmaker, user, after=missed[-1])
        assert cursors(await client.events(len(after_live))) == after_live


async def test_cursor_may_be_given_as_an_integer(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    ids = await append_events(instance.sessionmaker, user, account, 3)
    async with instance.client() as client:
        await client.auth(instance.token(user))
        assert (await client.subscribe("*", after=ids[0]))["after"] == str(ids[0])
        assert cursors(await client.events(2)) == ids[1:]


async def test_subscribing_to_some_accounts_gets_only_theirs(instance: Instance) -> None:
    user = new_user()
    first = await instance.paper_account(user)
    second = await instance.paper_account(user)
    async with instance.client() as client:
        await client.auth(instance.token(user))
        subscribed = await client.subscribe([first, first], after=None)
        assert subscribed["accounts"] == [first]
        await instance.place(user, second)
        marker = await instance.place(user, first)
        received = await client.events(2)
    assert {e["account_id"] for e in received} == {first}
    assert {e["order_id"] for e in received} == {marker["id"]}
    assert next(e["type"] for e in received) == "order.pending_submit"


async def test_heartbeats_carry_the_cursor(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    async with instance.client() as client:
        await client.auth(instance.token(user))
        start = (await client.subscribe("*", after=None))["after"]
        first = await client.recv_type("heartbeat")
        assert first == {"type": "heartbeat", "cursor": start}
        ids = await append_events(instance.sessionmaker, user, account, 2)
        await client.events(2)
        # The next heartbeat reports the last delivered event.
        later = await client.recv_type("heartbeat")
        assert later["cursor"] == str(ids[-1])


async def test_a_rolled_back_change_is_never_delivered(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    async with instance.client() as client:
        await client.auth(instance.token(user))
        start = int((await client.subscribe("*", after=None))["after"])
        async with instance.sessionmaker() as session:
            OrderEventRepository.for_system(session).append(
                user_id=user,
                type_="order.filled",
                payload={"rolled": "back"},
                occurred_at=datetime.now(UTC),
                account_id=account,
            )
            await session.flush()  # inserted (and, on Postgres, notified) ...
            await session.rollback()  # ... then gone
        [marker] = await append_events(instance.sessionmaker, user, account, 1)
        # The first thing delivered is the committed marker (on SQLite it even reuses the
        # rolled-back row's id, so the payload tells them apart).
        [received] = await client.events(1)
        assert received["cursor"] == str(marker)
        assert "marker" in received["order"]
    assert await event_ids(instance.sessionmaker, user, after=start) == [marker]


async def test_many_subscribers_of_one_user_each_get_everything_once(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    start = (await event_ids(instance.sessionmaker, user))[-1]
    async with (
        instance.client() as one,
        instance.client() as two,
        instance.client() as three,
    ):
        for client in (one, two, three):
            await client.auth(instance.token(user))
        await one.subscribe("*", after=str(start))
        await two.subscribe([account], after=str(start))
        producer = asyncio.create_task(
            append_events(instance.sessionmaker, user, account, 120, per_transaction=7)
        )
        # Three subscribes while events are being committed: backlog and live overlap.
        await three.subscribe("*", after=str(start))
        ids = await producer
        for client in (one, two, three):
            assert cursors(await client.events(len(ids))) == ids


async def test_live_frames_are_counted_in_the_sent_metric(instance: Instance) -> None:
    """``brokerage_stream_events_sent_total{path="live"}`` counts every live frame (it is
    counted once per batch the writer sends)."""
    user = new_user()
    account = await instance.paper_account(user)
    live = SENT.labels(path="live")
    async with instance.client() as client:
        await client.auth(instance.token(user))
        subscribed = await client.subscribe("*", after=None)
        before = live._value.get()
        await instance.place(user, account)
        await instance.place(user, account)
        truth = await event_ids(instance.sessionmaker, user, after=int(subscribed["after"] or 0))
        assert cursors(await client.events(len(truth))) == truth
        async with asyncio.timeout(5):
            while live._value.get() < before + len(truth):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert live._value.get() == before + len(truth)

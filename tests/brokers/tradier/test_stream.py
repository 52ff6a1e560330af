"""Tradier account streaming over a real WebSocket to the fake: session, events, gaps."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Never

import pytest
from websockets.asyncio.client import connect

from app.brokers import errors
from app.brokers.base import OrderStatus, OrderUpdate
from app.brokers.tradier.adapter import TradierAdapter, stream_url
from app.brokers.tradier.stream import AccountEventsStream
from tests.brokers.support import limit_buy, market
from tests.brokers.tradier.support import Running, running_fake


async def next_update(updates: AsyncIterator[OrderUpdate]) -> OrderUpdate:
    return await asyncio.wait_for(anext(updates), 5.0)


async def drain(updates: AsyncIterator[OrderUpdate]) -> None:
    while True:
        await next_update(updates)


async def until(
    updates: AsyncIterator[OrderUpdate], broker_order_id: str, status: OrderStatus
) -> OrderUpdate:
    while True:
        update = await next_update(updates)
        if update.order.broker_order_id == broker_order_id and update.order.status is status:
            return update


def open_stream(
    run: Running, adapter: TradierAdapter, *accounts: str, idle_timeout: float = 60.0
) -> AccountEventsStream:
    return AccountEventsStream(
        stream_url(adapter._settings),
        accounts,
        create_session=adapter.create_stream_session,
        fetch_order=adapter.get_order,
        catch_up=adapter.recent_orders,
        idle_timeout=idle_timeout,
    )


async def test_session_then_live_events_with_fills(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        before = await adapter.place_order(number, limit_buy("bg-before"))
        stream = open_stream(run, adapter, number)
        updates = stream.updates()
        try:
            caught_up = await next_update(updates)  # the REST catch-up comes first
            assert caught_up.order.broker_order_id == before.broker_order_id
            assert stream.connects == 1
            assert ("POST", "/v1/accounts/events/session") in run.fake.requests

            placed = await adapter.place_order(number, market("bg-live", qty="2"))
            new = await until(updates, placed.broker_order_id, OrderStatus.submitted)
            assert new.account_ref == number
            assert new.order.client_order_id == "bg-live"  # read back with its tag
            run.fake.acknowledge()  # pending -> open, as the market takes it
            await until(updates, placed.broker_order_id, OrderStatus.accepted)
            await run.fake.match()
            fill = await until(updates, placed.broker_order_id, OrderStatus.filled)
            [one] = fill.fills
            assert one.quantity == Decimal(2)
            assert one.price == fill.order.avg_fill_price
            assert run.user.token not in caplog.text
        finally:
            await updates.aclose()


async def test_events_of_other_accounts_and_heartbeats_are_not_updates() -> None:
    async with running_fake(accounts=2) as run:
        run.fake.faults.heartbeat_seconds = 0.05
        adapter = run.adapter()
        first, second = (a.number for a in run.user.accounts)
        updates = open_stream(run, adapter, first).updates()
        try:
            await adapter.place_order(second, limit_buy("bg-other"))
            mine = await adapter.place_order(first, limit_buy("bg-mine"))
            update = await next_update(updates)
            assert update.order.broker_order_id == mine.broker_order_id
            assert update.account_ref == first
        finally:
            await updates.aclose()


async def test_one_session_serves_every_account_of_the_user() -> None:
    """Tradier allows one streaming session per user at a time: one stream reads the events
    of all of a connection's accounts, each update under its own account, and catches up
    each account after a gap."""
    async with running_fake(accounts=3) as run:
        adapter = run.adapter()
        first, second, third = (a.number for a in run.user.accounts)
        earlier = await adapter.place_order(second, limit_buy("bg-earlier"))
        updates = open_stream(run, adapter, first, second).updates()
        try:
            caught_up = await next_update(updates)
            assert (caught_up.account_ref, caught_up.order.broker_order_id) == (
                second,
                earlier.broker_order_id,
            )
            await adapter.place_order(third, limit_buy("bg-not-ours"))
            on_first = await adapter.place_order(first, limit_buy("bg-first"))
            on_second = await adapter.place_order(second, limit_buy("bg-second"))
            seen = [await next_update(updates) for _ in range(2)]
            assert [(u.account_ref, u.order.broker_order_id) for u in seen] == [
                (first, on_first.broker_order_id),
                (second, on_second.broker_order_id),
            ]
            sessions = run.fake.requests.count(("POST", "/v1/accounts/events/session"))
            assert sessions == 1
        finally:
            await updates.aclose()


def test_a_stream_needs_a_sequence_of_accounts_not_one_string() -> None:
    with pytest.raises(TypeError):
        AccountEventsStream(
            "wss://ws.example",
            "VA00000001",
            create_session=_never,
            fetch_order=_never,
            catch_up=_never,
        )


async def _never(*_args: object) -> Never:
    raise AssertionError("not called")


async def test_the_fake_speaks_the_documented_handshake() -> None:
    async with running_fake() as run:
        run.fake.faults.heartbeat_seconds = 0.05
        adapter = run.adapter()
        session = await adapter.create_stream_session()
        url = stream_url(adapter._settings)
        async with connect(url) as ws:
            await ws.send(json.dumps({"events": ["order"], "sessionid": session}))
            heartbeat = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert heartbeat["event"] == "heartbeat"
            assert heartbeat["status"] == "active"
            placed = await adapter.place_order(run.account.number, limit_buy("bg-hs"))
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if event["event"] == "order":
                    break
            assert event["id"] == int(placed.broker_order_id)
            assert event["account"] == run.account.number
            assert "symbol" not in event  # why each event is read back over REST
        async with connect(url) as ws:
            await ws.send(json.dumps({"events": ["order"], "sessionid": "NOT-A-SESSION"}))
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1008


async def test_a_dropped_stream_reconnects_on_a_new_session_and_catches_up() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        stream = open_stream(run, adapter, number)
        updates = stream.updates()
        try:
            placed = await adapter.place_order(number, market("bg-gap"))
            await until(updates, placed.broker_order_id, OrderStatus.submitted)
            run.fake.drop_streams()
            await run.fake.match()  # fills while nobody listens: the event is lost
            filled = await until(updates, placed.broker_order_id, OrderStatus.filled)
            assert filled.fills == ()  # it came from the REST catch-up, not the stream
            assert stream.connects == 2
            assert run.fake.requests.count(("POST", "/v1/accounts/events/session")) == 2
        finally:
            await updates.aclose()


async def test_a_silent_stream_is_restarted_and_caught_up() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        stream = open_stream(run, adapter, number, idle_timeout=0.3)
        updates = stream.updates()
        try:
            placed = await adapter.place_order(number, market("bg-silent"))
            await until(updates, placed.broker_order_id, OrderStatus.submitted)
            run.fake.faults.stream_silent = True
            await run.fake.match()
            filled = await until(updates, placed.broker_order_id, OrderStatus.filled)
            assert filled.fills == ()
            assert stream.connects >= 2
        finally:
            await updates.aclose()


async def test_heartbeats_keep_a_quiet_stream_open() -> None:
    async with running_fake() as run:
        run.fake.faults.heartbeat_seconds = 0.05
        adapter = run.adapter()
        stream = open_stream(run, adapter, run.account.number, idle_timeout=0.5)
        updates = stream.updates()
        try:
            waiting = asyncio.ensure_future(next_update(updates))
            await asyncio.sleep(1.5)  # three idle windows; heartbeats every 0.05 s
            assert stream.connects == 1
            placed = await adapter.place_order(run.account.number, limit_buy("bg-beat"))
            update = await waiting
            assert update.order.broker_order_id == placed.broker_order_id
        finally:
            await updates.aclose()


@pytest.mark.parametrize("fault", ["revoke", "expire"])
async def test_a_refused_token_ends_the_stream_with_authentication_failed(fault: str) -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        updates = open_stream(run, adapter, run.account.number).updates()
        try:
            placed = await adapter.place_order(run.account.number, limit_buy("bg-rv"))
            await until(updates, placed.broker_order_id, OrderStatus.submitted)
            getattr(run.fake, fault)(run.user.token)
            run.fake.drop_streams()
            with pytest.raises(errors.AuthenticationFailed):
                await drain(updates)
        finally:
            await updates.aclose()


async def test_the_adapter_hands_out_the_stream() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        updates = adapter.stream_order_updates(run.account.number)
        assert updates is not None
        placed = await adapter.place_order(run.account.number, limit_buy("bg-via-adapter"))
        try:
            update = await next_update(updates)
            assert update.order.broker_order_id == placed.broker_order_id
        finally:
            await updates.aclose()  # type: ignore[attr-defined]

"""The account streamer over a real WebSocket to the fake: handshake, heartbeats, gaps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from app.brokers import errors
from app.brokers.base import OrderStatus, OrderUpdate
from app.brokers.tastytrade.adapter import TastytradeAdapter
from app.brokers.tastytrade.stream import AccountStreamer
from tests.brokers.support import limit_buy, market
from tests.brokers.tastytrade.options_support import iron_condor_legs, spread
from tests.brokers.tastytrade.support import Running, running_fake


async def next_update(updates: AsyncIterator[OrderUpdate]) -> OrderUpdate:
    return await asyncio.wait_for(anext(updates), 5.0)


async def until(
    updates: AsyncIterator[OrderUpdate], broker_order_id: str, status: OrderStatus
) -> OrderUpdate:
    while True:
        update = await next_update(updates)
        if update.order.broker_order_id == broker_order_id and update.order.status is status:
            return update


async def drain(updates: AsyncIterator[OrderUpdate]) -> None:
    while True:
        await next_update(updates)


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (bounded, generously: a loaded CI machine is slow) for what another task does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def open_stream(
    run: Running,
    adapter: TastytradeAdapter | None = None,
    *,
    account: str | None = None,
    heartbeat: float = 20.0,
    idle: float = 60.0,
    handshake: float = 2.0,
) -> AccountStreamer:
    adapter = adapter or run.adapter()
    return AccountStreamer(
        run.streamer_url,
        account or run.account.number,
        token=adapter.access_token,
        invalidate=adapter.invalidate_token,
        catch_up=adapter.live_orders,
        heartbeat_interval=heartbeat,
        idle_timeout=idle,
        handshake_timeout=handshake,
        max_backoff=0.2,
    )


@contextlib.asynccontextmanager
async def consumed(updates: AsyncIterator[OrderUpdate]) -> AsyncIterator[asyncio.Queue[object]]:
    """Pull updates in a task (the stream only runs while pulled), into a queue."""
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pull() -> None:
        try:
            async for update in updates:
                queue.put_nowait(update)
        except Exception as exc:  # handed to the test
            queue.put_nowait(exc)

    task = asyncio.create_task(pull())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def take(
    queue: asyncio.Queue[object], broker_order_id: str, status: OrderStatus
) -> OrderUpdate:
    while True:
        item = await asyncio.wait_for(queue.get(), 5.0)
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, OrderUpdate)
        if item.order.broker_order_id == broker_order_id and item.order.status is status:
            return item


async def test_handshake_catch_up_then_live_notifications(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        before = await adapter.place_order(number, limit_buy("bg-before"))
        stream = open_stream(run, adapter)
        updates = stream.updates()
        try:
            caught_up = await next_update(updates)  # the REST catch-up comes first
            assert caught_up.order.broker_order_id == before.broker_order_id
            assert stream.connects == 1
            [connect] = run.fake.stream_messages
            [token] = run.fake.tokens
            assert connect == {
                "action": "connect",
                "value": [number],
                "auth-token": f"Bearer {token}",
                "request-id": 1,
                "source": "brokerage-gateway",
            }

            placed = await adapter.place_order(number, market("bg-live", qty="2"))
            routed = await until(updates, placed.broker_order_id, OrderStatus.submitted)
            assert routed.account_ref == number
            await until(updates, placed.broker_order_id, OrderStatus.accepted)
            await run.fake.match()
            fill = await until(updates, placed.broker_order_id, OrderStatus.filled)
            [one] = fill.fills
            assert one.quantity == Decimal(2)
            assert one.price == fill.order.avg_fill_price
            assert fill.occurred_at.tzinfo is not None
            assert token not in caplog.text  # not even the connect frame
            assert run.customer.refresh_token not in caplog.text
        finally:
            await updates.aclose()


async def test_heartbeats_carry_a_token_and_are_answered() -> None:
    async with running_fake() as run:
        stream = open_stream(run, heartbeat=0.05)
        updates = stream.updates()
        async with consumed(updates):
            await eventually(lambda: stream.heartbeats_sent >= 3)
        await updates.aclose()
        beats = [m for m in run.fake.stream_messages if m["action"] == "heartbeat"]
        assert len(beats) >= 3
        assert [b["request-id"] for b in beats[:3]] == [2, 3, 4]
        assert all(b["auth-token"].startswith("Bearer ") for b in beats)
        assert stream.connects == 1
        assert stream.silences == 0  # the answers count as life


def _stream_metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"broker": "tastytrade"}) or 0.0


async def test_a_dropped_stream_reconnects_and_catches_up() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        stream = open_stream(run, adapter)
        updates = stream.updates()
        connects = _stream_metric("brokerage_upstream_stream_connects_total")
        interruptions = _stream_metric("brokerage_upstream_stream_interruptions_total")
        try:
            placed = await adapter.place_order(run.account.number, market("bg-gap"))
            await until(updates, placed.broker_order_id, OrderStatus.accepted)
            run.fake.drop_streams()
            await run.fake.match()  # fills while nobody listens: the notification is lost
            filled = await until(updates, placed.broker_order_id, OrderStatus.filled)
            assert filled.fills == ()  # it came from the REST catch-up, not the stream
            assert stream.connects == 2
            assert [m["action"] for m in run.fake.stream_messages].count("connect") == 2
            # The operators see it: two connections, one interruption between them.
            assert _stream_metric("brokerage_upstream_stream_connects_total") == connects + 2
            assert (
                _stream_metric("brokerage_upstream_stream_interruptions_total") == interruptions + 1
            )
        finally:
            await updates.aclose()


async def test_a_silent_stream_is_detected_restarted_and_caught_up() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        stream = open_stream(run, adapter, heartbeat=0.05, idle=0.3, handshake=0.3)
        updates = stream.updates()
        async with consumed(updates) as queue:
            placed = await adapter.place_order(run.account.number, market("bg-silent"))
            await take(queue, placed.broker_order_id, OrderStatus.accepted)
            run.fake.faults.stream_silent = True  # open, but no answer and no notification
            await run.fake.match()
            await eventually(lambda: stream.silences >= 1)
            run.fake.faults.stream_silent = False
            filled = await take(queue, placed.broker_order_id, OrderStatus.filled)
            assert filled.fills == ()  # from the catch-up after the restart
            assert stream.connects >= 2
        await updates.aclose()


async def test_an_expired_token_mid_stream_reconnects_with_a_fresh_one() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        stream = open_stream(run, adapter, heartbeat=0.05)
        updates = stream.updates()
        async with consumed(updates) as queue:
            # Connected, caught up and heartbeating: before the first heartbeat the REST
            # catch-up may still be on its way, and on a 401 it would mint the fresh token
            # the heartbeats then use, so none would be refused.
            await eventually(lambda: stream.connects == 1 and stream.heartbeats_sent >= 1)
            run.fake.expire_tokens()  # the next heartbeat is refused
            await eventually(lambda: stream.connects == 2)
            placed = await adapter.place_order(run.account.number, limit_buy("bg-fresh"))
            await take(queue, placed.broker_order_id, OrderStatus.accepted)
            assert run.fake.token_requests == 2
        await updates.aclose()


async def test_a_revoked_grant_ends_the_stream_with_authentication_failed() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        updates = open_stream(run, adapter).updates()
        try:
            placed = await adapter.place_order(run.account.number, limit_buy("bg-rv"))
            await until(updates, placed.broker_order_id, OrderStatus.accepted)
            run.fake.revoke(run.customer)
            run.fake.drop_streams()
            with pytest.raises(errors.AuthenticationFailed):
                await drain(updates)
        finally:
            await updates.aclose()


async def test_connects_refused_with_fresh_tokens_end_with_authentication_failed() -> None:
    async with running_fake() as run:
        other = run.fake.add_customer()
        updates = open_stream(run, account=other.accounts[0].number).updates()
        try:
            with pytest.raises(errors.AuthenticationFailed, match="refused"):
                await drain(updates)
            assert run.fake.token_requests == 2  # the first refusal tried a fresh token
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


async def test_a_spread_fill_notification_carries_every_leg_fill() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        stream = open_stream(run, adapter)
        updates = stream.updates()
        try:
            legs = iron_condor_legs(run.fake)
            placed = await adapter.place_order(number, spread("bg-ic-stream", legs, qty="3"))
            await until(updates, placed.broker_order_id, OrderStatus.accepted)
            await run.fake.match()
            filled = await until(updates, placed.broker_order_id, OrderStatus.filled)
            assert [f.leg_symbol for f in filled.fills] == [leg.symbol for leg in legs]
            assert all(f.quantity == Decimal(3) for f in filled.fills)
            assert len({f.fill_id for f in filled.fills}) == 4
            by_leg = {leg.symbol: leg for leg in filled.order.legs}
            for fill in filled.fills:
                assert fill.leg_symbol is not None
                leg = by_leg[fill.leg_symbol]
                assert (leg.filled_quantity, leg.avg_fill_price) == (fill.quantity, fill.price)
            assert filled.order.filled_quantity == Decimal(3)
        finally:
            await updates.aclose()

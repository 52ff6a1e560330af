"""The user channel over a real WebSocket to the fake: subscribe, heartbeats, gaps, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import OrderStatus, OrderUpdate
from app.brokers.coinbase.adapter import CoinbaseAdapter
from app.brokers.coinbase.stream import UserChannelStream
from tests.brokers.coinbase.support import Running, running_fake
from tests.brokers.coinbase.test_adapter import limit_buy


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (bounded) for something another task does."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def open_stream(
    run: Running,
    adapter: CoinbaseAdapter | None = None,
    *,
    idle: float = 5.0,
    handshake: float = 2.0,
) -> UserChannelStream:
    adapter = adapter or run.adapter()
    return UserChannelStream(
        run.ws_url,
        run.portfolio,
        jwt=adapter._signer.ws_jwt,
        catch_up=adapter.recent_orders,
        fetch=adapter.get_order,
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


def marketable(client_order_id: str) -> object:
    """A buy limit far above the market: it rests until the next matching pass fills it."""
    return limit_buy(client_order_id, qty="0.01", price="500000")


async def test_subscribe_catch_up_then_live_updates(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_fake(heartbeat_seconds=0.05) as run:
        adapter = run.adapter()
        ref = run.portfolio
        before = await adapter.place_order(ref, limit_buy("bg-before"))
        stream = open_stream(run, adapter)
        updates = stream.updates()
        async with consumed(updates) as queue:
            caught_up = await take(queue, before.broker_order_id, OrderStatus.accepted)
            assert caught_up.account_ref == ref
            assert stream.connects == 1
            assert [(m["type"], m["channel"]) for m in run.fake.subscribe_messages] == [
                ("subscribe", "heartbeats"),
                ("subscribe", "user"),
            ]
            assert "product_ids" not in run.fake.subscribe_messages[1]  # all products
            ws_claims = [c for c in run.fake.claims if "uri" not in c]
            assert len(ws_claims) == 2  # each subscribe carried its own verified JWT
            assert all(c["sub"] == run.user.key_name for c in ws_claims)

            placed = await adapter.place_order(ref, limit_buy("bg-live"))
            live = await take(queue, placed.broker_order_id, OrderStatus.accepted)
            assert live.order.limit_price == Decimal(1000)
            assert live.occurred_at.tzinfo is not None

            reads = run.fake.requests.count(
                ("GET", f"/api/v3/brokerage/orders/historical/{placed.broker_order_id}")
            )
            await adapter.cancel_order(ref, placed.broker_order_id)
            canceled = await take(queue, placed.broker_order_id, OrderStatus.canceled)
            assert canceled.order.quantity == Decimal("0.01")  # read over REST: "leaves" was 0
            after = run.fake.requests.count(
                ("GET", f"/api/v3/brokerage/orders/historical/{placed.broker_order_id}")
            )
            assert after >= reads + 2  # the cancel's own read, and the stream's
        await updates.aclose()
        for message in run.fake.subscribe_messages:
            assert message["jwt"] not in caplog.text
        assert run.user.private_key not in caplog.text


async def test_heartbeats_keep_a_quiet_connection_alive() -> None:
    async with running_fake(heartbeat_seconds=0.05) as run:
        stream = open_stream(run, idle=0.5)
        updates = stream.updates()
        async with consumed(updates):
            await eventually(lambda: stream.connects == 1)
            await asyncio.sleep(1.2)  # more than twice the idle timeout, heartbeats only
            assert stream.silences == 0
            assert stream.connects == 1
            assert stream.gaps == 0
        await updates.aclose()


async def test_a_dropped_stream_reconnects_resubscribes_and_catches_up() -> None:
    async with running_fake(heartbeat_seconds=0.05) as run:
        adapter = run.adapter()
        stream = open_stream(run, adapter)
        updates = stream.updates()
        async with consumed(updates) as queue:
            await eventually(lambda: stream.connects == 1)
            placed = await adapter.place_order(run.portfolio, marketable("bg-drop"))
            await take(queue, placed.broker_order_id, OrderStatus.accepted)
            run.fake.drop_streams()
            await run.fake.match()  # fills while nobody listens: the update is lost
            filled = await take(queue, placed.broker_order_id, OrderStatus.filled)
            assert filled.order.filled_quantity == Decimal("0.01")
            assert stream.connects == 2
            assert len(run.fake.subscribe_messages) == 4  # both channels again
        await updates.aclose()


async def test_a_silent_stream_is_detected_restarted_and_caught_up() -> None:
    async with running_fake(heartbeat_seconds=0.05) as run:
        adapter = run.adapter()
        stream = open_stream(run, adapter, idle=0.3, handshake=0.3)
        updates = stream.updates()
        async with consumed(updates) as queue:
            placed = await adapter.place_order(run.portfolio, marketable("bg-silent"))
            await take(queue, placed.broker_order_id, OrderStatus.accepted)
            run.fake.faults.stream_silent = True  # open, but not even heartbeats
            await run.fake.match()
            await eventually(lambda: stream.silences >= 1)
            run.fake.faults.stream_silent = False
            await take(queue, placed.broker_order_id, OrderStatus.filled)
            assert stream.connects >= 2
        await updates.aclose()


async def test_a_sequence_gap_is_caught_up_over_rest() -> None:
    async with running_fake(heartbeat_seconds=0.05) as run:
        adapter = run.adapter()
        stream = open_stream(run, adapter)
        updates = stream.updates()
        async with consumed(updates) as queue:
            await eventually(lambda: stream.connects == 1)
            run.fake.faults.skip_messages = 1  # the new order's update never arrives
            placed = await adapter.place_order(run.portfolio, limit_buy("bg-gap"))
            update = await take(queue, placed.broker_order_id, OrderStatus.accepted)
            assert update.order.client_order_id == "bg-gap"
            assert stream.gaps == 1
            assert stream.connects == 1  # caught up in place, no reconnect
        await updates.aclose()


async def test_an_unknown_status_on_the_channel_is_logged_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_fake(heartbeat_seconds=0.05) as run:
        adapter = run.adapter()
        stream = open_stream(run, adapter)
        updates = stream.updates()
        async with consumed(updates) as queue:
            await eventually(lambda: stream.connects == 1)
            odd = await adapter.place_order(run.portfolio, limit_buy("bg-odd"))
            await take(queue, odd.broker_order_id, OrderStatus.accepted)
            run.fake.set_status(odd.broker_order_id, "SETTLING")
            run.fake._broadcast(run.user, run.user.orders[odd.broker_order_id])
            after = await adapter.place_order(run.portfolio, limit_buy("bg-after"))
            await take(queue, after.broker_order_id, OrderStatus.accepted)  # still streaming
        await updates.aclose()
        assert "does not know" in caplog.text
        assert "SETTLING" in caplog.text


async def test_a_revoked_key_ends_the_stream_with_authentication_failed() -> None:
    async with running_fake(heartbeat_seconds=0.05) as run:
        stream = open_stream(run)
        updates = stream.updates()
        async with consumed(updates) as queue:
            await eventually(lambda: stream.connects == 1)
            run.fake.revoke(run.user)
            run.fake.drop_streams()
            while True:
                item = await asyncio.wait_for(queue.get(), 5.0)
                if isinstance(item, Exception):
                    break
            assert isinstance(item, errors.AuthenticationFailed)
            assert run.fake.subscribe_messages[-1]["channel"] in ("user", "heartbeats")
        await updates.aclose()


async def test_subscriptions_refused_twice_end_with_authentication_failed() -> None:
    async with running_fake() as run:
        other = run.fake.add_user()
        run.fake.revoke(other)
        stranger = run.adapter(other)
        updates = open_stream(run, stranger).updates()
        try:
            with pytest.raises(errors.AuthenticationFailed, match="refused the API key"):
                async for _ in updates:
                    pass
            assert "unknown or revoked key" in run.fake.refusals
        finally:
            await updates.aclose()


async def test_the_adapter_hands_out_the_stream() -> None:
    async with running_fake(heartbeat_seconds=0.05) as run:
        adapter = run.adapter(coinbase_stream_idle_seconds=2.0)
        updates = adapter.stream_order_updates(run.portfolio)
        assert updates is not None
        placed = await adapter.place_order(run.portfolio, limit_buy("bg-via-adapter"))
        async with consumed(updates) as queue:
            update = await take(queue, placed.broker_order_id, OrderStatus.accepted)
            assert update.order.client_order_id == "bg-via-adapter"
        await updates.aclose()  # type: ignore[attr-defined]

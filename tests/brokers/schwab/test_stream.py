"""Schwab's streamer over a real WebSocket: login, ACCT_ACTIVITY, gaps, refusals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import OrderStatus, OrderUpdate, PriceEffect
from app.brokers.schwab.adapter import SchwabAdapter
from app.brokers.schwab.stream import AccountActivityStream, decode, order_ids
from tests.brokers.schwab import payloads
from tests.brokers.schwab.support import Running, running_fake
from tests.brokers.schwab.test_adapter import limit, market


class Collector:
    """Runs a stream in a task and keeps what it yields."""

    def __init__(self, stream: AccountActivityStream) -> None:
        self.stream = stream
        self.updates: asyncio.Queue[OrderUpdate] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for update in self.stream.updates():
            self.updates.put_nowait(update)

    async def until(self, order_id: str, status: OrderStatus) -> OrderUpdate:
        while True:
            update = await asyncio.wait_for(self.updates.get(), 10)
            if update.order.broker_order_id == order_id and update.order.status is status:
                return update

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def _listening(run: Running, connects: int, stream: AccountActivityStream) -> None:
    for _ in range(500):
        if run.fake.streaming(run.login) and stream.connects >= connects:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the stream never logged in")


@contextlib.asynccontextmanager
async def streaming(
    run: Running, adapter: SchwabAdapter, idle_timeout: float = 30.0
) -> AsyncIterator[Collector]:
    stream = AccountActivityStream(
        adapter,
        run.credentials(),
        run.account.hash_value,
        idle_timeout=idle_timeout,
        max_backoff=0.2,
    )
    collector = Collector(stream)
    try:
        await _listening(run, 1, stream)
        yield collector
    finally:
        await collector.close()


async def test_order_events_arrive_after_login_and_subscribe() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        async with streaming(run, adapter) as collector:
            placed = await adapter.place_order(run.account.hash_value, market())
            await collector.until(placed.broker_order_id, OrderStatus.accepted)
            await run.fake.match()
            update = await collector.until(placed.broker_order_id, OrderStatus.filled)
            assert update.order.filled_quantity == Decimal(2)
            assert update.account_ref == run.account.hash_value
            assert collector.stream.connects == 1
        requests = [p for _m, p in run.fake.requests]
        assert "/trader/v1/userPreference" in requests


async def test_a_dropped_stream_reconnects_resubscribes_and_catches_up() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        async with streaming(run, adapter) as collector:
            placed = await adapter.place_order(run.account.hash_value, limit(price="1000"))
            await collector.until(placed.broker_order_id, OrderStatus.accepted)
            run.fake.faults.stream_silent = True  # this fill is never pushed...
            await run.fake.match()
            run.fake.faults.stream_silent = False
            run.fake.drop_streams()  # ...and the connection drops
            update = await collector.until(placed.broker_order_id, OrderStatus.filled)
            assert update.order.filled_quantity == Decimal(2)
            assert collector.stream.connects == 2


async def test_a_silent_stream_is_restarted_and_caught_up() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        async with streaming(run, adapter, idle_timeout=0.3) as collector:
            run.fake.faults.stream_silent = True
            placed = await adapter.place_order(run.account.hash_value, market())
            await run.fake.match()
            update = await collector.until(placed.broker_order_id, OrderStatus.filled)
            assert update.order.status is OrderStatus.filled
            assert collector.stream.connects >= 2


async def test_a_denied_login_is_authentication_failed() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.login_denied = True
        stream = AccountActivityStream(adapter, run.credentials(), run.account.hash_value)
        with pytest.raises(errors.AuthenticationFailed):
            async for _update in stream.updates():
                pass


async def test_a_revoked_grant_ends_the_stream_with_authentication_failed() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.revoke(run.login)
        with pytest.raises(errors.AuthenticationFailed):
            async for _update in adapter.stream_order_updates(run.account.hash_value) or []:
                pass


async def test_an_expired_access_token_ends_the_stream_for_a_fresh_one() -> None:
    async with running_fake() as run:
        stale = run.credentials(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        adapter = run.track(SchwabAdapter(run.settings(), stale))
        before = len(run.fake.requests)
        got = [u async for u in adapter.stream_order_updates(run.account.hash_value) or []]
        assert got == []
        assert len(run.fake.requests) == before  # nothing was asked with a dead token


def test_frames_from_the_docs() -> None:
    login = decode(payloads.streamer_login_ok())
    assert login["response"][0]["content"]["code"] == 0
    assert "notify" in decode(payloads.heartbeat())
    frame = decode(
        payloads.acct_activity(
            "OrderCreated", '{"SchwabOrderID": "1000847123456", "AccountNumber": "1001"}'
        )
    )
    [item] = frame["data"][0]["content"]
    assert (item["1"], item["2"]) == ("1001", "OrderCreated")
    assert order_ids(item["3"]) == {"1000847123456"}
    # schwab-py's own fixture has empty message data: no order id, so a catch-up is due.
    empty = decode(payloads.acct_activity("OrderEntryRequest", ""))
    assert order_ids(empty["data"][0]["content"][0]["3"]) == set()
    assert order_ids("not json") == set()
    assert order_ids('{"SchwabOrderID": "12ab"}') == set()


async def test_a_cancelled_stream_stops_right_after_an_update() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        async with streaming(run, adapter) as collector:
            placed = await adapter.place_order(run.account.hash_value, market())
            await collector.until(placed.broker_order_id, OrderStatus.accepted)
            collector.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(collector.task, 10)
            assert collector.task.cancelled()
        for _ in range(500):
            if not run.fake.streaming(run.login):
                break
            await asyncio.sleep(0.01)
        assert not run.fake.streaming(run.login)


async def test_a_combo_fill_arrives_with_one_fill_per_leg() -> None:
    from tests.brokers.schwab.test_options import combo, iron_condor

    async with running_fake() as run:
        adapter = run.adapter()
        async with streaming(run, adapter) as collector:
            legs = iron_condor(run)
            order = combo(legs, qty="2", limit="0.05", effect=PriceEffect.credit)
            placed = await adapter.place_order(run.account.hash_value, order)
            accepted = await collector.until(placed.broker_order_id, OrderStatus.accepted)
            assert accepted.fills == () or accepted.order.status is OrderStatus.filled
            await run.fake.match()
            update = await collector.until(placed.broker_order_id, OrderStatus.filled)
        assert [f.leg_symbol for f in update.fills] == [leg.symbol for leg in legs]
        assert all(f.quantity == 2 for f in update.fills)
        by_leg = {leg.symbol: leg for leg in update.order.legs}
        for fill in update.fills:
            assert fill.leg_symbol is not None
            assert fill.price == by_leg[fill.leg_symbol].avg_fill_price
        assert len({f.fill_id for f in update.fills}) == 4
        again = await adapter.get_order_and_fills(run.account.hash_value, placed.broker_order_id)
        assert again[1] == update.fills  # stable ids: a fill read twice is one fill


async def test_a_single_leg_fill_has_no_leg_symbol() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        async with streaming(run, adapter) as collector:
            placed = await adapter.place_order(run.account.hash_value, market())
            await run.fake.match()
            update = await collector.until(placed.broker_order_id, OrderStatus.filled)
        [fill] = update.fills
        assert fill.leg_symbol is None
        assert fill.quantity == Decimal(2)
        assert fill.price == update.order.avg_fill_price

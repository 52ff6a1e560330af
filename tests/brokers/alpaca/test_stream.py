"""The trade_updates stream over a real WebSocket to the fake: handshake, events, gaps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.alpaca.adapter import stream_url
from app.brokers.alpaca.stream import TradeUpdatesStream
from app.brokers.base import OrderStatus, OrderUpdate
from tests.brokers.alpaca.options import combo, iron_condor_legs
from tests.brokers.alpaca.support import Running, running_fake
from tests.brokers.support import limit_buy, market


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


def open_stream(run: Running, idle_timeout: float = 60.0) -> TradeUpdatesStream:
    adapter = run.adapter()
    return TradeUpdatesStream(
        stream_url(adapter._settings),
        run.credentials(),
        run.account.id,
        catch_up=adapter.recent_orders,
        idle_timeout=idle_timeout,
    )


async def test_handshake_then_live_events_with_fills(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_fake() as run:
        adapter = run.adapter()
        before = await adapter.place_order(run.account.id, limit_buy("bg-before"))
        stream = open_stream(run)
        updates = stream.updates()
        try:
            caught_up = await next_update(updates)  # the REST catch-up comes first
            assert caught_up.order.broker_order_id == before.broker_order_id
            assert stream.connects == 1

            placed = await adapter.place_order(run.account.id, market("bg-live", qty="2"))
            new = await until(updates, placed.broker_order_id, OrderStatus.accepted)
            assert new.account_ref == run.account.id
            await run.fake.match()
            fill = await until(updates, placed.broker_order_id, OrderStatus.filled)
            [one] = fill.fills
            assert one.quantity == Decimal(2)
            assert one.price == fill.order.avg_fill_price
            assert fill.occurred_at.tzinfo is not None
            assert run.account.secret not in caplog.text  # not even the auth frame
            assert run.account.key_id not in caplog.text
        finally:
            await updates.aclose()


async def test_a_dropped_stream_reconnects_and_catches_up() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        stream = open_stream(run)
        updates = stream.updates()
        try:
            placed = await adapter.place_order(run.account.id, market("bg-gap"))
            await until(updates, placed.broker_order_id, OrderStatus.accepted)
            run.fake.drop_streams()
            await run.fake.match()  # fills while nobody listens: the event is lost
            filled = await until(updates, placed.broker_order_id, OrderStatus.filled)
            assert filled.fills == ()  # it came from the REST catch-up, not the stream
            assert stream.connects == 2
        finally:
            await updates.aclose()


async def test_a_silent_stream_is_restarted_and_caught_up() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        stream = open_stream(run, idle_timeout=0.3)
        updates = stream.updates()
        try:
            placed = await adapter.place_order(run.account.id, market("bg-silent"))
            await until(updates, placed.broker_order_id, OrderStatus.accepted)
            run.fake.faults.stream_silent = True
            await run.fake.match()
            filled = await until(updates, placed.broker_order_id, OrderStatus.filled)
            assert filled.fills == ()
            assert stream.connects >= 2
        finally:
            await updates.aclose()


async def test_a_revoked_key_ends_the_stream_with_authentication_failed() -> None:
    async with running_fake() as run:
        updates = open_stream(run).updates()
        try:
            placed = await run.adapter().place_order(run.account.id, limit_buy("bg-rv"))
            await until(updates, placed.broker_order_id, OrderStatus.accepted)
            run.fake.revoke(run.account.key_id)
            run.fake.drop_streams()
            with pytest.raises(errors.AuthenticationFailed):
                await drain(updates)
        finally:
            await updates.aclose()


async def test_the_adapter_hands_out_the_stream() -> None:
    async with running_fake() as run:
        updates = run.adapter().stream_order_updates(run.account.id)
        assert updates is not None
        placed = await run.adapter().place_order(run.account.id, limit_buy("bg-via-adapter"))
        try:
            update = await next_update(updates)
            assert update.order.broker_order_id == placed.broker_order_id
        finally:
            await updates.aclose()  # type: ignore[attr-defined]


async def test_an_mleg_fill_reports_a_fill_per_leg() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        updates = open_stream(run).updates()
        try:
            legs = iron_condor_legs(run.fake)
            placed = await adapter.place_order(run.account.id, combo("bg-s-ic", legs, qty="3"))
            new = await until(updates, placed.broker_order_id, OrderStatus.accepted)
            assert len(new.order.legs) == 4
            assert new.fills == ()
            await run.fake.match()
            filled = await until(updates, placed.broker_order_id, OrderStatus.filled)
            assert [f.leg_symbol for f in filled.fills] == [leg.symbol for leg in legs]
            assert all(f.quantity == Decimal(3) for f in filled.fills)
            prices = {leg.symbol: leg.avg_fill_price for leg in filled.order.legs}
            assert all(f.price == prices[f.leg_symbol or ""] for f in filled.fills)
            assert len({f.fill_id for f in filled.fills}) == 4
        finally:
            await updates.aclose()

"""The upstream stream supervisor with the fake Alpaca: updates arrive, a refused key breaks."""

from __future__ import annotations

import asyncio

from app.db.repositories.orders import OrderEventRepository
from app.services.upstream import UpstreamStreams
from tests.brokers.alpaca.test_api import gateway
from tests.brokers.support import order_reaching
from tests.conftest import new_user
from tests.services.support import live_gateway


async def test_streams_feed_orders_and_a_refused_key_breaks_the_connection(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        [account_id] = connection["accounts"]
        placed = (await h.place(user, account_id, quantity="2")).json()

        streams = UpstreamStreams(h.state.ctx, restart_delay=0.05)
        try:
            await streams.sync()
            assert account_id in streams.running
            for _ in range(100):  # wait for the stream to be listening at the fake
                if gw.alpaca.account.streams:
                    break
                await asyncio.sleep(0.02)
            await gw.alpaca.fake.match()
            got = await order_reaching(h, user, placed["id"], "filled")

            gw.alpaca.fake.revoke(gw.alpaca.account.key_id)
            gw.alpaca.fake.drop_streams()
            for _ in range(200):
                got = await h.client.get(
                    f"/v1/connections/{connection['id']}", headers=h.auth(user)
                )
                if got.json()["status"] == "broken":
                    break
                await asyncio.sleep(0.02)
            assert got.json()["status"] == "broken"
            async with h.state.ctx.sessionmaker() as session:
                events = await OrderEventRepository.for_user(session, user).list_after(0, limit=100)
            assert "connection.broken" in [e.type for e in events]
            await streams.sync()
            assert account_id not in streams.running
        finally:
            await streams.close()


async def test_two_instances_hold_one_stream_per_account_and_hand_it_over(
    postgres_url: str,
) -> None:
    """Each account's broker stream runs on exactly one instance; when that instance stops,
    another takes the stream over at its next sync."""
    async with gateway(postgres_url) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        [account_id] = connection["accounts"]
        first = UpstreamStreams(h.state.ctx, restart_delay=0.05)
        second = UpstreamStreams(h.state.ctx, restart_delay=0.05)
        try:
            await first.sync()
            await second.sync()
            assert account_id in first.running
            assert account_id not in second.running
            for _ in range(100):
                if gw.alpaca.account.streams:
                    break
                await asyncio.sleep(0.02)
            await second.sync()  # still held: nothing changes
            assert account_id not in second.running
            assert len(gw.alpaca.account.streams) == 1

            await first.close()
            await second.sync()
            assert account_id in second.running
        finally:
            await first.close()
            await second.close()


async def test_platform_connections_of_many_users_share_one_stream(db_url: str) -> None:
    """Every user's platform connection points at the platform's one Alpaca account: one
    stream serves them all, and each user's orders still reach the right rows."""
    async with live_gateway(db_url) as gw:
        h = gw.harness
        users = [new_user("platform"), new_user("platform")]
        accounts = [(await gw.connect_platform(user))[1] for user in users]
        placed = [
            (await h.place(user, account)).json()
            for user, account in zip(users, accounts, strict=True)
        ]
        assert all(p["status"] == "accepted" for p in placed), placed
        platform = gw.platform_key
        streams = UpstreamStreams(h.state.ctx, restart_delay=0.05)
        try:
            await streams.sync()
            assert len(streams.running & set(accounts)) == 1
            for _ in range(200):
                if platform.streams:
                    break
                await asyncio.sleep(0.02)
            assert len(platform.streams) == 1
            await gw.alpaca.fake.match()
            for user, order in zip(users, placed, strict=True):
                await order_reaching(h, user, order["id"], "filled")
        finally:
            await streams.close()

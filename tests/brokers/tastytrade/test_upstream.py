"""The upstream stream supervisor with the fake tastytrade: notifications reach orders, a
revoked grant breaks the connection."""

from __future__ import annotations

import asyncio

from app.db.repositories.orders import OrderEventRepository
from app.services.upstream import UpstreamStreams
from tests.brokers.support import order_reaching
from tests.brokers.tastytrade.test_api import gateway
from tests.conftest import new_user


async def test_the_streamer_feeds_orders_and_a_revoked_grant_breaks_the_connection(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        [account_id] = connection["accounts"]
        placed = (await h.place(user, account_id, quantity="2")).json()
        assert placed["status"] == "submitted"

        streams = UpstreamStreams(h.state.ctx, restart_delay=0.05)
        try:
            await streams.sync()
            assert account_id in streams.running
            for _ in range(200):  # wait for the streamer connection to be subscribed
                if gw.tt.fake.stream_count and any(
                    m["action"] == "connect" for m in gw.tt.fake.stream_messages
                ):
                    break
                await asyncio.sleep(0.02)
            await gw.tt.fake.match()
            got = await order_reaching(h, user, placed["id"], "filled")
            assert got.json()["filled_quantity"] == "2"

            gw.tt.fake.revoke(gw.tt.customer)
            gw.tt.fake.drop_streams()
            for _ in range(300):
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

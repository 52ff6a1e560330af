"""The upstream stream supervisor with the fake Coinbase: user-channel updates reach our
orders, and a revoked key breaks the connection."""

from __future__ import annotations

import asyncio

from app.db.repositories.orders import OrderEventRepository
from app.services.upstream import UpstreamStreams
from tests.brokers.coinbase.test_api import gateway
from tests.brokers.support import order_reaching
from tests.conftest import new_user


async def test_the_user_channel_feeds_orders_and_a_revoked_key_breaks_the_connection(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        [account_id] = connection["accounts"]
        # A buy limit far above the market: it rests until the fake's next matching pass.
        placed = (await gw.place(user, account_id, limit_price="500000.00")).json()
        assert placed["status"] == "accepted"

        streams = UpstreamStreams(h.state.ctx, restart_delay=0.05)
        try:
            await streams.sync()
            assert account_id in streams.running
            for _ in range(300):  # wait for the user channel subscription
                if any(m["channel"] == "user" for m in gw.cb.fake.subscribe_messages):
                    break
                await asyncio.sleep(0.02)
            await gw.cb.fake.match()
            got = await order_reaching(h, user, placed["id"], "filled")
            assert got.json()["filled_quantity"] == "0.01"

            gw.cb.fake.revoke(gw.cb.user)
            gw.cb.fake.drop_streams()
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
            types = [e.type for e in events]
            assert "order.filled" in types
            assert "connection.broken" in types
            await streams.sync()
            assert account_id not in streams.running
        finally:
            await streams.close()

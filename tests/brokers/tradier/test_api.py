"""End to end: the gateway's /v1 API against the fake Tradier, on both database backends.

The app reaches the fake only through ``BROKERAGE_TRADIER_BASE_URL`` (``tradier_base_url``),
exactly as it would reach Tradier. Nothing of ours is replaced: the registry is the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from app.db.models import BrokerToken
from app.db.repositories.orders import OrderEventRepository
from app.services.reconciliation import Reconciler
from app.services.upstream import UpstreamStreams
from tests.brokers.support import connect_broker, gateway_app, order_reaching
from tests.brokers.tradier.support import Running, running_fake
from tests.conftest import new_user
from tests.harness import Harness


@dataclass
class Gateway:
    harness: Harness
    tradier: Running

    async def connect(self, user: str) -> dict[str, Any]:
        return await connect_broker(
            self.harness, user, "tradier", {"access_token": self.tradier.user.token}
        )


@contextlib.asynccontextmanager
async def gateway(db_url: str, accounts: int = 1) -> AsyncIterator[Gateway]:
    async with running_fake(accounts=accounts) as tradier:
        async with gateway_app(
            db_url,
            tradier_base_url=tradier.url,
        ) as harness:
            yield Gateway(harness=harness, tradier=tradier)


async def test_tradier_is_offered_as_an_api_key_broker(db_url: str) -> None:
    async with gateway(db_url) as gw:
        response = await gw.harness.client.get("/v1/brokers", headers=gw.harness.auth(new_user()))
        brokers = {b["slug"]: b for b in response.json()["items"]}
        tradier = brokers["tradier"]
        assert (tradier["tier"], tradier["auth"], tradier["label"]) == ("A", "api_key", "Live")
        assert tradier["capabilities"]["time_in_force"]["ioc"] == "unsupported"
        assert tradier["capabilities"]["order_stream"] == "native"


async def test_an_access_token_is_validated_and_stored_sealed(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url, accounts=2) as gw:
        user, h = new_user(), gw.harness
        connection = await gw.connect(user)
        token = gw.tradier.user.token
        assert (connection["tier"], connection["ownership"], connection["status"]) == (
            "A",
            "byob",
            "active",
        )
        assert connection["display"] == "Connected: Tradier"
        assert len(connection["accounts"]) == 2
        assert token not in str(connection)
        assert ("GET", "/v1/user/profile") in gw.tradier.fake.requests  # validated first
        account_id = connection["accounts"][0]
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert (account["mode"], account["broker"], account["can_trade"]) == (
            "live",
            "tradier",
            True,
        )
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert Decimal(balances.json()["cash"]) == Decimal(100000)
        async with h.state.ctx.sessionmaker() as session:
            stored = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection["id"])
                )
            ).scalar_one()
        assert (stored.broker_tier, stored.broker_slug, stored.no_order_write) == (
            "tier_a",
            "tradier",
            False,
        )
        assert token.encode() not in stored.token_ciphertext
        assert token not in caplog.text


@pytest.mark.parametrize(
    "credentials",
    [
        {"access_token": "not-a-real-token"},
        {},
        {"access_token": "x", "password": "hunter2"},
    ],
)
async def test_a_bad_token_is_invalid_credentials_and_nothing_is_stored(
    db_url: str, credentials: dict[str, str]
) -> None:
    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        response = await h.client.post(
            "/v1/connections",
            json={"broker": "tradier", "credentials": credentials},
            headers=h.auth(user),
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_credentials"
        assert "hunter2" not in response.text
        listed = await h.client.get("/v1/connections", headers=h.auth(user))
        assert listed.json()["items"] == []


async def test_an_expired_token_at_connect_time_is_invalid_credentials(db_url: str) -> None:
    async with gateway(db_url) as gw:
        gw.tradier.fake.expire(gw.tradier.user.token)
        response = await gw.harness.client.post(
            "/v1/connections",
            json={"broker": "tradier", "credentials": {"access_token": gw.tradier.user.token}},
            headers=gw.harness.auth(new_user()),
        )
        assert response.json()["code"] == "invalid_credentials"


async def test_place_modify_cancel_through_the_api(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        placed = await h.place(
            user, account_id, order_type="limit", limit_price="100.00", time_in_force="gtc"
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["status"] == "submitted"  # Tradier: first "pending"
        _u, _a, fake_order = gw.tradier.fake.find_order(int(order["broker_order_id"]))
        assert fake_order.tag == order["client_order_id"]  # our id, as the tag
        gw.tradier.fake.acknowledge()  # pending -> open before it is changed

        modified = await h.client.patch(
            f"/v1/orders/{order['id']}", json={"limit_price": "101.00"}, headers=h.auth(user)
        )
        assert modified.status_code == 200, modified.text
        assert modified.json()["id"] == order["id"]  # Tradier changes orders in place
        assert Decimal(modified.json()["limit_price"]) == Decimal(101)
        assert fake_order.price == Decimal(101)

        resize = await h.client.patch(
            f"/v1/orders/{order['id']}", json={"quantity": "5"}, headers=h.auth(user)
        )
        assert resize.status_code == 422
        assert resize.json()["code"] == "unsupported_order"

        canceled = await h.client.delete(f"/v1/orders/{order['id']}", headers=h.auth(user))
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        assert fake_order.status == "canceled"
        assert gw.tradier.fake.order_count(gw.tradier.account.number) == 1


async def test_broker_refusals_reach_the_client_as_problems(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        poor = await h.place(user, account_id, quantity="100000")
        assert poor.status_code == 422
        assert poor.json()["code"] == "insufficient_funds"
        assert "DayTradingBuyingPowerExceeded" in poor.json()["detail"]
        unknown = await h.place(user, account_id, symbol="NOSUCH")
        assert unknown.json()["code"] == "unknown_symbol"
        ioc = await h.place(
            user, account_id, order_type="limit", limit_price="1", time_in_force="ioc"
        )
        assert ioc.json()["code"] == "unsupported_order"  # capabilities, before any call
        gw.tradier.fake.faults.rate_limited = 1  # the POST answers 429
        limited = await h.place(user, account_id)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "7"
        gw.tradier.fake.faults.rate_limited = 0
        gw.tradier.fake.faults.server_errors = 1
        gw.tradier.fake.faults.server_errors_method = "POST"
        lost = await h.place(user, account_id, key="tradier-5xx")
        assert lost.status_code == 202
        assert lost.json()["status"] == "unknown"
        gw.tradier.fake.revoke(gw.tradier.user.token)
        broken = await h.place(user, account_id)
        assert broken.json()["code"] == "connection_broken"


async def test_a_timeout_after_accept_is_unknown_then_adopted_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        gw.tradier.fake.faults.timeout_after_accept = 1
        first = await h.place(user, account_id, key="tradier-lost-1", quantity="2")
        assert first.status_code == 202, first.text
        order = first.json()
        assert order["status"] == "unknown"
        assert order["broker_order_id"] is None

        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "submitted"
        assert got["broker_order_id"] is not None
        _u, _a, fake_order = gw.tradier.fake.find_order(int(got["broker_order_id"]))
        assert fake_order.tag == order["client_order_id"]  # adopted by its tag
        assert gw.tradier.fake.order_count(gw.tradier.account.number) == 1

        replay = await h.place(user, account_id, key="tradier-lost-1", quantity="2")
        assert replay.status_code == 202
        assert gw.tradier.fake.order_count(gw.tradier.account.number) == 1


async def test_streams_feed_orders_and_a_refused_token_breaks_the_connection(db_url: str) -> None:
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
                if gw.tradier.user.streams:
                    break
                await asyncio.sleep(0.02)
            await gw.tradier.fake.match()
            got = await order_reaching(h, user, placed["id"], "filled")
            assert got.json()["filled_quantity"] == "2"

            gw.tradier.fake.revoke(gw.tradier.user.token)
            gw.tradier.fake.drop_streams()
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
        finally:
            await streams.close()


async def test_one_stream_serves_every_account_of_a_connection(db_url: str) -> None:
    """Tradier allows one streaming session per user at a time: the supervisor runs one
    stream for the connection's accounts, and fills on each of them arrive."""
    async with gateway(db_url, accounts=2) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        first, second = connection["accounts"]
        placed = [
            (await h.place(user, account_id, quantity="1")).json() for account_id in (first, second)
        ]

        streams = UpstreamStreams(h.state.ctx, restart_delay=0.05)
        try:
            await streams.sync()
            # (The module's other tests left connections of their own in the database.)
            [mine] = [s for s in streams._streams.values() if s.connection_id == connection["id"]]
            assert set(mine.account_ids) == {first, second}
            assert {first, second} <= streams.running
            for _ in range(100):  # wait for the stream to be listening at the fake
                if gw.tradier.user.streams:
                    break
                await asyncio.sleep(0.02)
            assert len(gw.tradier.user.streams) == 1
            sessions = gw.tradier.fake.requests.count(("POST", "/v1/accounts/events/session"))
            assert sessions == 1
            await gw.tradier.fake.match()
            for order in placed:
                await order_reaching(h, user, order["id"], "filled")
            await streams.sync()  # nothing changed: the same one stream keeps running
            assert [s for s in streams._streams.values() if s is mine] == [mine]
        finally:
            await streams.close()

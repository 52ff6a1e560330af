"""End to end: the gateway's /v1 API against the fake Alpaca, on both database backends.

The app reaches the fake only through its base-URL settings, exactly as it would reach
Alpaca. Nothing of ours is replaced: the registry is the default one.
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
from app.db.repositories.connections import AccountRepository
from app.services.order_updates import OrderUpdateIngest
from app.services.reconciliation import Reconciler
from tests.brokers.alpaca.support import Running, running_fake
from tests.brokers.support import connect_broker, gateway_app
from tests.conftest import new_user
from tests.harness import Harness


@dataclass
class Gateway:
    harness: Harness
    alpaca: Running

    def credentials(self) -> dict[str, str]:
        account = self.alpaca.account
        return {"api_key_id": account.key_id, "api_secret_key": account.secret}

    async def connect(self, user: str) -> dict[str, Any]:
        return await connect_broker(self.harness, user, "alpaca", self.credentials())


@contextlib.asynccontextmanager
async def gateway(db_url: str) -> AsyncIterator[Gateway]:
    async with running_fake() as alpaca:
        async with gateway_app(
            db_url,
            alpaca_trading_url=alpaca.url,
            alpaca_data_url=alpaca.url,
        ) as harness:
            yield Gateway(harness=harness, alpaca=alpaca)


async def test_alpaca_is_offered_as_an_api_key_broker(db_url: str) -> None:
    async with gateway(db_url) as gw:
        response = await gw.harness.client.get("/v1/brokers", headers=gw.harness.auth(new_user()))
        brokers = {b["slug"]: b for b in response.json()["items"]}
        assert brokers["alpaca"]["tier"] == "A"
        assert brokers["alpaca"]["auth"] == "api_key"
        assert brokers["alpaca"]["label"] == "Live"
        assert brokers["alpaca"]["capabilities"]["modify"] == "native"


async def test_an_api_key_connection_is_validated_and_stored_sealed(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.connect(user)
        secret = gw.alpaca.account.secret
        assert (connection["tier"], connection["ownership"], connection["status"]) == (
            "A",
            "byob",
            "active",
        )
        assert connection["display"] == "Connected: Alpaca"
        assert secret not in str(connection)
        assert gw.alpaca.account.key_id not in str(connection)
        assert ("GET", "/v2/account") in gw.alpaca.fake.requests  # validated first

        [account_id] = connection["accounts"]
        h = gw.harness
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert (account["mode"], account["broker"], account["can_trade"]) == (
            "live",
            "alpaca",
            True,
        )
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert Decimal(balances.json()["cash"]) == Decimal(100000)
        async with h.state.ctx.sessionmaker() as session:
            token = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection["id"])
                )
            ).scalar_one()
        assert (token.broker_tier, token.broker_slug, token.no_order_write) == (
            "tier_a",
            "alpaca",
            False,
        )
        assert secret.encode() not in token.token_ciphertext
        assert secret not in caplog.text


@pytest.mark.parametrize(
    "credentials",
    [
        {"api_key_id": "PKNOTAKEY", "api_secret_key": "nope"},
        {"api_key_id": "PKNOTAKEY"},
        {"api_key_id": "PK", "api_secret_key": "x", "password": "hunter2"},
    ],
)
async def test_a_bad_key_is_invalid_credentials_and_nothing_is_stored(
    db_url: str, credentials: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        user = new_user()
        h = gw.harness
        response = await h.client.post(
            "/v1/connections",
            json={"broker": "alpaca", "credentials": credentials},
            headers=h.auth(user),
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_credentials"
        assert "nope" not in response.text
        assert "hunter2" not in response.text
        assert "hunter2" not in caplog.text
        listed = await h.client.get("/v1/connections", headers=h.auth(user))
        assert listed.json()["items"] == []


async def test_a_revoked_key_at_connect_time_is_invalid_credentials(db_url: str) -> None:
    async with gateway(db_url) as gw:
        gw.alpaca.fake.revoke(gw.alpaca.account.key_id)
        response = await gw.harness.client.post(
            "/v1/connections",
            json={"broker": "alpaca", "credentials": gw.credentials()},
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
        assert order["status"] == "accepted"
        fake_order = gw.alpaca.fake.accounts[gw.alpaca.account.key_id].orders[
            order["broker_order_id"]
        ]
        assert fake_order.client_order_id == order["client_order_id"]

        modified = await h.client.patch(
            f"/v1/orders/{order['id']}", json={"limit_price": "101.00"}, headers=h.auth(user)
        )
        assert modified.status_code == 200, modified.text
        replacement = modified.json()
        assert replacement["id"] != order["id"]
        assert replacement["broker_order_id"] != order["broker_order_id"]
        assert Decimal(replacement["limit_price"]) == Decimal(101)
        old = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert old["status"] == "replaced"

        canceled = await h.client.delete(f"/v1/orders/{replacement['id']}", headers=h.auth(user))
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        assert gw.alpaca.fake.order_count(gw.alpaca.account.key_id) == 2


async def test_broker_refusals_reach_the_client_as_problems(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        poor = await h.place(user, account_id, quantity="100000")
        assert poor.status_code == 422
        assert poor.json()["code"] == "insufficient_funds"
        unknown = await h.place(user, account_id, symbol="NOSUCH")
        assert unknown.json()["code"] == "unknown_symbol"
        gw.alpaca.fake.faults.rate_limited = 1  # the POST answers 429 (AAPL is known by now)
        limited = await h.place(user, account_id)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "7"
        gw.alpaca.fake.faults.rate_limited = 0
        gw.alpaca.fake.revoke(gw.alpaca.account.key_id)
        broken = await h.place(user, account_id)
        assert broken.json()["code"] == "connection_broken"


async def test_a_timeout_after_accept_is_unknown_then_adopted_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        gw.alpaca.fake.faults.timeout_after_accept = 1
        first = await h.place(user, account_id, key="alpaca-lost-1", quantity="2")
        assert first.status_code == 202, first.text
        order = first.json()
        assert order["status"] == "unknown"
        assert order["broker_order_id"] is None

        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "accepted"
        assert got["broker_order_id"] is not None
        assert gw.alpaca.fake.order_count(gw.alpaca.account.key_id) == 1

        replay = await h.place(user, account_id, key="alpaca-lost-1", quantity="2")
        assert replay.status_code == 202
        assert gw.alpaca.fake.order_count(gw.alpaca.account.key_id) == 1


async def test_a_stream_update_reaches_the_order(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        placed = (await h.place(user, account_id, quantity="3")).json()
        assert placed["status"] == "accepted"

        ctx = h.state.ctx
        async with ctx.sessionmaker() as session:
            found = await AccountRepository.for_user(session, user).get_with_connection(account_id)
            assert found is not None
            account, connection = found
            adapter = await ctx.adapter_for(session, connection, for_order=False)
        updates = adapter.stream_order_updates(account.broker_account_ref)
        assert updates is not None
        ingest = OrderUpdateIngest(ctx.sessionmaker, "alpaca")

        async def feed() -> None:
            async for update in updates:
                await ingest(update)

        task = asyncio.create_task(feed())
        try:
            await gw.alpaca.fake.match()
            for _ in range(200):
                got = await h.client.get(f"/v1/orders/{placed['id']}", headers=h.auth(user))
                if got.json()["status"] == "filled":
                    break
                await asyncio.sleep(0.02)
            assert got.json()["status"] == "filled"
            assert got.json()["filled_quantity"] == "3"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _working_limit_order(gw: Gateway, user: str, account_id: str) -> dict[str, Any]:
    placed = await gw.harness.place(
        user, account_id, order_type="limit", limit_price="1.00", time_in_force="gtc"
    )
    assert placed.status_code == 201, placed.text
    body: dict[str, Any] = placed.json()
    assert body["status"] == "accepted"
    return body


async def test_a_lost_replace_answer_is_unknown_then_the_replacement_is_adopted_once(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        original = await _working_limit_order(gw, user, account_id)

        gw.alpaca.fake.faults.timeout_after_replace = 1
        changed = await h.client.patch(
            f"/v1/orders/{original['id']}", json={"limit_price": "1.50"}, headers=h.auth(user)
        )
        assert changed.status_code == 503, changed.text
        got = (await h.client.get(f"/v1/orders/{original['id']}", headers=h.auth(user))).json()
        assert got["status"] == "unknown"

        assert await Reconciler(h.state.ctx).run_once() >= 1
        await Reconciler(h.state.ctx).run_once()  # a second pass must not adopt it again
        old = (await h.client.get(f"/v1/orders/{original['id']}", headers=h.auth(user))).json()
        assert old["status"] == "replaced"
        assert old["replaced_by_order_id"] is not None
        new = (
            await h.client.get(f"/v1/orders/{old['replaced_by_order_id']}", headers=h.auth(user))
        ).json()
        assert new["replaces_order_id"] == original["id"]
        assert Decimal(new["limit_price"]) == Decimal("1.50")
        assert new["status"] == "accepted"
        assert new["broker_order_id"] != original["broker_order_id"]
        listed = (
            await h.client.get(f"/v1/accounts/{account_id}/orders", headers=h.auth(user))
        ).json()["items"]
        assert sorted(o["id"] for o in listed) == sorted([original["id"], new["id"]])
        # The broker holds the original (replaced) and exactly one replacement.
        assert gw.alpaca.fake.order_count(gw.alpaca.account.key_id) == 2


async def test_a_replacement_seen_first_on_the_stream_is_adopted_under_its_original(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        original = await _working_limit_order(gw, user, account_id)
        ctx = h.state.ctx
        async with ctx.sessionmaker() as session:
            found = await AccountRepository.for_user(session, user).get_with_connection(account_id)
            assert found is not None
            account, connection = found
            adapter = await ctx.adapter_for(session, connection, for_order=False)
        updates = adapter.stream_order_updates(account.broker_account_ref)
        assert updates is not None
        ingest = OrderUpdateIngest(ctx.sessionmaker, "alpaca")

        async def feed() -> None:
            async for update in updates:
                await ingest(update)

        task = asyncio.create_task(feed())
        try:
            for _ in range(100):
                if gw.alpaca.account.streams:
                    break
                await asyncio.sleep(0.02)
            gw.alpaca.fake.faults.timeout_after_replace = 1
            changed = await h.client.patch(
                f"/v1/orders/{original['id']}", json={"quantity": "3"}, headers=h.auth(user)
            )
            assert changed.status_code == 503, changed.text
            old: dict[str, Any] = {}
            for _ in range(200):
                old = (
                    await h.client.get(f"/v1/orders/{original['id']}", headers=h.auth(user))
                ).json()
                if old["replaced_by_order_id"] is not None:
                    break
                await asyncio.sleep(0.02)
            assert old["replaced_by_order_id"] is not None
            # Reconciliation afterwards finds the replacement already recorded: no second row.
            await Reconciler(h.state.ctx).run_once()
            listed = (
                await h.client.get(f"/v1/accounts/{account_id}/orders", headers=h.auth(user))
            ).json()["items"]
            assert len(listed) == 2
            new = next(o for o in listed if o["id"] != original["id"])
            assert new["quantity"] == "3"
            assert new["replaces_order_id"] == original["id"]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await adapter.close()

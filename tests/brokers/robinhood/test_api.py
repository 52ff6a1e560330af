"""End to end: the gateway's /v1 API against the fake Robinhood, on both database backends.

The app reaches the fake only through ``BROKERAGE_ROBINHOOD_BASE_URL``, exactly as it would
reach Robinhood. Nothing of ours is replaced: the registry is the default one. Order updates
arrive by polling (Robinhood has no stream): the reconciler's open-order sweep.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from app.db.models import BrokerToken
from app.services.reconciliation import Reconciler
from tests.brokers.robinhood.support import Running, running_fake
from tests.brokers.support import connect_broker, gateway_app
from tests.conftest import new_user
from tests.harness import Harness

CRYPTO = {"symbol": "BTC-USD", "time_in_force": "gtc"}


@dataclass
class Gateway:
    harness: Harness
    rh: Running

    def credentials(self) -> dict[str, str]:
        return {"api_key": self.rh.account.api_key, "private_key": self.rh.account.private_key_b64}

    async def connect(self, user: str) -> dict[str, Any]:
        return await connect_broker(self.harness, user, "robinhood", self.credentials())

    async def place(self, user: str, account_id: str, **order: Any) -> Any:
        return await self.harness.place(user, account_id, **{**CRYPTO, **order})


@contextlib.asynccontextmanager
async def gateway(db_url: str, cash: str = "100000") -> AsyncIterator[Gateway]:
    async with running_fake(cash=cash) as rh:
        async with gateway_app(
            db_url,
            robinhood_base_url=rh.url,
        ) as harness:
            yield Gateway(harness=harness, rh=rh)


async def test_robinhood_is_offered_as_a_crypto_only_api_key_broker(db_url: str) -> None:
    async with gateway(db_url) as gw:
        response = await gw.harness.client.get("/v1/brokers", headers=gw.harness.auth(new_user()))
        broker = {b["slug"]: b for b in response.json()["items"]}["robinhood"]
        assert (broker["tier"], broker["auth"], broker["label"]) == ("A", "api_key", "Live")
        assert broker["capabilities"]["asset_classes"] == {
            "equity": "unsupported",
            "option": "unsupported",
            "crypto": "native",
            "mutual_fund": "unsupported",
        }
        assert broker["capabilities"]["modify"] == "unsupported"
        assert broker["capabilities"]["order_stream"] == "unsupported"


async def test_a_key_is_validated_against_the_broker_and_stored_sealed(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url, cash="2500") as gw:
        user, h = new_user(), gw.harness
        connection = await gw.connect(user)
        private = gw.rh.account.private_key_b64
        assert (connection["status"], connection["display"]) == (
            "active",
            "Connected: Robinhood Crypto",
        )
        assert private not in str(connection)
        assert ("GET", "/api/v1/crypto/trading/accounts/") in gw.rh.fake.requests
        [account_id] = connection["accounts"]
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert Decimal(balances.json()["cash"]) == Decimal(2500)
        async with h.state.ctx.sessionmaker() as session:
            token = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection["id"])
                )
            ).scalar_one()
        assert (token.broker_tier, token.broker_slug) == ("tier_a", "robinhood")
        assert private.encode() not in token.token_ciphertext
        assert private not in caplog.text


@pytest.mark.parametrize("case", ["wrong_key", "revoked", "missing", "malformed"])
async def test_a_bad_key_is_invalid_credentials_and_nothing_is_stored(
    db_url: str, case: str
) -> None:
    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        credentials = gw.credentials()
        if case == "wrong_key":
            other = gw.rh.fake.add_account()
            credentials["private_key"] = other.private_key_b64
        elif case == "revoked":
            gw.rh.fake.revoke(gw.rh.account.api_key)
        elif case == "missing":
            del credentials["private_key"]
        else:
            credentials["private_key"] = "hunter2-not-a-key"
        response = await h.client.post(
            "/v1/connections",
            json={"broker": "robinhood", "credentials": credentials},
            headers=h.auth(user),
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_credentials"
        assert "hunter2" not in response.text
        listed = await h.client.get("/v1/connections", headers=h.auth(user))
        assert listed.json()["items"] == []


async def test_place_then_cancel_and_what_robinhood_cannot_do(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        placed = await gw.place(
            user, account_id, quantity="0.1", order_type="limit", limit_price="1.00"
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["status"] == "accepted"
        fake_order = gw.rh.fake.accounts[gw.rh.account.api_key].orders[order["broker_order_id"]]
        assert fake_order.client_order_id.replace("-", "") == order["client_order_id"][2:]

        modified = await h.client.patch(
            f"/v1/orders/{order['id']}", json={"limit_price": "2.00"}, headers=h.auth(user)
        )
        assert (modified.status_code, modified.json()["code"]) == (422, "unsupported_order")
        equity = await h.place(user, account_id)  # AAPL: not offered at Robinhood
        assert (equity.status_code, equity.json()["code"]) == (422, "unsupported_order")
        day = await gw.place(user, account_id, time_in_force="day")
        assert (day.status_code, day.json()["code"]) == (422, "unsupported_order")

        canceled = await h.client.delete(f"/v1/orders/{order['id']}", headers=h.auth(user))
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        assert gw.rh.fake.order_count(gw.rh.account.api_key) == 1


async def test_broker_refusals_reach_the_client_as_problems_once(db_url: str) -> None:
    async with gateway(db_url, cash="100") as gw:
        user = new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        poor = await gw.place(user, account_id, quantity="1")
        assert (poor.status_code, poor.json()["code"]) == (422, "insufficient_funds")
        unknown = await gw.place(user, account_id, symbol="DOGE-USD")
        assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_symbol")
        gw.rh.fake.faults.rate_limited = 1
        limited = await gw.place(user, account_id, quantity="0.0001")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "7"
        gw.rh.fake.faults.server_errors, gw.rh.fake.faults.server_errors_method = 1, "POST"
        lost = await gw.place(user, account_id, quantity="0.0001")
        assert lost.status_code == 202
        assert lost.json()["status"] == "unknown"
        gw.rh.fake.revoke(gw.rh.account.api_key)
        broken = await gw.place(user, account_id, quantity="0.0001")
        assert broken.json()["code"] == "connection_broken"


async def test_a_timeout_after_accept_is_unknown_then_adopted_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        gw.rh.fake.faults.timeout_after_accept = 1
        first = await gw.place(
            user, account_id, key="rh-lost-1", quantity="0.1", order_type="limit", limit_price="1"
        )
        assert first.status_code == 202, first.text
        order = first.json()
        assert (order["status"], order["broker_order_id"]) == ("unknown", None)

        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "accepted"
        assert got["broker_order_id"] is not None
        await Reconciler(h.state.ctx).run_once()
        assert gw.rh.fake.order_count(gw.rh.account.api_key) == 1

        replay = await gw.place(
            user, account_id, key="rh-lost-1", quantity="0.1", order_type="limit", limit_price="1"
        )
        assert replay.status_code == 202
        assert gw.rh.fake.order_count(gw.rh.account.api_key) == 1


async def test_fills_arrive_by_polling_through_the_open_order_sweep(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        placed = (await gw.place(user, account_id, quantity="0.05")).json()
        assert placed["status"] == "accepted"
        await gw.rh.fake.match()
        unpolled = (await h.client.get(f"/v1/orders/{placed['id']}", headers=h.auth(user))).json()
        assert unpolled["status"] == "accepted"  # nothing pushes: the sweep must read it
        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{placed['id']}", headers=h.auth(user))).json()
        assert (got["status"], got["filled_quantity"]) == ("filled", "0.05")
        events = (await h.client.get("/v1/events", headers=h.auth(user))).json()["items"]
        assert "order.filled" in [e["type"] for e in events]
        positions = await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
        [position] = positions.json()["items"]
        assert (position["symbol"], position["asset_class"], position["quantity"]) == (
            "BTC-USD",
            "crypto",
            "0.05",
        )

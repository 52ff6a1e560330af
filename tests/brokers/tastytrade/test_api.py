"""End to end: the gateway's /v1 API against the fake tastytrade, on both database backends.

The app reaches the fake only through its base-URL settings, exactly as it would reach
tastytrade. Nothing of ours is replaced: the registry is the default one.
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
from tests.brokers.support import connect_broker, gateway_app
from tests.brokers.tastytrade.support import Running, running_fake
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests


@dataclass
class Gateway:
    harness: Harness
    tt: Running

    def credentials(self) -> dict[str, str]:
        return {
            "client_secret": self.tt.customer.client_secret,
            "refresh_token": self.tt.customer.refresh_token,
        }

    async def connect(self, user: str) -> dict[str, Any]:
        return await connect_broker(self.harness, user, "tastytrade", self.credentials())

    async def account(self, user: str) -> str:
        [account_id] = (await self.connect(user))["accounts"]
        return str(account_id)


@contextlib.asynccontextmanager
async def gateway(db_url: str) -> AsyncIterator[Gateway]:
    async with running_fake() as tt:
        async with gateway_app(
            db_url,
            tastytrade_base_url=tt.url,
            tastytrade_streamer_url=tt.streamer_url,
            tastytrade_requests_per_minute=6000,
            tastytrade_burst=200,
        ) as harness:
            yield Gateway(harness=harness, tt=tt)


async def test_tastytrade_is_offered_as_a_tier_a_broker(db_url: str) -> None:
    async with gateway(db_url) as gw:
        response = await gw.harness.client.get("/v1/brokers", headers=gw.harness.auth(new_user()))
        brokers = {b["slug"]: b for b in response.json()["items"]}
        tt = brokers["tastytrade"]
        assert (tt["tier"], tt["auth"], tt["label"], tt["name"]) == (
            "A",
            "api_key",
            "Live",
            "tastytrade",
        )
        assert tt["capabilities"]["time_in_force"]["fok"] == "unsupported"
        assert tt["capabilities"]["order_stream"] == "native"


async def test_a_connection_is_validated_and_stored_sealed(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.connect(user)
        secret, refresh = gw.tt.customer.client_secret, gw.tt.customer.refresh_token
        assert (connection["tier"], connection["ownership"], connection["status"]) == (
            "A",
            "byob",
            "active",
        )
        assert connection["display"] == "Connected: tastytrade"
        assert secret not in str(connection)
        assert refresh not in str(connection)
        assert gw.tt.fake.token_requests == 1  # validated against the broker first
        assert ("GET", "/customers/me/accounts") in gw.tt.fake.requests

        [account_id] = connection["accounts"]
        h = gw.harness
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert (account["mode"], account["broker"], account["can_trade"]) == (
            "live",
            "tastytrade",
            True,
        )
        assert account["number_masked"] == "****" + gw.tt.account.number[-4:]
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert Decimal(balances.json()["cash"]) == Decimal(100000)
        quotes = await h.client.get(
            "/v1/quotes", params={"symbols": "AAPL", "account_id": account_id}, headers=h.auth(user)
        )
        assert quotes.status_code == 200, quotes.text
        async with h.state.ctx.sessionmaker() as session:
            token = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection["id"])
                )
            ).scalar_one()
        assert (token.broker_tier, token.broker_slug, token.no_order_write) == (
            "tier_a",
            "tastytrade",
            False,
        )
        assert secret.encode() not in token.token_ciphertext
        assert refresh.encode() not in token.token_ciphertext
        access_tokens = list(gw.tt.fake.tokens)
        for text in (secret, refresh, *access_tokens):
            assert text not in caplog.text


async def test_every_open_account_of_the_grant_is_connected(db_url: str) -> None:
    async with gateway(db_url) as gw:
        gw.tt.fake.add_account(gw.tt.customer, cash="5")
        connection = await gw.connect(new_user())
        assert len(connection["accounts"]) == 2


@pytest.mark.parametrize(
    "credentials",
    [
        {"client_secret": "nope", "refresh_token": "nope-either"},
        {"client_secret": "only-the-secret"},
        {"client_secret": "x", "refresh_token": "y", "password": "hunter2"},
        {"login": "someone", "password": "hunter2"},
    ],
)
async def test_bad_credentials_are_invalid_credentials_and_nothing_is_stored(
    db_url: str, credentials: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        user = new_user()
        h = gw.harness
        response = await h.client.post(
            "/v1/connections",
            json={"broker": "tastytrade", "credentials": credentials},
            headers=h.auth(user),
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_credentials"
        for value in ("nope-either", "hunter2"):
            assert value not in response.text
            assert value not in caplog.text
        listed = await h.client.get("/v1/connections", headers=h.auth(user))
        assert listed.json()["items"] == []


async def test_a_revoked_grant_at_connect_time_is_invalid_credentials(db_url: str) -> None:
    async with gateway(db_url) as gw:
        gw.tt.fake.revoke(gw.tt.customer)
        response = await gw.harness.client.post(
            "/v1/connections",
            json={"broker": "tastytrade", "credentials": gw.credentials()},
            headers=gw.harness.auth(new_user()),
        )
        assert response.json()["code"] == "invalid_credentials"


async def test_place_modify_cancel_through_the_api(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        placed = await h.place(
            user, account_id, order_type="limit", limit_price="100.00", time_in_force="gtc"
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["status"] == "submitted"  # the answer says "Routed"
        fake_order = gw.tt.account.orders[int(order["broker_order_id"])]
        assert fake_order.external_identifier == order["client_order_id"]
        assert fake_order.status == "Live"

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

        resized = await h.client.patch(
            f"/v1/orders/{replacement['id']}", json={"quantity": "5"}, headers=h.auth(user)
        )
        assert resized.status_code == 422
        assert resized.json()["code"] == "unsupported_order"

        canceled = await h.client.delete(f"/v1/orders/{replacement['id']}", headers=h.auth(user))
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "pending_cancel"  # "Cancel Requested"
        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{replacement['id']}", headers=h.auth(user))).json()
        assert got["status"] == "canceled"
        assert gw.tt.fake.order_count(gw.tt.account.number) == 2


async def test_broker_answers_become_problems_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        fake = gw.tt.fake

        poor = await h.place(user, account_id, quantity="100000")
        assert (poor.status_code, poor.json()["code"]) == (422, "insufficient_funds")
        unknown = await h.place(user, account_id, symbol="NOSUCH")
        assert unknown.json()["code"] == "unknown_symbol"
        gtc_market = await h.place(user, account_id, time_in_force="gtc")
        assert (gtc_market.status_code, gtc_market.json()["code"]) == (422, "broker_rejected")
        assert "GTC/GTD Market orders are not supported." in gtc_market.json()["detail"]
        fok = await h.place(user, account_id, time_in_force="fok")
        assert fok.json()["code"] == "unsupported_order"  # refused before any broker call

        fake.faults.rate_limited = 1  # the POST answers 429 (AAPL is known by now)
        limited = await h.place(user, account_id)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "7"
        fake.faults.rate_limited = 1
        fake.faults.retry_after = None  # as documented: no headers
        bare = await h.place(user, account_id)
        assert (bare.status_code, bare.headers["Retry-After"]) == (429, "1")

        fake.faults.server_errors = 3
        fake.faults.server_errors_method = "GET"
        unavailable = await h.client.get(
            f"/v1/accounts/{account_id}/balances", headers=h.auth(user)
        )
        assert (unavailable.status_code, unavailable.json()["code"]) == (503, "broker_unavailable")
        fake.faults.server_errors_method = None

        fake.faults.server_errors = 1  # the order POST fails after it may have been taken
        lost = await h.place(user, account_id)
        assert (lost.status_code, lost.json()["status"]) == (202, "unknown")

        fake.faults.forbidden = 1
        forbidden = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert (forbidden.status_code, forbidden.json()["code"]) == (409, "connection_broken")

        fake.revoke(gw.tt.customer)
        broken = await h.place(user, account_id)
        assert broken.json()["code"] == "connection_broken"


async def test_an_unreachable_broker_is_broker_unavailable(db_url: str) -> None:
    fake = contextlib.AsyncExitStack()
    tt = await fake.enter_async_context(running_fake())
    try:
        settings = settings_for_tests(
            db_url,
            tastytrade_base_url=tt.url,
            tastytrade_streamer_url=tt.streamer_url,
            broker_read_timeout_seconds=0.5,
            broker_connect_timeout_seconds=0.5,
        )
        async with running_app(settings) as h:
            user = new_user()
            gw = Gateway(harness=h, tt=tt)
            account_id = await gw.account(user)
            await fake.aclose()  # its port refuses connections from now on
            response = await h.client.get(
                f"/v1/accounts/{account_id}/balances", headers=h.auth(user)
            )
            assert (response.status_code, response.json()["code"]) == (503, "broker_unavailable")
            placed = await h.place(user, account_id)
            assert (placed.status_code, placed.json()["code"]) == (503, "broker_unavailable")
    finally:
        await fake.aclose()


async def test_a_timeout_after_accept_is_unknown_then_adopted_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        gw.tt.fake.faults.timeout_after_accept = 1
        first = await h.place(user, account_id, key="tt-lost-1", quantity="2")
        assert first.status_code == 202, first.text
        order = first.json()
        assert (order["status"], order["broker_order_id"]) == ("unknown", None)

        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "accepted"
        assert got["broker_order_id"] is not None
        number = gw.tt.account.number
        assert gw.tt.fake.order_count(number) == 1
        [adopted] = gw.tt.account.orders.values()
        assert adopted.external_identifier == order["client_order_id"]
        assert str(adopted.id) == got["broker_order_id"]

        replay = await h.place(user, account_id, key="tt-lost-1", quantity="2")
        assert replay.status_code == 202
        assert gw.tt.fake.order_count(number) == 1

"""End to end: the gateway's /v1 API against the fake Schwab, on both database backends.

The app reaches the fake only through its ``BROKERAGE_SCHWAB_*`` settings. Connections are
made through the OAuth browser flow (``GET /v1/oauth/schwab/authorize`` -> the fake's
authorize page -> the callback), as a user makes them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.db.models import BrokerToken
from app.db.repositories.orders import OrderEventRepository
from app.services.clock import utcnow
from app.services.reconciliation import Reconciler
from app.services.upstream import UpstreamStreams
from tests.brokers.schwab.support import Gateway, gateway
from tests.brokers.support import order_reaching
from tests.conftest import new_user
from tests.harness import Harness


def _tokens_of(gw: Gateway) -> tuple[str, str]:
    """(access token, refresh token) the fake issued for the one grant made so far."""
    [refresh_token] = list(gw.schwab.fake.grants)
    [access_token] = list(gw.schwab.fake.access)
    return access_token, refresh_token


async def test_schwab_is_an_oauth_broker_only_when_configured(
    db_url: str, harness: Harness
) -> None:
    unconfigured = await harness.client.get("/v1/brokers", headers=harness.auth(new_user()))
    assert "schwab" not in {b["slug"] for b in unconfigured.json()["items"]}
    async with gateway(db_url) as gw:
        h = gw.harness
        response = await h.client.get("/v1/brokers", headers=h.auth(new_user()))
        brokers = {b["slug"]: b for b in response.json()["items"]}
        schwab = brokers["schwab"]
        assert (schwab["tier"], schwab["auth"], schwab["label"]) == ("A", "oauth2", "Live")
        assert schwab["capabilities"]["client_order_ids"] == "unsupported"
        refused = await h.client.post(
            "/v1/connections",
            json={"broker": "schwab", "credentials": {"access_token": "x"}},
            headers=h.auth(new_user()),
        )
        assert refused.status_code == 422  # OAuth brokers connect through the browser flow


async def test_a_connection_is_sealed_and_reads_work(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        access_token, refresh_token = _tokens_of(gw)
        assert (connection["display"], connection["status"], connection["tier"]) == (
            "Connected: Schwab",
            "active",
            "A",
        )
        assert connection["refresh_expires_at"] is not None
        assert access_token not in str(connection)
        [account_id] = connection["accounts"]
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert account["number_masked"] == "****" + gw.schwab.account.number[-4:]
        assert gw.schwab.account.number not in str(account)
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
        assert (token.broker_tier, token.broker_slug) == ("tier_a", "schwab")
        assert access_token.encode() not in token.token_ciphertext
        assert refresh_token.encode() not in token.token_ciphertext
        assert access_token not in caplog.text
        assert refresh_token not in caplog.text


async def test_place_replace_cancel(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        order = await gw.place_limit(user, account_id)

        modified = await h.client.patch(
            f"/v1/orders/{order['id']}", json={"limit_price": "101.00"}, headers=h.auth(user)
        )
        assert modified.status_code == 200, modified.text
        replacement = modified.json()
        assert replacement["broker_order_id"] != order["broker_order_id"]
        assert Decimal(replacement["limit_price"]) == Decimal(101)
        old = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert old["status"] == "replaced"

        canceled = await h.client.delete(f"/v1/orders/{replacement['id']}", headers=h.auth(user))
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        again = await h.client.delete(f"/v1/orders/{replacement['id']}", headers=h.auth(user))
        assert (again.status_code, again.json()["code"]) == (409, "order_not_modifiable")
        assert len(gw.schwab.account.orders) == 2


async def test_broker_errors_are_mapped_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        fake = gw.schwab.fake
        poor = await h.place(user, account_id, quantity="100000")
        assert (poor.status_code, poor.json()["code"]) == (422, "insufficient_funds")
        no_shares = await h.place(user, account_id, side="sell", quantity="5")
        assert (no_shares.status_code, no_shares.json()["code"]) == (422, "broker_rejected")
        assert "oversold/overbought position" in no_shares.json()["detail"]
        unknown = await h.place(user, account_id, symbol="NOSUCH")
        assert unknown.json()["code"] == "unknown_symbol"

        fake.faults.rate_limited = 1  # the POST answers 429 (AAPL is known by now)
        limited = await h.place(user, account_id)
        assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
        assert limited.headers["Retry-After"] == "7"

        fake.faults.server_errors = 3
        down = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert (down.status_code, down.json()["code"]) == (503, "broker_unavailable")
        assert down.json()["retryable"] is True

        fake.faults.server_errors = 1
        fake.faults.server_errors_method = "POST"
        lost = await h.place(user, account_id)
        assert (lost.status_code, lost.json()["status"]) == (202, "unknown")
        fake.faults.server_errors_method = None

        fake.expire_access_tokens()
        expired = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert (expired.status_code, expired.json()["code"]) == (409, "connection_broken")
        refused = await h.place(user, account_id)
        assert (refused.status_code, refused.json()["code"]) == (409, "connection_broken")
        assert len(gw.schwab.account.orders) == 0  # nothing was placed by any of these


async def test_a_timeout_after_accept_is_unknown_then_adopted_by_fingerprint(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        fake = gw.schwab.fake
        # An identical order placed earlier must not be mistaken for the lost one.
        earlier = await h.place(
            user, account_id, key="schwab-earlier", order_type="limit", limit_price="1.00"
        )
        assert earlier.status_code == 201
        fake.faults.timeout_after_accept = 1
        fake.faults.hang_seconds = 3.0
        first = await h.place(
            user, account_id, key="schwab-lost-1", order_type="limit", limit_price="1.00"
        )
        assert first.status_code == 202, first.text
        order = first.json()
        assert (order["status"], order["broker_order_id"]) == ("unknown", None)
        assert len(gw.schwab.account.orders) == 2

        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "accepted"
        assert got["broker_order_id"] == str(max(gw.schwab.account.orders))
        assert got["broker_order_id"] != earlier.json()["broker_order_id"]

        replay = await h.place(
            user, account_id, key="schwab-lost-1", order_type="limit", limit_price="1.00"
        )
        assert replay.status_code == 202
        assert await Reconciler(h.state.ctx).run_once() == 0
        assert len(gw.schwab.account.orders) == 2  # exactly one order for the lost submit


async def test_two_identical_lost_submits_adopt_one_broker_order_each(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        fake = gw.schwab.fake
        fake.faults.hang_seconds = 3.0
        lost = []
        for key in ("schwab-twin-1", "schwab-twin-2"):
            fake.faults.timeout_after_accept = 1
            answer = await h.place(user, account_id, key=key, quantity="1")
            assert answer.json()["status"] == "unknown"
            lost.append(answer.json()["id"])
        assert len(gw.schwab.account.orders) == 2
        assert await Reconciler(h.state.ctx).run_once() == 2
        adopted = set()
        for order_id in lost:
            got = (await h.client.get(f"/v1/orders/{order_id}", headers=h.auth(user))).json()
            assert got["status"] in ("accepted", "filled")
            adopted.add(got["broker_order_id"])
        assert adopted == {str(i) for i in gw.schwab.account.orders}


async def test_a_lost_submit_the_broker_never_saw_is_given_up(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.connect(user))["accounts"]
        gw.schwab.fake.faults.server_errors = 1
        gw.schwab.fake.faults.server_errors_method = "POST"
        lost = await h.place(user, account_id)
        assert lost.json()["status"] == "unknown"
        reconciler = Reconciler(h.state.ctx)
        assert await reconciler.run_once() == 0  # not found yet; too early to give up
        later = utcnow() + timedelta(minutes=3)
        assert await reconciler.run_once(later) == 1
        got = (await h.client.get(f"/v1/orders/{lost.json()['id']}", headers=h.auth(user))).json()
        assert got["status"] == "rejected"
        assert gw.schwab.account.orders == {}


async def test_upstream_stream_feeds_orders_and_a_revoked_grant_breaks(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        [account_id] = connection["accounts"]
        placed = (await h.place(user, account_id, quantity="2")).json()
        streams = UpstreamStreams(h.state.ctx, restart_delay=0.05)
        try:
            await streams.sync()
            assert account_id in streams.running
            for _ in range(200):
                if gw.schwab.fake.streaming(gw.schwab.login):
                    break
                await asyncio.sleep(0.02)
            await gw.schwab.fake.match()
            got = await order_reaching(h, user, placed["id"], "filled")

            gw.schwab.fake.revoke(gw.schwab.login)
            gw.schwab.fake.drop_streams()
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
        finally:
            await streams.close()

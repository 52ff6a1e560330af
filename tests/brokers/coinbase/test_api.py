"""End to end: the gateway's /v1 API against the fake Coinbase, on both database backends.

The app reaches the fake only through its base-URL settings, exactly as it would reach
Coinbase. Nothing of ours is replaced: the registry is the default one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db.models import BrokerToken
from app.services.reconciliation import Reconciler
from tests.brokers.coinbase.support import Running, running_fake
from tests.brokers.support import connect_broker, gateway_app
from tests.conftest import new_user
from tests.fakes.coinbase.server import new_key
from tests.harness import Harness

BTC = {"symbol": "BTC-USD", "quantity": "0.01"}
RESTING = {**BTC, "order_type": "limit", "limit_price": "1000.00", "time_in_force": "gtc"}
MARKET = {**BTC, "order_type": "market", "time_in_force": "ioc", "limit_price": None}


@dataclass
class Gateway:
    harness: Harness
    cb: Running

    def credentials(self) -> dict[str, str]:
        # As pasted from the downloaded key file: the PEM's newlines still escaped.
        return {
            "api_key_name": self.cb.user.key_name,
            "private_key": self.cb.user.private_key.strip().replace("\n", "\\n"),
        }

    async def connect(self, user: str) -> dict[str, Any]:
        return await connect_broker(self.harness, user, "coinbase", self.credentials())

    async def account(self, user: str) -> str:
        [account_id] = (await self.connect(user))["accounts"]
        return str(account_id)

    async def place(self, user: str, account_id: str, **order: Any) -> httpx.Response:
        return await self.harness.place(user, account_id, **{**RESTING, **order})


@contextlib.asynccontextmanager
async def gateway(db_url: str) -> AsyncIterator[Gateway]:
    async with running_fake() as cb:
        async with gateway_app(
            db_url,
            coinbase_base_url=cb.url,
            coinbase_ws_url=cb.ws_url,
            coinbase_requests_per_second=1000,
        ) as harness:
            yield Gateway(harness=harness, cb=cb)


async def test_coinbase_is_offered_as_a_tier_a_crypto_broker(db_url: str) -> None:
    async with gateway(db_url) as gw:
        response = await gw.harness.client.get("/v1/brokers", headers=gw.harness.auth(new_user()))
        brokers = {b["slug"]: b for b in response.json()["items"]}
        cb = brokers["coinbase"]
        assert (cb["tier"], cb["auth"], cb["label"], cb["name"]) == (
            "A",
            "api_key",
            "Live",
            "Coinbase",
        )
        capabilities = cb["capabilities"]
        assert capabilities["asset_classes"] == {
            "equity": "unsupported",
            "option": "unsupported",
            "crypto": "native",
            "mutual_fund": "unsupported",
        }
        assert capabilities["time_in_force"]["day"] == "unsupported"
        assert capabilities["order_types"]["stop"] == "unsupported"
        assert (capabilities["fractional"], capabilities["short_selling"]) == (
            "native",
            "unsupported",
        )
        assert capabilities["extended_hours"] == "unsupported"
        assert capabilities["order_stream"] == "native"


async def test_a_key_is_validated_and_stored_sealed(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.connect(user)
        pem = gw.cb.user.private_key
        assert (connection["tier"], connection["ownership"], connection["status"]) == (
            "A",
            "byob",
            "active",
        )
        assert connection["display"] == "Connected: Coinbase"
        assert "PRIVATE KEY" not in str(connection)
        assert ("GET", "/api/v3/brokerage/accounts") in gw.cb.fake.requests  # checked first

        [account_id] = connection["accounts"]
        h = gw.harness
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert (account["mode"], account["broker"], account["can_trade"], account["currency"]) == (
            "live",
            "coinbase",
            True,
            "USD",
        )
        assert account["number_masked"] == "****" + gw.cb.portfolio[-4:]
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert Decimal(balances.json()["cash"]) == Decimal(100000)
        quotes = await h.client.get(
            "/v1/quotes",
            params={"symbols": "BTC-USD", "account_id": account_id},
            headers=h.auth(user),
        )
        assert quotes.status_code == 200, quotes.text
        assert Decimal(quotes.json()["quotes"]["BTC-USD"]["bid"]) > 0
        async with h.state.ctx.sessionmaker() as session:
            token = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection["id"])
                )
            ).scalar_one()
        assert (token.broker_tier, token.broker_slug, token.no_order_write) == (
            "tier_a",
            "coinbase",
            False,
        )
        body = "".join(pem.strip().splitlines()[1:-1])  # the key material between the markers
        assert body[:40].encode() not in token.token_ciphertext
        for line in pem.strip().splitlines()[1:-1]:
            assert line not in caplog.text


BAD_CREDENTIALS = [
    {"api_key_name": "organizations/x/apiKeys/y", "private_key": "not-a-key!"},
    {"api_key_name": "organizations/x/apiKeys/y"},
    {"api_key_name": "a", "private_key": "b", "passphrase": "hunter2-hunter2"},
    {"key": "someone", "secret": "hunter2-hunter2"},
]


async def test_bad_credentials_are_invalid_credentials_and_nothing_is_stored(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        user = new_user()
        h = gw.harness
        for credentials in BAD_CREDENTIALS:
            response = await h.client.post(
                "/v1/connections",
                json={"broker": "coinbase", "credentials": credentials},
                headers=h.auth(user),
            )
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "invalid_credentials"
            assert "hunter2-hunter2" not in response.text
        assert "hunter2-hunter2" not in caplog.text
        assert gw.cb.fake.requests == []  # refused before asking Coinbase
        listed = await h.client.get("/v1/connections", headers=h.auth(user))
        assert listed.json()["items"] == []


async def test_a_key_coinbase_refuses_is_invalid_credentials(db_url: str) -> None:
    async with gateway(db_url) as gw:
        stranger, _ = new_key("ES256")  # well-formed, but not the key registered for the name
        h, user = gw.harness, new_user()
        response = await h.client.post(
            "/v1/connections",
            json={
                "broker": "coinbase",
                "credentials": {"api_key_name": gw.cb.user.key_name, "private_key": stranger},
            },
            headers=h.auth(user),
        )
        assert response.json()["code"] == "invalid_credentials"
        gw.cb.fake.revoke(gw.cb.user)
        revoked = await h.client.post(
            "/v1/connections",
            json={"broker": "coinbase", "credentials": gw.credentials()},
            headers=h.auth(user),
        )
        assert revoked.json()["code"] == "invalid_credentials"
        listed = await h.client.get("/v1/connections", headers=h.auth(user))
        assert listed.json()["items"] == []


async def test_place_modify_cancel_through_the_api(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        placed = await gw.place(user, account_id)
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["status"] == "accepted"
        fake_order = gw.cb.user.orders[order["broker_order_id"]]
        assert fake_order.client_order_id == order["client_order_id"]
        assert fake_order.config_key == "limit_limit_gtc"

        modified = await h.client.patch(
            f"/v1/orders/{order['id']}",
            json={"limit_price": "1100.00", "quantity": "0.02"},
            headers=h.auth(user),
        )
        assert modified.status_code == 200, modified.text
        edited = modified.json()
        assert (edited["id"], edited["broker_order_id"]) == (order["id"], order["broker_order_id"])
        assert (Decimal(edited["limit_price"]), Decimal(edited["quantity"])) == (
            Decimal(1100),
            Decimal("0.02"),
        )
        assert edited["status"] == "accepted"

        tif = await h.client.patch(
            f"/v1/orders/{order['id']}", json={"time_in_force": "ioc"}, headers=h.auth(user)
        )
        assert (tif.status_code, tif.json()["code"]) == (422, "unsupported_order")
        still = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert (still["status"], still["time_in_force"]) == ("accepted", "gtc")

        canceled = await h.client.delete(f"/v1/orders/{order['id']}", headers=h.auth(user))
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        assert gw.cb.fake.order_count(gw.cb.user) == 1

        bought = await gw.place(user, account_id, **MARKET)
        assert (bought.status_code, bought.json()["status"]) == (201, "filled")
        positions = await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
        [position] = positions.json()["items"]
        assert (position["symbol"], position["asset_class"], position["quantity"]) == (
            "BTC-USD",
            "crypto",
            "0.01",
        )


async def test_broker_answers_become_problems_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        fake = gw.cb.fake

        poor = await gw.place(user, account_id, **{**MARKET, "quantity": "100"})
        assert (poor.status_code, poor.json()["code"]) == (422, "insufficient_funds")
        assert "Insufficient balance" in poor.json()["detail"]
        unknown = await gw.place(user, account_id, symbol="DOGE-USD")
        assert unknown.json()["code"] == "unknown_symbol"
        equity = await gw.place(user, account_id, symbol="AAPL")
        assert (equity.status_code, equity.json()["code"]) == (422, "unsupported_order")
        day = await gw.place(user, account_id, time_in_force="day")
        assert day.json()["code"] == "unsupported_order"  # capability: refused before the broker
        stop = await gw.place(
            user, account_id, order_type="stop", stop_price="1000", limit_price=None
        )
        assert stop.json()["code"] == "unsupported_order"
        gtc_market = await gw.place(user, account_id, **{**MARKET, "time_in_force": "gtc"})
        assert (gtc_market.status_code, gtc_market.json()["code"]) == (422, "unsupported_order")
        assert "market orders with time_in_force gtc" in gtc_market.json()["detail"]
        refused = await gw.place(user, account_id, quantity="0.000000001")
        assert (refused.status_code, refused.json()["code"]) == (422, "broker_rejected")
        assert "Too many decimals" in refused.json()["detail"]
        assert fake.order_count(gw.cb.user) == 0  # none of these became an order

        fake.faults.rate_limited = 1  # the POST answers 429 (BTC-USD is known by now)
        limited = await gw.place(user, account_id)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "7"

        fake.faults.server_errors = 3
        fake.faults.server_errors_method = "GET"
        unavailable = await h.client.get(
            f"/v1/accounts/{account_id}/balances", headers=h.auth(user)
        )
        assert (unavailable.status_code, unavailable.json()["code"]) == (503, "broker_unavailable")

        fake.faults.server_errors = 1  # the order POST fails after it may have been taken
        fake.faults.server_errors_method = "POST"
        lost = await gw.place(user, account_id)
        assert (lost.status_code, lost.json()["status"]) == (202, "unknown")
        fake.faults.server_errors_method = None

        fake.revoke(gw.cb.user)
        broken = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert (broken.status_code, broken.json()["code"]) == (409, "connection_broken")
        placed = await gw.place(user, account_id)
        assert placed.json()["code"] == "connection_broken"


async def test_a_timeout_after_accept_is_unknown_then_adopted_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        gw.cb.fake.faults.timeout_after_accept = 1
        first = await gw.place(user, account_id, key="cb-lost-1")
        assert first.status_code == 202, first.text
        order = first.json()
        assert (order["status"], order["broker_order_id"]) == ("unknown", None)

        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "accepted"
        assert gw.cb.fake.order_count(gw.cb.user) == 1
        [adopted] = gw.cb.user.orders.values()
        assert adopted.client_order_id == order["client_order_id"]
        assert adopted.order_id == got["broker_order_id"]

        replay = await gw.place(user, account_id, key="cb-lost-1")
        assert replay.status_code == 202
        assert gw.cb.fake.order_count(gw.cb.user) == 1  # never sent again


async def test_a_preview_through_the_api_is_coinbases_own(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        answer = await h.client.post(
            f"/v1/accounts/{account_id}/orders/preview",
            json={**RESTING, "side": "buy"},
            headers=h.auth(user),
        )
        assert answer.status_code == 200, answer.text
        preview = answer.json()
        assert preview["source"] == "broker"
        assert Decimal(preview["estimated_cash_change"]) == Decimal("-10.00")
        assert preview["rejections"] == []
        assert ("POST", "/api/v3/brokerage/orders/preview") in gw.cb.fake.requests
        assert gw.cb.fake.order_count(gw.cb.user) == 0

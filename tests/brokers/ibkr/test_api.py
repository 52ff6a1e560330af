"""End to end: the gateway's /v1 API against the fake IBKR Client Portal Gateway, on both
database backends. A connection stores the gateway's URL (auth kind ``gateway``), validated
with ``/iserver/auth/status`` before anything is stored."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from app.db.models import BrokerToken
from app.services.reconciliation import Reconciler
from tests.brokers.ibkr.support import TEST_SLOW_SECONDS, Running, running_fake
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests

FAR = {"order_type": "limit", "limit_price": "1.00", "time_in_force": "gtc", "quantity": "2"}


@dataclass
class Gateway:
    harness: Harness
    ib: Running

    async def connect(self, user: str, base_url: str | None = None) -> Any:
        return await self.harness.client.post(
            "/v1/connections",
            json={"broker": "ibkr", "credentials": {"base_url": base_url or self.ib.url}},
            headers=self.harness.auth(user),
        )

    async def account(self, user: str) -> str:
        response = await self.connect(user)
        assert response.status_code == 201, response.text
        [account_id] = response.json()["accounts"]
        return str(account_id)


@contextlib.asynccontextmanager
async def gateway(db_url: str, cash: str = "100000", **settings: Any) -> AsyncIterator[Gateway]:
    async with running_fake(cash=cash) as ib:
        values = {
            "broker_read_timeout_seconds": 0.5,
            "reconcile_unknown_after_seconds": 0,
            "ibkr_slow_endpoint_seconds": TEST_SLOW_SECONDS,
            **settings,
        }
        async with running_app(settings_for_tests(db_url, **values)) as harness:
            yield Gateway(harness=harness, ib=ib)


async def test_ibkr_is_offered_as_a_gateway_broker(db_url: str) -> None:
    async with gateway(db_url) as gw:
        response = await gw.harness.client.get("/v1/brokers", headers=gw.harness.auth(new_user()))
        broker = {b["slug"]: b for b in response.json()["items"]}["ibkr"]
        assert (broker["tier"], broker["auth"], broker["name"]) == (
            "A",
            "gateway",
            "Interactive Brokers",
        )
        assert broker["capabilities"]["time_in_force"]["fok"] == "unsupported"


async def test_a_gateway_is_validated_then_its_url_stored_sealed(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        response = await gw.connect(user)
        assert response.status_code == 201, response.text
        connection = response.json()
        assert (connection["status"], connection["display"]) == (
            "active",
            "Connected: Interactive Brokers",
        )
        assert gw.ib.url not in response.text
        assert ("GET", "/v1/api/iserver/auth/status") in gw.ib.fake.requests
        [account_id] = connection["accounts"]
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert account["name"].endswith("(paper)")
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert Decimal(balances.json()["buying_power"]) == Decimal(100000)
        async with h.state.ctx.sessionmaker() as session:
            token = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection["id"])
                )
            ).scalar_one()
        assert (token.broker_slug, token.broker_tier) == ("ibkr", "tier_a")
        assert gw.ib.url.encode() not in token.token_ciphertext


@pytest.mark.parametrize(
    "base_url",
    [
        "https://169.254.169.254:5000/v1/api",  # not an allowed gateway host
        "https://localhost:5000/v1/portal",
        "file:///etc/passwd",
    ],
)
async def test_a_url_that_is_not_an_allowed_gateway_is_refused_unsent(
    db_url: str, base_url: str
) -> None:
    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        response = await gw.connect(user, base_url)
        assert (response.status_code, response.json()["code"]) == (422, "invalid_credentials")
        assert (await h.client.get("/v1/connections", headers=h.auth(user))).json()["items"] == []


async def test_a_logged_out_gateway_is_invalid_and_an_unreachable_one_unavailable(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        gw.ib.fake.logout()
        response = await gw.connect(new_user())
        assert (response.status_code, response.json()["code"]) == (422, "invalid_credentials")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        response = await gw.connect(new_user(), f"http://127.0.0.1:{closed}/v1/api")
        assert (response.status_code, response.json()["code"]) == (503, "broker_unavailable")


async def test_an_unconfirmed_question_is_a_rejection_with_its_text(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        placed = await h.place(user, account_id, **FAR)
        assert (placed.status_code, placed.json()["code"]) == (422, "broker_rejected")
        assert "Percentage constraint of 3%" in placed.json()["detail"]
        assert gw.ib.fake.order_count() == 0


async def test_place_modify_cancel_with_confirmed_questions(db_url: str) -> None:
    async with gateway(db_url, ibkr_auto_confirm=["o163"]) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        placed = await h.place(user, account_id, **FAR)
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["status"] == "accepted"
        fake_order = gw.ib.fake.orders[int(order["broker_order_id"])]
        assert fake_order.coid == order["client_order_id"]
        modified = await h.client.patch(
            f"/v1/orders/{order['id']}", json={"limit_price": "1.50"}, headers=h.auth(user)
        )
        assert modified.status_code == 200, modified.text
        assert (modified.json()["broker_order_id"], Decimal(modified.json()["limit_price"])) == (
            order["broker_order_id"],
            Decimal("1.50"),
        )
        canceled = await h.client.delete(f"/v1/orders/{order['id']}", headers=h.auth(user))
        assert (canceled.status_code, canceled.json()["status"]) == (200, "canceled")
        assert gw.ib.fake.order_count() == 1


async def test_broker_refusals_reach_the_client_as_problems_once(db_url: str) -> None:
    async with gateway(db_url, cash="100", ibkr_auto_confirm=["o163"]) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        poor = await h.place(user, account_id, quantity="10")
        assert (poor.status_code, poor.json()["code"]) == (422, "insufficient_funds")
        unknown = await h.place(user, account_id, symbol="NOSUCH")
        assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_symbol")
        fok = await h.place(user, account_id, time_in_force="fok")
        assert (fok.status_code, fok.json()["code"]) == (422, "unsupported_order")
        gw.ib.fake.faults.rate_limited = 1
        limited = await h.place(user, account_id, order_type="limit", limit_price="0.01")
        assert limited.status_code == 429
        gw.ib.fake.faults.server_errors, gw.ib.fake.faults.server_errors_method = 1, "POST"
        lost = await h.place(user, account_id, order_type="limit", limit_price="0.01")
        assert (lost.status_code, lost.json()["status"]) == (202, "unknown")
        gw.ib.fake.logout()
        broken = await h.place(user, account_id, order_type="limit", limit_price="0.01")
        assert broken.json()["code"] == "connection_broken"


async def test_a_lost_acknowledgement_is_unknown_then_adopted_once(db_url: str) -> None:
    async with gateway(db_url, ibkr_auto_confirm=["o163"]) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        gw.ib.fake.faults.timeout_after_accept = 1
        first = await h.place(user, account_id, key="ib-lost-1", **FAR)
        assert first.status_code == 202, first.text
        order = first.json()
        assert (order["status"], order["broker_order_id"]) == ("unknown", None)
        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "accepted"
        assert gw.ib.fake.orders[int(got["broker_order_id"])].coid == order["client_order_id"]
        replay = await h.place(user, account_id, key="ib-lost-1", **FAR)
        assert replay.status_code == 202
        assert gw.ib.fake.order_count() == 1


async def test_fills_arrive_by_polling_through_the_open_order_sweep(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        placed = (await h.place(user, account_id, quantity="3", time_in_force="day")).json()
        assert placed["status"] == "accepted"
        await gw.ib.fake.match()
        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{placed['id']}", headers=h.auth(user))).json()
        assert (got["status"], got["filled_quantity"]) == ("filled", "3")
        positions = await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
        assert [(p["symbol"], p["quantity"]) for p in positions.json()["items"]] == [("AAPL", "3")]
        assert gw.ib.fake.penalties == 0

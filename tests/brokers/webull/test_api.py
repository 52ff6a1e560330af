"""End to end: the gateway's /v1 API against the fake Webull, on both database backends.

The app reaches the fake only through ``BROKERAGE_WEBULL_BASE_URL``. A Webull connection
waits ``broken`` (``last_refresh_outcome: "pending_confirmation"``) until the user confirms
the access token in the Webull app; then it becomes ``active`` with its accounts.
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
from tests.brokers.webull.support import TEST_QUERIES_PER_SECOND, Running, running_fake
from tests.conftest import new_user
from tests.harness import Harness


@dataclass
class Gateway:
    harness: Harness
    wb: Running

    def credentials(self) -> dict[str, str]:
        return {"app_key": self.wb.app.app_key, "app_secret": self.wb.app.app_secret}

    async def connect(self, user: str) -> dict[str, Any]:
        return await connect_broker(self.harness, user, "webull", self.credentials())

    def token_of(self, connection: dict[str, Any]) -> str:
        """The fake's newest token of this app (the one the connect flow created)."""
        tokens = [t for t in self.wb.fake.tokens.values() if t.app_key == self.wb.app.app_key]
        return tokens[-1].token

    async def get(self, user: str, connection: dict[str, Any]) -> dict[str, Any]:
        h = self.harness
        response = await h.client.get(f"/v1/connections/{connection['id']}", headers=h.auth(user))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def connected(self, user: str) -> str:
        """A confirmed connection's account id."""
        connection = await self.connect(user)
        self.wb.fake.confirm(self.token_of(connection))
        [account_id] = (await self.get(user, connection))["accounts"]
        return str(account_id)


@contextlib.asynccontextmanager
async def gateway(
    db_url: str, cash: str = "100000", *, two_factor: bool = True
) -> AsyncIterator[Gateway]:
    async with running_fake(cash=cash, two_factor=two_factor) as wb:
        async with gateway_app(
            db_url,
            webull_base_url=wb.url,
            webull_queries_per_second=TEST_QUERIES_PER_SECOND,
            credential_confirm_interval_seconds=0,
        ) as harness:
            yield Gateway(harness=harness, wb=wb)


async def test_webull_is_offered_as_an_api_key_broker(db_url: str) -> None:
    async with gateway(db_url) as gw:
        response = await gw.harness.client.get("/v1/brokers", headers=gw.harness.auth(new_user()))
        broker = {b["slug"]: b for b in response.json()["items"]}["webull"]
        assert (broker["tier"], broker["auth"], broker["label"]) == ("A", "api_key", "Live")
        assert broker["capabilities"]["modify"] == "native"
        assert broker["capabilities"]["order_stream"] == "unsupported"


async def test_a_pending_token_shows_on_the_connection_until_the_user_confirms_it(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        connection = await gw.connect(user)
        assert (connection["status"], connection["accounts"]) == ("broken", [])
        assert connection["last_refresh_outcome"] == "pending_confirmation"
        assert connection["display"] == "Webull: confirm the access token in the Webull app"
        assert connection["expires_at"] is not None
        assert gw.wb.app.app_secret not in str(connection)
        token = gw.token_of(connection)
        events = (await h.client.get("/v1/events", headers=h.auth(user))).json()["items"]
        assert [e["type"] for e in events] == ["connection.broken"]

        still = await gw.get(user, connection)  # checked at Webull: still PENDING
        assert (still["status"], still["accounts"]) == ("broken", [])

        gw.wb.fake.confirm(token)
        confirmed = await gw.get(user, connection)
        assert (confirmed["status"], confirmed["last_refresh_outcome"]) == ("active", "confirmed")
        assert confirmed["display"] == "Connected: Webull"
        [account_id] = confirmed["accounts"]
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert (account["broker"], account["mode"], account["can_trade"]) == (
            "webull",
            "live",
            True,
        )
        again = await gw.get(user, connection)
        assert again["accounts"] == [account_id]  # added once
        events = (await h.client.get("/v1/events", headers=h.auth(user))).json()["items"]
        assert [e["type"] for e in events] == ["connection.broken", "connection.active"]
        async with h.state.ctx.sessionmaker() as session:
            stored = (
                await session.execute(
                    select(BrokerToken).where(
                        BrokerToken.connection_id == connection["id"],
                        BrokerToken.revoked_at.is_(None),
                    )
                )
            ).scalar_one()
        assert token.encode() not in stored.token_ciphertext
        assert gw.wb.app.app_secret not in caplog.text
        assert token not in caplog.text


async def test_a_token_that_expires_unconfirmed_leaves_the_connection_broken(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        connection = await gw.connect(user)
        gw.wb.fake.expire_token(gw.token_of(connection))
        assert await h.state.connections.confirm_all_pending() >= 1
        broken = await gw.get(user, connection)
        assert (broken["status"], broken["last_refresh_outcome"]) == (
            "broken",
            "confirmation_failed",
        )
        assert "expired" in broken["display"]
        events = (await h.client.get("/v1/events", headers=h.auth(user))).json()["items"]
        assert events[-1]["type"] == "connection.broken"


async def test_the_background_pass_completes_a_confirmed_connection(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        connection = await gw.connect(user)
        gw.wb.fake.confirm(gw.token_of(connection))
        assert await h.state.connections.confirm_all_pending() >= 1
        listed = (await h.client.get("/v1/connections", headers=h.auth(user))).json()["items"]
        assert [(c["status"], len(c["accounts"])) for c in listed] == [("active", 1)]


async def test_without_two_factor_the_connection_is_active_at_once(db_url: str) -> None:
    async with gateway(db_url, two_factor=False) as gw:
        connection = await gw.connect(new_user())
        assert (connection["status"], len(connection["accounts"])) == ("active", 1)
        assert connection["last_refresh_outcome"] is None


@pytest.mark.parametrize("case", ["wrong_secret", "revoked", "missing"])
async def test_a_bad_key_is_invalid_credentials_and_nothing_is_stored(
    db_url: str, case: str
) -> None:
    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        credentials = gw.credentials()
        if case == "wrong_secret":
            credentials["app_secret"] = "hunter2-wrong"
        elif case == "revoked":
            gw.wb.fake.revoke(gw.wb.app.app_key)
        else:
            del credentials["app_secret"]
        response = await h.client.post(
            "/v1/connections",
            json={"broker": "webull", "credentials": credentials},
            headers=h.auth(user),
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_credentials")
        assert "hunter2" not in response.text
        listed = await h.client.get("/v1/connections", headers=h.auth(user))
        assert listed.json()["items"] == []


async def test_place_modify_cancel_through_the_api(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.connected(user)
        placed = await h.place(
            user,
            account_id,
            quantity="2",
            order_type="limit",
            limit_price="1.00",
            time_in_force="day",
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["status"] == "accepted"
        assert order["broker_order_id"] == order["client_order_id"][2:]
        modified = await h.client.patch(
            f"/v1/orders/{order['id']}", json={"limit_price": "1.50"}, headers=h.auth(user)
        )
        assert modified.status_code == 200, modified.text
        assert (modified.json()["id"], Decimal(modified.json()["limit_price"])) == (
            order["id"],
            Decimal("1.50"),
        )
        canceled = await h.client.delete(f"/v1/orders/{order['id']}", headers=h.auth(user))
        assert (canceled.status_code, canceled.json()["status"]) == (200, "canceled")
        fok = await h.place(user, account_id, time_in_force="fok")
        assert (fok.status_code, fok.json()["code"]) == (422, "unsupported_order")
        assert gw.wb.fake.order_count(gw.wb.app.app_key) == 1


async def test_broker_refusals_reach_the_client_as_problems_once(db_url: str) -> None:
    async with gateway(db_url, cash="100") as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.connected(user)
        poor = await h.place(user, account_id, quantity="10")
        assert (poor.status_code, poor.json()["code"]) == (422, "insufficient_funds")
        unknown = await h.place(user, account_id, symbol="NOSUCH")
        assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_symbol")
        gw.wb.fake.faults.rate_limited = 1
        limited = await h.place(user, account_id, order_type="limit", limit_price="0.01")
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
        gw.wb.fake.faults.server_errors, gw.wb.fake.faults.server_errors_method = 1, "POST"
        lost = await h.place(user, account_id, order_type="limit", limit_price="0.01")
        assert (lost.status_code, lost.json()["status"]) == (202, "unknown")
        gw.wb.fake.revoke(gw.wb.app.app_key)
        broken = await h.place(user, account_id, order_type="limit", limit_price="0.01")
        assert broken.json()["code"] == "connection_broken"


async def test_a_timeout_after_accept_is_unknown_then_adopted_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.connected(user)
        gw.wb.fake.faults.timeout_after_accept = 1
        body = {"order_type": "limit", "limit_price": "1", "quantity": "2"}
        first = await h.place(user, account_id, key="wb-lost-1", **body)
        assert first.status_code == 202, first.text
        order = first.json()
        assert (order["status"], order["broker_order_id"]) == ("unknown", None)
        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert (got["status"], got["broker_order_id"]) == ("accepted", order["client_order_id"][2:])
        await Reconciler(h.state.ctx).run_once()
        replay = await h.place(user, account_id, key="wb-lost-1", **body)
        assert replay.status_code == 202
        assert gw.wb.fake.order_count(gw.wb.app.app_key) == 1


async def test_fills_arrive_by_polling_through_the_open_order_sweep(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.connected(user)
        placed = (await h.place(user, account_id, quantity="3", time_in_force="day")).json()
        assert placed["status"] == "accepted"
        await gw.wb.fake.match()
        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{placed['id']}", headers=h.auth(user))).json()
        assert (got["status"], got["filled_quantity"]) == ("filled", "3")
        positions = await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
        assert [(p["symbol"], p["quantity"]) for p in positions.json()["items"]] == [("AAPL", "3")]


async def test_a_vertical_through_the_api_fills_with_both_legs_and_two_positions(
    db_url: str,
) -> None:
    """An option spread end to end: the gateway's multi-leg order body to Webull's decomposed
    legs with the strategy named, filled on the fake, read back through the reconciler, its
    two legs as positions; the chain is a capability problem (Webull has none)."""
    from tests.brokers.webull.option_support import contract, mark

    async with gateway(db_url) as gw:
        user, h = new_user(), gw.harness
        account_id = await gw.connected(user)
        fake = gw.wb.fake
        buy, sell = contract(fake, 0), contract(fake, 2)
        price = mark(fake, buy) - mark(fake, sell) + Decimal("0.50")
        body = {
            "legs": [
                {"symbol": buy.symbol, "side": "buy", "ratio": 1, "position_effect": "open"},
                {"symbol": sell.symbol, "side": "sell", "ratio": 1, "position_effect": "open"},
            ],
            "quantity": "2",
            "order_type": "limit",
            "limit_price": str(price),
            "price_effect": "debit",
        }
        placed = await h.client.post(
            f"/v1/accounts/{account_id}/orders",
            json=body,
            headers=h.auth(user, **{"Idempotency-Key": "wb-vertical-1"}),
        )
        assert placed.status_code in (200, 201), placed.text
        order = placed.json()
        [sent] = gw.wb.account.orders.values()
        assert (sent.strategy, sent.side, [leg.side for leg in sent.legs]) == (
            "VERTICAL",
            "BUY",
            ["BUY", "SELL"],
        )
        await fake.match()
        await Reconciler(h.state.ctx).run_once()
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "filled"
        assert [(leg["symbol"], leg["filled_quantity"]) for leg in got["legs"]] == [
            (buy.symbol, "2"),
            (sell.symbol, "2"),
        ]
        positions = (
            await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
        ).json()["items"]
        held = {p["symbol"]: p["quantity"] for p in positions}
        assert held == {buy.symbol: "2", sell.symbol: "-2"}
        chain = await h.client.get(
            f"/v1/accounts/{account_id}/options/chain?underlying=AAPL", headers=h.auth(user)
        )
        assert chain.status_code == 422
        assert chain.json()["code"] == "options_chain_unsupported"

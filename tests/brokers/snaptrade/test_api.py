"""End to end: the /v1 API with SnapTrade (fake) as a Tier B path, on both database backends.

Connect -> Connection Portal URL -> the user finishes the portal on the fake -> SnapTrade's
webhook (real HTTP, real signature) -> the connection is active with its accounts -> orders.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.db.models import BrokerToken, OrderEvent
from app.services.reconciliation import Reconciler
from tests.brokers.snaptrade.gateway import RETURN_TO, gateway
from tests.conftest import new_user


async def test_snaptrade_is_offered_as_a_tier_b_aggregator(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h = gw.harness
        response = await h.client.get("/v1/brokers", headers=h.auth(new_user()))
        snap = {b["slug"]: b for b in response.json()["items"]}["snaptrade"]
        assert (snap["tier"], snap["auth"], snap["label"], snap["name"]) == (
            "B",
            "aggregator",
            "Live",
            "SnapTrade",
        )
        capabilities = snap["capabilities"]
        assert capabilities["asset_classes"]["equity"] == "native"
        assert capabilities["asset_classes"]["option"] == "native"
        assert capabilities["multi_leg"] == "native"
        assert capabilities["options"]["chain"] == "unsupported"  # no chain endpoint
        assert capabilities["options"]["max_legs"] == 4
        assert capabilities["preview"] == "native"
        assert set(capabilities["order_types"].values()) == {"native"}
        assert set(capabilities["time_in_force"].values()) == {"native"}
        assert (capabilities["extended_hours"], capabilities["order_stream"]) == (
            "unsupported",
            "unsupported",
        )
        assert capabilities["client_order_ids"] == "unsupported"


async def test_connect_portal_webhook_then_active(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        before = datetime.now(UTC)
        created = await gw.connect(user, "SCHWAB")
        after = datetime.now(UTC)
        assert (created["tier"], created["ownership"], created["label"]) == ("B", "byob", "Live")
        assert (created["status"], created["accounts"]) == ("broken", [])
        assert created["display"] == "Connecting via SnapTrade"
        portal = created["portal"]
        assert portal["url"].startswith(gw.fake_url + "/snapTrade/redeemToken?token=")
        assert "broker=SCHWAB" in portal["url"]
        expires = datetime.fromisoformat(portal["expires_at"])
        assert before + timedelta(minutes=5) <= expires <= after + timedelta(minutes=5)

        snap_user = gw.user_of(created["id"])
        secret = snap_user.secret
        assert secret not in str(created)
        async with h.state.ctx.sessionmaker() as session:
            token = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == created["id"])
                )
            ).scalar_one()
        assert (token.broker_tier, token.broker_slug, token.no_order_write) == (
            "tier_b",
            "snaptrade",
            False,
        )
        assert secret.encode() not in token.token_ciphertext

        redirect = await gw.finish_portal(portal["url"])
        [auth] = snap_user.authorizations.values()
        assert redirect == {"status": "SUCCESS", "connection_id": auth.id}
        assert ("USER_REGISTERED", 204) in gw.fake.webhooks
        assert ("CONNECTION_ADDED", 204) in gw.fake.webhooks

        got = (await h.client.get(f"/v1/connections/{created['id']}", headers=h.auth(user))).json()
        assert (got["status"], got["display"]) == ("active", "Connected: Schwab via SnapTrade")
        assert got["portal"] is None
        [account_id] = got["accounts"]
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert (account["broker"], account["tier"], account["label"], account["mode"]) == (
            "snaptrade",
            "B",
            "Live",
            "live",
        )
        assert account["can_trade"] is True
        assert account["name"] == "Schwab Individual 1"
        fake_account = gw.account_of(created["id"])
        assert account["number_masked"] == "****" + fake_account.number[-4:]
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert Decimal(balances.json()["cash"]) == Decimal(100000)
        positions = await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
        assert positions.json()["items"] == []
        quotes = await h.client.get(
            "/v1/quotes", params={"symbols": "AAPL", "account_id": account_id}, headers=h.auth(user)
        )
        assert quotes.status_code == 200, quotes.text
        async with h.state.ctx.sessionmaker() as session:
            events = (
                (
                    await session.execute(
                        select(OrderEvent.type).where(OrderEvent.connection_id == created["id"])
                    )
                )
                .scalars()
                .all()
            )
        assert list(events) == ["connection.active"]
        assert secret not in caplog.text


async def test_without_webhooks_the_client_refreshes(db_url: str) -> None:
    async with gateway(db_url, webhooks=False) as gw:
        h, user = gw.harness, new_user()
        created = await gw.connect(user, brokerage=None)
        assert "broker=" not in created["portal"]["url"]  # SnapTrade's own brokerage list
        await gw.finish_portal(created["portal"]["url"], broker="ALPACA")
        still = (
            await h.client.get(f"/v1/connections/{created['id']}", headers=h.auth(user))
        ).json()
        assert still["status"] == "broken"
        assert still["last_refresh_outcome"].startswith("waiting")
        refreshed = await h.client.post(
            f"/v1/connections/{created['id']}/refresh", headers=h.auth(user)
        )
        assert refreshed.status_code == 200, refreshed.text
        body = refreshed.json()
        assert (body["status"], body["display"]) == ("active", "Connected: Alpaca via SnapTrade")
        assert len(body["accounts"]) == 1
        again = await h.client.post(
            f"/v1/connections/{created['id']}/refresh", headers=h.auth(user)
        )
        assert again.json()["accounts"] == body["accounts"]  # idempotent


async def test_place_modify_cancel_and_fills_through_the_api(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id, account_id = await gw.linked(user)
        fake_account = gw.account_of(connection_id)

        placed = await h.place(
            user, account_id, order_type="limit", limit_price="100.00", time_in_force="gtc"
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["status"] == "accepted"
        fake_order = fake_account.orders[order["broker_order_id"]]
        assert (fake_order.status, fake_order.order_type, fake_order.price) == (
            "ACCEPTED",
            "Limit",
            Decimal(100),
        )

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
        assert fake_account.orders[replacement["broker_order_id"]].status == "CANCELED"

        market = (await h.place(user, account_id, quantity="2")).json()
        assert market["status"] == "accepted"
        await gw.fake.match()
        # SnapTrade says something changed (not what): the webhook makes us look now.
        answer = await gw.fake.send_webhook(
            "ACCOUNT_HOLDINGS_UPDATED",
            gw.user_of(connection_id).user_id,
            accountId=fake_account.id,
            brokerageAuthorizationId=fake_account.authorization_id,
        )
        assert answer.status_code == 204
        filled = (await h.client.get(f"/v1/orders/{market['id']}", headers=h.auth(user))).json()
        assert filled["status"] == "filled"
        assert Decimal(filled["filled_quantity"]) == Decimal(2)
        position = await h.client.get(
            f"/v1/accounts/{account_id}/positions/AAPL", headers=h.auth(user)
        )
        assert Decimal(position.json()["quantity"]) == Decimal(2)
        assert gw.fake.order_count(fake_account.id) == 3


async def test_open_orders_are_polled_by_reconciliation(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id, account_id = await gw.linked(user)
        market = (await h.place(user, account_id, quantity="1")).json()
        await gw.fake.match()
        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{market['id']}", headers=h.auth(user))).json()
        assert got["status"] == "filled"
        assert ("POST", f"/accounts/{gw.account_of(connection_id).id}/orders/details") in (
            gw.fake.requests
        )


@pytest.mark.parametrize("brokerage", ["FIDELITY", "ROBINHOOD", "INTERACTIVE-BROKERS"])
async def test_read_only_links_refuse_orders_before_any_broker_request(
    db_url: str, brokerage: str
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id, account_id = await gw.linked(user, brokerage)
        connection = (
            await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))
        ).json()
        name = {"FIDELITY": "Fidelity", "ROBINHOOD": "Robinhood"}.get(
            brokerage, "Interactive Brokers"
        )
        assert connection["display"] == f"Connected: {name} via SnapTrade"
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert account["can_trade"] is False
        async with h.state.ctx.sessionmaker() as session:
            token = (
                await session.execute(
                    select(BrokerToken).where(
                        BrokerToken.connection_id == connection_id,
                        BrokerToken.revoked_at.is_(None),
                    )
                )
            ).scalar_one()
        assert token.no_order_write is True  # the vault refuses it to every order path

        positions = await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
        assert positions.status_code == 200  # reads work
        seen = len(gw.fake.requests)
        refused = await h.place(user, account_id)
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "read_only_account"
        assert len(gw.fake.requests) == seen  # nothing reached SnapTrade
        assert gw.fake.refused == []


async def test_a_disabled_link_breaks_the_connection_until_relinked(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id, account_id = await gw.linked(user)
        [auth] = gw.user_of(connection_id).authorizations.values()
        await gw.fake.disable_authorization(auth.id)
        await gw.fake.flush_webhooks()  # CONNECTION_BROKEN
        broken = (
            await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))
        ).json()
        assert broken["status"] == "broken"
        assert "relink" in broken["last_refresh_outcome"]
        refused = await h.place(user, account_id)
        assert (refused.status_code, refused.json()["code"]) == (409, "connection_broken")
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert balances.status_code == 200  # SnapTrade keeps serving the last state

        portal = await h.client.post(
            f"/v1/connections/{connection_id}/portal", headers=h.auth(user)
        )
        assert portal.status_code == 200, portal.text
        await gw.finish_portal(portal.json()["url"])  # CONNECTION_FIXED
        fixed = (
            await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))
        ).json()
        assert (fixed["status"], fixed["accounts"]) == ("active", [account_id])
        assert (await h.place(user, account_id)).status_code == 201
        async with h.state.ctx.sessionmaker() as session:
            events = (
                (
                    await session.execute(
                        select(OrderEvent.type)
                        .where(OrderEvent.connection_id == connection_id)
                        .order_by(OrderEvent.id)
                    )
                )
                .scalars()
                .all()
            )
        assert list(events) == ["connection.active", "connection.broken", "connection.active"]


async def test_a_placement_lost_after_acceptance_is_adopted_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id, account_id = await gw.linked(user)
        fake_account = gw.account_of(connection_id)
        gw.fake.faults.timeout_after_accept = 1
        key = "snap-lost-" + uuid.uuid4().hex[:8]
        first = await h.place(user, account_id, key=key, quantity="2")
        assert first.status_code == 202, first.text
        order = first.json()
        assert (order["status"], order["broker_order_id"]) == ("unknown", None)
        assert gw.fake.order_count(fake_account.id) == 1  # SnapTrade did take it

        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "accepted"
        [adopted] = fake_account.orders.values()
        assert got["broker_order_id"] == adopted.id

        replay = await h.place(user, account_id, key=key, quantity="2")
        assert replay.status_code == 202
        assert gw.fake.order_count(fake_account.id) == 1  # never sent again


async def test_broker_answers_become_problems_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id, account_id = await gw.linked(user, cash="1000")
        fake = gw.fake

        poor = await h.place(user, account_id, quantity="100")
        assert (poor.status_code, poor.json()["code"]) == (422, "insufficient_funds")
        unknown = await h.place(user, account_id, symbol="NOSUCH")
        assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_symbol")
        extended = await h.place(
            user, account_id, order_type="limit", limit_price="1", extended_hours=True
        )
        assert extended.json()["code"] == "unsupported_order"  # refused before SnapTrade

        fake.faults.rate_limited = 1
        fake.faults.rate_limit_reset = 7
        limited = await h.place(user, account_id)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")

        fake.faults.server_errors = 3
        fake.faults.server_errors_method = "GET"
        unavailable = await h.client.get(
            f"/v1/accounts/{account_id}/balances", headers=h.auth(user)
        )
        assert (unavailable.status_code, unavailable.json()["code"]) == (503, "broker_unavailable")
        fake.faults.server_errors_method = None

        fake.rotate_secret(gw.user_of(connection_id).user_id)  # the stored secret is dead
        refused = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert (refused.status_code, refused.json()["code"]) == (409, "connection_broken")
        broken = await h.client.post(
            f"/v1/connections/{connection_id}/refresh", headers=h.auth(user)
        )
        assert broken.json()["status"] == "broken"
        assert "refused" in broken.json()["last_refresh_outcome"]


async def test_disconnect_deletes_the_snaptrade_user(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id, account_id = await gw.linked(user)
        resting = await h.place(
            user, account_id, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        fake_account = gw.account_of(connection_id)
        snap_user = gw.user_of(connection_id).user_id
        deleted = await h.client.delete(f"/v1/connections/{connection_id}", headers=h.auth(user))
        assert deleted.status_code == 204
        assert fake_account.orders[resting.json()["broker_order_id"]].status == "CANCELED"
        assert snap_user not in gw.fake.users
        got = (await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))).json()
        assert got["status"] == "revoked"
        assert got["last_refresh_outcome"] == "revoked here and at SnapTrade"
        again = await h.client.post(
            f"/v1/connections/{connection_id}/refresh", headers=h.auth(user)
        )
        assert (again.status_code, again.json()["code"]) == (409, "connection_broken")
        portal = await h.client.post(
            f"/v1/connections/{connection_id}/portal", headers=h.auth(user)
        )
        assert portal.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"broker": "snaptrade", "credentials": {"user_secret": "hunter2"}},
        {"broker": "snaptrade", "options": {"colour": "blue"}},
        {"broker": "snaptrade", "options": {"brokerage": "sch wab"}},
    ],
)
async def test_bad_connect_requests_store_nothing(db_url: str, body: dict[str, object]) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        response = await h.client.post("/v1/connections", json=body, headers=h.auth(user))
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
        assert "hunter2" not in response.text
        assert (await h.client.get("/v1/connections", headers=h.auth(user))).json()["items"] == []
        assert gw.fake.users == {}


async def test_a_refused_partner_key_is_broker_unavailable(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(db_url, consumer_key="not-our-consumer-key") as gw:
        h, user = gw.harness, new_user()
        response = await h.client.post(
            "/v1/connections", json={"broker": "snaptrade"}, headers=h.auth(user)
        )
        assert (response.status_code, response.json()["code"]) == (503, "broker_unavailable")
        assert "refused the partner key" in caplog.text
        assert "not-our-consumer-key" not in caplog.text
        assert (await h.client.get("/v1/connections", headers=h.auth(user))).json()["items"] == []


async def test_a_portal_that_cannot_be_made_leaves_nothing_behind(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        gw.fake.faults.server_errors = 1
        gw.fake.faults.server_errors_path = "^/snapTrade/login$"
        response = await h.client.post(
            "/v1/connections", json={"broker": "snaptrade"}, headers=h.auth(user)
        )
        assert (response.status_code, response.json()["code"]) == (503, "broker_unavailable")
        assert (await h.client.get("/v1/connections", headers=h.auth(user))).json()["items"] == []
        assert gw.fake.users == {}  # the registered user was deleted again


async def test_portal_and_refresh_are_for_aggregator_connections(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        paper, _ = await h.paper_account(user)
        for route in ("portal", "refresh"):
            response = await h.client.post(f"/v1/connections/{paper}/{route}", headers=h.auth(user))
            assert (response.status_code, response.json()["code"]) == (422, "validation_error")
        missing = await h.client.post("/v1/connections/con_nope/portal", headers=h.auth(user))
        assert missing.status_code == 404
        assert RETURN_TO  # the portal's return address comes from the settings only


async def test_an_option_order_at_a_brokerage_without_options_writes_nothing(
    db_url: str,
) -> None:
    """Refused by the broker's own pre-write checks: no order row, no trading request."""
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, account_id = await gw.linked(user, "ALPACA")
        seen = len(gw.fake.requests)
        expiry = (datetime.now(UTC) + timedelta(days=60)).strftime("%y%m%d")
        refused = await h.place(
            user,
            account_id,
            symbol=f"AAPL{expiry}C00190000",
            quantity="1",
            order_type="limit",
            limit_price="1.00",
            position_effect="open",
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] in ("unsupported_order", "unknown_symbol")
        orders = await h.client.get(
            f"/v1/accounts/{account_id}/orders?status=all", headers=h.auth(user)
        )
        assert orders.json()["items"] == []
        assert not [r for r in gw.fake.requests[seen:] if "/trading/" in str(r)]

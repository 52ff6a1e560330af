"""End to end: the /v1 API's Plaid link flow and Linked reads against the fake Plaid, on both
database backends. The app reaches the fake only through its settings."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from app.brokers.plaid import mapping
from app.db.models import Account, BrokerToken, Connection
from tests.brokers.plaid.support import WEBHOOK_URL, gateway
from tests.conftest import new_user
from tests.harness import running_app, settings_for_tests


async def test_plaid_is_offered_as_tier_c_linked(db_url: str) -> None:
    async with gateway(db_url) as gw:
        brokers = (await gw.get(new_user(), "/v1/brokers")).json()["items"]
        plaid = next(b for b in brokers if b["slug"] == "plaid")
        assert (plaid["tier"], plaid["label"], plaid["auth"], plaid["name"]) == (
            "C",
            "Linked",
            "aggregator",
            "Plaid",
        )
        assert plaid["capabilities"]["place_orders"] is False


async def test_plaid_is_absent_and_refused_when_not_configured(db_url: str) -> None:
    async with running_app(settings_for_tests(db_url)) as harness:
        user = new_user()
        brokers = (await harness.client.get("/v1/brokers", headers=harness.auth(user))).json()
        assert "plaid" not in [b["slug"] for b in brokers["items"]]
        response = await harness.client.post("/v1/plaid/link-token", headers=harness.auth(user))
        assert response.status_code == 422
        assert response.json()["code"] == "unknown_broker"


async def test_link_token_carries_the_user_and_the_webhook(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        response = await gw.harness.client.post(
            "/v1/plaid/link-token", headers=gw.harness.auth(user)
        )
        assert response.status_code == 200
        body = response.json()
        assert body["link_token"].startswith("link-sandbox-")
        assert body["expiration"].endswith("Z")
        sent = gw.fake.link_tokens[body["link_token"]]
        assert sent["user"] == {"client_user_id": user}
        assert sent["products"] == ["investments"]
        assert (sent["client_name"], sent["language"], sent["country_codes"]) == (
            "Brokerage Gateway",
            "en",
            ["US"],
        )
        hook = urlsplit(sent["webhook"])
        assert hook._replace(query="").geturl() == WEBHOOK_URL
        assert parse_qs(hook.query) == {"user": [user]}
        unauthenticated = await gw.harness.client.post("/v1/plaid/link-token")
        assert unauthenticated.status_code == 401


async def test_link_then_accounts_portfolio_and_positions(db_url: str) -> None:
    async with gateway(db_url, cash="1000") as gw:
        gw.fake.hold(gw.plaid.account, "AAPL", "10", "190.25", cost_basis="1500")
        user = new_user()
        connection = await gw.link(user)
        assert (connection["broker"], connection["tier"], connection["label"]) == (
            "plaid",
            "C",
            "Linked",
        )
        assert (connection["ownership"], connection["status"]) == ("byob", "active")
        assert connection["display"] == "Linked: First Platypus Bank"
        [account_id] = connection["accounts"]
        item = gw.fake.item_of(gw.plaid.login)
        assert item.access_token not in json.dumps(connection)
        assert item.item_id not in json.dumps(connection)

        accounts = (await gw.get(user, "/v1/accounts")).json()["items"]
        [account] = [a for a in accounts if a["id"] == account_id]
        assert (account["broker"], account["tier"], account["label"], account["mode"]) == (
            "plaid",
            "C",
            "Linked",
            "live",
        )
        assert (account["name"], account["number_masked"], account["can_trade"]) == (
            "Plaid IRA",
            "****5555",
            False,
        )
        balances = (await gw.get(user, f"/v1/accounts/{account_id}/balances")).json()
        assert (balances["cash"], balances["currency"]) == ("1000", "USD")
        assert Decimal(balances["equity"]) == Decimal("2902.5")
        positions = (await gw.get(user, f"/v1/accounts/{account_id}/positions")).json()["items"]
        assert [(p["symbol"], p["quantity"], p["avg_cost"]) for p in positions] == [
            ("AAPL", "10", "150")
        ]
        one = await gw.get(user, f"/v1/accounts/{account_id}/positions/AAPL")
        assert one.json()["market_value"] == "1902.5"
        assert (await gw.get(user, f"/v1/accounts/{account_id}/positions/MSFT")).status_code == 404
        transactions = (await gw.get(user, f"/v1/accounts/{account_id}/transactions")).json()
        assert [(t["type"], t["amount"]) for t in transactions["items"]] == [("deposit", "1000")]

        portfolio = (await gw.get(user, "/v1/portfolio")).json()
        [linked] = [a for a in portfolio["accounts"] if a["account_id"] == account_id]
        assert (linked["label"], linked["broker"]) == ("Linked", "plaid")
        [aapl] = [p for p in portfolio["positions"] if p["symbol"] == "AAPL"]
        assert [h["account_id"] for h in aapl["accounts"]] == [account_id]
        assert aapl["accounts"][0]["label"] == "Linked"

        listed = (await gw.get(user, "/v1/connections")).json()["items"]
        assert [c["display"] for c in listed] == ["Linked: First Platypus Bank"]


async def test_the_access_token_is_stored_only_sealed_as_tier_c(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        item = gw.fake.item_of(gw.plaid.login)
        async with gw.harness.state.ctx.sessionmaker() as session:
            [token] = (
                (
                    await session.execute(
                        select(BrokerToken).where(BrokerToken.connection_id == connection["id"])
                    )
                )
                .scalars()
                .all()
            )
        assert (token.broker_tier, token.broker_slug, token.no_order_write) == (
            "tier_c",
            "plaid",
            True,
        )
        assert item.access_token.encode() not in token.token_ciphertext
        assert item.item_id.encode() not in token.token_ciphertext


async def test_relinking_the_same_login_keeps_the_account_ids(db_url: str) -> None:
    async with gateway(db_url) as gw:
        gw.fake.hold(gw.plaid.account, "AAPL", "1", "190")
        user = new_user()
        first = await gw.link(user)
        old_item = gw.fake.item_of(gw.plaid.login)
        second_account = gw.fake.add_account(gw.plaid.login, name="Plaid 401k", mask="6666")
        second = await gw.link(user)
        new_item = gw.fake.item_of(gw.plaid.login)
        assert new_item.item_id != old_item.item_id
        assert new_item.account_id(gw.plaid.account) != old_item.account_id(gw.plaid.account)
        assert second["id"] == first["id"]
        assert second["accounts"][0] == first["accounts"][0]
        assert len(second["accounts"]) == 2
        assert old_item.removed, "the replaced Item is removed at Plaid"
        async with gw.harness.state.ctx.sessionmaker() as session:
            rows = (
                (await session.execute(select(Account).where(Account.user_id == user)))
                .scalars()
                .all()
            )
            tokens = (
                (await session.execute(select(BrokerToken).where(BrokerToken.user_id == user)))
                .scalars()
                .all()
            )
        refs = {mapping.account_id_of(r.broker_account_ref) for r in rows}
        assert refs == {
            new_item.account_id(gw.plaid.account),
            new_item.account_id(second_account),
        }
        assert sorted(t.revoked_at is None for t in tokens) == [False, True]
        positions = (await gw.get(user, f"/v1/accounts/{first['accounts'][0]}/positions")).json()
        assert [p["symbol"] for p in positions["items"]] == ["AAPL"]
        connections = (await gw.get(user, "/v1/connections")).json()["items"]
        assert len(connections) == 1


async def test_another_login_at_the_same_institution_is_another_connection(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        first = await gw.link(user)
        other = gw.fake.add_login()
        other.accounts[0].mask = "9999"
        second = await gw.link(user, other)
        assert second["id"] != first["id"]
        assert set(second["accounts"]).isdisjoint(first["accounts"])


async def test_a_refused_public_token_stores_nothing(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        response = await gw.exchange(user, "public-sandbox-00000000-0000-0000-0000-000000000000")
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_credentials"
        assert "INVALID_PUBLIC_TOKEN" in response.json()["detail"]
        async with gw.harness.state.ctx.sessionmaker() as session:
            rows = (
                (await session.execute(select(Connection).where(Connection.user_id == user)))
                .scalars()
                .all()
            )
        assert rows == []


async def test_a_login_without_investment_accounts_is_refused_and_removed(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        checking_only = gw.fake.add_login()
        checking_only.accounts = [a for a in checking_only.accounts if a.type != "investment"]
        public = gw.fake.complete_link(await gw.link_token(user), checking_only)
        response = await gw.exchange(user, public)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_credentials"
        assert all(i.removed for i in gw.fake.items.values() if i.login is checking_only)


async def test_connections_route_points_to_the_link_flow(db_url: str) -> None:
    async with gateway(db_url) as gw:
        response = await gw.harness.client.post(
            "/v1/connections",
            json={"broker": "plaid", "credentials": {"access_token": "access-sandbox-x"}},
            headers=gw.harness.auth(new_user()),
        )
        assert response.status_code == 422
        assert "/v1/plaid/link-token" in response.json()["detail"]


async def test_item_login_required_breaks_the_connection_until_relinked(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        [account_id] = connection["accounts"]
        gw.fake.require_login(gw.fake.item_of(gw.plaid.login))
        response = await gw.get(user, f"/v1/accounts/{account_id}/positions")
        assert response.status_code == 409
        assert response.json()["code"] == "connection_broken"
        status = (await gw.get(user, f"/v1/connections/{connection['id']}")).json()
        assert status["status"] == "broken"
        portfolio = (await gw.get(user, "/v1/portfolio")).json()
        [unavailable] = [u for u in portfolio["unavailable"] if u["account_id"] == account_id]
        assert unavailable["reason"] == "connection_broken"
        events = (await gw.get(user, "/v1/events")).json()["items"]
        assert "connection.broken" in [e["type"] for e in events]
        # The user goes through Link again: the same connection, active, same account.
        again = await gw.link(user)
        assert (again["id"], again["status"], again["accounts"]) == (
            connection["id"],
            "active",
            [account_id],
        )
        assert (await gw.get(user, f"/v1/accounts/{account_id}/positions")).status_code == 200


async def test_rate_limits_and_outages_are_mapped(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        [account_id] = connection["accounts"]
        gw.fake.faults.rate_limited = 3
        limited = await gw.get(user, f"/v1/accounts/{account_id}/positions")
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        gw.fake.faults.server_errors = 3
        down = await gw.get(user, f"/v1/accounts/{account_id}/balances")
        assert down.status_code == 503
        assert down.json()["code"] == "broker_unavailable"
        assert down.json()["retryable"] is True
        status = (await gw.get(user, f"/v1/connections/{connection['id']}")).json()
        assert status["status"] == "active", "a transient outage does not break the connection"


async def test_a_revoked_item_answers_connection_broken(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        [account_id] = (await gw.link(user))["accounts"]
        gw.fake.revoke(gw.fake.item_of(gw.plaid.login))
        response = await gw.get(user, f"/v1/accounts/{account_id}/balances")
        assert response.status_code == 409
        assert response.json()["code"] == "connection_broken"


async def test_quotes_through_a_linked_account_are_unsupported(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        [account_id] = (await gw.link(user))["accounts"]
        response = await gw.get(user, f"/v1/quotes?symbols=AAPL&account_id={account_id}")
        assert response.status_code == 422
        assert response.json()["code"] == "unsupported_order"


async def test_disconnecting_removes_the_item_at_plaid(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        [account_id] = connection["accounts"]
        item = gw.fake.item_of(gw.plaid.login)
        response = await gw.harness.client.delete(
            f"/v1/connections/{connection['id']}", headers=gw.harness.auth(user)
        )
        assert response.status_code == 204
        assert item.removed
        assert ("POST", "/item/remove") in gw.fake.requests
        status = (await gw.get(user, f"/v1/connections/{connection['id']}")).json()["status"]
        assert status == "revoked"
        reads = await gw.get(user, f"/v1/accounts/{account_id}/positions")
        assert reads.status_code == 409


async def test_disconnecting_goes_on_when_plaid_cannot_remove_the_item(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        item = gw.fake.item_of(gw.plaid.login)
        gw.fake.faults.server_errors = 1
        response = await gw.harness.client.delete(
            f"/v1/connections/{connection['id']}", headers=gw.harness.auth(user)
        )
        assert response.status_code == 204
        assert not item.removed
        status = (await gw.get(user, f"/v1/connections/{connection['id']}")).json()["status"]
        assert status == "revoked"

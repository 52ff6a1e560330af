"""The OAuth connect flow end to end: app <-> fake authorization server over real sockets.

Each test runs on Postgres and SQLite. The "browser" keeps its own cookies and follows
redirects one hop at a time; the fake checks PKCE, the redirect URI and client
authentication as a real authorization server would.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from app.db.models import BrokerToken, Connection, OAuthState, OrderEvent
from tests.brokers.oauth.example import EXAMPLE_OAUTH, example_registry
from tests.brokers.oauth.support import CALLBACK, GATEWAY, RETURN_TO, OAuthRun, query, running_oauth
from tests.conftest import new_user
from tests.fakes.oauth.server import s256


async def _rows(run: OAuthRun, user: str) -> tuple[int, int]:
    """(connections, broker tokens) of ``user``: what a failed flow must not leave behind."""
    async with run.harness.state.ctx.sessionmaker() as session:
        connections = (
            await session.execute(
                select(func.count()).select_from(Connection).where(Connection.user_id == user)
            )
        ).scalar_one()
        tokens = (
            await session.execute(
                select(func.count()).select_from(BrokerToken).where(BrokerToken.user_id == user)
            )
        ).scalar_one()
    return int(connections), int(tokens)


def _error(response_location: str) -> str | None:
    return query(response_location).get("error")


async def test_connect_end_to_end(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            started = await run.authorize(browser, user)
            assert started.status_code == 200, started.text
            assert started.headers["cache-control"] == "no-store"
            body = started.json()
            assert set(body) == {"authorization_url", "expires_at"}
            expected_expiry = run.clock.now() + timedelta(minutes=10)
            assert body["expires_at"] == expected_expiry.isoformat().replace("+00:00", "Z")

            url = body["authorization_url"]
            assert url.startswith(f"{run.fake_url}/oauth/authorize?")
            params = query(url)
            assert params["response_type"] == "code"
            assert params["client_id"] == run.client.client_id
            assert params["redirect_uri"] == CALLBACK
            assert params["scope"] == "read trade"
            assert params["code_challenge_method"] == "S256"
            assert len(params["state"]) >= 43
            assert len(params["code_challenge"]) == 43

            cookie = SimpleCookie(started.headers["set-cookie"])["bg_oauth_example"]
            assert cookie["httponly"] is True
            assert cookie["samesite"].lower() == "lax"
            assert cookie["path"] == "/v1/oauth/example/callback"
            assert cookie["max-age"] == "600"
            assert not cookie["secure"]  # the redirect URI is http here; https sets Secure

            callback = await run.at_broker(browser, url)
            assert callback.startswith(CALLBACK + "?")
            assert query(callback)["state"] == params["state"]
            landed = await browser.get(callback)

        assert landed.status_code == 302
        location = landed.headers["location"]
        assert location.startswith(RETURN_TO + "?")
        connection_id = query(location)["connection_id"]
        cleared = SimpleCookie(landed.headers["set-cookie"])["bg_oauth_example"]
        assert cleared.value == ""
        assert cleared["path"] == "/v1/oauth/example/callback"

        # The fake saw one authorization_code grant, with Basic auth and the right verifier.
        [exchange] = [r for r in run.fake.token_requests if r.grant_type == "authorization_code"]
        assert (exchange.status, exchange.error) == (200, None)
        code = next(c for c in run.fake.codes.values() if c.grant_id == exchange.grant_id)
        assert code.verifier is not None
        assert s256(code.verifier) == params["code_challenge"]

        connection = await run.harness.client.get(
            f"/v1/connections/{connection_id}", headers=run.harness.auth(user)
        )
        assert connection.status_code == 200
        out = connection.json()
        assert out["broker"] == "example"
        assert out["tier"] == "A"
        assert out["ownership"] == "byob"
        assert out["status"] == "active"
        assert out["display"] == "Connected: Example"
        assert out["label"] == "Live"
        now = run.clock.now()
        assert out["expires_at"] == (now + timedelta(seconds=1800)).isoformat().replace(
            "+00:00", "Z"
        )
        assert out["refresh_expires_at"] == (now + timedelta(days=7)).isoformat().replace(
            "+00:00", "Z"
        )
        assert len(out["accounts"]) == 2

        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]
        assert {a["id"] for a in accounts} == set(out["accounts"])
        assert [(a["mode"], a["broker"]) for a in accounts] == [("live", "example")] * 2
        names = sorted(a["name"] for a in accounts)
        assert names == sorted(a["name"] for a in run.owner.accounts)

        balances = await run.harness.client.get(
            f"/v1/accounts/{out['accounts'][0]}/balances", headers=run.harness.auth(user)
        )
        assert balances.status_code == 200, balances.text
        assert balances.json()["equity"] == "2500.75"

        events = (
            await run.harness.client.get("/v1/events", headers=run.harness.auth(user))
        ).json()["items"]
        assert [e["type"] for e in events] == ["connection.active"]
        assert events[0]["connection"]["connection_id"] == connection_id


async def test_the_broker_list_offers_configured_oauth_brokers_only(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        listed = await run.harness.client.get("/v1/brokers", headers=run.harness.auth(new_user()))
        example = next(b for b in listed.json()["items"] if b["slug"] == "example")
        assert example["auth"] == "oauth2"
        assert example["label"] == "Live"
    async with running_oauth(db_url, example_client_id=None) as run:
        user = new_user()
        listed = await run.harness.client.get("/v1/brokers", headers=run.harness.auth(user))
        assert "example" not in [b["slug"] for b in listed.json()["items"]]
        async with run.browser() as browser:
            refused = await run.authorize(browser, user)
        assert refused.status_code == 422
        assert refused.json()["code"] == "unknown_broker"


async def test_state_replay_fails(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            callback = await run.start(browser, user)
            first = await browser.get(callback)
            assert "connection_id" in query(first.headers["location"])
            # The same browser (its cookie is gone now) and a copy of the cookie both fail.
            replay = await browser.get(callback)
        assert replay.status_code == 302
        assert replay.headers["location"] == f"{RETURN_TO}?error=state_used"
        assert await _rows(run, user) == (1, 1)
        assert len([r for r in run.fake.token_requests if r.grant_type]) == 1


async def test_replay_with_the_cookie_still_set_fails_too(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            callback = await run.start(browser, user)
            nonce = browser.cookies.get("bg_oauth_example")
            assert nonce
            await browser.get(callback)
            browser.cookies.set("bg_oauth_example", nonce, domain="gateway.test")
            replay = await browser.get(callback)
        assert _error(replay.headers["location"]) == "state_used"
        assert await _rows(run, user) == (1, 1)


async def test_expired_state_fails(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            callback = await run.start(browser, user)
            run.clock.advance(timedelta(minutes=10, seconds=1))
            late = await browser.get(callback)
        assert late.status_code == 302
        assert _error(late.headers["location"]) == "state_expired"
        assert run.fake.token_requests == []  # the code was never redeemed
        assert await _rows(run, user) == (0, 0)


async def test_just_before_expiry_still_works(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            callback = await run.start(browser, user)
            run.clock.advance(timedelta(minutes=9, seconds=59))
            landed = await browser.get(callback)
        assert "connection_id" in query(landed.headers["location"])


async def test_another_users_state_fails(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        alice, mallory = new_user("alice"), new_user("mallory")
        async with run.browser() as alice_browser, run.browser() as mallory_browser:
            await run.start(alice_browser, alice)  # alice has her own flow and cookie
            # Mallory authorizes her own broker account and sends alice the callback link.
            bait = await run.start(mallory_browser, mallory)
            landed = await alice_browser.get(bait)
        assert landed.status_code == 302
        assert _error(landed.headers["location"]) == "state_mismatch"
        assert await _rows(run, alice) == (0, 0)
        assert await _rows(run, mallory) == (0, 0)
        assert run.fake.token_requests == []


async def test_missing_or_wrong_browser_cookie_fails(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            callback = await run.start(browser, user)
        async with run.browser() as other_browser:
            no_cookie = await other_browser.get(callback)
        assert _error(no_cookie.headers["location"]) == "state_mismatch"

        async with run.browser() as browser:
            callback = await run.start(browser, user)
            browser.cookies.set("bg_oauth_example", "not-the-nonce", domain="gateway.test")
            wrong = await browser.get(callback)
        assert _error(wrong.headers["location"]) == "state_mismatch"
        assert await _rows(run, user) == (0, 0)
        assert run.fake.token_requests == []


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example/settings/brokers",
        "//evil.example/settings/brokers",
        "/\\evil.example",
        "https://app.example.test.evil.example/settings/brokers",
        "https://app.example.test@evil.example/settings/brokers",
        "https://app.example.test/settings/brokers-evil",
        "https://app.example.test/settings/brokers/../../admin",
        "https://app.example.test/settings/brokers/%2e%2e/admin",
        "http://app.example.test/settings/brokers",
        "https://app.example.test:8443/settings/brokers",
        "javascript:alert(1)",
        "/settings/brokers",
    ],
)
async def test_return_to_off_the_allow_list_is_refused(db_url: str, return_to: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            refused = await run.authorize(browser, user, return_to=return_to)
        assert refused.status_code == 422
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "invalid_return_to"
        assert "set-cookie" not in refused.headers
        async with run.harness.state.ctx.sessionmaker() as session:
            states = (
                await session.execute(
                    select(func.count()).select_from(OAuthState).where(OAuthState.user_id == user)
                )
            ).scalar_one()
        assert states == 0


async def test_return_to_under_the_allowed_prefix_keeps_its_query(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        target = f"{RETURN_TO}/example?tab=live&error=stale"
        async with run.browser() as browser:
            started = await run.authorize(browser, user, return_to=target)
            callback = await run.at_broker(browser, started.json()["authorization_url"])
            landed = await browser.get(callback)
        params = query(landed.headers["location"])
        assert landed.headers["location"].startswith(f"{RETURN_TO}/example?")
        assert params["tab"] == "live"
        assert "error" not in params  # a stale error parameter is replaced, not kept
        assert "connection_id" in params


async def test_the_user_declining_at_the_broker(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        run.fake.consent = "deny"
        user = new_user()
        async with run.browser() as browser:
            landed = await browser.get(await run.start(browser, user))
        assert landed.headers["location"] == f"{RETURN_TO}?error=access_denied"
        assert await _rows(run, user) == (0, 0)


async def test_an_injected_code_fails_the_pkce_check(db_url: str) -> None:
    """Code injection: mallory's code (issued for her PKCE challenge) in alice's flow."""
    async with running_oauth(db_url) as run:
        alice, mallory = new_user("alice"), new_user("mallory")
        async with run.browser() as alice_browser, run.browser() as mallory_browser:
            alice_callback = await run.start(alice_browser, alice)
            mallory_callback = await run.start(mallory_browser, mallory)
            injected = (
                CALLBACK
                + "?"
                + urlsplit(alice_callback).query.replace(
                    f"code={query(alice_callback)['code']}",
                    f"code={query(mallory_callback)['code']}",
                )
            )
            landed = await alice_browser.get(injected)
        assert _error(landed.headers["location"]) == "invalid_grant"
        [exchange] = run.fake.token_requests
        assert (exchange.status, exchange.error) == (400, "invalid_grant")
        assert await _rows(run, alice) == (0, 0)


async def test_token_endpoint_failures(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        run.fake.faults.server_errors = 1
        async with run.browser() as browser:
            landed = await browser.get(await run.start(browser, user))
        assert _error(landed.headers["location"]) == "broker_unavailable"

        run.fake.faults.rate_limited = 1
        async with run.browser() as browser:
            landed = await browser.get(await run.start(browser, user))
        assert _error(landed.headers["location"]) == "broker_unavailable"
        assert await _rows(run, user) == (0, 0)

    # A client secret the broker does not accept: invalid_client (401).
    async with running_oauth(db_url) as run:
        user = new_user()
        run.client.client_secret = "rotated-at-the-broker"
        async with run.browser() as browser:
            landed = await browser.get(await run.start(browser, user))
        assert _error(landed.headers["location"]) == "token_exchange_failed"
        assert run.fake.token_requests[-1].error == "invalid_client"
        assert await _rows(run, user) == (0, 0)


async def test_an_authorization_without_accounts_is_not_stored_and_is_revoked(
    db_url: str,
) -> None:
    async with running_oauth(db_url, accounts=0) as run:
        user = new_user()
        async with run.browser() as browser:
            landed = await browser.get(await run.start(browser, user))
        assert _error(landed.headers["location"]) == "no_accounts"
        assert await _rows(run, user) == (0, 0)
        assert run.fake.revocations == [("refresh_token", True)]
        assert all(g.revoked for g in run.fake.grants_of(run.owner.name))


async def test_a_failing_account_lookup_stores_nothing(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            callback = await run.start(browser, user)
            run.fake.faults.api_unavailable = 3  # every attempt of the account lookup
            landed = await browser.get(callback)
        assert _error(landed.headers["location"]) == "broker_unavailable"
        assert await _rows(run, user) == (0, 0)
        assert run.fake.revocations == [("refresh_token", True)]


async def test_unknown_state(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        async with run.browser() as browser:
            unknown = await browser.get(f"{CALLBACK}?code=abc&state=never-issued")
            missing = await browser.get(f"{CALLBACK}?code=abc")
        for answer in (unknown, missing):
            assert answer.status_code == 400
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["code"] == "invalid_state"
    failure_url = "https://app.example.test/oauth-failed"
    async with running_oauth(db_url, oauth_failure_url=failure_url) as run:
        async with run.browser() as browser:
            unknown = await browser.get(f"{CALLBACK}?code=abc&state=never-issued")
        assert unknown.status_code == 302
        assert unknown.headers["location"] == f"{failure_url}?error=invalid_state"


async def test_a_state_presented_at_another_brokers_callback_fails(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        async with run.browser() as browser:
            callback = await run.start(browser, user)
            elsewhere = await browser.get(
                f"{GATEWAY}/v1/oauth/paper/callback?{urlsplit(callback).query}"
            )
            original = await browser.get(callback)
        assert _error(elsewhere.headers["location"]) == "invalid_state"
        assert _error(original.headers["location"]) == "state_used"
        assert run.fake.token_requests == []


async def test_issuer_is_checked_when_the_broker_sends_one(db_url: str) -> None:
    issuer = "https://auth.example.test"
    registry = example_registry(dataclasses.replace(EXAMPLE_OAUTH, issuer=issuer))
    async with running_oauth(
        db_url, registry=registry, fake_options={"issuer": "https://evil.example"}
    ) as run:
        user = new_user()
        async with run.browser() as browser:
            landed = await browser.get(await run.start(browser, user))
        assert _error(landed.headers["location"]) == "issuer_mismatch"
        assert run.fake.token_requests == []
    async with running_oauth(db_url, registry=registry, fake_options={"issuer": issuer}) as run:
        assert await run.connect(new_user())


async def test_authorize_refusals(db_url: str) -> None:
    async with running_oauth(db_url, oauth_max_pending_states=2) as run:
        user = new_user()
        async with run.browser() as browser:
            unknown = await browser.get(
                f"{GATEWAY}/v1/oauth/nope/authorize",
                params={"return_to": RETURN_TO},
                headers=run.harness.auth(user),
            )
            paper = await browser.get(
                f"{GATEWAY}/v1/oauth/paper/authorize",
                params={"return_to": RETURN_TO},
                headers=run.harness.auth(user),
            )
            anonymous = await browser.get(
                f"{GATEWAY}/v1/oauth/example/authorize", params={"return_to": RETURN_TO}
            )
            assert (await run.authorize(browser, user)).status_code == 200
            assert (await run.authorize(browser, user)).status_code == 200
            third = await run.authorize(browser, user)
        assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_broker")
        assert (paper.status_code, paper.json()["code"]) == (422, "validation_error")
        assert anonymous.status_code == 401
        assert (third.status_code, third.json()["code"]) == (429, "rate_limited")
        assert third.headers["retry-after"] == "600"


async def test_disconnect_revokes_the_grant_at_the_broker(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        connection_id = await run.connect(user)
        deleted = await run.harness.client.delete(
            f"/v1/connections/{connection_id}", headers=run.harness.auth(user)
        )
        assert deleted.status_code == 204
        assert run.fake.revocations == [("refresh_token", True)]
        assert all(g.revoked for g in run.fake.grants_of(run.owner.name))
        out = (
            await run.harness.client.get(
                f"/v1/connections/{connection_id}", headers=run.harness.auth(user)
            )
        ).json()
        assert out["status"] == "revoked"


async def test_disconnect_goes_through_when_the_broker_cannot_revoke(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user = new_user()
        connection_id = await run.connect(user)
        run.fake.faults.revoke_unavailable = 1
        deleted = await run.harness.client.delete(
            f"/v1/connections/{connection_id}", headers=run.harness.auth(user)
        )
        assert deleted.status_code == 204
        async with run.harness.state.ctx.sessionmaker() as session:
            status = (
                await session.execute(
                    select(Connection.status).where(Connection.id == connection_id)
                )
            ).scalar_one()
            broken_events = (
                await session.execute(
                    select(func.count())
                    .select_from(OrderEvent)
                    .where(OrderEvent.connection_id == connection_id)
                )
            ).scalar_one()
        assert status == "revoked"
        assert broken_events == 2  # active, revoked


async def test_a_failure_while_storing_leaves_nothing_and_revokes(db_url: str) -> None:
    """Two accounts with one id break the (connection, account) unique constraint: the
    whole transaction rolls back, and the grant we will not keep is revoked."""
    async with running_oauth(db_url) as run:
        run.owner.accounts.append(dict(run.owner.accounts[0]))
        user = new_user()
        async with run.browser() as browser:
            landed = await browser.get(await run.start(browser, user))
        assert landed.headers["location"] == f"{RETURN_TO}?error=server_error"
        assert await _rows(run, user) == (0, 0)
        assert run.fake.revocations == [("refresh_token", True)]

"""The fake authorization server enforces what the RFCs require of a real one.

Raw HTTP, not our client: if the fake were lenient, the flow tests could pass against it
and fail against a broker.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.paper.clock import ManualClock
from tests.brokers.oauth.support import CALLBACK, query
from tests.fakes.oauth import FakeAuthorizationServer
from tests.fakes.oauth.server import FakeClient, s256
from tests.fakes.runner import serve_asgi

VERIFIER = "v" * 43


@contextlib.asynccontextmanager
async def fake(
    **options: Any,
) -> AsyncIterator[tuple[FakeAuthorizationServer, FakeClient, httpx.AsyncClient, ManualClock]]:
    clock = ManualClock(datetime(2026, 11, 30, 12, tzinfo=UTC))
    server = FakeAuthorizationServer(clock=clock.now, **options)
    server.add_owner()
    async with serve_asgi(server.app) as url, httpx.AsyncClient(base_url=url) as http:
        yield server, server.add_client(CALLBACK), http, clock


def basic(client: FakeClient, secret: str | None = None) -> dict[str, str]:
    raw = f"{client.client_id}:{secret or client.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def authorize(http: httpx.AsyncClient, client: FakeClient, **extra: str) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": CALLBACK,
        "state": "st",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
        "scope": "read",
    }
    params.update(extra)
    return await http.get("/oauth/authorize", params={k: v for k, v in params.items() if v})


async def code_for(http: httpx.AsyncClient, client: FakeClient) -> str:
    answer = await authorize(http, client)
    return query(answer.headers["location"])["code"]


async def exchange(
    http: httpx.AsyncClient, client: FakeClient, code: str, **extra: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": VERIFIER,
    }
    form.update(extra)
    return await http.post(
        "/oauth/token", data={k: v for k, v in form.items() if v}, headers=basic(client)
    )


async def test_authorization_endpoint() -> None:
    async with fake(issuer="https://as.example") as (server, client, http, _):
        ok = await authorize(http, client)
        assert ok.status_code == 302
        params = query(ok.headers["location"])
        assert ok.headers["location"].startswith(CALLBACK + "?")
        assert (params["state"], params["iss"]) == ("st", "https://as.example")
        assert params["code"] in server.codes

        unknown = await authorize(http, client, client_id="nobody")
        wrong_uri = await authorize(http, client, redirect_uri=CALLBACK + "/x")
        for answer in (unknown, wrong_uri):  # never redirected to an unverified URI
            assert answer.status_code == 400
            assert "location" not in answer.headers

        no_pkce = await authorize(http, client, code_challenge="", code_challenge_method="")
        plain = await authorize(http, client, code_challenge_method="plain")
        token_flow = await authorize(http, client, response_type="token")
        bad_scope = await authorize(http, client, scope="read withdraw")
        server.consent = "deny"
        denied = await authorize(http, client)
        for answer, error in (
            (no_pkce, "invalid_request"),
            (plain, "invalid_request"),
            (token_flow, "unsupported_response_type"),
            (bad_scope, "invalid_scope"),
            (denied, "access_denied"),
        ):
            assert answer.status_code == 302
            assert query(answer.headers["location"])["error"] == error
            assert query(answer.headers["location"])["state"] == "st"


async def test_code_exchange_rules() -> None:
    async with fake() as (server, client, http, clock):
        issued = await exchange(http, client, await code_for(http, client))
        assert issued.status_code == 200
        assert issued.headers["cache-control"] == "no-store"
        assert issued.headers["pragma"] == "no-cache"
        body = issued.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
        assert body["token_type"] == "Bearer"

        code = await code_for(http, client)
        refused = {
            "missing verifier": await exchange(http, client, code, code_verifier=""),
            "wrong verifier": await exchange(
                http, client, await code_for(http, client), code_verifier="w" * 43
            ),
            "wrong redirect": await exchange(
                http, client, await code_for(http, client), redirect_uri=CALLBACK + "x"
            ),
            "unknown code": await exchange(http, client, "nope"),
        }
        expired_code = await code_for(http, client)
        clock.advance(timedelta(minutes=10))
        refused["expired code"] = await exchange(http, client, expired_code)
        for name, answer in refused.items():
            assert answer.status_code == 400, name
            assert answer.json()["error"] == "invalid_grant", name

        # A code used twice: refused, and what it issued is revoked (RFC 6749 §4.1.2).
        code = await code_for(http, client)
        first = await exchange(http, client, code)
        second = await exchange(http, client, code)
        assert (first.status_code, second.status_code) == (200, 400)
        grant = server.grants[server.token_requests[-2].grant_id or ""]
        assert grant.revoked


async def test_client_authentication() -> None:
    async with fake() as (_, client, http, _clock):
        form = {"grant_type": "refresh_token", "refresh_token": "x"}
        wrong = await http.post("/oauth/token", data=form, headers=basic(client, "wrong"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Basic")
        assert wrong.json()["error"] == "invalid_client"
        anonymous = await http.post("/oauth/token", data=form)
        assert (anonymous.status_code, anonymous.json()["error"]) == (401, "invalid_client")
        both = await http.post(
            "/oauth/token",
            data=form | {"client_id": client.client_id, "client_secret": client.client_secret},
            headers=basic(client),
        )
        assert (both.status_code, both.json()["error"]) == (400, "invalid_request")
        as_json = await http.post("/oauth/token", json=form, headers=basic(client))
        assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
        other_grant = await http.post(
            "/oauth/token", data={"grant_type": "password"}, headers=basic(client)
        )
        assert other_grant.json()["error"] == "unsupported_grant_type"


async def test_refresh_rotation_and_reuse_detection() -> None:
    async with fake(rotate_refresh_tokens=True, refresh_ttl=timedelta(days=7)) as (
        server,
        client,
        http,
        clock,
    ):
        first = (await exchange(http, client, await code_for(http, client))).json()

        async def refresh(token: str) -> httpx.Response:
            return await http.post(
                "/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": token},
                headers=basic(client),
            )

        second = (await refresh(first["refresh_token"])).json()
        assert second["refresh_token"] != first["refresh_token"]
        reused = await refresh(first["refresh_token"])
        assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
        # Reuse ended the grant: even the newest refresh token is dead now (RFC 9700 §4.14.2).
        assert (await refresh(second["refresh_token"])).json()["error"] == "invalid_grant"

        fresh = (await exchange(http, client, await code_for(http, client))).json()
        clock.advance(timedelta(days=7))
        expired = await refresh(fresh["refresh_token"])
        assert (expired.status_code, expired.json()["error"]) == (400, "invalid_grant")
        assert len(server.refreshes()) == 4


async def test_revocation_and_the_protected_api() -> None:
    async with fake() as (server, client, http, clock):
        tokens = (await exchange(http, client, await code_for(http, client))).json()
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await http.get("/api/v1/accounts", headers=bearer)).status_code == 200
        missing = await http.get("/api/v1/accounts")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="fake"'

        unknown = await http.post("/oauth/revoke", data={"token": "nope"}, headers=basic(client))
        assert unknown.status_code == 200  # RFC 7009 §2.2: unknown tokens are not an error
        no_token = await http.post("/oauth/revoke", data={}, headers=basic(client))
        assert no_token.status_code == 400
        revoked = await http.post(
            "/oauth/revoke",
            data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
            headers=basic(client),
        )
        assert revoked.status_code == 200
        after = await http.get("/api/v1/accounts", headers=bearer)
        assert after.status_code == 401
        assert 'error="invalid_token"' in after.headers["www-authenticate"]

        other = (await exchange(http, client, await code_for(http, client))).json()
        clock.advance(timedelta(seconds=1800))
        stale = await http.get(
            "/api/v1/accounts", headers={"Authorization": f"Bearer {other['access_token']}"}
        )
        assert stale.status_code == 401
        assert server.revocations == [(None, False), ("refresh_token", True)]

"""CORS for a frontend on its own origin, and the WebSocket origin check, over a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.config import Settings
from tests.conftest import new_user
from tests.harness import settings_for_tests
from tests.streaming.support import Instance, serve, stream_client

FRONTEND = "https://app.example.com"
OTHER = "https://evil.example.net"


@pytest_asyncio.fixture(scope="module")
async def with_cors(sqlite_url: str) -> AsyncIterator[Instance]:
    settings = settings_for_tests(sqlite_url, cors_origins=[FRONTEND, "http://localhost:5173/"])
    async with serve(settings) as instance:
        yield instance


@pytest_asyncio.fixture(scope="module")
async def without_cors(sqlite_url: str) -> AsyncIterator[Instance]:
    async with serve(settings_for_tests(sqlite_url)) as instance:
        yield instance


async def test_an_allowed_origin_gets_credentialed_cors_headers(with_cors: Instance) -> None:
    user = new_user("cors")
    response = await with_cors.http.get(
        "/v1/accounts", headers=with_cors.auth(user, Origin=FRONTEND)
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert response.headers["access-control-allow-credentials"] == "true"
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"retry-after", "x-request-id"} <= exposed
    assert "origin" in response.headers["vary"].lower()


async def test_an_error_answer_carries_the_cors_headers_too(with_cors: Instance) -> None:
    # Without them the frontend cannot read the problem body of a 401.
    response = await with_cors.http.get("/v1/accounts", headers={"Origin": FRONTEND})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == FRONTEND


async def test_a_trailing_slash_in_the_setting_still_matches_the_browser_origin(
    with_cors: Instance,
) -> None:
    response = await with_cors.http.get("/healthz", headers={"Origin": "http://localhost:5173"})
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


async def test_another_origin_gets_no_cors_headers(with_cors: Instance) -> None:
    user = new_user("cors")
    response = await with_cors.http.get("/v1/accounts", headers=with_cors.auth(user, Origin=OTHER))
    # Without Access-Control-Allow-Origin the browser hides the answer from the page.
    assert "access-control-allow-origin" not in response.headers


async def test_preflight_allows_the_api_headers_and_is_cached(with_cors: Instance) -> None:
    response = await with_cors.http.options(
        "/v1/accounts/acc_x/orders",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, idempotency-key, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "idempotency-key", "content-type"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert int(response.headers["access-control-max-age"]) == 600


async def test_preflight_from_another_origin_is_refused(with_cors: Instance) -> None:
    response = await with_cors.http.options(
        "/v1/accounts",
        headers={"Origin": OTHER, "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_preflight_asking_for_an_unlisted_header_is_refused(with_cors: Instance) -> None:
    response = await with_cors.http.options(
        "/v1/accounts",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-secret-header",
        },
    )
    assert response.status_code == 400


async def test_websocket_from_an_allowed_origin_streams(with_cors: Instance) -> None:
    user = new_user("cors")
    async with stream_client(with_cors.ws_url, origin=FRONTEND) as client:  # type: ignore[arg-type]
        authenticated = await client.auth(with_cors.token(user))
        assert authenticated["user_id"] == user


async def test_websocket_from_another_origin_is_refused_before_the_upgrade(
    with_cors: Instance,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(with_cors.ws_url, origin=OTHER, open_timeout=10):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


async def test_websocket_without_an_origin_is_a_non_browser_client_and_allowed(
    with_cors: Instance,
) -> None:
    user = new_user("cors")
    async with stream_client(with_cors.ws_url) as client:
        assert (await client.auth(with_cors.token(user)))["user_id"] == user


async def test_without_the_setting_nothing_changes(without_cors: Instance) -> None:
    response = await without_cors.http.get("/healthz", headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in response.headers
    preflight = await without_cors.http.options(
        "/v1/accounts", headers={"Origin": OTHER, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 405
    async with stream_client(without_cors.ws_url, origin=OTHER) as client:  # type: ignore[arg-type]
        assert (await client.auth(without_cors.token(new_user("cors"))))["type"] == "authenticated"


@pytest.mark.parametrize("bad", ["*", "https://app.example.com/path", "app.example.com", "ftp://x"])
def test_the_setting_takes_exact_origins_only(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(cors_origins=[bad])

"""The service over a real TCP socket: the same paths the README tour takes."""

from __future__ import annotations

import uuid

import httpx

from tests.server.conftest import LiveServer


async def test_readyz_and_an_order_over_real_http(live_server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {live_server.token}"}
    async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        placed = await client.post(
            f"/v1/accounts/{live_server.account_id}/orders",
            json={"symbol": "MSFT", "side": "buy", "quantity": "2", "order_type": "market"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] == "filled"
        assert placed.headers["x-request-id"]
        positions = await client.get(f"/v1/accounts/{live_server.account_id}/positions")
        assert {p["symbol"] for p in positions.json()["items"]} >= {"MSFT"}


async def test_no_token_over_real_http_is_a_401_problem(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        response = await client.get("/v1/accounts")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unauthorized"

"""A real uvicorn server on a loopback socket, in its own thread and event loop.

The server thread owns the app's lifespan (database pool, paper ticker off, manual clock),
exactly as ``brokerage serve`` would run it; tests talk to it over TCP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from app.main import create_app
from app.security.jwt import issue_dev_token
from app.server import guard, server_options
from tests.conftest import new_user
from tests.harness import settings_for_tests


@dataclass
class LiveServer:
    url: str
    user: str
    token: str
    account_id: str
    order_id: str
    backend: str


def _serve(server: uvicorn.Server) -> threading.Thread:
    thread = threading.Thread(target=server.run, name="uvicorn-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return thread


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def live_server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """The server on each backend in turn (Postgres refuses some text SQLite stores)."""
    database_url = str(request.getfixturevalue(f"{request.param}_url"))
    settings = settings_for_tests(database_url)
    assert settings.jwt_secret is not None
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        **server_options(settings),
    )
    server = uvicorn.Server(guard(config, settings))
    thread = _serve(server)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    user = new_user("live")
    token = issue_dev_token(settings.jwt_secret, user)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers) as client:
        connection = client.post("/v1/connections", json={"broker": "paper"})
        assert connection.status_code == 201, connection.text
        account_id = connection.json()["accounts"][0]
        order = client.post(
            f"/v1/accounts/{account_id}/orders",
            json={
                "symbol": "AAPL",
                "side": "buy",
                "quantity": "1",
                "order_type": "limit",
                "limit_price": "1.00",
                "time_in_force": "gtc",
            },
            headers={"Idempotency-Key": "live-server-seed-order"},
        )
        assert order.status_code == 201, order.text
    try:
        yield LiveServer(url, user, token, account_id, order.json()["id"], request.param)
    finally:
        server.should_exit = True
        thread.join(timeout=30)

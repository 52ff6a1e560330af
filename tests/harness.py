"""A running app on one backend, driven through real HTTP semantics (ASGI transport).

The paper engine's clock is a ManualClock: tests move time and call ``tick()``; no test
sleeps. The app's background tasks are off so nothing moves unless a test moves it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from app.api.state import AppState
from app.brokers.registry import BrokerRegistry
from app.config import Settings
from app.main import create_app
from app.paper.clock import ManualClock
from app.security.jwt import issue_dev_token

CLOCK_START = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
# One audit chain key for the whole test run: every test app appends to the same chain in
# the shared databases, and a verify from any of them must accept every entry.
AUDIT_KEY_FOR_TESTS = "test-audit-key-" + uuid.uuid4().hex + uuid.uuid4().hex


def keyring_json_for_tests() -> str:
    key = base64.b64encode(os.urandom(32)).decode()
    return json.dumps({"primary": 1, "min_decryption_version": 1, "keys": {"1": key}})


def settings_for_tests(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "jwt_secret": SecretStr("test-secret-" + uuid.uuid4().hex),
        "keyring_json": SecretStr(keyring_json_for_tests()),
        "background_tasks": False,
        "auto_migrate_setting": False,
        "log_json": True,
        "audit_key": SecretStr(AUDIT_KEY_FOR_TESTS),
        # The paper-first gate is off unless a test turns it on (tests/services/
        # test_order_gates.py does, and checks the production default of 3): a test of some
        # broker's live order path should not have to play paper round trips first.
        "paper_first_cycles": 0,
        # Many apps start in one test process: freezing each one's heap would keep the
        # cyclic garbage of earlier tests forever (tests/test_main.py checks it is done).
        "gc_freeze_after_startup": False,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    clock: ManualClock
    settings: Settings

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.brokerage
        return state

    def token(self, user: str, *, admin: bool = False) -> str:
        assert self.settings.jwt_secret is not None
        return issue_dev_token(self.settings.jwt_secret, user, admin=admin)

    def auth(self, user: str, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}", **headers}

    async def paper_account(self, user: str, starting_cash: str = "100000") -> tuple[str, str]:
        response = await self.client.post(
            "/v1/connections",
            json={"broker": "paper", "options": {"starting_cash": starting_cash}},
            headers=self.auth(user),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], body["accounts"][0]

    async def place(
        self, user: str, account_id: str, key: str | None = None, **order: Any
    ) -> httpx.Response:
        body = {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}
        body.update(order)
        return await self.client.post(
            f"/v1/accounts/{account_id}/orders",
            json=body,
            headers=self.auth(user, **{"Idempotency-Key": key or uuid.uuid4().hex}),
        )

    async def tick(self, seconds: float = 1.0) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        await self.state.ctx.paper_engine.tick()


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings,
    registry: BrokerRegistry | None = None,
    *,
    now: Callable[[], datetime] | None = None,
) -> AsyncIterator[Harness]:
    """``now``: the OAuth flow's and token lifecycle's clock (default: the system clock)."""
    clock = ManualClock(CLOCK_START)
    app = create_app(settings, paper_clock=clock, registry=registry, clock=now)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield Harness(app=app, client=client, clock=clock, settings=settings)

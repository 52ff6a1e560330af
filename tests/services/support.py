"""A gateway with live connections of every ownership, for the live-order gate tests.

The app talks to the fake Alpaca over a real socket through its base-URL settings. One fake
account stands for the user's own Alpaca key (BYOB), another for the platform's default
account, whose key the app gets from its settings (``BROKERAGE_ALPACA_PLATFORM_KEY_ID`` /
``_SECRET``), exactly as a deployment configures it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import select, text, update

from app.db.models import AuditEntry, IdempotencyKey
from app.db.session import SessionMaker
from app.errors import PROBLEM_JSON
from tests.brokers.alpaca.support import Running, running_fake
from tests.conftest import new_user
from tests.fakes.alpaca.server import FakeAccount
from tests.harness import Harness, running_app, settings_for_tests


@dataclass
class LiveGateway:
    harness: Harness
    alpaca: Running
    byob_key: FakeAccount
    platform_key: FakeAccount

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every REST request the fake Alpaca received, in order."""
        return self.alpaca.fake.requests

    async def connect_byob(self, user: str) -> tuple[str, str]:
        """A BYOB Alpaca connection (the user's own key); returns (connection, account)."""
        response = await self.harness.client.post(
            "/v1/connections",
            json={
                "broker": "alpaca",
                "credentials": {
                    "api_key_id": self.byob_key.key_id,
                    "api_secret_key": self.byob_key.secret,
                },
            },
            headers=self.harness.auth(user),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["ownership"] == "byob"
        return body["id"], body["accounts"][0]

    async def connect_platform(self, user: str) -> tuple[str, str]:
        """The user's connection to the platform's default Alpaca account."""
        response = await self.harness.client.post(
            "/v1/connections",
            json={"broker": "alpaca", "options": {"ownership": "platform"}},
            headers=self.harness.auth(user),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["ownership"] == "platform"
        return body["id"], body["accounts"][0]

    async def round_trip(self, user: str, account_id: str) -> None:
        """Buy one share and sell it again (a completed cycle on paper)."""
        for side in ("buy", "sell"):
            response = await self.harness.place(user, account_id, side=side)
            assert response.status_code == 201, response.text
            if response.json()["status"] != "filled":
                await self.alpaca.fake.match()


async def verify_chains(gw: LiveGateway) -> dict[str, Any]:
    """``GET /v1/admin/audit/verify`` as ops call it."""
    h = gw.harness
    admin = {"Authorization": f"Bearer {h.token(new_user('ops'), admin=True)}"}
    response = await h.client.get("/v1/admin/audit/verify", headers=admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def chain_entries(gw: LiveGateway, user: str) -> list[AuditEntry]:
    """The user's audit entries in chain order."""
    async with gw.harness.state.ctx.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEntry).where(AuditEntry.user_id == user).order_by(AuditEntry.seq)
        )
        return list(rows.scalars().all())


async def until_lock_waiters(sessionmaker: SessionMaker, count: int) -> None:
    """Until ``count`` sessions of this database wait for a lock (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            async with sessionmaker() as observer:
                waiting = await observer.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )
            if int(waiting or 0) >= count:
                return
            await asyncio.sleep(0.02)


async def expire_key(sessionmaker: SessionMaker, user: str, key: str) -> None:
    """Make the user's record of ``key`` expired a second ago."""
    async with sessionmaker() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == user, IdempotencyKey.key == key)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


@contextlib.asynccontextmanager
async def live_gateway(db_url: str, **overrides: Any) -> AsyncIterator[LiveGateway]:
    async with running_fake() as alpaca:
        platform_key = alpaca.fake.add_account(cash="1000000")
        values: dict[str, Any] = {
            "alpaca_trading_url": alpaca.url,
            "alpaca_data_url": alpaca.url,
            "broker_read_timeout_seconds": 2.0,
            "alpaca_platform_key_id": SecretStr(platform_key.key_id),
            "alpaca_platform_secret": SecretStr(platform_key.secret),
        }
        values.update(overrides)
        async with running_app(settings_for_tests(db_url, **values)) as harness:
            yield LiveGateway(
                harness=harness, alpaca=alpaca, byob_key=alpaca.account, platform_key=platform_key
            )

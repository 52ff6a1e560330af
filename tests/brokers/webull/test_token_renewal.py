"""The renewal pass: Webull's 15-day access token is refreshed before it runs out.

End to end on both database backends: the gateway's connection service renews through
``POST /openapi/auth/token/refresh`` on the fake over real HTTP; the fake's clock places a
token near its expiry (it was issued 14 days ago), and the fake's request log says whether
a refresh reached it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.db.models import BrokerToken
from tests.brokers.support import connect_broker, gateway_app
from tests.brokers.webull.support import TEST_QUERIES_PER_SECOND, Running, running_fake
from tests.conftest import new_user
from tests.fakes.webull.server import TOKEN_LIFETIME
from tests.harness import Harness


@dataclass
class Gateway:
    harness: Harness
    wb: Running

    async def connect(self, user: str, *, issued_ago: timedelta) -> dict[str, Any]:
        """An active connection (no two-factor: the token is ``NORMAL`` at once) whose token
        the fake issued ``issued_ago``."""
        fake = self.wb.fake
        fake.clock = lambda: datetime.now(UTC) - issued_ago
        try:
            credentials = {"app_key": self.wb.app.app_key, "app_secret": self.wb.app.app_secret}
            connection = await connect_broker(self.harness, user, "webull", credentials)
        finally:
            fake.clock = lambda: datetime.now(UTC)
        assert connection["status"] == "active", connection
        return connection

    def token(self) -> str:
        [token] = [t.token for t in self.wb.fake.tokens.values()]
        return token

    async def get(self, user: str, connection: dict[str, Any]) -> dict[str, Any]:
        h = self.harness
        response = await h.client.get(f"/v1/connections/{connection['id']}", headers=h.auth(user))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def event_types(self, user: str) -> list[str]:
        h = self.harness
        events = (await h.client.get("/v1/events", headers=h.auth(user))).json()["items"]
        return [e["type"] for e in events]

    async def sealed_expiry(self, connection: dict[str, Any]) -> datetime | None:
        async with self.harness.state.ctx.sessionmaker() as session:
            stored = (
                await session.execute(
                    select(BrokerToken).where(
                        BrokerToken.connection_id == connection["id"],
                        BrokerToken.revoked_at.is_(None),
                    )
                )
            ).scalar_one()
        return stored.expires_at


@contextlib.asynccontextmanager
async def gateway(db_url: str) -> AsyncIterator[Gateway]:
    async with running_fake(two_factor=False) as wb:
        async with gateway_app(
            db_url,
            webull_base_url=wb.url,
            webull_queries_per_second=TEST_QUERIES_PER_SECOND,
        ) as harness:
            yield Gateway(harness=harness, wb=wb)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


NEAR_EXPIRY = TOKEN_LIFETIME - timedelta(days=1)  # one day left: inside the 2-day window


async def test_a_token_near_expiry_is_renewed_and_its_expiry_moves(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.connect(user, issued_ago=NEAR_EXPIRY)
        before = at(connection["expires_at"])
        assert before - datetime.now(UTC) < timedelta(days=2)

        assert await gw.harness.state.connections.renew_all_expiring() >= 1

        renewed = await gw.get(user, connection)
        assert gw.wb.fake.token_requests("refresh") == 1
        expected = gw.wb.fake.tokens[gw.token()].expires
        after = at(renewed["expires_at"])
        assert abs(after - expected) < timedelta(seconds=1)  # the fake's 15 days from now
        assert after - before > timedelta(days=13)
        assert (renewed["status"], renewed["last_refresh_outcome"]) == ("active", "renewed")
        assert renewed["last_refresh_at"] is not None
        sealed = await gw.sealed_expiry(connection)
        assert sealed is not None
        assert abs(sealed.replace(tzinfo=UTC) - after) < timedelta(seconds=1)
        # Renewed: no longer due, so the next pass leaves it alone.
        await gw.harness.state.connections.renew_all_expiring()
        assert gw.wb.fake.token_requests("refresh") == 1
        assert "connection.broken" not in await gw.event_types(user)
        assert gw.token() not in caplog.text
        assert gw.wb.app.app_secret not in caplog.text


async def test_a_token_far_from_expiry_is_not_touched(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.connect(user, issued_ago=timedelta(0))

        assert await gw.harness.state.connections.renew_all_expiring() == 0

        assert gw.wb.fake.token_requests("refresh") == 0
        unchanged = await gw.get(user, connection)
        for field in ("status", "expires_at", "last_refresh_at", "last_refresh_outcome"):
            assert unchanged[field] == connection[field]


async def test_a_token_webull_reports_invalid_breaks_the_connection_once(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.connect(user, issued_ago=NEAR_EXPIRY)
        gw.wb.fake.invalidate_token(gw.token())

        assert await gw.harness.state.connections.renew_all_expiring() >= 1

        broken = await gw.get(user, connection)
        assert (broken["status"], broken["last_refresh_outcome"]) == ("broken", "renewal_failed")
        assert "invalid" in broken["display"]
        assert broken["expires_at"] == connection["expires_at"]
        assert (await gw.event_types(user)).count("connection.broken") == 1
        # Broken connections are not renewed again: no second request, no second event.
        await gw.harness.state.connections.renew_all_expiring()
        assert gw.wb.fake.token_requests("refresh") == 1
        assert (await gw.event_types(user)).count("connection.broken") == 1


async def test_a_server_error_leaves_the_connection_as_it_was_until_the_next_pass(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.connect(user, issued_ago=NEAR_EXPIRY)
        events = await gw.event_types(user)
        gw.wb.fake.faults.server_errors = 100

        assert await gw.harness.state.connections.renew_all_expiring() == 0

        assert gw.wb.fake.token_requests("refresh") >= 1
        unchanged = await gw.get(user, connection)
        for field in ("status", "expires_at", "last_refresh_at", "last_refresh_outcome"):
            assert unchanged[field] == connection[field]
        assert await gw.event_types(user) == events

        gw.wb.fake.faults.server_errors = 0
        assert await gw.harness.state.connections.renew_all_expiring() >= 1
        renewed = await gw.get(user, connection)
        assert (renewed["status"], renewed["last_refresh_outcome"]) == ("active", "renewed")
        assert at(renewed["expires_at"]) > at(connection["expires_at"])

"""Plain helpers for the OAuth tests: the fake authorization server on a real port, the app
running with the test-only "example" broker, and a browser that walks the redirects.

The browser is an httpx client with its own cookie jar: requests to ``http://gateway.test``
go to the app (ASGI), everything else over real sockets (the fake). Redirects are followed
one hop at a time so tests see each of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import SecretStr
from sqlalchemy import select, update

from app.brokers.registry import BrokerRegistry
from app.config import Settings
from app.db.models import Connection, OrderEvent
from app.paper.clock import ManualClock
from app.security.credentials import Credentials
from tests.brokers.oauth.example import ExampleSettings, example_registry
from tests.fakes.oauth import FakeAuthorizationServer
from tests.fakes.oauth.server import FakeClient, FakeOwner
from tests.fakes.runner import serve_asgi
from tests.harness import Harness, running_app, settings_for_tests

GATEWAY = "http://gateway.test"
CALLBACK = f"{GATEWAY}/v1/oauth/example/callback"
RETURN_TO = "https://app.example.test/settings/brokers"


def example_settings(
    database_url: str, fake_url: str, client: FakeClient, **overrides: Any
) -> ExampleSettings:
    base = settings_for_tests(database_url)
    values: dict[str, Any] = {name: getattr(base, name) for name in Settings.model_fields}
    values.update(
        example_base_url=fake_url,
        example_client_id=client.client_id,
        example_client_secret=SecretStr(client.client_secret),
        example_redirect_uri=CALLBACK,
        oauth_return_to_allowlist=[RETURN_TO],
        broker_read_timeout_seconds=2.0,
        broker_connect_timeout_seconds=2.0,
    )
    values.update(overrides)
    return ExampleSettings(**values)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class OAuthRun:
    fake: FakeAuthorizationServer
    fake_url: str
    client: FakeClient
    owner: FakeOwner
    clock: ManualClock
    settings: ExampleSettings
    harness: Harness

    def browser(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            mounts={GATEWAY: httpx.ASGITransport(app=self.harness.app)}, follow_redirects=False
        )

    async def authorize(
        self, browser: httpx.AsyncClient, user: str, return_to: str = RETURN_TO
    ) -> httpx.Response:
        return await browser.get(
            f"{GATEWAY}/v1/oauth/example/authorize",
            params={"return_to": return_to},
            headers=self.harness.auth(user),
        )

    async def at_broker(self, browser: httpx.AsyncClient, authorization_url: str) -> str:
        """The user visits the broker and decides; returns where the broker sends them."""
        response = await browser.get(authorization_url)
        assert response.status_code == 302, response.text
        return response.headers["location"]

    async def start(self, browser: httpx.AsyncClient, user: str) -> str:
        """Authorize and visit the broker; returns the callback URL (not yet opened)."""
        started = await self.authorize(browser, user)
        assert started.status_code == 200, started.text
        return await self.at_broker(browser, started.json()["authorization_url"])

    async def connect(self, user: str) -> str:
        """The whole round trip in one browser; returns the new connection id."""
        async with self.browser() as browser:
            landed = await browser.get(await self.start(browser, user))
        assert landed.status_code == 302, landed.text
        params = query(landed.headers["location"])
        assert "connection_id" in params, landed.headers["location"]
        return params["connection_id"]


@contextlib.asynccontextmanager
async def running_oauth(
    database_url: str,
    *,
    fake_options: dict[str, Any] | None = None,
    registry: BrokerRegistry | None = None,
    accounts: int = 2,
    **overrides: Any,
) -> AsyncIterator[OAuthRun]:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    fake = FakeAuthorizationServer(clock=clock.now, **(fake_options or {}))
    async with serve_asgi(fake.app) as url:
        client = fake.add_client(CALLBACK)
        owner = fake.add_owner(accounts=accounts)
        settings = example_settings(database_url, url, client, **overrides)
        async with running_app(settings, registry or example_registry(), now=clock.now) as harness:
            try:
                yield OAuthRun(fake, url, client, owner, clock, settings, harness)
            finally:
                await retire_connections(harness, "example")


async def retire_connections(harness: Harness, slug: str) -> None:
    """The test database is shared by the whole run: this run's fake is going away, so the
    connections to ``slug`` must not look refreshable to the next test's token refresher."""
    async with harness.state.ctx.sessionmaker() as session:
        await session.execute(
            update(Connection)
            .where(
                Connection.broker_slug == slug,
                Connection.status.in_(("active", "expiring")),
            )
            .values(status="revoked")
        )
        await session.commit()


async def connection_row(harness: Harness, connection_id: str) -> Connection:
    async with harness.state.ctx.sessionmaker() as session:
        row = (
            await session.execute(select(Connection).where(Connection.id == connection_id))
        ).scalar_one()
    return row


async def stored_credentials(harness: Harness, user: str, connection_id: str) -> Credentials:
    """The connection's credential as the vault opens it for a read."""
    ctx = harness.state.ctx
    async with ctx.sessionmaker() as session:
        return await ctx.vault.credentials_for_read(
            session, user_id=user, connection_id=connection_id
        )


async def connection_events(harness: Harness, connection_id: str) -> list[OrderEvent]:
    """The ``connection.*`` events of one connection, oldest first."""
    async with harness.state.ctx.sessionmaker() as session:
        rows = await session.execute(
            select(OrderEvent)
            .where(OrderEvent.connection_id == connection_id)
            .order_by(OrderEvent.id)
        )
        return list(rows.scalars().all())


@contextlib.asynccontextmanager
async def another_instance(run: OAuthRun) -> AsyncIterator[Harness]:
    """A second app instance on the same database, keyring and clock (scale-out)."""
    async with running_app(run.settings, example_registry(), now=run.clock.now) as harness:
        yield harness

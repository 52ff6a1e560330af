"""Plain helpers for the Plaid tests: a fake on a real port, settings, linked Items."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from app.brokers.plaid.adapter import PlaidAdapter
from app.brokers.plaid.auth import credentials_from_exchange
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.plaid import FakePlaid, serve_asgi
from tests.fakes.plaid.server import FakeInstitutionAccount, FakeItem, FakeLogin
from tests.harness import Harness, running_app, settings_for_tests


@dataclass
class Running(TrackedAdapters):
    fake: FakePlaid
    url: str
    login: FakeLogin

    @property
    def account(self) -> FakeInstitutionAccount:
        return self.login.accounts[0]

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "plaid_base_url": self.url,
            "plaid_client_id": SecretStr(self.fake.client_id),
            "plaid_secret": SecretStr(self.fake.secret),
            "plaid_requests_per_minute": 6000,
            "plaid_burst": 200,
        }
        values.update(overrides)
        return fake_settings(**values)

    def link(self, login: FakeLogin | None = None) -> tuple[FakeItem, Credentials]:
        """An Item made from ``login`` (Link completed and exchanged, as the app does)."""
        item = self.fake.create_item(login or self.login)
        return item, credentials_from_exchange(item.access_token, item.item_id)

    def adapter(self, credentials: Credentials | None = None, **overrides: Any) -> PlaidAdapter:
        if credentials is None:
            credentials = self.link()[1]
        adapter = PlaidAdapter(self.settings(**overrides), credentials)
        self.adapters.append(adapter)
        return adapter


@contextlib.asynccontextmanager
async def running_fake(cash: str = "25000") -> AsyncIterator[Running]:
    fake = FakePlaid()
    login = fake.add_login(cash=cash)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, login=login)
        try:
            yield running
        finally:
            await running.close_adapters()


@dataclass
class Gateway:
    """The app (real registry, real database) beside the fake Plaid on a real socket.

    Webhooks from the fake reach the app through the harness's client (the app is served
    in-process); their signatures are real ES256 JWTs.
    """

    harness: Harness
    plaid: Running

    @property
    def fake(self) -> FakePlaid:
        return self.plaid.fake

    async def link_token(self, user: str) -> str:
        response = await self.harness.client.post(
            "/v1/plaid/link-token", headers=self.harness.auth(user)
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["link_token"]
        return token

    async def exchange(self, user: str, public_token: str) -> Any:
        return await self.harness.client.post(
            "/v1/plaid/exchange",
            json={"public_token": public_token},
            headers=self.harness.auth(user),
        )

    async def link(self, user: str, login: FakeLogin | None = None) -> dict[str, Any]:
        """Link token -> Link (the fake) -> exchange: the Linked connection."""
        public = self.fake.complete_link(await self.link_token(user), login or self.plaid.login)
        response = await self.exchange(user, public)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def get(self, user: str, path: str) -> Any:
        return await self.harness.client.get(path, headers=self.harness.auth(user))


WEBHOOK_URL = "http://gateway.test/v1/webhooks/plaid"


@contextlib.asynccontextmanager
async def gateway(db_url: str, cash: str = "25000", **overrides: Any) -> AsyncIterator[Gateway]:
    async with running_fake(cash=cash) as run:
        values: dict[str, Any] = {
            "plaid_base_url": run.url,
            "plaid_client_id": SecretStr(run.fake.client_id),
            "plaid_secret": SecretStr(run.fake.secret),
            "plaid_webhook_url": WEBHOOK_URL,
            "plaid_requests_per_minute": 6000,
            "plaid_burst": 200,
            "broker_read_timeout_seconds": 0.5,
        }
        values.update(overrides)
        async with running_app(settings_for_tests(db_url, **values)) as harness:
            run.fake.webhook_client = harness.client
            try:
                yield Gateway(harness=harness, plaid=run)
            finally:
                run.fake.webhook_client = None

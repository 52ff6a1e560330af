"""Plain helpers for the Plaid tests: a fake on a real port, settings, linked Items."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from app.brokers.plaid.adapter import PlaidAdapter
from app.brokers.plaid.auth import credentials_from_exchange
from app.config import Settings
from app.security.credentials import Credentials
from tests.fakes.plaid import FakePlaid, serve_asgi
from tests.fakes.plaid.server import FakeInstitutionAccount, FakeItem, FakeLogin


@dataclass
class Running:
    fake: FakePlaid
    url: str
    login: FakeLogin
    adapters: list[PlaidAdapter] = field(default_factory=list)

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
            "broker_read_timeout_seconds": 0.5,
            "broker_connect_timeout_seconds": 0.5,
        }
        values.update(overrides)
        return Settings(**values)

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
            for adapter in running.adapters:
                await adapter.close()

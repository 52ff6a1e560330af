"""Plain helpers for the Alpaca tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.brokers.alpaca.adapter import AlpacaAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.alpaca import FakeAlpaca, serve_asgi
from tests.fakes.alpaca.server import FakeAccount


@dataclass
class Running(TrackedAdapters):
    fake: FakeAlpaca
    url: str
    account: FakeAccount

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "alpaca_trading_url": self.url,
            "alpaca_data_url": self.url,
        }
        values.update(overrides)
        return fake_settings(**values)

    def credentials(self, account: FakeAccount | None = None) -> Credentials:
        account = account or self.account
        return Credentials(api_key_id=account.key_id, api_secret_key=account.secret)

    def adapter(self, account: FakeAccount | None = None, **overrides: Any) -> AlpacaAdapter:
        return self.track(AlpacaAdapter(self.settings(**overrides), self.credentials(account)))


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000") -> AsyncIterator[Running]:
    fake = FakeAlpaca()
    account = fake.add_account(cash=cash)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, account=account)
        try:
            yield running
        finally:
            await running.close_adapters()

"""Plain helpers for the Alpaca tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.brokers.alpaca.adapter import AlpacaAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.fakes.alpaca import FakeAlpaca, serve_asgi
from tests.fakes.alpaca.server import FakeAccount


@dataclass
class Running:
    fake: FakeAlpaca
    url: str
    account: FakeAccount
    adapters: list[AlpacaAdapter] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "alpaca_trading_url": self.url,
            "alpaca_data_url": self.url,
            "broker_read_timeout_seconds": 0.5,
            "broker_connect_timeout_seconds": 0.5,
        }
        values.update(overrides)
        return Settings(**values)

    def credentials(self, account: FakeAccount | None = None) -> Credentials:
        account = account or self.account
        return Credentials(api_key_id=account.key_id, api_secret_key=account.secret)

    def adapter(self, account: FakeAccount | None = None, **overrides: Any) -> AlpacaAdapter:
        return self.track(AlpacaAdapter(self.settings(**overrides), self.credentials(account)))

    def track(self, adapter: AlpacaAdapter) -> AlpacaAdapter:
        """Closed when the fake stops (each test adapter owns its HTTP clients)."""
        self.adapters.append(adapter)
        return adapter


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000") -> AsyncIterator[Running]:
    fake = FakeAlpaca()
    account = fake.add_account(cash=cash)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, account=account)
        try:
            yield running
        finally:
            for adapter in running.adapters:
                await adapter.close()

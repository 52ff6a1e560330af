"""Plain helpers for the Coinbase tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.brokers.coinbase.adapter import CoinbaseAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.coinbase import FakeCoinbase, FakeUser, serve_asgi


@dataclass
class Running(TrackedAdapters):
    fake: FakeCoinbase
    url: str
    user: FakeUser

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def portfolio(self) -> str:
        return self.user.portfolio

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "coinbase_base_url": self.url,
            "coinbase_ws_url": self.ws_url,
            "coinbase_requests_per_second": 1000,
        }
        values.update(overrides)
        return fake_settings(**values)

    def credentials(self, user: FakeUser | None = None) -> Credentials:
        user = user or self.user
        return Credentials(api_key_name=user.key_name, private_key=user.private_key)

    def adapter(self, user: FakeUser | None = None, **overrides: Any) -> CoinbaseAdapter:
        return self.track(CoinbaseAdapter(self.settings(**overrides), self.credentials(user)))


@contextlib.asynccontextmanager
async def running_fake(
    cash: str = "100000", *, algorithm: str = "ES256", heartbeat_seconds: float = 1.0
) -> AsyncIterator[Running]:
    fake = FakeCoinbase(heartbeat_seconds=heartbeat_seconds)
    user = fake.add_user(cash=cash, algorithm=algorithm)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, user=user)
        try:
            yield running
        finally:
            await running.close_adapters()

"""Plain helpers for the Tradier tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.brokers.tradier.adapter import TradierAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.fakes.tradier import FakeTradier, serve_asgi
from tests.fakes.tradier.server import FakeAccount, FakeUser


@dataclass
class Running:
    fake: FakeTradier
    url: str
    user: FakeUser
    adapters: list[TradierAdapter] = field(default_factory=list)

    @property
    def account(self) -> FakeAccount:
        return self.user.account

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "tradier_base_url": self.url,
            "broker_read_timeout_seconds": 0.5,
            "broker_connect_timeout_seconds": 0.5,
        }
        values.update(overrides)
        return Settings(**values)

    def credentials(self, user: FakeUser | None = None) -> Credentials:
        return Credentials(access_token=(user or self.user).token)

    def adapter(self, user: FakeUser | None = None, **overrides: Any) -> TradierAdapter:
        return self.track(TradierAdapter(self.settings(**overrides), self.credentials(user)))

    def track(self, adapter: TradierAdapter) -> TradierAdapter:
        """Closed when the fake stops (each test adapter owns its HTTP clients)."""
        self.adapters.append(adapter)
        return adapter


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000", accounts: int = 1) -> AsyncIterator[Running]:
    fake = FakeTradier()
    user = fake.add_user(cash=cash, accounts=accounts)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, user=user)
        try:
            yield running
        finally:
            for adapter in running.adapters:
                await adapter.close()

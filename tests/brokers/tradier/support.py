"""Plain helpers for the Tradier tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.brokers.tradier.adapter import TradierAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.tradier import FakeTradier, serve_asgi
from tests.fakes.tradier.server import FakeAccount, FakeUser


@dataclass
class Running(TrackedAdapters):
    fake: FakeTradier
    url: str
    user: FakeUser

    @property
    def account(self) -> FakeAccount:
        return self.user.account

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "tradier_base_url": self.url,
        }
        values.update(overrides)
        return fake_settings(**values)

    def credentials(self, user: FakeUser | None = None) -> Credentials:
        return Credentials(access_token=(user or self.user).token)

    def adapter(self, user: FakeUser | None = None, **overrides: Any) -> TradierAdapter:
        return self.track(TradierAdapter(self.settings(**overrides), self.credentials(user)))


@contextlib.asynccontextmanager
async def running_fake(
    cash: str = "100000", accounts: int = 1, account_type: str = "margin"
) -> AsyncIterator[Running]:
    fake = FakeTradier()
    user = fake.add_user(cash=cash, accounts=accounts, account_type=account_type)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, user=user)
        try:
            yield running
        finally:
            await running.close_adapters()

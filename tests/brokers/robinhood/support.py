"""Plain helpers for the Robinhood tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.brokers.robinhood.adapter import RobinhoodAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.robinhood import FakeRobinhood, serve_asgi
from tests.fakes.robinhood.server import FakeAccount


@dataclass
class Running(TrackedAdapters):
    fake: FakeRobinhood
    url: str
    account: FakeAccount

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "robinhood_base_url": self.url,
        }
        values.update(overrides)
        return fake_settings(**values)

    def credentials(self, account: FakeAccount | None = None) -> Credentials:
        account = account or self.account
        return Credentials(api_key=account.api_key, private_key=account.private_key_b64)

    def adapter(self, account: FakeAccount | None = None, **overrides: Any) -> RobinhoodAdapter:
        adapter = RobinhoodAdapter(self.settings(**overrides), self.credentials(account))
        self.adapters.append(adapter)  # closed when the fake stops
        return adapter


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000") -> AsyncIterator[Running]:
    fake = FakeRobinhood()
    account = fake.add_account(cash=cash)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, account=account)
        try:
            yield running
        finally:
            await running.close_adapters()

"""Plain helpers for the Robinhood tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.brokers.robinhood.adapter import RobinhoodAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.fakes.robinhood import FakeRobinhood, serve_asgi
from tests.fakes.robinhood.server import FakeAccount


@dataclass
class Running:
    fake: FakeRobinhood
    url: str
    account: FakeAccount
    adapters: list[RobinhoodAdapter] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "robinhood_base_url": self.url,
            "broker_read_timeout_seconds": 0.5,
            "broker_connect_timeout_seconds": 0.5,
        }
        values.update(overrides)
        return Settings(**values)

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
            for adapter in running.adapters:
                await adapter.close()

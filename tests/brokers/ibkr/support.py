"""Plain helpers for the IBKR tests: a fake gateway on a real port, settings and adapters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.brokers.ibkr.adapter import IbkrAdapter
from app.brokers.ibkr.auth import check_credentials
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.ibkr import FakeIbkrGateway, serve_asgi
from tests.fakes.ibkr.server import API, FakeAccount


@dataclass
class Running(TrackedAdapters):
    fake: FakeIbkrGateway
    url: str  # the gateway's base URL, as a user would enter it
    account: FakeAccount

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        values.update(overrides)
        return fake_settings(**values)

    def credentials(self) -> Credentials:
        return check_credentials({"base_url": self.url})

    def adapter(self, **overrides: Any) -> IbkrAdapter:
        adapter = IbkrAdapter(self.settings(**overrides), self.credentials())
        self.adapters.append(adapter)  # closed when the fake stops
        return adapter


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000") -> AsyncIterator[Running]:
    fake = FakeIbkrGateway()
    account = fake.add_account(cash=cash)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url + API, account=account)
        try:
            yield running
        finally:
            await running.close_adapters()

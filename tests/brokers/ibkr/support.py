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

# IBKR allows one request per 5 s on its slow endpoints and the adapter paces them at 5.5 s
# (``ibkr_slow_endpoint_seconds``); waiting that out made each IBKR contract test take
# ~18 s. The fake here allows one per FAKE_SLOW_SECONDS and the adapters pace at
# TEST_SLOW_SECONDS: the same rule, a tenth of the window, with more room for jitter.
FAKE_SLOW_SECONDS = 0.5
TEST_SLOW_SECONDS = 0.8


@dataclass
class Running(TrackedAdapters):
    fake: FakeIbkrGateway
    url: str  # the gateway's base URL, as a user would enter it
    account: FakeAccount

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"ibkr_slow_endpoint_seconds": TEST_SLOW_SECONDS}
        values.update(overrides)
        return fake_settings(**values)

    def credentials(self) -> Credentials:
        return check_credentials({"base_url": self.url})

    def adapter(self, **overrides: Any) -> IbkrAdapter:
        adapter = IbkrAdapter(self.settings(**overrides), self.credentials())
        self.adapters.append(adapter)  # closed when the fake stops
        return adapter


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000", *, margin: bool = False) -> AsyncIterator[Running]:
    fake = FakeIbkrGateway(slow_seconds=FAKE_SLOW_SECONDS)
    account = fake.add_account(cash=cash, margin=margin)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url + API, account=account)
        try:
            yield running
        finally:
            await running.close_adapters()

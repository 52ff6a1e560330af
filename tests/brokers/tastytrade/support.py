"""Plain helpers for the tastytrade tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.brokers.tastytrade.adapter import TastytradeAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.tastytrade import FakeTastytrade, serve_asgi
from tests.fakes.tastytrade.server import FakeAccount, FakeCustomer


@dataclass
class Running(TrackedAdapters):
    fake: FakeTastytrade
    url: str
    customer: FakeCustomer

    @property
    def account(self) -> FakeAccount:
        return self.customer.accounts[0]

    @property
    def streamer_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "tastytrade_base_url": self.url,
            "tastytrade_streamer_url": self.streamer_url,
            "tastytrade_requests_per_minute": 6000,
            "tastytrade_burst": 200,
        }
        values.update(overrides)
        return fake_settings(**values)

    def credentials(self, customer: FakeCustomer | None = None) -> Credentials:
        customer = customer or self.customer
        return Credentials(
            client_secret=customer.client_secret, refresh_token=customer.refresh_token
        )

    def adapter(self, customer: FakeCustomer | None = None, **overrides: Any) -> TastytradeAdapter:
        return self.track(TastytradeAdapter(self.settings(**overrides), self.credentials(customer)))


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000") -> AsyncIterator[Running]:
    fake = FakeTastytrade()
    customer = fake.add_customer(cash=cash)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, customer=customer)
        try:
            yield running
        finally:
            await running.close_adapters()

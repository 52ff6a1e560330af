"""Plain helpers for the SnapTrade tests: a fake on a real port, settings and an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from app.brokers.snaptrade.adapter import SnaptradeAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.snaptrade import FakeSnapTrade, serve_asgi
from tests.fakes.snaptrade.server import FakeAccount, FakeAuthorization, FakeUser


@dataclass
class Running(TrackedAdapters):
    fake: FakeSnapTrade
    url: str
    user: FakeUser
    authorization: FakeAuthorization

    @property
    def account(self) -> FakeAccount:
        return next(iter(self.authorization.accounts.values()))

    def settings(self, **overrides: Any) -> Settings:
        return snaptrade_settings(self.fake, self.url, **overrides)

    def credentials(self, user: FakeUser | None = None) -> Credentials:
        user = user or self.user
        return Credentials(user_id=user.user_id, user_secret=user.secret)

    def adapter(self, user: FakeUser | None = None, **overrides: Any) -> SnaptradeAdapter:
        return self.track(SnaptradeAdapter(self.settings(**overrides), self.credentials(user)))

    def partner_adapter(self, **overrides: Any) -> SnaptradeAdapter:
        return self.track(SnaptradeAdapter(self.settings(**overrides), None))


def snaptrade_settings(fake: FakeSnapTrade, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "snaptrade_base_url": url,
        "snaptrade_client_id": fake.client_id,
        "snaptrade_consumer_key": SecretStr(fake.consumer_key),
        "snaptrade_requests_per_minute": 6000,
    }
    values.update(overrides)
    return fake_settings(**values)


@contextlib.asynccontextmanager
async def running_fake(
    cash: str = "100000", broker: str = "SCHWAB", *, prefix: str = ""
) -> AsyncIterator[Running]:
    """A fake with one registered user whose ``broker`` login holds one funded account.

    ``prefix`` ("/api/v1") points the adapter at the legacy path prefix.
    """
    fake = FakeSnapTrade()
    user = fake.add_user()
    authorization = fake.link(user, broker, cash=cash)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url + prefix, user=user, authorization=authorization)
        try:
            yield running
        finally:
            await running.close_adapters()
            await fake.flush_webhooks()

"""Plain helpers for the Webull tests: a fake on a real port, settings and adapters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.brokers.webull.adapter import WebullAdapter
from app.brokers.webull.auth import check_credentials
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.support import TrackedAdapters, fake_settings
from tests.fakes.webull import FakeWebull, serve_asgi
from tests.fakes.webull.server import FakeAccount, FakeApp

# Webull allows 2 order queries per 2 s and the adapter paces every read at that
# (``webull_queries_per_second``); the fake does not enforce it, and waiting it out made the
# Webull contract tests take seconds each. Tests pace reads at this instead.
TEST_QUERIES_PER_SECOND = 100.0


@dataclass
class Running(TrackedAdapters):
    fake: FakeWebull
    url: str
    app: FakeApp

    @property
    def account(self) -> FakeAccount:
        return next(iter(self.app.accounts.values()))

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "webull_base_url": self.url,
            "webull_queries_per_second": TEST_QUERIES_PER_SECOND,
        }
        values.update(overrides)
        return fake_settings(**values)

    def user_credentials(self, app: FakeApp | None = None) -> Credentials:
        app = app or self.app
        return check_credentials({"app_key": app.app_key, "app_secret": app.app_secret})

    async def confirmed_credentials(self, app: FakeApp | None = None) -> Credentials:
        """Create a token as the connect flow does, and confirm it as the user would."""
        bare = self.track(WebullAdapter(self.settings(), self.user_credentials(app)))
        stored = await bare.create_token()
        if stored["token_status"] == "PENDING":
            self.fake.confirm(stored["access_token"])
            stored = await self.track(WebullAdapter(self.settings(), stored)).check_token()
        return stored

    async def adapter(self, app: FakeApp | None = None, **overrides: Any) -> WebullAdapter:
        credentials = await self.confirmed_credentials(app)
        return self.track(WebullAdapter(self.settings(**overrides), credentials))


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000", *, two_factor: bool = True) -> AsyncIterator[Running]:
    fake = FakeWebull()
    app = fake.add_app(cash=cash, two_factor=two_factor)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, app=app)
        try:
            yield running
        finally:
            await running.close_adapters()

"""Plain helpers for the Schwab tests: a fake on a real port, settings, tokens, an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from app.brokers.schwab.adapter import SchwabAdapter
from app.brokers.schwab.auth import TokenSet
from app.config import Settings
from app.security.credentials import Credentials
from tests.fakes.schwab import FakeSchwab, serve_asgi
from tests.fakes.schwab.server import FakeAccount, FakeLogin

CLIENT_ID = "fake-schwab-app-key"
CLIENT_SECRET = "fake-schwab-app-secret-value"
REDIRECT_URI = "https://gateway.test/v1/oauth/schwab/callback"


def schwab_settings(url: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "schwab_base_url": url,
        "schwab_client_id": CLIENT_ID,
        "schwab_client_secret": SecretStr(CLIENT_SECRET),
        "schwab_redirect_uri": REDIRECT_URI,
        "broker_read_timeout_seconds": 0.5,
        "broker_connect_timeout_seconds": 0.5,
    }
    values.update(overrides)
    return values


@dataclass
class Running:
    fake: FakeSchwab
    url: str
    login: FakeLogin
    adapters: list[SchwabAdapter] = field(default_factory=list)

    @property
    def account(self) -> FakeAccount:
        return self.login.accounts[0]

    def settings(self, **overrides: Any) -> Settings:
        return Settings(**schwab_settings(self.url, **overrides))

    def token_set(self, login: FakeLogin | None = None) -> TokenSet:
        """A grant as a finished browser flow leaves it (tokens from the fake itself)."""
        access, refresh = self.fake.issue_tokens(login or self.login)
        now = datetime.now(UTC)
        return TokenSet(
            access_token=access,
            refresh_token=refresh,
            expires_at=now + timedelta(minutes=30),
            refresh_expires_at=now + timedelta(days=7),
        )

    def credentials(self, login: FakeLogin | None = None) -> Credentials:
        return self.token_set(login).to_credentials()

    def adapter(self, login: FakeLogin | None = None, **overrides: Any) -> SchwabAdapter:
        return self.track(SchwabAdapter(self.settings(**overrides), self.credentials(login)))

    def track(self, adapter: SchwabAdapter) -> SchwabAdapter:
        self.adapters.append(adapter)
        return adapter


@contextlib.asynccontextmanager
async def running_fake(cash: str = "100000", account_type: str = "CASH") -> AsyncIterator[Running]:
    fake = FakeSchwab()
    fake.add_app(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    login = fake.add_login(cash=cash, account_type=account_type)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        running = Running(fake=fake, url=url, login=login)
        try:
            yield running
        finally:
            for adapter in running.adapters:
                await adapter.close()

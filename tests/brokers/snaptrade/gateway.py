"""The gateway on a real socket with the fake SnapTrade, for the end-to-end tests.

The app reaches the fake only through its ``BROKERAGE_SNAPTRADE_*`` settings, as it would
reach SnapTrade; the fake reaches the app's ``/v1/webhooks/snaptrade`` over HTTP, as
SnapTrade would. Nothing of ours is replaced: the registry is the default one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import SecretStr

from tests.fakes.snaptrade import FakeSnapTrade, serve_asgi
from tests.fakes.snaptrade.server import FakeAccount, FakeUser
from tests.harness import Harness, running_app, settings_for_tests

RETURN_TO = "https://app.example.com/linked"


@dataclass
class Gateway:
    harness: Harness
    fake: FakeSnapTrade
    fake_url: str

    async def connect(self, user: str, brokerage: str | None = "SCHWAB") -> dict[str, Any]:
        h = self.harness
        options = {} if brokerage is None else {"brokerage": brokerage}
        response = await h.client.post(
            "/v1/connections",
            json={"broker": "snaptrade", "options": options},
            headers=h.auth(user),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def finish_portal(self, portal_url: str, **form: str) -> dict[str, str]:
        """What the user's browser does at the end of the Connection Portal; then the
        webhooks SnapTrade sends meanwhile are delivered. Returns the redirect's query."""
        async with httpx.AsyncClient() as browser:
            done = await browser.post(portal_url, data=form)
        assert done.status_code == 303, done.text
        target = done.headers["Location"]
        assert target.startswith(RETURN_TO + "?")
        await self.fake.flush_webhooks()
        return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}

    async def linked(self, user: str, brokerage: str = "SCHWAB", **form: str) -> tuple[str, str]:
        """A connection linked at the portal: (connection id, its one account id)."""
        connection = await self.connect(user, brokerage)
        await self.finish_portal(connection["portal"]["url"], **form)
        h = self.harness
        got = await h.client.get(f"/v1/connections/{connection['id']}", headers=h.auth(user))
        body = got.json()
        assert body["status"] == "active", body
        [account_id] = body["accounts"]
        return connection["id"], account_id

    def user_of(self, connection_id: str) -> FakeUser:
        return self.fake.users["bgw-" + connection_id]

    def account_of(self, connection_id: str) -> FakeAccount:
        [auth] = self.user_of(connection_id).authorizations.values()
        [account] = auth.accounts.values()
        return account


@contextlib.asynccontextmanager
async def gateway(
    db_url: str, *, webhooks: bool = True, consumer_key: str | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    fake = FakeSnapTrade()
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        settings = settings_for_tests(
            db_url,
            snaptrade_base_url=url,
            snaptrade_client_id=fake.client_id,
            snaptrade_consumer_key=SecretStr(consumer_key or fake.consumer_key),
            snaptrade_requests_per_minute=6000,
            snaptrade_redirect_url=RETURN_TO,
            broker_read_timeout_seconds=0.5,
            reconcile_unknown_after_seconds=0,
            **overrides,
        )
        async with running_app(settings) as harness, serve_asgi(harness.app) as app_url:
            if webhooks:
                fake.webhook_url = app_url + "/v1/webhooks/snaptrade"
            try:
                yield Gateway(harness=harness, fake=fake, fake_url=url)
            finally:
                await fake.flush_webhooks()

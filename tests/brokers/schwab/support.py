"""Plain helpers for the Schwab tests: a fake on a real port, settings, tokens, an adapter,
the generic OAuth client configured with Schwab's ``OAuthSpec``, and the gateway app with a
browser that connects through the OAuth flow (one redirect hop at a time)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from app.brokers.http import HttpPool, timeouts_from
from app.brokers.oauth import OAuthClient, OAuthSpec, TokenResponse
from app.brokers.schwab.adapter import SchwabAdapter
from app.brokers.schwab.auth import SCHWAB_OAUTH
from app.config import Settings
from app.paper.clock import ManualClock
from app.security.credentials import Credentials
from tests.brokers.oauth.support import query, retire_connections
from tests.brokers.support import TrackedAdapters
from tests.fakes.schwab import FakeSchwab, serve_asgi
from tests.fakes.schwab.server import ACCESS_LIFETIME, FakeAccount, FakeLogin
from tests.harness import Harness, running_app, settings_for_tests

CLIENT_ID = "fake-schwab-app-key"
CLIENT_SECRET = "fake-schwab-app-secret-value"
REDIRECT_URI = "https://gateway.test/v1/oauth/schwab/callback"


def schwab_settings(url: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "schwab_base_url": url,
        # The fake advertises wss:// as Schwab does; its socket is plain ws:// on localhost.
        "schwab_streamer_url": url.replace("http://", "ws://", 1) + "/ws",
        "schwab_client_id": CLIENT_ID,
        "schwab_client_secret": SecretStr(CLIENT_SECRET),
        "schwab_redirect_uri": REDIRECT_URI,
        "broker_read_timeout_seconds": 0.5,
        # A connect to the fake's listening socket never legitimately takes long: a short
        # connect timeout only fired when a loaded machine starved the event loop (an OAuth
        # token exchange, on a fresh connection, failed ``Transient``).
        "broker_connect_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return values


@dataclass
class Running(TrackedAdapters):
    fake: FakeSchwab
    url: str
    login: FakeLogin
    pool: HttpPool

    @property
    def account(self) -> FakeAccount:
        return self.login.accounts[0]

    def settings(self, **overrides: Any) -> Settings:
        return Settings(**schwab_settings(self.url, **overrides))

    def credentials(
        self, login: FakeLogin | None = None, *, expires_at: datetime | None = None
    ) -> Credentials:
        """A grant's credential as the OAuth callback stores it (tokens from the fake itself;
        ``expires_at``: the access token's recorded expiry, default the fake's 30 minutes)."""
        access, refresh = self.fake.issue_tokens(login or self.login)
        response = TokenResponse(access, "Bearer", None, refresh, "api")
        return response.credentials(expires_at=expires_at or self.fake.now() + ACCESS_LIFETIME)

    def oauth(self, spec: OAuthSpec = SCHWAB_OAUTH, **overrides: Any) -> OAuthClient:
        """The generic OAuth client as the app builds it for Schwab, against this fake."""
        return OAuthClient(spec.resolve(self.settings(**overrides), "schwab"), self.pool)

    def adapter(self, login: FakeLogin | None = None, **overrides: Any) -> SchwabAdapter:
        return self.track(SchwabAdapter(self.settings(**overrides), self.credentials(login)))


@contextlib.asynccontextmanager
async def running_fake(
    cash: str = "100000",
    account_type: str = "CASH",
    *,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Running]:
    """The fake on a real port; ``clock``: share the app's manual clock."""
    fake = FakeSchwab(clock=clock)
    fake.add_app(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    login = fake.add_login(cash=cash, account_type=account_type)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        pool = HttpPool(timeouts=timeouts_from(Settings(**schwab_settings(url))))
        running = Running(fake=fake, url=url, login=login, pool=pool)
        try:
            yield running
        finally:
            await running.close_adapters()
            await pool.aclose()


GATEWAY = "https://gateway.test"  # the redirect URI's origin: the app, mounted for the browser
RETURN_TO = "https://app.example.test/settings/brokers"  # on the return_to allow-list


@dataclass
class Gateway:
    """The app on one database backend with Schwab pointed at a running fake."""

    harness: Harness
    schwab: Running

    def browser(self) -> httpx.AsyncClient:
        """A browser with its own cookies: the gateway over ASGI, the fake over its socket."""
        return httpx.AsyncClient(
            mounts={GATEWAY: httpx.ASGITransport(app=self.harness.app)}, follow_redirects=False
        )

    async def start(self, browser: httpx.AsyncClient, user: str) -> str:
        """GET /v1/oauth/schwab/authorize, then Schwab's page; returns the callback URL."""
        started = await browser.get(
            f"{GATEWAY}/v1/oauth/schwab/authorize",
            params={"return_to": RETURN_TO},
            headers=self.harness.auth(user),
        )
        assert started.status_code == 200, started.text
        at_schwab = await browser.get(started.json()["authorization_url"])
        assert at_schwab.status_code == 302, at_schwab.text
        callback: str = at_schwab.headers["location"]
        assert callback.startswith(REDIRECT_URI + "?")
        return callback

    async def place_limit(self, user: str, account_id: str) -> dict[str, Any]:
        """A GTC limit buy far below the market: accepted by Schwab, left working."""
        placed = await self.harness.place(
            user, account_id, order_type="limit", limit_price="100.00", time_in_force="gtc"
        )
        assert placed.status_code == 201, placed.text
        order: dict[str, Any] = placed.json()
        assert order["status"] == "accepted"
        assert order["broker_order_id"] == str(max(self.schwab.account.orders))
        return order

    async def connect(self, user: str) -> dict[str, Any]:
        """The whole browser round trip; returns the new connection as the API shows it."""
        async with self.browser() as browser:
            landed = await browser.get(await self.start(browser, user))
        assert landed.status_code == 302, landed.text
        location = landed.headers["location"]
        assert location.startswith(RETURN_TO + "?"), location
        connection_id = query(location)["connection_id"]
        h = self.harness
        response = await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@contextlib.asynccontextmanager
async def gateway(
    db_url: str, *, clock: ManualClock | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """The app and the fake; ``clock``: one manual clock for the OAuth flow, the token
    lifecycle and the fake's token lifetimes."""
    now = None if clock is None else clock.now
    async with running_fake(clock=now) as schwab:
        settings = settings_for_tests(
            db_url,
            **schwab_settings(schwab.url),
            oauth_return_to_allowlist=[RETURN_TO],
            reconcile_unknown_after_seconds=0,
            **overrides,
        )
        async with running_app(settings, now=now) as harness:
            try:
                yield Gateway(harness=harness, schwab=schwab)
            finally:
                await retire_connections(harness, "schwab")

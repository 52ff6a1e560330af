"""The whole stack on localhost for the browser: the gateway on a real socket, the fake
Schwab and SnapTrade on theirs, a static test frontend on its own origin, and Chromium.

The frontend (``http://localhost:<F>``) and the gateway (``http://localhost:<G>``) are
different origins of one site, as an app and its API on two subdomains would be: the
gateway allows the frontend's origin by ``BROKERAGE_CORS_ORIGINS`` and sends it back (the
OAuth ``return_to`` allow-list) only to ``/brokers/`` pages.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.browser.cdp import Browser, find_chromium, launch
from tests.fakes.runner import serve_asgi
from tests.fakes.schwab import FakeSchwab
from tests.fakes.schwab.server import FakeLogin
from tests.fakes.snaptrade import FakeSnapTrade
from tests.harness import Harness, running_app, settings_for_tests

FRONTEND = Path(__file__).parent / "frontend"
SCREENSHOTS = Path(
    os.environ.get("BROWSER_SCREENSHOTS") or Path(__file__).parents[1] / "output" / "browser"
)
SCHWAB_APP = ("browser-schwab-app-key", "browser-schwab-app-secret")
SCHWAB_LOGIN_ID, SCHWAB_PASSWORD = "alice.schwab", "correct horse battery staple"

CHROMIUM = find_chromium()
NO_CHROMIUM = (
    "Chromium is not installed (apt-get install chromium, or set BROWSER_BIN): "
    "the browser suite is skipped"
)


def free_port() -> int:
    """A port nothing listens on now (the gateway's redirect URI must name it up front)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def frontend_app(gateway: str) -> Starlette:
    async def config(_: Request) -> Response:
        return Response(f"window.GATEWAY = {gateway!r};", media_type="text/javascript")

    return Starlette(
        routes=[
            Route("/config.js", config),
            Mount("/", StaticFiles(directory=FRONTEND, html=True)),
        ]
    )


@dataclass
class Stack:
    harness: Harness
    gateway: str
    frontend: str
    schwab: FakeSchwab
    schwab_url: str
    schwab_login: FakeLogin
    snaptrade: FakeSnapTrade
    browser: Browser
    shots: Path

    def page_url(self, path: str, user: str) -> str:
        """A frontend page, signed in as ``user`` (the token in the fragment, once)."""
        return f"{self.frontend}{path}#token={self.harness.token(user)}"


@pytest_asyncio.fixture(scope="module")
async def stack(postgres_url: str) -> AsyncIterator[Stack]:
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    gateway_port, frontend_port = free_port(), free_port()
    gateway = f"http://localhost:{gateway_port}"
    frontend = f"http://localhost:{frontend_port}"
    schwab = FakeSchwab()
    schwab.add_app(*SCHWAB_APP, f"{gateway}/v1/oauth/schwab/callback")
    login = schwab.add_login()
    schwab.add_password(login, SCHWAB_LOGIN_ID, SCHWAB_PASSWORD)
    snaptrade = FakeSnapTrade()
    async with contextlib.AsyncExitStack() as stack:
        schwab_url = await stack.enter_async_context(
            serve_asgi(schwab.app, on_shutdown=schwab.release_hung)
        )
        snaptrade_url = await stack.enter_async_context(
            serve_asgi(snaptrade.app, on_shutdown=snaptrade.release_hung)
        )
        settings = settings_for_tests(
            postgres_url,
            cors_origins=[frontend],
            oauth_return_to_allowlist=[f"{frontend}/brokers/"],
            schwab_base_url=schwab_url,
            schwab_client_id=SCHWAB_APP[0],
            schwab_client_secret=SecretStr(SCHWAB_APP[1]),
            schwab_redirect_uri=f"{gateway}/v1/oauth/schwab/callback",
            snaptrade_base_url=snaptrade_url,
            snaptrade_client_id=snaptrade.client_id,
            snaptrade_consumer_key=SecretStr(snaptrade.consumer_key),
            snaptrade_redirect_url=f"{frontend}/brokers/snaptrade-done.html",
            snaptrade_requests_per_minute=6000,
            broker_read_timeout_seconds=2,
        )
        harness = await stack.enter_async_context(running_app(settings))
        await stack.enter_async_context(serve_asgi(harness.app, port=gateway_port))
        await stack.enter_async_context(serve_asgi(frontend_app(gateway), port=frontend_port))
        browser = await stack.enter_async_context(launch(CHROMIUM))
        yield Stack(
            harness=harness,
            gateway=gateway,
            frontend=frontend,
            schwab=schwab,
            schwab_url=schwab_url,
            schwab_login=login,
            snaptrade=snaptrade,
            browser=browser,
            shots=SCREENSHOTS,
        )

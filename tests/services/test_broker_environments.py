"""A broker's own paper/sandbox environment per connection (ISSUE 15 item 5).

Two fake Alpacas over real sockets stand for Alpaca's live host and its paper host
(``BROKERAGE_ALPACA_BASE_URL`` / ``BROKERAGE_ALPACA_PAPER_BASE_URL``); a key exists at one
of them only, as Alpaca's paper keys do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.brokers.environments import environments_of, settings_for
from app.brokers.http import HttpPool
from app.config import Settings
from tests.brokers.alpaca.support import Running, running_fake
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests
from tests.services.support import assert_problem


@dataclass
class TwoHosts:
    harness: Harness
    live: Running
    paper: Running

    async def connect(self, user: str, running: Running, **options: str) -> httpx.Response:
        body: dict[str, Any] = {
            "broker": "alpaca",
            "credentials": {
                "api_key_id": running.account.key_id,
                "api_secret_key": running.account.secret,
            },
        }
        if options:
            body["options"] = options
        return await self.harness.client.post(
            "/v1/connections", json=body, headers=self.harness.auth(user)
        )


@contextlib.asynccontextmanager
async def two_hosts(db_url: str, **overrides: Any) -> AsyncIterator[TwoHosts]:
    async with running_fake() as live, running_fake() as paper:
        values: dict[str, Any] = {
            "alpaca_trading_url": live.url,
            "alpaca_data_url": live.url,
            "alpaca_paper_trading_url": paper.url,
            "broker_read_timeout_seconds": 2.0,
        }
        values.update(overrides)
        async with running_app(settings_for_tests(db_url, **values)) as harness:
            yield TwoHosts(harness, live, paper)


async def test_an_alpaca_paper_connection_reaches_the_paper_host_only(db_url: str) -> None:
    async with two_hosts(db_url, paper_first_cycles=3) as env:
        h, user = env.harness, new_user()
        created = await env.connect(user, env.paper, environment="paper")
        assert created.status_code == 201, created.text
        connection = created.json()
        assert (connection["environment"], connection["label"]) == ("paper", "Sandbox")
        account_id = connection["accounts"][0]
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert (account["mode"], account["label"]) == ("sandbox", "Sandbox")

        # Live money's paper-first gate does not apply (3 cycles required, none done).
        placed = await h.place(user, account_id)
        assert placed.status_code == 201, placed.text
        positions = await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
        assert positions.status_code == 200, positions.text
        portfolio = (await h.client.get("/v1/portfolio", headers=h.auth(user))).json()
        assert {a["mode"] for a in portfolio["accounts"]} == {"sandbox"}
        assert {t["mode"] for t in portfolio["totals"]} == {"sandbox"}

        assert ("POST", "/v2/orders") in env.paper.fake.requests
        assert env.live.fake.requests == []
        listed = (await h.client.get("/v1/connections", headers=h.auth(user))).json()
        assert [c["environment"] for c in listed["items"]] == ["paper"]


async def test_the_default_is_live_and_a_paper_key_is_refused_there(db_url: str) -> None:
    async with two_hosts(db_url) as env:
        user = new_user()
        assert_problem(await env.connect(user, env.paper), 422, "invalid_credentials")
        assert env.paper.fake.requests == []
        live = await env.connect(user, env.live)
        assert live.status_code == 201, live.text
        assert (live.json()["environment"], live.json()["label"]) == ("live", "Live")
        account_id = live.json()["accounts"][0]
        h = env.harness
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert (account["mode"], account["label"]) == ("live", "Live")


@pytest.mark.parametrize("options", [{"environment": "sandbox"}, {"environment": "x"}, {"y": "1"}])
async def test_an_environment_the_broker_lacks_is_refused_before_any_call(
    db_url: str, options: dict[str, str]
) -> None:
    async with two_hosts(db_url) as env:
        refused = await env.connect(new_user(), env.paper, **options)
        assert_problem(refused, 422, "validation_error")
        assert env.paper.fake.requests == env.live.fake.requests == []


def test_each_environment_has_its_own_hosts() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert environments_of("alpaca") == ["live", "paper"]
    assert environments_of("tradier") == ["live", "sandbox"]
    assert environments_of("tastytrade") == ["live", "sandbox"]
    assert environments_of("webull") == ["live", "test"]
    assert environments_of("robinhood") == ["live"]
    assert settings_for(settings, "alpaca", "live") is settings
    paper = settings_for(settings, "alpaca", "paper")
    assert paper.alpaca_trading_url == "https://paper-api.alpaca.markets"
    assert settings.alpaca_trading_url == "https://api.alpaca.markets"
    tuned = settings.model_copy(
        update={"tradier_trading_per_minute": 500, "tastytrade_api_version": "20251101"}
    )
    sandbox = settings_for(tuned, "tradier", "sandbox")
    assert sandbox.tradier_base_url == "https://sandbox.tradier.com"
    assert sandbox.tradier_trading_per_minute is None  # the sandbox's published figure
    assert settings_for(tuned, "tastytrade", "sandbox").tastytrade_api_version is None
    cert = settings_for(settings, "tastytrade", "sandbox")
    assert (cert.tastytrade_base_url, cert.tastytrade_streamer_url) == (
        "https://api.cert.tastyworks.com",
        "wss://streamer.cert.tastyworks.com",
    )
    assert settings_for(settings, "webull", "test").webull_base_url == (
        "https://us-openapi-alb.uat.webullbroker.com"
    )
    with pytest.raises(ValueError, match="no 'paper' environment"):
        settings_for(settings, "robinhood", "paper")


def test_the_paper_base_url_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERAGE_ALPACA_PAPER_BASE_URL", "http://127.0.0.1:9/")
    assert Settings().alpaca_paper_trading_url == "http://127.0.0.1:9/"


def test_an_environment_has_rate_buckets_of_its_own() -> None:
    pool = HttpPool()
    sandbox = pool.for_environment("sandbox")
    live_bucket = pool.bucket("tradier", "key-1", rate=1.0, capacity=1.0)
    assert pool.bucket("tradier", "key-1", rate=1.0, capacity=1.0) is live_bucket
    sandbox_bucket = sandbox.bucket("tradier", "key-1", rate=1.0, capacity=1.0)
    assert sandbox_bucket is not live_bucket
    assert sandbox.bucket("tradier", "key-1", rate=1.0, capacity=1.0) is sandbox_bucket
    # The same clients: one per base URL, whichever environment asks.
    assert sandbox.client("https://sandbox.tradier.com") is pool.client(
        "https://sandbox.tradier.com"
    )


async def test_kill_switches_stop_sandbox_orders_too(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same adapter, same broker API: a switch thrown for that path stops the sandbox too."""
    async with two_hosts(db_url, paper_first_cycles=0) as env:
        h, user = env.harness, new_user()
        created = await env.connect(user, env.paper, environment="paper")
        assert created.status_code == 201, created.text
        account_id = created.json()["accounts"][0]
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
        assert_problem(await h.place(user, account_id), 503, "live_trading_disabled")
        assert ("POST", "/v2/orders") not in env.paper.fake.requests
        monkeypatch.delenv("BYOB_LIVE_DISABLED")
        assert (await h.place(user, account_id)).status_code == 201

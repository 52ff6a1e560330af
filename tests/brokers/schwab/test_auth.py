"""Schwab OAuth against the fake over real HTTP: authorize, exchange, refresh, dead grants."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from app.brokers import errors
from app.brokers.schwab import auth
from app.brokers.schwab.adapter import SchwabAdapter
from app.config import Settings
from tests.brokers.schwab.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    Running,
    running_fake,
)


def test_the_provider_facts_as_data() -> None:
    facts = auth.SCHWAB_OAUTH
    assert facts.authorize_url == "https://api.schwabapi.com/v1/oauth/authorize"
    assert facts.token_url == "https://api.schwabapi.com/v1/oauth/token"
    assert facts.client_auth_method == "client_secret_basic"
    assert facts.pkce is False
    assert facts.scopes == ()
    assert facts.redirect_uri_setting == "schwab_redirect_uri"
    assert facts.access_token_lifetime == timedelta(minutes=30)
    assert facts.refresh_token_lifetime == timedelta(days=7)
    assert facts.refresh_extends_grant is False
    settings = Settings()
    for name in (
        facts.base_url_setting,
        facts.client_id_setting,
        facts.client_secret_setting,
        facts.redirect_uri_setting,
    ):
        assert hasattr(settings, name)


def test_configured_only_with_client_id_and_secret() -> None:
    assert not Settings().schwab_configured
    assert not Settings(schwab_client_id="id").schwab_configured
    assert not Settings(schwab_client_id="id", schwab_client_secret=SecretStr("")).schwab_configured
    assert Settings(schwab_client_id="id", schwab_client_secret=SecretStr("s")).schwab_configured


def test_settings_read_the_documented_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERAGE_SCHWAB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BROKERAGE_SCHWAB_CLIENT_ID", "app-key")
    monkeypatch.setenv("BROKERAGE_SCHWAB_CLIENT_SECRET", "app-secret")
    monkeypatch.setenv("BROKERAGE_SCHWAB_REDIRECT_URI", "https://x.test/cb")
    settings = Settings()
    assert settings.schwab_base_url == "http://127.0.0.1:9"
    assert settings.schwab_configured
    assert "app-secret" not in repr(settings)


async def _authorize(run: Running, state: str) -> str:
    """The browser's trip: our authorize URL, Schwab's redirect, the code in the callback."""
    url = auth.authorization_url(run.settings(), state=state)
    assert url.startswith(f"{run.url}/v1/oauth/authorize?")
    query = parse_qs(urlsplit(url).query)
    assert query == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT_URI],
        "state": [state],
    }
    async with httpx.AsyncClient(follow_redirects=False) as browser:
        answer = await browser.get(url)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    back = parse_qs(urlsplit(location).query)
    assert back["state"] == [state]
    assert "session" in back
    return back["code"][0]


async def test_code_exchange_then_refresh() -> None:
    async with running_fake() as run:
        code = await _authorize(run, "st-1")
        before = datetime.now(UTC)
        tokens = await auth.exchange_code(run.settings(), code)
        assert tokens.token_type == "Bearer"
        assert tokens.scope == "api"
        assert (
            before + timedelta(minutes=29)
            < tokens.expires_at
            <= datetime.now(UTC) + timedelta(minutes=30)
        )
        assert tokens.refresh_expires_at - tokens.expires_at > timedelta(days=6)
        assert tokens.access_token not in repr(tokens)
        assert tokens.refresh_token not in str(tokens)
        # The token works against the API.
        adapter = run.track(SchwabAdapter(run.settings(), tokens.to_credentials()))
        assert [a.broker_account_id for a in await adapter.list_accounts()] == [
            run.account.hash_value
        ]
        # Refresh: a new access token, the same grant and the same 7-day limit.
        refreshed = await auth.refresh(
            run.settings(), tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at
        )
        assert refreshed.access_token != tokens.access_token
        assert refreshed.refresh_token == tokens.refresh_token
        assert refreshed.refresh_expires_at == tokens.refresh_expires_at
        assert [r["grant_type"] for r in run.fake.token_requests] == [
            "authorization_code",
            "refresh_token",
        ]


async def test_the_token_endpoint_gets_basic_auth_and_a_form() -> None:
    async with running_fake() as run:
        code = await _authorize(run, "st-form")
        await auth.exchange_code(run.settings(), code)
        method, path, _query, body = run.fake.calls[-1]
        assert (method, path) == ("POST", "/v1/oauth/token")
        form = parse_qs(body.decode())
        assert form == {
            "grant_type": ["authorization_code"],
            "code": [code],
            "redirect_uri": [REDIRECT_URI],
        }
        assert CLIENT_SECRET not in body.decode()  # the secret travels in the Basic header


async def test_a_code_is_single_use() -> None:
    async with running_fake() as run:
        code = await _authorize(run, "st-2")
        await auth.exchange_code(run.settings(), code)
        with pytest.raises(auth.InvalidGrant):
            await auth.exchange_code(run.settings(), code)


async def test_the_refresh_token_dies_after_seven_days_on_the_fakes_clock() -> None:
    async with running_fake() as run:
        tokens = run.token_set()
        run.fake.advance(timedelta(days=6, hours=23))
        still = await auth.refresh(
            run.settings(), tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at
        )
        assert still.refresh_token == tokens.refresh_token
        run.fake.advance(timedelta(hours=1))
        with pytest.raises(auth.InvalidGrant) as caught:
            await auth.refresh(
                run.settings(), tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at
            )
        assert "refresh token invalid" in caught.value.reason
        assert isinstance(caught.value, errors.AuthenticationFailed)


async def test_a_revoked_grant_is_invalid_grant_and_not_retried() -> None:
    async with running_fake() as run:
        tokens = run.token_set()
        run.fake.revoke(run.login)
        with pytest.raises(auth.InvalidGrant) as caught:
            await auth.refresh(
                run.settings(), tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at
            )
        assert "refresh_token_authentication_error" in caught.value.reason
        assert len(run.fake.token_requests) == 1


async def test_wrong_app_credentials_are_an_operator_problem() -> None:
    async with running_fake() as run:
        tokens = run.token_set()
        settings = run.settings(schwab_client_secret=SecretStr("not-the-secret"))
        with pytest.raises(auth.ClientRejected):
            await auth.refresh(
                settings, tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at
            )


async def test_token_endpoint_faults() -> None:
    async with running_fake() as run:
        tokens = run.token_set()
        run.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded) as limited:
            await auth.refresh(
                run.settings(), tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at
            )
        assert limited.value.retry_after == 7
        run.fake.faults.server_errors = 1
        with pytest.raises(errors.Transient) as failed:
            await auth.refresh(
                run.settings(), tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at
            )
        assert not isinstance(failed.value, errors.RateLimitExceeded)


async def test_no_token_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_fake() as run:
        code = await _authorize(run, "st-log")
        tokens = await auth.exchange_code(run.settings(), code)
        await auth.refresh(
            run.settings(), tokens.refresh_token, refresh_expires_at=tokens.refresh_expires_at
        )
    assert tokens.access_token not in caplog.text
    assert tokens.refresh_token not in caplog.text
    assert CLIENT_SECRET not in caplog.text


def test_credentials_round_trip_and_refuse_junk() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    tokens = auth.TokenSet("a", "r", now, now + timedelta(days=7))
    assert auth.TokenSet.from_credentials(tokens.to_credentials()) == tokens
    with pytest.raises(errors.AuthenticationFailed):
        auth.TokenSet.from_credentials({"access_token": "a"})


def test_unconfigured_deployment_cannot_authorize() -> None:
    with pytest.raises(auth.ClientRejected):
        auth.authorization_url(Settings(), state="x")
    with pytest.raises(ValueError, match="REDIRECT_URI"):
        auth.authorization_url(
            Settings(schwab_client_id="id", schwab_client_secret=SecretStr("s")), state="x"
        )

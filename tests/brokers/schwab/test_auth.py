"""Schwab OAuth: its ``OAuthSpec`` and the generic ``OAuthClient`` against the fake over real
HTTP: authorize, exchange, refresh, and Schwab's own dead-grant answers."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from app.brokers import errors
from app.brokers.base import AuthKind
from app.brokers.oauth import (
    InvalidGrant,
    OAuthClient,
    OAuthNotConfigured,
    TokenEndpointError,
)
from app.brokers.schwab import schwab_spec
from app.brokers.schwab.adapter import SchwabAdapter
from app.brokers.schwab.auth import SCHWAB_OAUTH
from app.config import Settings
from tests.brokers.schwab.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    Running,
    running_fake,
)


def _configured(**settings: Any) -> Settings:
    """A deployment with a Schwab app (made-up key and secret)."""
    return Settings(
        schwab_client_id="app-key",
        schwab_client_secret=SecretStr("app-secret"),
        schwab_redirect_uri=REDIRECT_URI,
        **settings,
    )


def test_the_provider_facts_as_data() -> None:
    facts = SCHWAB_OAUTH
    config = facts.resolve(_configured(), "schwab")
    assert config.authorize_url == "https://api.schwabapi.com/v1/oauth/authorize"
    assert config.token_url == "https://api.schwabapi.com/v1/oauth/token"
    assert (config.revoke_url, config.refresh_url) == (None, None)
    assert facts.client_auth == "client_secret_basic"
    assert facts.pkce is False
    assert facts.scopes == ()
    assert facts.access_token_lifetime == timedelta(minutes=30)
    assert facts.refresh_token_lifetime == timedelta(days=7)
    assert facts.token_encoding == "form"
    assert facts.redirect_uri_setting == "schwab_redirect_uri"
    settings = Settings()
    for name in (facts.client_id_setting, facts.client_secret_setting, facts.redirect_uri_setting):
        assert hasattr(settings, name)
    spec = schwab_spec()
    assert (spec.auth, spec.oauth) == (AuthKind.oauth2, SCHWAB_OAUTH)


def test_the_base_url_setting_moves_every_endpoint() -> None:
    config = SCHWAB_OAUTH.resolve(_configured(schwab_base_url="http://127.0.0.1:9/"), "schwab")
    assert config.authorize_url == "http://127.0.0.1:9/v1/oauth/authorize"
    assert config.token_url == "http://127.0.0.1:9/v1/oauth/token"


def test_configured_only_with_client_id_and_secret() -> None:
    assert not Settings().schwab_configured
    assert not Settings(schwab_client_id="id").schwab_configured
    assert not Settings(schwab_client_id="id", schwab_client_secret=SecretStr("")).schwab_configured
    assert Settings(schwab_client_id="id", schwab_client_secret=SecretStr("s")).schwab_configured


def test_settings_read_the_documented_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERAGE_SCHWAB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BROKERAGE_SCHWAB_CLIENT_ID", "app-key")
    monkeypatch.setenv("BROKERAGE_SCHWAB_CLIENT_SECRET", "app-secret")
    monkeypatch.setenv("BROKERAGE_SCHWAB_REDIRECT_URI", "https://x.test/v1/oauth/schwab/callback")
    settings = Settings()
    assert settings.schwab_base_url == "http://127.0.0.1:9"
    assert settings.schwab_configured
    assert "app-secret" not in repr(settings)
    assert schwab_spec().oauth_ready(settings)


async def _authorize(run: Running, client: OAuthClient, state: str) -> str:
    """The browser's trip: our authorize URL, Schwab's redirect, the code in the callback."""
    url = client.authorization_url(state=state, code_verifier=None)
    assert url.startswith(f"{run.url}/v1/oauth/authorize?")
    query = parse_qs(urlsplit(url).query)
    # Exactly what schwab-py sends: no scope, no PKCE challenge.
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
        client = run.oauth()
        code = await _authorize(run, client, "st-1")
        tokens = await client.exchange_code(
            code=code, redirect_uri=REDIRECT_URI, code_verifier=None
        )
        assert (tokens.token_type, tokens.scope, tokens.expires_in) == ("Bearer", "api", 1800)
        assert tokens.refresh_token
        assert tokens.access_token not in repr(tokens)
        assert tokens.refresh_token not in str(tokens)
        # The token works against the API.
        credentials = tokens.credentials()
        adapter = run.track(SchwabAdapter(run.settings(), credentials))
        assert [a.broker_account_id for a in await adapter.list_accounts()] == [
            run.account.hash_value
        ]
        # Refresh: a new access token and the same refresh token (Schwab does not rotate).
        refreshed = await client.refresh(tokens.refresh_token)
        assert refreshed.access_token != tokens.access_token
        assert refreshed.refresh_token == tokens.refresh_token
        assert refreshed.credentials(previous=credentials)["refresh_token"] == tokens.refresh_token
        assert [(r["grant_type"], r["status"]) for r in run.fake.token_requests] == [
            ("authorization_code", "200"),
            ("refresh_token", "200"),
        ]


async def test_the_token_endpoint_gets_basic_auth_and_a_form() -> None:
    async with running_fake() as run:
        client = run.oauth()
        code = await _authorize(run, client, "st-form")
        await client.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=None)
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
        client = run.oauth()
        code = await _authorize(run, client, "st-2")
        await client.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=None)
        with pytest.raises(InvalidGrant):
            await client.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=None)


async def test_the_refresh_token_dies_after_seven_days_on_the_fakes_clock() -> None:
    async with running_fake() as run:
        refresh_token = run.credentials()["refresh_token"]
        client = run.oauth()
        run.fake.advance(timedelta(days=6, hours=23))
        still = await client.refresh(refresh_token)
        assert still.refresh_token == refresh_token
        run.fake.advance(timedelta(hours=1))
        with pytest.raises(InvalidGrant) as caught:
            await client.refresh(refresh_token)
        # Schwab's answer is invalid_client; the spec lists it as a dead grant.
        assert caught.value.description == "invalid_client: refresh token invalid"
        assert isinstance(caught.value, errors.AuthenticationFailed)
        assert run.fake.token_requests[-1]["error"] == "invalid_client"


async def test_a_revoked_grant_is_invalid_grant() -> None:
    async with running_fake() as run:
        refresh_token = run.credentials()["refresh_token"]
        run.fake.revoke(run.login)
        with pytest.raises(InvalidGrant) as caught:
            await run.oauth().refresh(refresh_token)
        description = caught.value.description or ""
        assert description.startswith("unsupported_token_type: ")
        assert "refresh_token_authentication_error" in description
        assert len(run.fake.token_requests) == 1  # one request: the client never resends


async def test_without_the_dead_grant_list_schwabs_answers_look_retryable() -> None:
    """Why the spec lists them: RFC 6749 alone reads both answers as other errors."""
    async with running_fake() as run:
        plain = run.oauth(dataclasses.replace(SCHWAB_OAUTH, dead_grant_errors=()))
        expired = run.credentials()["refresh_token"]
        run.fake.advance(timedelta(days=7))
        with pytest.raises(TokenEndpointError) as old:
            await plain.refresh(expired)
        assert not isinstance(old.value, InvalidGrant)
        assert old.value.error == "invalid_client"
        revoked = run.credentials()["refresh_token"]
        run.fake.revoke(run.login)
        with pytest.raises(TokenEndpointError) as gone:
            await plain.refresh(revoked)
        assert not isinstance(gone.value, InvalidGrant)
        assert gone.value.error == "unsupported_token_type"


async def test_wrong_app_credentials_are_an_operator_problem_not_a_dead_grant() -> None:
    async with running_fake() as run:
        refresh_token = run.credentials()["refresh_token"]
        client = run.oauth(schwab_client_secret=SecretStr("not-the-secret"))
        with pytest.raises(TokenEndpointError) as caught:
            await client.refresh(refresh_token)
        assert not isinstance(caught.value, InvalidGrant)
        assert (caught.value.error, caught.value.description) == ("invalid_client", "Unauthorized")


async def test_token_endpoint_faults() -> None:
    async with running_fake() as run:
        refresh_token = run.credentials()["refresh_token"]
        client = run.oauth()
        run.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded) as limited:
            await client.refresh(refresh_token)
        assert limited.value.retry_after == 7
        run.fake.faults.server_errors = 1
        # A POST whose answer was lost: the refresher records it and tries again later.
        with pytest.raises(errors.OutcomeUnknown):
            await client.refresh(refresh_token)
        assert (await client.refresh(refresh_token)).refresh_token == refresh_token


async def test_no_token_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_fake() as run:
        client = run.oauth()
        code = await _authorize(run, client, "st-log")
        tokens = await client.exchange_code(
            code=code, redirect_uri=REDIRECT_URI, code_verifier=None
        )
        assert tokens.refresh_token is not None
        refreshed = await client.refresh(tokens.refresh_token)
    for secret in (tokens.access_token, tokens.refresh_token, refreshed.access_token):
        assert secret not in caplog.text
    assert CLIENT_SECRET not in caplog.text


def test_an_unconfigured_deployment_cannot_authorize() -> None:
    with pytest.raises(OAuthNotConfigured, match="schwab_client_id"):
        SCHWAB_OAUTH.resolve(Settings(), "schwab")
    configured = Settings(schwab_client_id="id", schwab_client_secret=SecretStr("s"))
    with pytest.raises(OAuthNotConfigured, match="schwab_redirect_uri"):
        SCHWAB_OAUTH.resolve(configured, "schwab")
    assert not schwab_spec().oauth_ready(configured)
    wrong = Settings(
        schwab_client_id="id",
        schwab_client_secret=SecretStr("s"),
        schwab_redirect_uri="https://gateway.test/v1/oauth/example/callback",
    )
    with pytest.raises(OAuthNotConfigured, match="/v1/oauth/schwab/callback"):
        SCHWAB_OAUTH.resolve(wrong, "schwab")

"""``app.brokers.oauth``: the OAuth description and client, against the fake authorization
server on a real socket (and, for response parsing, against hand-built responses)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.brokers import errors
from app.brokers.http import HttpPool, Timeouts
from app.brokers.oauth import (
    InvalidGrant,
    OAuthClient,
    OAuthConfig,
    OAuthNotConfigured,
    OAuthSpec,
    TokenEndpointError,
    TokenResponse,
    access_token_expires_at,
    bearer_headers,
    check_redirect_uri,
    new_code_verifier,
    parse_token_response,
)
from app.security.credentials import Credentials
from tests.brokers.oauth.example import EXAMPLE_OAUTH, ExampleSettings
from tests.brokers.oauth.support import CALLBACK, query
from tests.fakes.oauth import FakeAuthorizationServer
from tests.fakes.oauth.server import FakeClient, s256
from tests.fakes.runner import serve_asgi


@dataclasses.dataclass
class Served:
    fake: FakeAuthorizationServer
    url: str
    client: FakeClient
    pool: HttpPool

    def oauth(self, spec: OAuthSpec = EXAMPLE_OAUTH, **settings: Any) -> OAuthClient:
        values: dict[str, Any] = {
            "example_base_url": self.url,
            "example_client_id": self.client.client_id,
            "example_client_secret": SecretStr(self.client.client_secret),
            "example_redirect_uri": CALLBACK,
        }
        values.update(settings)
        return OAuthClient(spec.resolve(ExampleSettings(**values), "example"), self.pool)

    async def code(self, client: OAuthClient, verifier: str | None) -> str:
        """Authorize at the fake (the user consents); returns the code."""
        async with httpx.AsyncClient() as browser:
            answer = await browser.get(
                client.authorization_url(state="s" * 43, code_verifier=verifier)
            )
        assert answer.status_code == 302, answer.text
        return query(answer.headers["location"])["code"]


@contextlib.asynccontextmanager
async def served(**options: Any) -> AsyncIterator[Served]:
    fake = FakeAuthorizationServer(**options)
    fake.add_owner()
    pool = HttpPool(timeouts=Timeouts(connect=2.0, read=2.0, write=2.0, pool=2.0))
    async with serve_asgi(fake.app) as url:
        try:
            yield Served(fake, url, fake.add_client(CALLBACK), pool)
        finally:
            await pool.aclose()


async def test_authorization_url_carries_the_s256_challenge() -> None:
    async with served() as s:
        client = s.oauth()
        verifier = new_code_verifier()
        url = client.authorization_url(state="xyz-state", code_verifier=verifier)
        assert url.startswith(f"{s.url}/oauth/authorize?")
        params = query(url)
        assert params == {
            "response_type": "code",
            "client_id": s.client.client_id,
            "redirect_uri": CALLBACK,
            "scope": "read trade",
            "state": "xyz-state",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
        assert 43 <= len(verifier) <= 128


def test_scopes_separator_and_extra_authorize_parameters() -> None:
    spec = dataclasses.replace(
        EXAMPLE_OAUTH,
        scopes=("read", "write", "market"),
        scope_separator=",",  # Tradier's comma-delimited scopes
        authorize_params=(("prompt", "login"),),
        pkce=False,
    )
    settings = ExampleSettings(
        example_base_url="https://broker.example",
        example_client_id="cid",
        example_client_secret=SecretStr("secret"),
        example_redirect_uri=CALLBACK,
    )
    client = OAuthClient(spec.resolve(settings, "example"), HttpPool())
    params = query(client.authorization_url(state="st", code_verifier=None))
    assert params["scope"] == "read,write,market"
    assert params["prompt"] == "login"
    assert "code_challenge" not in params


async def test_code_exchange_refresh_and_revoke_with_basic_auth() -> None:
    async with served() as s:
        client = s.oauth()
        verifier = new_code_verifier()
        code = await s.code(client, verifier)
        token = await client.exchange_code(code=code, redirect_uri=CALLBACK, code_verifier=verifier)
        assert token.token_type == "Bearer"
        assert token.expires_in == 1800
        assert token.refresh_token
        assert "refresh_token=<set>" in repr(token)
        assert token.access_token not in repr(token)
        refreshed = await client.refresh(token.refresh_token)
        assert refreshed.access_token != token.access_token
        assert await client.revoke(token.refresh_token, token_type_hint="refresh_token") is True
        assert s.fake.revocations == [("refresh_token", True)]
        with pytest.raises(InvalidGrant):
            await client.refresh(token.refresh_token)


async def test_client_secret_post_and_json_bodies() -> None:
    async with served() as s:
        client = s.oauth(dataclasses.replace(EXAMPLE_OAUTH, client_auth="client_secret_post"))
        verifier = new_code_verifier()
        token = await client.exchange_code(
            code=await s.code(client, verifier), redirect_uri=CALLBACK, code_verifier=verifier
        )
        assert token.access_token in s.fake.access
    async with served(accept_json=True) as s:
        spec = dataclasses.replace(
            EXAMPLE_OAUTH,
            client_auth="client_secret_post",
            token_encoding="json",
            token_headers=(("User-Agent", "brokerage-gateway/0.1"),),
        )
        client = s.oauth(spec)
        verifier = new_code_verifier()
        token = await client.exchange_code(
            code=await s.code(client, verifier), redirect_uri=CALLBACK, code_verifier=verifier
        )
        assert token.access_token in s.fake.access
    async with served() as s:  # a server that takes forms only refuses the JSON body
        client = s.oauth(dataclasses.replace(EXAMPLE_OAUTH, token_encoding="json"))
        with pytest.raises(TokenEndpointError) as refused:
            await client.refresh("whatever")
        assert refused.value.error == "invalid_request"


async def test_token_endpoint_errors_are_mapped() -> None:
    async with served() as s:
        client = s.oauth()
        verifier = new_code_verifier()
        code = await s.code(client, verifier)
        with pytest.raises(InvalidGrant) as wrong_verifier:
            await client.exchange_code(
                code=code, redirect_uri=CALLBACK, code_verifier=new_code_verifier()
            )
        assert "code_verifier" in (wrong_verifier.value.description or "")
        assert isinstance(wrong_verifier.value, errors.AuthenticationFailed)

        bad_secret = s.oauth(example_client_secret=SecretStr("not-the-secret"))
        with pytest.raises(TokenEndpointError) as refused:
            await bad_secret.refresh("anything")
        assert refused.value.error == "invalid_client"

        s.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded) as limited:
            await client.refresh("anything")
        assert limited.value.retry_after == 30

        s.fake.faults.server_errors = 1
        with pytest.raises(errors.OutcomeUnknown):  # a POST: it may have rotated the token
            await client.refresh("anything")

        s.fake.faults.revoke_unavailable = 1
        with pytest.raises(errors.OutcomeUnknown):
            await client.revoke("anything")


async def test_no_revocation_endpoint_means_nothing_to_revoke() -> None:
    async with served() as s:
        client = s.oauth(dataclasses.replace(EXAMPLE_OAUTH, revoke_url=None))
        assert await client.revoke("anything") is False
        assert s.fake.revocations == []


def _response(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_token_responses_are_parsed_strictly() -> None:
    parsed = parse_token_response(
        _response({"access_token": "a" * 20, "expires_in": "86399", "scope": "read write"}), "x"
    )
    assert (parsed.token_type, parsed.expires_in, parsed.refresh_token) == ("Bearer", 86399, None)
    for body in (
        {"token_type": "Bearer"},
        {"access_token": ""},
        {"access_token": "a", "token_type": "mac"},
        {"access_token": "a", "expires_in": -1},
        {"access_token": "a", "expires_in": True},
        {"access_token": "a", "expires_in": "soon"},
        {"access_token": "a", "expires_in": "NaN"},
        {"access_token": "a", "refresh_token": 5},
        {"access_token": "a", "scope": ["read"]},
        ["access_token"],
    ):
        with pytest.raises(errors.UnknownBrokerValue):
            parse_token_response(_response(body), "x")
    with pytest.raises(errors.UnknownBrokerValue):
        parse_token_response(httpx.Response(200, text="<html>"), "x")


def test_token_credentials_keep_the_refresh_token_when_none_is_issued() -> None:
    previous = Credentials(access_token="old-access-token", refresh_token="the-refresh-token")
    response = TokenResponse("new-access-token", "Bearer", 900, None, None)
    merged = response.credentials(previous)
    assert merged["access_token"] == "new-access-token"
    assert merged["refresh_token"] == "the-refresh-token"
    now = datetime(2026, 11, 30, tzinfo=UTC)
    assert response.expires_at(now, None) == now + timedelta(seconds=900)
    no_expiry = TokenResponse("a-token-value", "Bearer", None, None, None)
    assert no_expiry.expires_at(now, None) is None
    assert no_expiry.expires_at(now, timedelta(hours=1)) == now + timedelta(hours=1)


def test_credentials_record_when_the_access_token_expires() -> None:
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    response = TokenResponse("new-access-token", "Bearer", 1800, "the-refresh-token", None)
    stored = response.credentials(expires_at=response.expires_at(at, None))
    assert access_token_expires_at(stored) == at + timedelta(seconds=1800)
    assert access_token_expires_at(response.credentials()) is None  # not known
    assert access_token_expires_at(Credentials(expires_at="not-a-timestamp")) is None
    naive = Credentials(expires_at="2026-11-30T12:30:00")
    assert access_token_expires_at(naive) == datetime(2026, 11, 30, 12, 30, tzinfo=UTC)


def test_dead_grant_errors_are_matched_by_code_and_description() -> None:
    spec = dataclasses.replace(
        EXAMPLE_OAUTH, dead_grant_errors=(("invalid_client", "Refresh Token Invalid"),)
    )
    assert spec.is_dead_grant("invalid_grant", None)
    assert spec.is_dead_grant("invalid_client", "refresh token invalid")
    assert spec.is_dead_grant("invalid_client", "400: REFRESH TOKEN INVALID (expired)")
    assert not spec.is_dead_grant("invalid_client", "Unauthorized")
    assert not spec.is_dead_grant("invalid_client", None)
    assert not spec.is_dead_grant("invalid_request", "refresh token invalid")
    assert not EXAMPLE_OAUTH.is_dead_grant("invalid_client", "refresh token invalid")


async def test_a_listed_dead_grant_answer_raises_invalid_grant() -> None:
    """The fake answers a bad client secret with invalid_client "client authentication
    failed": a spec that lists that answer as a dead grant turns it into InvalidGrant."""
    async with served() as s:
        wrong = {"example_client_secret": SecretStr("not-the-secret")}
        with pytest.raises(TokenEndpointError) as plain:
            await s.oauth(**wrong).refresh("anything")
        assert not isinstance(plain.value, InvalidGrant)
        listed = dataclasses.replace(
            EXAMPLE_OAUTH, dead_grant_errors=(("invalid_client", "authentication failed"),)
        )
        with pytest.raises(InvalidGrant) as dead:
            await s.oauth(listed, **wrong).refresh("anything")
        assert dead.value.description == "invalid_client: client authentication failed"


def test_bearer_headers() -> None:
    assert bearer_headers(Credentials(access_token="tok-123456"), broker="x") == {
        "Authorization": "Bearer tok-123456"
    }
    with pytest.raises(errors.AuthenticationFailed):
        bearer_headers(None, broker="x")
    with pytest.raises(errors.AuthenticationFailed):
        bearer_headers(Credentials(api_key="k-12345678"), broker="x")


def test_resolve_names_the_missing_setting() -> None:
    complete: dict[str, Any] = {
        "example_base_url": "https://broker.example",
        "example_client_id": "cid",
        "example_client_secret": SecretStr("the-client-secret-value"),
        "example_redirect_uri": CALLBACK,
    }
    config = EXAMPLE_OAUTH.resolve(ExampleSettings(**complete), "example")
    assert isinstance(config, OAuthConfig)
    assert config.token_url == "https://broker.example/oauth/token"
    assert "the-client-secret-value" not in repr(config)
    for missing, named in (
        ("example_client_id", "example_client_id"),
        ("example_client_secret", "example_client_secret"),
        ("example_redirect_uri", "example_redirect_uri"),
    ):
        values = complete | {missing: None}
        with pytest.raises(OAuthNotConfigured, match=named):
            EXAMPLE_OAUTH.resolve(ExampleSettings(**values), "example")
        assert not EXAMPLE_OAUTH.configured(ExampleSettings(**values), "example")
    # The redirect URI must be this broker's callback (one per broker).
    with pytest.raises(OAuthNotConfigured):
        EXAMPLE_OAUTH.resolve(ExampleSettings(**complete), "schwab")


@pytest.mark.parametrize(
    ("uri", "production", "ok"),
    [
        ("https://gw.example/v1/oauth/example/callback", True, True),
        ("https://gw.example/prefix/v1/oauth/example/callback", True, True),
        ("http://127.0.0.1:8182/v1/oauth/example/callback", True, True),
        ("http://localhost/v1/oauth/example/callback", True, True),
        ("http://gw.example/v1/oauth/example/callback", True, False),
        ("http://gw.example/v1/oauth/example/callback", False, True),
        ("https://gw.example/v1/oauth/other/callback", False, False),
        ("https://gw.example/v1/oauth/example/callback?x=1", False, False),
        ("https://gw.example/v1/oauth/example/callback#f", False, False),
        ("https://user@gw.example/v1/oauth/example/callback", False, False),
        ("ftp://gw.example/v1/oauth/example/callback", False, False),
        ("/v1/oauth/example/callback", False, False),
    ],
)
def test_redirect_uris(uri: str, production: bool, ok: bool) -> None:
    if ok:
        assert check_redirect_uri(uri, "example", production=production) == uri
    else:
        with pytest.raises(OAuthNotConfigured):
            check_redirect_uri(uri, "example", production=production)


async def test_a_separate_refresh_endpoint_is_used_for_refreshes() -> None:
    async with served() as s:
        spec = dataclasses.replace(
            EXAMPLE_OAUTH, refresh_url=lambda st: f"{st.example_base_url}/oauth/refreshtoken"
        )
        client = s.oauth(spec)
        verifier = new_code_verifier()
        token = await client.exchange_code(
            code=await s.code(client, verifier), redirect_uri=CALLBACK, code_verifier=verifier
        )
        assert token.refresh_token
        await client.refresh(token.refresh_token)
        assert [(r.grant_type, r.path) for r in s.fake.token_requests] == [
            ("authorization_code", "/oauth/token"),
            ("refresh_token", "/oauth/refreshtoken"),
        ]

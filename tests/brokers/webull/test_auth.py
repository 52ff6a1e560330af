"""Webull request signing (the SDK's composer) and the credential's shape."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx
import pytest

from app.brokers import errors
from app.brokers.webull import auth
from app.security.credentials import Credentials

CREDENTIALS = Credentials(app_key="k", app_secret="secret")
AT = 1767323045.0  # 2026-01-02T03:04:05Z


def pinned(credentials: Credentials = CREDENTIALS, **kwargs: bool) -> auth.RequestSigner:
    return auth.RequestSigner(credentials, clock=lambda: AT, nonce=lambda: "n1", **kwargs)


# Expected signatures computed by the official SDK's own composer (PyPI
# webull-openapi-python-sdk 3.0.4, ``default_signature_composer.calc_signature`` with its
# clock and nonce pinned to these values): the adapter must agree with Webull's client.
SDK_QUERY_SIGNATURE = "FNubuvlmWs4D0XCX9kxQ8Kzv3pprfgu3+IOwnH4y57Y="
SDK_BODY_SIGNATURE = "meAh+9uVnpPzXhh/UILm60dttbUeZ9WOcdlO8ELhdIo="


def test_a_query_is_signed_as_the_3x_sdk_signs_it() -> None:
    url = httpx.URL("https://api.webull.com/trading/assets/balances/get?account_id=A1")
    headers = pinned().headers("GET", url, b"")
    text = (
        "%2Ftrading%2Fassets%2Fbalances%2Fget%26account_id%3DA1%26host%3Dapi.webull.com"
        "%26x-app-key%3Dk%26x-signature-algorithm%3DHMAC-SHA256%26x-signature-nonce%3Dn1"
        "%26x-signature-version%3D1.0%26x-timestamp%3D2026-01-02T03%3A04%3A05Z"
    )
    expected = base64.b64encode(hmac.new(b"secret&", text.encode(), hashlib.sha256).digest())
    assert expected.decode() == SDK_QUERY_SIGNATURE
    assert headers == {
        "x-app-key": "k",
        "x-timestamp": "2026-01-02T03:04:05Z",
        "x-signature-version": "1.0",
        "x-signature-algorithm": "HMAC-SHA256",
        "x-signature-nonce": "n1",
        "x-signature": SDK_QUERY_SIGNATURE,
    }


def test_a_body_is_signed_by_its_sha256_and_the_host_keeps_its_port() -> None:
    body = b'{"token":"t"}'
    url = httpx.URL("http://127.0.0.1:8773/auth/tokens/check")
    headers = pinned().headers("POST", url, body)
    assert headers["x-signature"] == SDK_BODY_SIGNATURE


def test_the_access_token_header_is_sent_except_on_token_calls() -> None:
    stored = auth.with_token(CREDENTIALS, "tok", "NORMAL", "1765457400000")
    url = httpx.URL("https://api.webull.com/trading/accounts/list")
    assert pinned(stored).headers("GET", url, b"")["x-access-token"] == "tok"
    assert "x-access-token" not in pinned(stored, with_access_token=False).headers("GET", url, b"")
    assert auth.token_usable(stored)
    assert not auth.token_usable(auth.with_token(CREDENTIALS, "tok", "PENDING", "1"))


def test_every_request_gets_its_own_nonce() -> None:
    signer = auth.RequestSigner(CREDENTIALS)
    request = httpx.Request("GET", "https://api.webull.com/trading/accounts/list")
    assert signer(request)["x-signature-nonce"] != signer(request)["x-signature-nonce"]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"app_key": "k"}, "missing credentials: app_secret"),
        ({"app_key": "k", "app_secret": "s", "password": "hunter2"}, "unknown credentials"),
        ({"app_key": " k", "app_secret": "s"}, "app_key is not a valid"),
    ],
)
def test_credential_shape_errors_name_the_field_never_the_value(
    values: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        auth.check_credentials(values)
    assert "hunter2" not in str(caught.value)


def test_no_credentials_is_an_authentication_failure_and_reprs_hide_secrets() -> None:
    with pytest.raises(errors.AuthenticationFailed):
        auth.signer(None)
    assert "secret" not in repr(auth.signer(CREDENTIALS))

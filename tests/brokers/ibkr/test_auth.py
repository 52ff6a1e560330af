"""The IBKR gateway URL: its shape at connect time and the host allow-list (SSRF)."""

from __future__ import annotations

import pytest

from app.brokers import errors
from app.brokers.ibkr import auth
from app.security.credentials import Credentials

HOSTS = ["localhost", "127.0.0.1", "::1"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://localhost:5000/v1/api", "https://localhost:5000/v1/api"),
        ("https://LOCALHOST:5000/v1/api/", "https://localhost:5000/v1/api"),
        ("http://127.0.0.1:8774/v1/api", "http://127.0.0.1:8774/v1/api"),
        ("https://[::1]:5000/v1/api", "https://[::1]:5000/v1/api"),
    ],
)
def test_a_gateway_url_is_normalized(given: str, stored: str) -> None:
    assert auth.check_credentials({"base_url": given})["base_url"] == stored
    assert auth.normalize_base_url(given, HOSTS) == stored


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        ("ftp://localhost:5000/v1/api", "http or https"),
        ("https://user:pw@localhost:5000/v1/api", "no credentials"),
        ("https://localhost:5000/v1/api?x=1", "no credentials, query"),
        ("https://localhost:5000/v1/portal", "API path /v1/api"),
        ("https://localhost:99999/v1/api", "invalid port"),
        ("not a url", "http or https"),
    ],
)
def test_a_malformed_gateway_url_is_refused_naming_the_rule(given: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        auth.check_credentials({"base_url": given})


@pytest.mark.parametrize(
    "host",
    ["169.254.169.254", "internal.example", "10.0.0.5", "localhost.evil.example"],
)
def test_only_allow_listed_hosts_are_ever_called(host: str) -> None:
    url = f"https://{host}:5000/v1/api"
    credentials = auth.check_credentials({"base_url": url})  # the shape is fine
    with pytest.raises(errors.AuthenticationFailed, match="gateway hosts"):
        auth.base_url(credentials, HOSTS)
    with pytest.raises(errors.AuthenticationFailed):
        auth.base_url(credentials, [])


def test_missing_extra_and_absent_credentials() -> None:
    with pytest.raises(ValueError, match="missing credentials: base_url"):
        auth.check_credentials({})
    with pytest.raises(ValueError, match="unknown credentials: password"):
        auth.check_credentials({"base_url": "https://localhost:5000/v1/api", "password": "x"})
    with pytest.raises(errors.AuthenticationFailed):
        auth.base_url(None, HOSTS)
    with pytest.raises(errors.AuthenticationFailed):
        auth.base_url(Credentials(other="x"), HOSTS)


def test_the_bucket_key_does_not_hold_the_url() -> None:
    key = auth.bucket_key("https://localhost:5000/v1/api")
    assert "localhost" not in key
    assert key == auth.bucket_key("https://localhost:5000/v1/api")

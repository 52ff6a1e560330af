"""``app.security.oauth_state``: hashing, the return_to allow-list and the landing URL."""

from __future__ import annotations

import pytest

from app.security.oauth_state import (
    InvalidReturnTo,
    check_return_to,
    cookie_name,
    digest,
    landing_url,
    matches,
    new_browser_nonce,
)

ALLOW = ["https://app.example/settings/brokers", "https://admin.example", "http://localhost:5173/"]


@pytest.mark.parametrize(
    "value",
    [
        "https://app.example/settings/brokers",
        "https://app.example/settings/brokers/",
        "https://app.example/settings/brokers/schwab?tab=1#top",
        "https://APP.example/settings/brokers",
        "https://app.example:443/settings/brokers",
        "https://admin.example/anything/at/all",
        "https://admin.example",
        "http://localhost:5173/connect",
    ],
)
def test_allowed(value: str) -> None:
    assert check_return_to(value, ALLOW) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "https://app.example/settings",
        "https://app.example/settings/brokersx",
        "https://app.example/settings/brokers/../../x",
        "https://app.example/settings/brokers/./x",
        "https://app.example/settings/brokers/%2E%2E/x",
        "https://app.example/settings/brokers%2fx",
        "https://app.example\\@evil.example/settings/brokers",
        "https://app.example@evil.example/settings/brokers",
        "https://user:pw@app.example/settings/brokers",
        "https://app.example.evil.example/settings/brokers",
        "http://app.example/settings/brokers",
        "https://app.example:8443/settings/brokers",
        "https://app.example:notaport/settings/brokers",
        "//app.example/settings/brokers",
        "/settings/brokers",
        "javascript:alert(1)//https://app.example/settings/brokers",
        "https://app.example/settings/brokers\r\nSet-Cookie: x=1",
        "https://app.example/settings/brokers x",
        "https://app.example/" + "a" * 2000,
        "http://localhost:5174/connect",
    ],
)
def test_refused(value: str) -> None:
    with pytest.raises(InvalidReturnTo):
        check_return_to(value, ALLOW)


def test_an_empty_allow_list_refuses_everything() -> None:
    with pytest.raises(InvalidReturnTo):
        check_return_to("https://app.example/settings/brokers", [])


def test_landing_url_replaces_result_parameters_only() -> None:
    url = "https://app.example/settings/brokers?tab=live&error=old&connection_id=stale#frag"
    assert landing_url(url, connection_id="con_1") == (
        "https://app.example/settings/brokers?tab=live&connection_id=con_1#frag"
    )
    assert landing_url("https://app.example/x", error="state_used") == (
        "https://app.example/x?error=state_used"
    )


def test_hashes_and_nonces() -> None:
    nonce = new_browser_nonce()
    assert len(nonce) >= 43
    assert nonce != new_browser_nonce()
    assert len(digest(nonce)) == 64
    assert matches(nonce, digest(nonce))
    assert not matches(nonce + "x", digest(nonce))
    assert not matches(None, digest(nonce))
    assert not matches("", digest(""))
    assert cookie_name("schwab") == "bg_oauth_schwab"

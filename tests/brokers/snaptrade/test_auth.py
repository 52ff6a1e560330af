"""SnapTrade request signing and webhook verification, against the documented examples."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from app.brokers import errors
from app.brokers.snaptrade import auth
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.snaptrade.payloads import (
    SIGNING_BODY,
    SIGNING_CANONICAL,
    SIGNING_PATH,
    SIGNING_QUERY,
    WEBHOOK_CONNECTION_ADDED,
    WEBHOOK_HOLDINGS_UPDATED,
    WEBHOOK_USER_REGISTERED,
)

KEY = "YOUR_CONSUMER_KEY"


def hmac_b64(message: str, key: str = KEY) -> str:
    """Computed here from the docs' recipe, independently of the code under test."""
    return base64.b64encode(
        hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()
    ).decode()


def test_the_documented_canonical_string_is_what_is_signed() -> None:
    payload = {"content": SIGNING_BODY, "path": SIGNING_PATH, "query": SIGNING_QUERY}
    assert auth.canonical(payload) == SIGNING_CANONICAL
    signed = auth.signature(KEY, path=SIGNING_PATH, query=SIGNING_QUERY, content=SIGNING_BODY)
    assert signed == hmac_b64(SIGNING_CANONICAL)


def test_empty_bodies_sign_as_null() -> None:
    expected = hmac_b64('{"content":null,"path":"/accounts","query":"clientId=C&timestamp=1"}')
    for content in (None, {}):
        assert (
            auth.signature(KEY, path="/accounts", query="clientId=C&timestamp=1", content=content)
            == expected
        )


def test_signed_requests_append_client_and_time_and_sign_what_is_sent() -> None:
    key = auth.PartnerKey("YOUR_CLIENT_ID", KEY)
    flow = auth.SignedRequests(key, clock=lambda: 1715123456.9)
    request = httpx.Request(
        "POST",
        "https://api.snaptrade.com/api/v1/symbols",
        params={"userId": "u 1", "userSecret": "s&2"},
        json=SIGNING_BODY,
    )
    signed = next(flow.auth_flow(request))
    query = "userId=u+1&userSecret=s%262&clientId=YOUR_CLIENT_ID&timestamp=1715123456"
    assert signed.url.query.decode() == query
    assert signed.url.path == "/api/v1/symbols"
    canonical = json.dumps(
        {"content": SIGNING_BODY, "path": "/api/v1/symbols", "query": query},
        separators=(",", ":"),
        sort_keys=True,
    )
    assert signed.headers["Signature"] == hmac_b64(canonical)
    bare = next(flow.auth_flow(httpx.Request("GET", "https://api.snaptrade.com/accounts")))
    assert bare.url.query.decode() == "clientId=YOUR_CLIENT_ID&timestamp=1715123456"
    assert bare.headers["Signature"] == hmac_b64(
        '{"content":null,"path":"/accounts","query":"clientId=YOUR_CLIENT_ID&timestamp=1715123456"}'
    )


def test_the_partner_key_never_shows() -> None:
    key = auth.PartnerKey("CLIENT", "super-secret-consumer-key")
    assert "super-secret" not in repr(key)
    assert "super-secret" not in repr(auth.SignedRequests(key))


def test_credentials_shape() -> None:
    made = auth.check_credentials({"user_id": "bgw-con_1", "user_secret": "s3cret"})
    assert auth.user_params(made) == {"userId": "bgw-con_1", "userSecret": "s3cret"}
    for bad in ({"user_id": "x"}, {"user_id": "x", "user_secret": "y", "extra": "z"}):
        with pytest.raises(ValueError, match="credentials"):
            auth.check_credentials(bad)
    with pytest.raises(ValueError, match="user_secret"):
        auth.check_credentials({"user_id": "x", "user_secret": " padded "})
    with pytest.raises(errors.AuthenticationFailed):
        auth.user_params(None)
    with pytest.raises(errors.AuthenticationFailed):
        auth.user_params(Credentials(other="x"))


def settings(client_id: str) -> Settings:
    return Settings(snaptrade_client_id=client_id, snaptrade_consumer_key=SecretStr(KEY))


def signed(payload: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    """As SnapTrade sends it: any JSON spelling; the signature is over the canonical form."""
    body = json.dumps(payload, indent=2).encode()
    return body, {"Signature": hmac_b64(json.dumps(payload, separators=(",", ":"), sort_keys=True))}


def at(payload: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(payload["eventTimestamp"])) + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("payload", "refresh", "link", "account"),
    [
        (WEBHOOK_CONNECTION_ADDED, True, "a0231bd2-9b77-4732-ba78-f9c6af6a1a62", None),
        (
            WEBHOOK_HOLDINGS_UPDATED,
            True,
            "6bb1ahb0-b8c8-4b59-8bf9-7841d7a89c63",
            "45a3g56a-eef6-4904-a68e-d3f90c3e07c5",
        ),
        (WEBHOOK_USER_REGISTERED, False, None, None),
    ],
)
def test_documented_webhooks_verify(
    payload: dict[str, object], refresh: bool, link: str | None, account: str | None
) -> None:
    body, headers = signed(payload)
    event = auth.verify_webhook(settings(str(payload["clientId"])), body, headers, at(payload))
    assert (event.event_type, event.user_ref, event.event_id) == (
        payload["eventType"],
        payload["userId"],
        payload["webhookId"],
    )
    assert (event.refresh, event.link_id, event.account_ref) == (refresh, link, account)
    assert event.occurred_at == datetime.fromisoformat(str(payload["eventTimestamp"])).astimezone(
        UTC
    )


def test_bad_webhooks_are_refused() -> None:
    payload = WEBHOOK_CONNECTION_ADDED
    config = settings(str(payload["clientId"]))
    body, headers = signed(payload)
    when = at(payload)
    cases = [
        (body, {}),  # no signature
        (body, {"Signature": hmac_b64("something else")}),
        (body, {"Signature": hmac_b64(auth.canonical(payload), key="another-key")}),
        (body.replace(b"CONNECTION_ADDED", b"CONNECTION_DELETED"), headers),  # tampered
        (b"not json", headers),
        (b"[1, 2]", {"Signature": hmac_b64("[1,2]")}),
    ]
    for raw, sent in cases:
        with pytest.raises(errors.WebhookRejected):
            auth.verify_webhook(config, raw, sent, when)
    with pytest.raises(errors.WebhookRejected, match="too old"):
        auth.verify_webhook(config, body, headers, when + timedelta(minutes=10))
    with pytest.raises(errors.WebhookRejected, match="another"):
        auth.verify_webhook(settings("SOMEONE-ELSE"), body, headers, when)
    stale = {**payload, "eventTimestamp": "not a time"}
    with pytest.raises(errors.WebhookRejected, match="eventTimestamp"):
        auth.verify_webhook(config, *signed(stale), when)

"""``POST /v1/webhooks/snaptrade``: signed webhooks refresh a connection; anything that does
not verify is refused with 401, logged, and not acted on."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.brokers.snaptrade.gateway import Gateway, gateway
from tests.conftest import new_user
from tests.harness import running_app, settings_for_tests


async def _pending(gw: Gateway) -> tuple[str, str, str]:
    """A connection whose brokerage was linked at SnapTrade without a webhook yet:
    (our user, connection id, SnapTrade user id)."""
    user = new_user()
    created = await gw.connect(user)
    snap_user = gw.user_of(created["id"])
    gw.fake.link(snap_user, "SCHWAB")
    return user, created["id"], snap_user.user_id


async def _status(gw: Gateway, user: str, connection_id: str) -> str:
    h = gw.harness
    got = await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))
    return str(got.json()["status"])


async def test_a_signed_webhook_refreshes_its_connection(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user, connection_id, snap_user = await _pending(gw)
        assert await _status(gw, user, connection_id) == "broken"
        answer = await gw.fake.send_webhook("CONNECTION_ADDED", snap_user)
        assert (answer.status_code, answer.content) == (204, b"")
        assert await _status(gw, user, connection_id) == "active"


@pytest.mark.parametrize(
    "event", ["USER_REGISTERED", "CONNECTION_ATTEMPTED", "ACCOUNT_TRANSACTIONS_UPDATED", "NEW_TYPE"]
)
async def test_events_that_change_nothing_are_acknowledged_only(db_url: str, event: str) -> None:
    async with gateway(db_url) as gw:
        user, connection_id, snap_user = await _pending(gw)
        seen = len(gw.fake.requests)
        answer = await gw.fake.send_webhook(event, snap_user)
        assert answer.status_code == 204
        assert len(gw.fake.requests) == seen  # SnapTrade was not asked anything
        assert await _status(gw, user, connection_id) == "broken"


async def test_webhooks_for_users_that_are_not_ours_are_acknowledged(db_url: str) -> None:
    async with gateway(db_url) as gw:
        seen = len(gw.fake.requests)
        for stranger in ("someone-else", "bgw-con_doesnotexist"):
            answer = await gw.fake.send_webhook("CONNECTION_ADDED", stranger)
            assert answer.status_code == 204
        assert len(gw.fake.requests) == seen


async def test_a_bad_signature_is_refused_logged_and_not_processed(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway(db_url) as gw:
        user, connection_id, snap_user = await _pending(gw)
        seen = len(gw.fake.requests)
        payload = gw.fake.webhook_payload("CONNECTION_ADDED", snap_user)
        good = gw.fake.webhook_signature(payload)
        tampered = {**payload, "userId": snap_user + "x"}
        stale = gw.fake.webhook_payload("CONNECTION_ADDED", snap_user)
        stale["eventTimestamp"] = (datetime.now(UTC) - timedelta(minutes=6)).isoformat()
        cases = [
            {"signature": "bm90IGEgc2lnbmF0dXJl", "payload": payload},
            {"signature": good, "payload": tampered},
            {"signature": gw.fake.webhook_signature(stale), "payload": stale},
            {"signature": "", "payload": payload},
        ]
        for case in cases:
            answer = await gw.fake.send_webhook("CONNECTION_ADDED", snap_user, **case)
            assert answer.status_code == 401, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "invalid_webhook_signature"
        assert caplog.text.count("webhook refused") == len(cases)
        assert len(gw.fake.requests) == seen  # nothing processed
        assert await _status(gw, user, connection_id) == "broken"
        assert gw.fake.consumer_key not in caplog.text


async def test_a_webhook_that_is_not_json_is_refused(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h = gw.harness
        answer = await h.client.post(
            "/v1/webhooks/snaptrade", content=b"<xml/>", headers={"Signature": "x"}
        )
        assert (answer.status_code, answer.json()["code"]) == (401, "invalid_webhook_signature")
        missing = await h.client.post("/v1/webhooks/snaptrade", content=json.dumps({}).encode())
        assert missing.status_code == 401


async def test_no_snaptrade_no_webhooks(db_url: str) -> None:
    async with running_app(settings_for_tests(db_url)) as h:
        answer = await h.client.post(
            "/v1/webhooks/snaptrade", content=b"{}", headers={"Signature": "x"}
        )
        assert (answer.status_code, answer.json()["code"]) == (404, "not_found")


async def test_the_webhook_route_needs_no_bearer_token_but_nothing_else_changed(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        assert gw.fake.webhook_url is not None
        async with httpx.AsyncClient() as raw:
            answer = await raw.post(gw.fake.webhook_url, content=b"{}")
        assert answer.status_code == 401  # the signature, not a bearer token, is what is missing
        assert answer.json()["code"] == "invalid_webhook_signature"
        h = gw.harness
        assert (await h.client.get("/v1/connections")).status_code == 401

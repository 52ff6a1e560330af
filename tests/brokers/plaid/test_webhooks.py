"""Plaid webhooks: ES256 JWT verification (unit) and POST /v1/webhooks/plaid end to end.

Signatures are real: the fake signs with its own P-256 key and serves the public key from
``/webhook_verification_key/get``, as Plaid does."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from app.brokers.plaid import auth
from app.db.models import Connection, PortfolioSnapshot
from tests.brokers.plaid.support import Gateway, gateway
from tests.conftest import new_user
from tests.fakes.plaid import FakePlaid

BODY = b'{"webhook_type": "HOLDINGS", "webhook_code": "DEFAULT_UPDATE", "item_id": "x"}'


def test_a_good_signature_verifies() -> None:
    fake = FakePlaid()
    token = fake.sign(BODY)
    assert auth.webhook_key_id(token) == fake.kid
    auth.verify_webhook(token, BODY, fake.jwk, now=time.time(), max_age=300)


@pytest.mark.parametrize(
    "case",
    ["tampered body", "other key", "too old", "expired key", "no body hash", "HS256", "none"],
)
def test_bad_signatures_are_refused(case: str) -> None:
    fake = FakePlaid()
    body, key, now = BODY, fake.jwk, time.time()
    token = fake.sign(BODY)
    if case == "tampered body":
        body = BODY.replace(b"HOLDINGS", b"ITEM")
    elif case == "other key":
        token = fake.sign(BODY, key=ec.generate_private_key(ec.SECP256R1()))
    elif case == "too old":
        token = fake.sign(BODY, issued_at=datetime.now(UTC) - timedelta(minutes=6))
    elif case == "expired key":
        key = {**key, "expired_at": 1700000000}
    elif case == "no body hash":
        token = jwt.encode(
            {"iat": int(now)}, fake._signing, algorithm="ES256", headers={"kid": fake.kid}
        )
    elif case == "HS256":
        token = jwt.encode(
            {"iat": int(now), "request_body_sha256": hashlib.sha256(BODY).hexdigest()},
            "a-shared-secret-that-is-long-enough-for-hs256",
            algorithm="HS256",
            headers={"kid": fake.kid},
        )
    elif case == "none":
        token = ""
    with pytest.raises(auth.WebhookRejected):
        _verify(token, body, key, now)


def _verify(token: str, body: bytes, key: dict[str, object], now: float) -> None:
    """What the service does: the header's algorithm and kid, then the signature."""
    auth.webhook_key_id(token)
    auth.verify_webhook(token, body, key, now=now, max_age=300)


async def _snapshots(gw: Gateway, account_id: str) -> list[PortfolioSnapshot]:
    async with gw.harness.state.ctx.sessionmaker() as session:
        return list(
            (
                await session.execute(
                    select(PortfolioSnapshot).where(PortfolioSnapshot.account_id == account_id)
                )
            )
            .scalars()
            .all()
        )


async def _connection(gw: Gateway, connection_id: str) -> Connection:
    async with gw.harness.state.ctx.sessionmaker() as session:
        return (
            await session.execute(select(Connection).where(Connection.id == connection_id))
        ).scalar_one()


@pytest.mark.parametrize("kind", ["HOLDINGS", "INVESTMENTS_TRANSACTIONS"])
async def test_a_default_update_refreshes_the_linked_accounts(db_url: str, kind: str) -> None:
    async with gateway(db_url, cash="500") as gw:
        user = new_user()
        connection = await gw.link(user)
        [account_id] = connection["accounts"]
        item = gw.fake.item_of(gw.plaid.login)
        assert await _snapshots(gw, account_id) == []
        gw.fake.hold(gw.plaid.account, "AAPL", "3", "190", cost_basis="450")
        before = len(gw.fake.requests)
        response = await gw.fake.send_webhook(item, kind, "DEFAULT_UPDATE")
        assert response.status_code == 200, response.text
        assert response.json() == {"outcome": "refreshed"}
        paths = [p for _, p in gw.fake.requests[before:]]
        assert "/webhook_verification_key/get" in paths
        assert "/investments/holdings/get" in paths
        [snapshot] = await _snapshots(gw, account_id)
        assert [(p["symbol"], p["quantity"]) for p in snapshot.positions] == [("AAPL", "3")]
        refreshed = await _connection(gw, connection["id"])
        assert refreshed.last_refresh_outcome == f"{kind} DEFAULT_UPDATE: 1 read, 0 failed"
        # The key is cached: a second webhook does not fetch it again.
        before = len(gw.fake.requests)
        await gw.fake.send_webhook(item, kind, "DEFAULT_UPDATE")
        assert "/webhook_verification_key/get" not in [p for _, p in gw.fake.requests[before:]]


async def test_plaids_sandbox_fire_webhook_path_reaches_the_gateway(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        item = gw.fake.item_of(gw.plaid.login)
        async with httpx.AsyncClient(base_url=gw.plaid.url) as client:
            fired = await client.post(
                "/sandbox/item/fire_webhook",
                json={
                    "client_id": gw.fake.client_id,
                    "secret": gw.fake.secret,
                    "access_token": item.access_token,
                    "webhook_type": "HOLDINGS",
                    "webhook_code": "DEFAULT_UPDATE",
                },
            )
        assert fired.json()["webhook_fired"] is True
        assert gw.fake.webhook_answers == [200]
        assert len(await _snapshots(gw, connection["accounts"][0])) == 1


@pytest.mark.parametrize("case", ["tampered", "foreign key", "stale", "missing", "unknown kid"])
async def test_a_bad_signature_is_401_logged_and_nothing_is_done(
    db_url: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        [account_id] = connection["accounts"]
        item = gw.fake.item_of(gw.plaid.login)
        assert item.webhook is not None
        body = gw.fake.webhook_body(item, "HOLDINGS", "DEFAULT_UPDATE")
        headers = {"Content-Type": "application/json"}
        signed = gw.fake.sign(body)
        if case == "tampered":
            headers["Plaid-Verification"] = signed
            body = body.replace(b"DEFAULT_UPDATE", b"DEFAULT_UPDATE ")
        elif case == "foreign key":
            headers["Plaid-Verification"] = gw.fake.sign(
                body, key=ec.generate_private_key(ec.SECP256R1())
            )
        elif case == "stale":
            headers["Plaid-Verification"] = gw.fake.sign(
                body, issued_at=datetime.now(UTC) - timedelta(minutes=10)
            )
        elif case == "unknown kid":
            headers["Plaid-Verification"] = gw.fake.sign(body, kid="not-a-plaid-key")
        before = list(gw.fake.requests)
        caplog.set_level(logging.WARNING, logger="app.services.plaid")
        response = await gw.harness.client.post(item.webhook, content=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "invalid_webhook_signature"
        assert "refused a Plaid webhook" in caplog.text
        # Nothing was processed: no read of the Item, no snapshot, connection unchanged.
        data_paths = {p for _, p in gw.fake.requests[len(before) :]}
        assert data_paths <= {"/webhook_verification_key/get"}
        assert await _snapshots(gw, account_id) == []
        unchanged = await _connection(gw, connection["id"])
        assert (unchanged.status, unchanged.last_refresh_outcome) == ("active", None)


async def test_an_item_error_webhook_breaks_the_connection(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        item = gw.fake.item_of(gw.plaid.login)
        response = await gw.fake.send_webhook(item, "ITEM", "ERROR")
        assert response.json() == {"outcome": "connection_broken"}
        assert (await _connection(gw, connection["id"])).status == "broken"


async def test_a_refresh_that_meets_item_login_required_breaks_the_connection(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        item = gw.fake.item_of(gw.plaid.login)
        gw.fake.require_login(item)
        response = await gw.fake.send_webhook(item, "HOLDINGS", "DEFAULT_UPDATE")
        assert response.json() == {"outcome": "connection_broken"}
        assert (await _connection(gw, connection["id"])).status == "broken"


async def test_other_webhooks_and_other_items_are_acknowledged_and_ignored(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        await gw.link(user)
        item = gw.fake.item_of(gw.plaid.login)
        ignored = await gw.fake.send_webhook(item, "ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED")
        assert ignored.json() == {"outcome": "ignored"}
        stranger = gw.fake.create_item(gw.fake.add_login(), webhook=item.webhook)
        unknown = await gw.fake.send_webhook(stranger, "HOLDINGS", "DEFAULT_UPDATE")
        assert unknown.json() == {"outcome": "unknown_item"}


async def test_a_verified_body_that_is_not_a_webhook_is_400(db_url: str) -> None:
    async with gateway(db_url) as gw:
        body = json.dumps({"hello": "world"}).encode()
        response = await gw.harness.client.post(
            "/v1/webhooks/plaid?user=someone",
            content=body,
            headers={"Plaid-Verification": gw.fake.sign(body)},
        )
        assert response.status_code == 400
        assert response.json()["code"] == "bad_request"


async def test_plaid_unreachable_for_the_key_is_503_so_plaid_retries(db_url: str) -> None:
    async with gateway(db_url) as gw:
        body = gw.fake.webhook_body(gw.fake.create_item(gw.plaid.login), "HOLDINGS", "X")
        gw.fake.faults.server_errors = 3
        response = await gw.harness.client.post(
            "/v1/webhooks/plaid",
            content=body,
            headers={"Plaid-Verification": gw.fake.sign(body)},
        )
        assert response.status_code == 503
        assert response.json()["code"] == "broker_unavailable"

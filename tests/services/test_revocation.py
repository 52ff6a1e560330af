"""Disconnecting a live connection, against the fake Alpaca, on both backends.

``DELETE /v1/connections/{id}`` cancels working orders, revokes the token here (final),
stops the connection's upstream streams, calls the broker's revoke where there is one and
records what it said; the accounts stop taking orders; reconnecting makes a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.brokers import errors as broker_errors
from app.brokers.alpaca import alpaca_spec
from app.brokers.alpaca.adapter import AlpacaAdapter
from app.brokers.base import BrokerAdapter, RevokeOutcome, revoke_credential
from app.brokers.registry import AdapterContext, BrokerRegistry, default_registry
from app.security.credentials import Credentials
from app.security.vault import CredentialRevoked
from tests.brokers.alpaca.support import running_fake
from tests.brokers.alpaca.test_api import Gateway, gateway
from tests.conftest import new_user
from tests.harness import running_app, settings_for_tests


async def test_disconnect_revokes_stops_streams_and_the_old_token_stays_revoked(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        connection_id = connection["id"]
        [account_id] = connection["accounts"]
        working = await h.place(
            user, account_id, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        assert working.status_code == 201, working.text

        streams = h.state.upstream
        await streams.sync()
        assert account_id in streams.running
        for _ in range(200):  # the stream is listening at the fake
            if gw.alpaca.account.streams:
                break
            await asyncio.sleep(0.02)
        assert gw.alpaca.account.streams

        deleted = await h.client.delete(f"/v1/connections/{connection_id}", headers=h.auth(user))
        assert deleted.status_code == 204
        assert account_id not in streams.running, "stopped at once, not at the next sync"
        order = await h.client.get(f"/v1/orders/{working.json()['id']}", headers=h.auth(user))
        assert order.json()["status"] in ("canceled", "pending_cancel")

        body = (await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))).json()
        assert body["status"] == "revoked"
        assert "Alpaca has no revoke call" in body["last_refresh_outcome"]
        account = (await h.client.get(f"/v1/accounts/{account_id}", headers=h.auth(user))).json()
        assert account["can_trade"] is False
        refused = await h.place(user, account_id)
        assert refused.status_code == 409
        assert refused.json()["code"] == "connection_broken"
        vault = h.state.ctx.vault
        async with h.state.ctx.sessionmaker() as session:
            for read in (vault.credentials_for_read, vault.credentials_for_order):
                with pytest.raises(CredentialRevoked):
                    await read(session, user_id=user, connection_id=connection_id)
        again = await h.client.delete(f"/v1/connections/{connection_id}", headers=h.auth(user))
        assert again.status_code == 204, "disconnecting twice is harmless"

        reconnected = await gw.connect(user)
        assert reconnected["id"] != connection_id, "reconnecting makes a new connection"
        assert reconnected["status"] == "active"
        async with h.state.ctx.sessionmaker() as session:
            with pytest.raises(CredentialRevoked):
                await vault.credentials_for_read(session, user_id=user, connection_id=connection_id)
            with pytest.raises(CredentialRevoked):  # nothing revives the old connection
                await vault.store(
                    session,
                    user_id=user,
                    connection_id=connection_id,
                    broker_slug="alpaca",
                    broker_tier="tier_a",
                    credentials=gw.alpaca.credentials(),
                )
            assert await vault.credentials_for_order(
                session, user_id=user, connection_id=reconnected["id"]
            )
        old = (await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))).json()
        assert old["status"] == "revoked"


async def test_an_alpaca_adapter_has_no_revoke_so_revocation_is_local(db_url: str) -> None:
    async with running_fake() as alpaca:
        adapter = alpaca.adapter()
        assert await revoke_credential(adapter) is RevokeOutcome.unsupported
        assert not [r for r in alpaca.fake.requests if "revoke" in r[1]]


class RevokingAlpaca(AlpacaAdapter):
    """Alpaca plus a revoke call: a stand-in for a broker with token revocation (RFC 7009),
    none of which is in this repository yet. ``mode`` says what the broker answers."""

    mode = "ok"
    calls: list[str] = []

    async def revoke(self) -> RevokeOutcome:
        RevokingAlpaca.calls.append(self.mode)
        if self.mode == "unavailable":
            raise broker_errors.Transient("revocation endpoint answered 503", broker="alpaca")
        if self.mode == "crash":
            raise RuntimeError("connection reset while revoking")
        return RevokeOutcome.revoked


def _revoking_factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    return RevokingAlpaca(ctx.settings, credentials, ctx.http)


@contextlib.asynccontextmanager
async def revoking_gateway(db_url: str) -> AsyncIterator[Gateway]:
    registry: BrokerRegistry = default_registry()
    registry.register(dataclasses.replace(alpaca_spec(), factory=_revoking_factory))
    async with running_fake() as alpaca:
        settings = settings_for_tests(
            db_url, alpaca_trading_url=alpaca.url, alpaca_data_url=alpaca.url
        )
        async with running_app(settings, registry=registry) as harness:
            yield Gateway(harness=harness, alpaca=alpaca)


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [
        ("ok", "revoked here and at Alpaca"),
        ("unavailable", "revoked here; Alpaca's revoke call failed: revocation endpoint"),
        ("crash", "revoked here; Alpaca's revoke call failed: error"),
    ],
)
async def test_the_broker_revoke_is_called_and_a_failure_still_revokes_here(
    db_url: str, mode: str, outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with revoking_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection: dict[str, Any] = await gw.connect(user)
        RevokingAlpaca.mode = mode
        RevokingAlpaca.calls.clear()
        deleted = await h.client.delete(f"/v1/connections/{connection['id']}", headers=h.auth(user))
        assert deleted.status_code == 204
        assert RevokingAlpaca.calls == [mode]
        body = (
            await h.client.get(f"/v1/connections/{connection['id']}", headers=h.auth(user))
        ).json()
        assert body["status"] == "revoked"
        assert body["last_refresh_outcome"].startswith(outcome)
        async with h.state.ctx.sessionmaker() as session:
            with pytest.raises(CredentialRevoked):
                await h.state.ctx.vault.credentials_for_order(
                    session, user_id=user, connection_id=connection["id"]
                )
        if mode != "ok":
            assert "the broker's revoke call failed" in caplog.text
        assert gw.alpaca.account.secret not in caplog.text

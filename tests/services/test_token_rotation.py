"""The Tier A rotation policy against the fake Alpaca, on both backends.

A key past ``rotate_after`` is flagged ``rotation_due`` once (with one
``connection.rotation_due`` event); a fresh key through ``PUT .../credentials`` clears it. A
broker that can re-issue (``can_reissue``) gets a re-issue instead of a flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from app.brokers.alpaca import alpaca_spec
from app.brokers.registry import BrokerRegistry, default_registry
from app.db.leases import LocalLeases
from app.db.models import BrokerToken, Connection
from app.db.repositories.orders import OrderEventRepository
from app.security.credentials import Credentials
from app.services.clock import utcnow
from app.services.token_rotation import EVENT_TYPE, TokenRotationSweep
from tests.brokers.alpaca.support import running_fake
from tests.brokers.alpaca.test_api import Gateway, gateway
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests


async def _age(h: Harness, connection_id: str) -> None:
    """Move the active token's rotation date into the past (91 days after its creation)."""
    async with h.state.ctx.sessionmaker() as session:
        await session.execute(
            update(BrokerToken)
            .where(BrokerToken.connection_id == connection_id, BrokerToken.revoked_at.is_(None))
            .values(rotate_after=utcnow() - timedelta(days=1))
        )
        await session.commit()


async def _events(h: Harness, user: str) -> list[Any]:
    async with h.state.ctx.sessionmaker() as session:
        return list(await OrderEventRepository.for_user(session, user).list_after(0, limit=500))


async def _connection(h: Harness, user: str, connection_id: str) -> dict[str, Any]:
    got = await h.client.get(f"/v1/connections/{connection_id}", headers=h.auth(user))
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def _put_key(h: Harness, user: str, connection_id: str, key: str, secret: str) -> Any:
    return await h.client.put(
        f"/v1/connections/{connection_id}/credentials",
        json={"credentials": {"api_key_id": key, "api_secret_key": secret}},
        headers=h.auth(user),
    )


async def test_a_key_past_its_rotation_date_is_flagged_once_and_a_fresh_key_clears_it(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        created = await gw.connect(user)
        connection_id = created["id"]
        assert (created["rotation_due"], created["rotation_due_at"]) == (False, None)
        sweep = TokenRotationSweep(h.state.ctx, leases=LocalLeases())

        await sweep.run_once()  # 90 days to go: nothing to do
        assert (await _connection(h, user, connection_id))["rotation_due"] is False

        await _age(h, connection_id)
        result = await sweep.run_once()
        assert result is not None
        assert result.flagged >= 1
        flagged = await _connection(h, user, connection_id)
        assert flagged["rotation_due"] is True
        assert flagged["rotation_due_at"] is not None
        assert flagged["status"] == "active", "a due rotation asks the user; it stops nothing"
        await sweep.run_once()
        await sweep.run_once()
        due = [e for e in await _events(h, user) if e.type == EVENT_TYPE]
        assert len(due) == 1, "the event is appended once"
        assert due[0].connection_id == connection_id
        assert due[0].payload["rotation_due"] is True
        assert due[0].payload["connection_id"] == connection_id
        page = await h.client.get("/v1/events", headers=h.auth(user))
        assert EVENT_TYPE in [e["type"] for e in page.json()["items"]]

        [account_id] = flagged["accounts"]
        placed = await h.place(user, account_id)
        assert placed.status_code == 201, "orders still go through while rotation is due"

        # The same key again is no rotation.
        account = gw.alpaca.account
        same = await _put_key(h, user, connection_id, account.key_id, account.secret)
        assert same.status_code == 422
        assert same.json()["code"] == "invalid_credentials"
        assert "already stored" in same.json()["detail"]
        # A key of another Alpaca account is a new connection, not a rotation.
        other = gw.alpaca.fake.add_account()
        foreign = await _put_key(h, user, connection_id, other.key_id, other.secret)
        assert foreign.status_code == 422
        assert "another Alpaca account" in foreign.json()["detail"]
        # A refused key: 422, nothing changes.
        refused = await _put_key(h, user, connection_id, "PKNOTAKEY0000000000", "nope")
        assert refused.status_code == 422
        assert (await _connection(h, user, connection_id))["rotation_due"] is True

        old_key = account.key_id
        fresh = gw.alpaca.fake.regenerate_key(old_key)  # the user regenerates at Alpaca
        replaced = await _put_key(h, user, connection_id, fresh.key_id, fresh.secret)
        assert replaced.status_code == 200, replaced.text
        body = replaced.json()
        assert (body["id"], body["accounts"]) == (connection_id, [account_id])
        assert (body["rotation_due"], body["rotation_due_at"]) == (False, None)
        assert fresh.secret not in replaced.text
        async with h.state.ctx.sessionmaker() as session:
            tokens = (
                (
                    await session.execute(
                        select(BrokerToken)
                        .where(BrokerToken.connection_id == connection_id)
                        .order_by(BrokerToken.created_at)
                    )
                )
                .scalars()
                .all()
            )
            credentials = await h.state.ctx.vault.credentials_for_order(
                session, user_id=user, connection_id=connection_id
            )
        assert [t.revoked_at is None for t in tokens] == [False, True]
        new_token = tokens[-1]
        assert new_token.rotate_after is not None
        assert new_token.rotate_after - new_token.created_at == timedelta(days=90)
        assert credentials == Credentials(api_key_id=fresh.key_id, api_secret_key=fresh.secret)
        balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
        assert balances.status_code == 200, "the connection works with the new key"

        await sweep.run_once()
        assert (await _connection(h, user, connection_id))["rotation_due"] is False
        assert len([e for e in await _events(h, user) if e.type == EVENT_TYPE]) == 1


async def test_a_revoked_or_foreign_connection_takes_no_new_key(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id = (await gw.connect(user))["id"]
        account = gw.alpaca.account
        intruder = await _put_key(h, new_user("intruder"), connection_id, "PKX", "y")
        assert intruder.status_code == 404
        deleted = await h.client.delete(f"/v1/connections/{connection_id}", headers=h.auth(user))
        assert deleted.status_code == 204
        again = await _put_key(h, user, connection_id, account.key_id, account.secret)
        assert again.status_code == 409
        assert again.json()["code"] == "connection_broken"
        paper_id, _ = await h.paper_account(user)
        paper = await _put_key(h, user, paper_id, account.key_id, account.secret)
        assert paper.status_code == 422
        assert paper.json()["code"] == "validation_error"
        assert "paper connection holds no credential" in paper.json()["detail"]


class FreshKeyFromTheBroker:
    """Re-issues like an OAuth refresh would: a new credential from the broker, stored
    through the vault. Stands in for the OAuth helper's refresh flow (not built yet)."""

    def __init__(self, h: Harness, gw_alpaca: Any, *, fail: bool = False) -> None:
        self._h = h
        self._alpaca = gw_alpaca
        self._fail = fail
        self.calls: list[str] = []

    async def reissue(self, *, user_id: str, connection_id: str) -> None:
        self.calls.append(connection_id)
        if self._fail:
            raise RuntimeError("the broker refused to re-issue")
        fresh = self._alpaca.fake.regenerate_key(self._alpaca.account.key_id)
        async with self._h.state.ctx.sessionmaker() as session:
            await self._h.state.ctx.vault.store(
                session,
                user_id=user_id,
                connection_id=connection_id,
                broker_slug="alpaca",
                broker_tier="tier_a",
                credentials=Credentials(api_key_id=fresh.key_id, api_secret_key=fresh.secret),
            )
            await session.commit()


@contextlib.asynccontextmanager
async def reissuing_gateway(db_url: str) -> AsyncIterator[Gateway]:
    registry: BrokerRegistry = default_registry()
    registry.register(dataclasses.replace(alpaca_spec(), can_reissue=True))
    async with running_fake() as alpaca:
        settings = settings_for_tests(
            db_url, alpaca_trading_url=alpaca.url, alpaca_data_url=alpaca.url
        )
        async with running_app(settings, registry=registry) as harness:
            yield Gateway(harness=harness, alpaca=alpaca)


async def test_a_broker_that_can_reissue_is_reissued_not_flagged(db_url: str) -> None:
    async with reissuing_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id = (await gw.connect(user))["id"]
        await _age(h, connection_id)

        without = TokenRotationSweep(h.state.ctx, leases=LocalLeases())
        failing = FreshKeyFromTheBroker(h, gw.alpaca, fail=True)
        working = FreshKeyFromTheBroker(h, gw.alpaca)

        result = await TokenRotationSweep(
            h.state.ctx, leases=LocalLeases(), reissuer=working
        ).run_once()
        assert result is not None
        assert connection_id in working.calls
        assert result.reissued >= 1
        assert (await _connection(h, user, connection_id))["rotation_due"] is False
        assert not [e for e in await _events(h, user) if e.type == EVENT_TYPE]
        async with h.state.ctx.sessionmaker() as session:
            active = await h.state.ctx.vault.active_token(
                session, user_id=user, connection_id=connection_id
            )
        assert active is not None
        assert active[1] is not None
        assert active[1] > utcnow() + timedelta(days=89)

        await _age(h, connection_id)
        result = await TokenRotationSweep(
            h.state.ctx, leases=LocalLeases(), reissuer=failing
        ).run_once()
        assert result is not None
        assert result.reissue_failed >= 1
        assert (await _connection(h, user, connection_id))["rotation_due"] is True
        assert len([e for e in await _events(h, user) if e.type == EVENT_TYPE]) == 1
        # With no re-issuer plugged in, a can_reissue broker is flagged like any other.
        assert (await without.run_once()) is not None


async def test_a_fresh_key_repairs_a_broken_connection(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection_id = (await gw.connect(user))["id"]
        gw.alpaca.fake.revoke(gw.alpaca.account.key_id)  # the user deleted the key at Alpaca
        async with h.state.ctx.sessionmaker() as session:
            await session.execute(
                update(Connection).where(Connection.id == connection_id).values(status="broken")
            )
            await session.commit()
        gw.alpaca.account.revoked = False
        fresh = gw.alpaca.fake.regenerate_key(gw.alpaca.account.key_id)
        replaced = await _put_key(h, user, connection_id, fresh.key_id, fresh.secret)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["status"] == "active"
        events = [e.type for e in await _events(h, user)]
        assert events[-1] == "connection.active"

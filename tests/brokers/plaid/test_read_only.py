"""The read-only invariant of Linked (Tier C) accounts, at three depths:

(a) the database refuses a ``tier_c`` token row with ``no_order_write`` false (a CHECK
    constraint; raw SQL, on Postgres and SQLite);
(b) the vault refuses a ``no_order_write`` credential to every order path
    (``credentials_for_order``), for the token the Plaid link really stored;
(c) the API answers place, modify and cancel on a Linked account with 403
    ``read_only_account`` and no request reaches Plaid (its request log is unchanged).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Order
from app.ids import client_order_id_for, new_id
from app.security.vault import ReadOnlyCredential
from tests.brokers.plaid.support import gateway
from tests.conftest import new_user

INSERT_CONNECTION = text(
    "INSERT INTO connections (id, user_id, broker_slug, tier, ownership, status, display, "
    "created_at, updated_at) VALUES (:id, :user_id, 'plaid', 'C', 'byob', 'active', "
    "'Linked: First Platypus Bank', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)
INSERT_TOKEN = text(
    "INSERT INTO broker_tokens (id, connection_id, user_id, broker_tier, broker_slug, "
    "no_order_write, token_ciphertext, wrapped_data_key, key_version, created_at, updated_at) "
    "VALUES (:id, :connection_id, :user_id, :tier, 'plaid', :no_order_write, :ciphertext, "
    ":wrapped, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


async def _raw_token(engine: AsyncEngine, *, tier: str, no_order_write: bool) -> str:
    user, connection_id, token_id = new_user("raw"), new_id("con"), new_id("tok")
    async with engine.begin() as conn:
        await conn.execute(INSERT_CONNECTION, {"id": connection_id, "user_id": user})
    async with engine.begin() as conn:
        await conn.execute(
            INSERT_TOKEN,
            {
                "id": token_id,
                "connection_id": connection_id,
                "user_id": user,
                "tier": tier,
                "no_order_write": no_order_write,
                "ciphertext": b"\x00" * 32,
                "wrapped": b"\x01" * 60,
            },
        )
    return token_id


async def test_a_database_refuses_a_writable_tier_c_row(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError) as caught:
        await _raw_token(engine, tier="tier_c", no_order_write=False)
    assert "tier_c_no_order_write" in str(caught.value)
    # The same row flagged read-only is accepted, and cannot be flipped afterwards.
    token_id = await _raw_token(engine, tier="tier_c", no_order_write=True)
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE broker_tokens SET no_order_write = :flag WHERE id = :id"),
                {"flag": False, "id": token_id},
            )
    # Other tiers may be writable (the constraint is about Tier C only).
    await _raw_token(engine, tier="tier_a", no_order_write=False)


async def test_b_the_vault_refuses_the_linked_credential_to_order_paths(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        connection = await gw.link(user)
        vault = gw.harness.state.ctx.vault
        async with gw.harness.state.ctx.sessionmaker() as session:
            with pytest.raises(ReadOnlyCredential) as caught:
                await vault.credentials_for_order(
                    session, user_id=user, connection_id=connection["id"]
                )
            assert (caught.value.status, caught.value.code) == (403, "read_only_account")
            readable = await vault.credentials_for_read(
                session, user_id=user, connection_id=connection["id"]
            )
        assert readable["item_id"] == gw.fake.item_of(gw.plaid.login).item_id


async def test_c_orders_on_a_linked_account_are_403_and_reach_no_broker(db_url: str) -> None:
    async with gateway(db_url) as gw:
        user = new_user()
        [account_id] = (await gw.link(user))["accounts"]
        # An order row on the Linked account (none can be placed; one is written here so
        # that modify and cancel have something to aim at).
        now = datetime.now(UTC)
        order_id = new_id("ord")
        async with gw.harness.state.ctx.sessionmaker() as session:
            session.add(
                Order(
                    id=order_id,
                    user_id=user,
                    account_id=account_id,
                    client_order_id=client_order_id_for(order_id),
                    broker_order_id="plaid-has-no-orders",
                    symbol="AAPL",
                    side="buy",
                    quantity=Decimal(1),
                    filled_quantity=Decimal(0),
                    order_type="limit",
                    limit_price=Decimal(1),
                    time_in_force="gtc",
                    extended_hours=False,
                    status="accepted",
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.commit()
        before = list(gw.fake.requests)
        auth = gw.harness.auth(user, **{"Idempotency-Key": uuid.uuid4().hex})
        answers = [
            await gw.harness.place(user, account_id),
            await gw.harness.client.patch(
                f"/v1/orders/{order_id}", json={"limit_price": "2"}, headers=auth
            ),
            await gw.harness.client.delete(f"/v1/orders/{order_id}", headers=auth),
        ]
        assert [(a.status_code, a.json()["code"]) for a in answers] == [
            (403, "read_only_account")
        ] * 3
        assert gw.fake.requests == before, "no request reached Plaid"
        orders = (await gw.get(user, f"/v1/accounts/{account_id}/orders?status=all")).json()
        assert [o["status"] for o in orders["items"]] == ["accepted"]


async def test_d_option_orders_and_exercise_on_a_linked_account_are_403(db_url: str) -> None:
    """Held options are imported (positions), never traded: an option order, a vertical and
    an exercise instruction are 403 ``read_only_account``, nothing written, nothing sent."""
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account_id] = (await gw.link(user))["accounts"]
        call, higher = "AAPL301220C00150000", "AAPL301220C00160000"
        single = {
            "symbol": call,
            "side": "buy",
            "quantity": "1",
            "order_type": "limit",
            "limit_price": "1.00",
            "position_effect": "open",
        }
        vertical = {
            "legs": [
                {"symbol": call, "side": "buy", "ratio": 1, "position_effect": "open"},
                {"symbol": higher, "side": "sell", "ratio": 1, "position_effect": "open"},
            ],
            "quantity": "1",
            "order_type": "limit",
            "limit_price": "1.00",
            "price_effect": "debit",
        }
        before = list(gw.fake.requests)
        answers = []
        for path, body in (
            (f"/v1/accounts/{account_id}/orders", single),
            (f"/v1/accounts/{account_id}/orders", vertical),
            (f"/v1/accounts/{account_id}/positions/{call}/exercise", {"action": "exercise"}),
        ):
            auth = h.auth(user, **{"Idempotency-Key": uuid.uuid4().hex})
            answers.append(await h.client.post(path, json=body, headers=auth))
        assert [(a.status_code, a.json()["code"]) for a in answers] == [
            (403, "read_only_account")
        ] * 3
        assert gw.fake.requests == before, "no request reached Plaid"
        orders = (await gw.get(user, f"/v1/accounts/{account_id}/orders?status=all")).json()
        assert orders["items"] == []

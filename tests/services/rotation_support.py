"""Plain helpers for the key-rotation tests and ``scripts/bench/rewrap``.

A re-wrap touches every token row in the database, so these tests run on a database of
their own (``isolated_postgres``): the shared test database holds other tests' tokens under
keys these tests do not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade
from app.db.models import BrokerToken, Connection
from app.db.session import SessionMaker
from app.ids import new_id
from app.security.credentials import Credentials
from app.security.envelope import AssociatedData, Envelope, EnvelopeCipher


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextlib.asynccontextmanager
async def isolated_postgres(postgres_url: str) -> AsyncIterator[str]:
    """A migrated database of its own on the test server; dropped afterwards."""
    name = f"brokerage_rot_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_dsn(postgres_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        admin = await asyncpg.connect(_dsn(postgres_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def secret_for(index: int) -> Credentials:
    marker = os.urandom(6).hex()
    return Credentials(api_key_id=f"PK{index:08d}{marker}", api_secret_key=f"sk-{marker}-{index}")


async def seed_tokens(
    sessionmaker: SessionMaker,
    cipher: EnvelopeCipher,
    count: int,
    *,
    chunk: int = 2000,
    rotate_after: datetime | None = None,
) -> dict[str, Credentials]:
    """Insert ``count`` Tier A connections with one sealed token each, in bulk.

    Every token is sealed by the real ``EnvelopeCipher`` for its own row (the AAD binds it
    to its user, connection, slug and tier), exactly as ``TokenVault.store`` seals one.
    Returns connection id -> the plaintext credential, to compare after a re-wrap.
    """
    now = datetime.now(UTC)
    expected: dict[str, Credentials] = {}
    for start in range(0, count, chunk):
        connections: list[dict[str, object]] = []
        tokens: list[dict[str, object]] = []
        for index in range(start, min(count, start + chunk)):
            user_id = f"seed-{index % 997}-{uuid.uuid4().hex[:6]}"
            connection_id = new_id("con")
            credentials = secret_for(index)
            aad = AssociatedData(
                user_id=user_id,
                connection_id=connection_id,
                broker_slug="alpaca",
                broker_tier="tier_a",
            )
            envelope = cipher.seal(credentials.to_json_bytes(), aad)
            connections.append(
                {
                    "id": connection_id,
                    "user_id": user_id,
                    "broker_slug": "alpaca",
                    "tier": "A",
                    "ownership": "byob",
                    "status": "active",
                    "display": "Connected: Alpaca",
                    "created_at": now,
                    "updated_at": now,
                }
            )
            tokens.append(
                {
                    "id": new_id("tok"),
                    "connection_id": connection_id,
                    "user_id": user_id,
                    "broker_tier": "tier_a",
                    "broker_slug": "alpaca",
                    "no_order_write": False,
                    "token_ciphertext": envelope.ciphertext,
                    "wrapped_data_key": envelope.wrapped_data_key,
                    "key_version": envelope.key_version,
                    "created_at": now,
                    "updated_at": now,
                    "rotate_after": rotate_after or now + timedelta(days=90),
                }
            )
            expected[connection_id] = credentials
        async with sessionmaker() as session:
            await session.execute(insert(Connection), connections)
            await session.execute(insert(BrokerToken), tokens)
            await session.commit()
    return expected


async def open_all(
    sessionmaker: SessionMaker, cipher: EnvelopeCipher
) -> tuple[dict[str, Credentials], dict[int, int]]:
    """Decrypt every active token with ``cipher``: connection id -> credential, and how many
    rows (revoked ones too) each key version holds. Raises on any token that does not open."""
    found: dict[str, Credentials] = {}
    versions: dict[int, int] = {}
    async with sessionmaker() as session:
        rows = (await session.execute(select(BrokerToken))).scalars().all()
    for row in rows:
        versions[row.key_version] = versions.get(row.key_version, 0) + 1
        plaintext = cipher.open(
            Envelope(row.token_ciphertext, row.wrapped_data_key, row.key_version),
            AssociatedData(row.user_id, row.connection_id, row.broker_slug, row.broker_tier),
        )
        if row.revoked_at is None:
            found[row.connection_id] = Credentials.from_json_bytes(plaintext)
    return found, versions

"""The yardsticks for scripts/bench/orders, on the gateway's stack (FastAPI, uvicorn,
SQLAlchemy async, asyncpg) and nothing else.

``POST /bare``: one Postgres insert in a transaction (BEGIN, INSERT, COMMIT), the issue's
yardstick. ``POST /floor/{account}``: the database work of a paper order with none of the
gateway's logic: the same four round trips (BEGIN; a read of the account with its row lock;
one statement writing the order, two events, the balance and the key; COMMIT), so what a
paper order costs beyond it is the gateway's own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=20, max_overflow=20)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        # Every worker runs this at start; concurrent CREATE TABLE IF NOT EXISTS can still
        # collide in the catalog, so the workers take turns.
        await conn.execute(text("SELECT pg_advisory_xact_lock(4242)"))
        await conn.execute(
            text("CREATE TABLE IF NOT EXISTS bench_bare (id text PRIMARY KEY, body jsonb)")
        )
        for statement in FLOOR_TABLES:
            await conn.execute(text(statement))
        await conn.execute(
            text(
                "INSERT INTO bench_accounts (id, cash) SELECT 'acct-' || n, 1000000000 "
                "FROM generate_series(0, :last) n ON CONFLICT DO NOTHING"
            ),
            {"last": FLOOR_ACCOUNTS - 1},
        )
    yield
    await engine.dispose()


FLOOR_ACCOUNTS = 64
FLOOR_TABLES = (
    "CREATE TABLE IF NOT EXISTS bench_accounts (id text PRIMARY KEY, cash numeric NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_orders (id text PRIMARY KEY, account_id text NOT NULL, "
    "body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS bench_events (id bigserial PRIMARY KEY, order_id text NOT NULL, "
    "kind text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_keys (key text PRIMARY KEY, order_id text NOT NULL, "
    "response jsonb NOT NULL)",
)
FLOOR_WRITE = text(
    """
    WITH placed AS (
        INSERT INTO bench_orders (id, account_id, body)
        VALUES (:id, :account, CAST(:body AS jsonb)) RETURNING id
    ), events AS (
        INSERT INTO bench_events (order_id, kind)
        SELECT placed.id, kind FROM placed, unnest(ARRAY['accepted', 'filled']) AS kind
    ), balance AS (
        UPDATE bench_accounts SET cash = cash - 1 WHERE id = :account
    )
    INSERT INTO bench_keys (key, order_id, response)
    SELECT :key, placed.id, CAST(:body AS jsonb) FROM placed
    """
)

app = FastAPI(lifespan=lifespan)


class Body(BaseModel):
    symbol: str
    side: str
    quantity: str
    order_type: str


@app.post("/bare", status_code=201)
async def bare(body: Body) -> dict[str, str]:
    row_id = uuid.uuid4().hex
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO bench_bare (id, body) VALUES (:id, CAST(:body AS jsonb))"),
            {"id": row_id, "body": body.model_dump_json()},
        )
    return {"id": row_id}


@app.post("/floor/{account}", status_code=201)
async def floor(account: str, body: Body, idempotency_key: str = Header()) -> dict[str, str]:
    row_id = uuid.uuid4().hex
    async with engine.begin() as conn:
        found = await conn.execute(
            text("SELECT id, cash FROM bench_accounts WHERE id = :account FOR UPDATE"),
            {"account": account},
        )
        if found.first() is None:
            raise HTTPException(404)
        await conn.execute(
            FLOOR_WRITE,
            {
                "id": row_id,
                "account": account,
                "body": body.model_dump_json(),
                "key": idempotency_key,
            },
        )
    return {"id": row_id}

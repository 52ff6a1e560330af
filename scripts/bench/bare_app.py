"""The yardsticks for scripts/bench/orders, on the gateway's stack (FastAPI, uvicorn,
SQLAlchemy async, asyncpg) and nothing else.

``POST /bare``: one Postgres insert in a transaction (BEGIN, INSERT, COMMIT), the issue's
yardstick. ``POST /floor/{account}``: the database work of a paper order with none of the
gateway's logic: the same four round trips (BEGIN; a read of the account with its row lock;
one statement writing the order, two events, the balance and the key; COMMIT), so what a
paper order costs beyond it is the gateway's own. ``POST /live-floor/{account}`` (for
scripts/bench/overhead): a live order's work with none of the gateway's logic: the same
four autocommit statements (a rate-limit bucket's take; the account read; one statement
claiming the key and writing the order and its event; after the broker's answer, one
writing the answer, its event and the key's stored response) around one httpx call to the
broker (``FLOOR_BROKER_URL``, Alpaca's ``POST /v2/orders`` with ``FLOOR_KEY_ID`` /
``FLOOR_SECRET``), so what a live order adds beyond the broker's own time is split into
what this much work costs on the stack and what the gateway adds on top.
``POST /proxy-floor/{account}``: that broker call alone, no database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=20, max_overflow=20)
autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
broker: httpx.AsyncClient | None = None


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
    global broker  # one client per worker, as the gateway keeps one per broker host
    if os.environ.get("FLOOR_BROKER_URL"):
        broker = httpx.AsyncClient(
            base_url=os.environ["FLOOR_BROKER_URL"],
            timeout=30,
            headers={
                "APCA-API-KEY-ID": os.environ["FLOOR_KEY_ID"],
                "APCA-API-SECRET-KEY": os.environ["FLOOR_SECRET"],
            },
        )
    yield
    if broker is not None:
        await broker.aclose()
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
    "CREATE TABLE IF NOT EXISTS bench_buckets (key text PRIMARY KEY, tokens numeric NOT NULL, "
    "taken_at timestamptz NOT NULL)",
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


LIVE_TAKE = text(
    """
    INSERT INTO bench_buckets AS b (key, tokens, taken_at) VALUES (:bucket, 199, now())
    ON CONFLICT (key) DO UPDATE SET
        tokens = LEAST(200, b.tokens + EXTRACT(EPOCH FROM now() - b.taken_at) * 200 / 60) - 1,
        taken_at = now()
    RETURNING tokens
    """
)
LIVE_CLAIM = text(
    """
    WITH claimed AS (
        INSERT INTO bench_keys (key, order_id, response)
        VALUES (:key, :id, '{}'::jsonb) ON CONFLICT DO NOTHING RETURNING order_id
    ), placed AS (
        INSERT INTO bench_orders (id, account_id, body)
        SELECT :id, :account, CAST(:body AS jsonb) FROM claimed RETURNING id
    )
    INSERT INTO bench_events (order_id, kind) SELECT placed.id, 'pending_new' FROM placed
    RETURNING order_id
    """
)
LIVE_RECORD = text(
    """
    WITH answered AS (
        UPDATE bench_orders SET body = body || CAST(:answer AS jsonb) WHERE id = :id
        RETURNING id
    ), events AS (
        INSERT INTO bench_events (order_id, kind) SELECT answered.id, 'new' FROM answered
    )
    UPDATE bench_keys SET response = CAST(:answer AS jsonb)
    WHERE key = :key AND order_id IN (SELECT id FROM answered)
    """
)


class LiveBody(Body):
    limit_price: str
    time_in_force: str


async def _send(body: LiveBody, client_order_id: str) -> httpx.Response:
    if broker is None:
        raise HTTPException(404, "FLOOR_BROKER_URL is not set")
    answer = await broker.post(
        "/v2/orders",
        json={
            "symbol": body.symbol,
            "qty": body.quantity,
            "side": body.side,
            "type": body.order_type,
            "limit_price": body.limit_price,
            "time_in_force": body.time_in_force,
            "client_order_id": client_order_id,
        },
    )
    answer.raise_for_status()
    return answer


@app.post("/proxy-floor/{account}", status_code=201)
async def proxy_floor(
    account: str, body: LiveBody, idempotency_key: str = Header()
) -> dict[str, str]:
    """The broker call alone: the HTTP server in, the body's validation, httpx out."""
    broker_order = (await _send(body, uuid.uuid4().hex)).json()
    return {"broker_order_id": broker_order["id"], "status": broker_order["status"]}


@app.post("/live-floor/{account}", status_code=201)
async def live_floor(
    account: str, body: LiveBody, idempotency_key: str = Header()
) -> dict[str, str]:
    row_id = uuid.uuid4().hex
    params = {"id": row_id, "account": account, "key": idempotency_key}
    async with autocommit.connect() as conn:
        await conn.execute(LIVE_TAKE, {"bucket": os.environ["FLOOR_KEY_ID"]})
        found = await conn.execute(
            text("SELECT id, cash FROM bench_accounts WHERE id = :account"), {"account": account}
        )
        if found.first() is None:
            raise HTTPException(404)
        claimed = await conn.execute(LIVE_CLAIM, params | {"body": body.model_dump_json()})
        if claimed.first() is None:
            raise HTTPException(409, "key in use")
    answer = await _send(body, row_id)
    broker_order = answer.json()
    async with autocommit.connect() as conn:
        await conn.execute(LIVE_RECORD, params | {"answer": answer.text})
    return {"id": row_id, "broker_order_id": broker_order["id"], "status": broker_order["status"]}

"""The yardstick for scripts/bench/orders: a bare FastAPI endpoint that does one Postgres insert.

Same stack as the gateway (FastAPI, uvicorn, SQLAlchemy async, asyncpg), nothing else.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
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
    yield
    await engine.dispose()


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

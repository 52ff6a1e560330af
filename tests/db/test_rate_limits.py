"""Per-credential broker rate limits shared by every instance through Postgres."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.brokers import errors
from app.brokers.alpaca import auth
from app.brokers.http import BrokerClient, HttpPool, SharedBucket, TokenBucket, credential_key
from app.db.rate_limits import PostgresRateLimiter
from tests.brokers.alpaca.support import running_fake
from tests.conftest import new_user

pytestmark = pytest.mark.postgres_only

# One request per 100 s after a burst of 3: a fourth request can never be "just in time".
SLOW = {"rate": 0.01, "capacity": 3.0}


async def test_the_burst_is_shared_by_every_instance(postgres_url: str) -> None:
    first_engine, second_engine = (
        create_async_engine(postgres_url),
        create_async_engine(postgres_url),
    )
    first, second = PostgresRateLimiter(first_engine), PostgresRateLimiter(second_engine)
    key, other = f"test:{new_user()}", f"test:{new_user()}"
    try:
        assert await first.reserve(key, **SLOW) == 0
        assert await second.reserve(key, **SLOW) == 0
        assert await first.reserve(key, **SLOW) == 0
        wait = await second.reserve(key, **SLOW)
        assert 90 < wait <= 100  # one interval minus the moments that passed
        assert await first.reserve(key, **SLOW) > 90  # a refusal takes nothing
        assert await second.reserve(other, **SLOW) == 0  # another credential is untouched
    finally:
        await first_engine.dispose()
        await second_engine.dispose()


async def test_a_take_leaves_its_pooled_connection_transactional(postgres_url: str) -> None:
    """The take runs in autocommit (one round trip, no BEGIN/COMMIT); the one pooled
    connection it used must come back as it was, so a later rollback still undoes."""
    engine = create_async_engine(postgres_url, pool_size=1, max_overflow=0)
    limiter = PostgresRateLimiter(engine)
    key = f"test:{new_user()}"
    try:
        assert await limiter.reserve(key, **SLOW) == 0
        async with engine.connect() as conn:
            await conn.execute(
                text("UPDATE rate_limit_buckets SET tat = tat + interval '1 day' WHERE key = :k"),
                {"k": key},
            )
            await conn.rollback()
        # Still the burst's second and third slots: the rolled-back change never landed.
        assert await limiter.reserve(key, **SLOW) == 0
        assert await limiter.reserve(key, **SLOW) == 0
        assert await limiter.reserve(key, **SLOW) > 90
    finally:
        await engine.dispose()


async def test_two_instances_together_send_no_more_than_the_limit(postgres_url: str) -> None:
    """Two pools (two app instances) pace one Alpaca key: the fourth request is refused
    before it is sent, whichever instance sends it."""
    engines = [create_async_engine(postgres_url) for _ in range(2)]
    pools = [HttpPool(limiter=PostgresRateLimiter(engine)) for engine in engines]
    try:
        async with running_fake() as alpaca:
            credentials = alpaca.credentials()
            key = credential_key(new_user(), auth.bucket_key(credentials))
            clients = [
                BrokerClient(
                    pool,
                    broker="alpaca",
                    base_url=alpaca.url,
                    headers=auth.headers(credentials),
                    bucket=pool.bucket("alpaca", key, **SLOW),
                )
                for pool in pools
            ]
            assert all(
                isinstance(pool.bucket("alpaca", key, **SLOW), SharedBucket) for pool in pools
            )
            before = len(alpaca.fake.requests)
            for client in (clients[0], clients[1], clients[0]):
                await client.request("GET", "/v2/account")
            with pytest.raises(errors.RateLimitExceeded) as refused:
                await clients[1].request("GET", "/v2/account")
            assert refused.value.retry_after is not None
            assert refused.value.retry_after > 90
            assert len(alpaca.fake.requests) - before == 3
    finally:
        for pool in pools:
            await pool.aclose()
        for engine in engines:
            await engine.dispose()


def test_a_pool_without_a_shared_limiter_paces_in_process() -> None:
    assert isinstance(HttpPool().bucket("alpaca", "k", **SLOW), TokenBucket)


async def test_many_takes_at_once_stay_within_their_connections(postgres_url: str) -> None:
    """Forty broker calls at once (a portfolio read of many accounts) take their slots
    through at most ``max_connections`` pooled connections: the pool never grows past that
    to open (and close) a connection per call."""
    engine = create_async_engine(postgres_url, pool_size=10, max_overflow=50)
    opened = 0

    def count(*_: object) -> None:
        nonlocal opened
        opened += 1

    event.listen(engine.sync_engine, "connect", count)
    limiter = PostgresRateLimiter(engine, max_connections=2)
    keys = [f"test:{new_user()}" for _ in range(40)]
    try:
        waits = await asyncio.gather(
            *(limiter.reserve(key, rate=100.0, capacity=5.0) for key in keys)
        )
        assert waits == [0] * 40
        assert 1 <= opened <= 2
    finally:
        await engine.dispose()


def test_a_limiter_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PostgresRateLimiter(
            create_async_engine("postgresql+asyncpg://unused/db"), max_connections=0
        )

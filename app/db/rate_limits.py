"""Per-credential rate limits shared by every instance, kept in Postgres.

GCRA (the generic cell rate algorithm) in one atomic statement: each key holds a
theoretical arrival time ``tat``; a request is allowed when ``max(tat, now) + interval -
burst <= now`` and then moves ``tat`` on by one interval. The database clock is the only
clock, so instances with skewed clocks still agree. Used by ``app.brokers.http`` through its
``SharedRateLimiter`` protocol (brokers never import the database layer).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_TAKE = text(
    """
    INSERT INTO rate_limit_buckets AS b (key, tat)
    VALUES (:key, clock_timestamp() + CAST(:interval AS interval))
    ON CONFLICT (key) DO UPDATE
       SET tat = greatest(b.tat, clock_timestamp()) + CAST(:interval AS interval)
     WHERE greatest(b.tat, clock_timestamp()) + CAST(:interval AS interval)
           - CAST(:burst AS interval) <= clock_timestamp()
    RETURNING 0.0
    """
)
_WAIT = text(
    """
    SELECT greatest(
        extract(epoch FROM (greatest(tat, clock_timestamp()) + CAST(:interval AS interval)
                            - CAST(:burst AS interval) - clock_timestamp())),
        0.001)
      FROM rate_limit_buckets WHERE key = :key
    """
)


class PostgresRateLimiter:
    """``SharedRateLimiter`` on Postgres; one short autocommit statement per request."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def reserve(self, key: str, *, rate: float, capacity: float) -> float:
        interval = timedelta(seconds=1 / rate)
        params = {"key": key, "interval": interval, "burst": interval * capacity}
        async with self._engine.connect() as conn:
            taken = (await conn.execute(_TAKE, params)).first()
            if taken is not None:
                await conn.commit()
                return 0.0
            wait = (await conn.execute(_WAIT, params)).scalar_one_or_none()
            await conn.commit()
        return float(wait) if wait is not None else 0.0

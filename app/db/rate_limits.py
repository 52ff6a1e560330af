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

# Take a slot, or (nothing taken) say how long until one frees: one statement, one round
# trip. ``taken`` is empty when the conditional update refused; the wait is then read from
# the row as it stands (a statement's snapshot sees the row before its own refused update).
_RESERVE = text(
    """
    WITH taken AS (
        INSERT INTO rate_limit_buckets AS b (key, tat)
        VALUES (:key, clock_timestamp() + CAST(:interval AS interval))
        ON CONFLICT (key) DO UPDATE
           SET tat = greatest(b.tat, clock_timestamp()) + CAST(:interval AS interval)
         WHERE greatest(b.tat, clock_timestamp()) + CAST(:interval AS interval)
               - CAST(:burst AS interval) <= clock_timestamp()
        RETURNING 0.0 AS wait
    )
    SELECT wait FROM taken
    UNION ALL
    SELECT greatest(
        extract(epoch FROM (greatest(tat, clock_timestamp()) + CAST(:interval AS interval)
                            - CAST(:burst AS interval) - clock_timestamp())),
        0.001)
      FROM rate_limit_buckets
     WHERE key = :key AND NOT EXISTS (SELECT 1 FROM taken)
    """
)


class PostgresRateLimiter:
    """``SharedRateLimiter`` on Postgres: one autocommit statement per request (no BEGIN
    or COMMIT of its own, so one round trip whether the slot is taken or refused)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def reserve(self, key: str, *, rate: float, capacity: float) -> float:
        interval = timedelta(seconds=1 / rate)
        params = {"key": key, "interval": interval, "burst": interval * capacity}
        async with self._engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            wait = (await auto.execute(_RESERVE, params)).scalar_one_or_none()
        # No row at all: another instance created this key after the statement's snapshot
        # and its slot won; nothing was taken here, so try again shortly.
        return float(wait) if wait is not None else 0.001

"""The plumbing every HTTP broker adapter shares: its pool, pacers, clients and clock.

An adapter borrows the app's ``HttpPool`` (one httpx client per host, rate buckets shared by
every adapter of the same credential) or, built without one (tests, the CLI), owns a pool of
its own and closes it in ``close()``. Each broker package subclasses ``PooledAdapter`` and
keeps only what is its own: the credential check, the hosts, the signing, the headers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.brokers.http import BrokerClient, Classifier, HttpPool, Pacer, timeouts_from
from app.config import Settings


class PooledAdapter:
    """Base of the HTTP adapters: ``slug`` names the broker in pacers, clients and errors."""

    slug: str

    def __init__(self, settings: Settings, pool: HttpPool | None) -> None:
        self._settings = settings
        self._own_pool = pool is None
        self._pool = pool or HttpPool(timeouts=timeouts_from(settings))

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)

    def _pacer(
        self, key: str, *, per_minute: float, capacity: float | None = None, name: str = ""
    ) -> Pacer:
        """The rate bucket of one credential (``key``): ``per_minute`` requests, bursts of
        ``capacity`` (default: a minute's worth). ``name`` separates an endpoint paced on
        its own (``<slug>:<name>``)."""
        return self._pool.bucket(
            f"{self.slug}:{name}" if name else self.slug,
            key,
            rate=per_minute / 60.0,
            capacity=per_minute if capacity is None else capacity,
        )

    def _broker_client(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        bucket: Pacer,
        classifier: Classifier | None,
        **options: Any,
    ) -> BrokerClient:
        """A ``BrokerClient`` on this adapter's pool, for this broker; ``options`` are
        ``BrokerClient``'s own (signer, auth, verify, retry_after_from, ...)."""
        return BrokerClient(
            self._pool,
            broker=self.slug,
            base_url=base_url,
            headers=headers,
            bucket=bucket,
            classifier=classifier,
            **options,
        )

    async def close(self) -> None:
        """Closes the pool only when this adapter made it (the app's pool is the app's)."""
        if self._own_pool:
            await self._pool.aclose()

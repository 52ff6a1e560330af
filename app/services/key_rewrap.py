"""Re-wrapping every stored token under the primary key version, in the background.

After ``brokerage keys rotate`` a new key version is primary: new and refreshed tokens are
wrapped under it at once (``TokenVault.store``), and older tokens stay readable under their
old versions. This job moves the older ones over so the old version can be retired
(``brokerage keys retire``). It is what makes a key rotation need no downtime:

* It works in batches (default 500 rows), each claimed with ``FOR UPDATE SKIP LOCKED`` on
  Postgres and committed as its own short transaction, so no long transaction holds locks
  or bloats the table, and a token being written by a request is skipped, not waited for.
* Only rows whose ``key_version`` is below the primary are touched; only the wrapped data
  key changes (never the ciphertext), and only if the row still holds the wrap that was
  read. A crash or a kill at any point leaves every row either fully old or fully new,
  both readable; running again finishes the rest (it is resumable because the state *is*
  the rows' ``key_version``).
* One instance at a time: the run holds the cluster-wide lease ``key-rewrap`` (a Postgres
  advisory lock on a dedicated connection, released by Postgres if the process dies). On
  SQLite (embedded, one instance) one run per database per process.
* Progress is visible: ``brokerage keys status``, ``GET /v1/admin/keys``, the
  ``brokerage_tokens_pending_rewrap`` gauge and one log line per batch.

The app runs it from its lifespan every ``rewrap_interval_seconds`` (it only takes the
lease when something is pending); operators can run it in the foreground with
``brokerage keys rewrap``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from app.db.leases import Leases, LocalLeases
from app.db.repositories.broker_tokens import BrokerTokenRepository
from app.db.session import SessionMaker, database_key
from app.security.vault import REWRAP_BATCH, TokenVault

log = logging.getLogger(__name__)

REWRAP_LEASE = "key-rewrap"

PENDING = Gauge(
    "brokerage_tokens_pending_rewrap",
    "Tokens under a key version older than the primary one (as last seen by this instance)",
)
REWRAPPED = Counter("brokerage_tokens_rewrapped_total", "Tokens re-wrapped by this instance")

# SQLite has no advisory locks: one run per database file per process is the single flight.
_LOCAL_RUNS: set[str] = set()


@dataclass(frozen=True, slots=True)
class RewrapResult:
    """One completed (or stopped) run. ``remaining`` counts rows still below the primary
    version when the run ended, including ``failed`` ones (their key version is lost)."""

    primary_version: int
    rewrapped: int
    batches: int
    remaining: int
    failed: tuple[str, ...] = ()
    stopped: bool = False
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """Where a rotation stands: tokens per key version and how many still need re-wrap."""

    primary_version: int
    min_decryption_version: int | None
    tokens_by_version: dict[int, int]
    pending_rewrap: int
    rewrap_running: bool
    last_run: RewrapResult | None = field(default=None)


class LeaseLost(RuntimeError):
    """The lease connection died mid-run; another instance may take over."""


class KeyRewrap:
    """Runs the re-wrap; ``run_once`` for one pass to completion, ``run`` as a background loop.

    ``pause_seconds`` is slept between batches: it caps the load a re-wrap puts on the
    database and on a KMS (each row costs one unwrap and one wrap call there).
    """

    def __init__(
        self,
        sessionmaker: SessionMaker,
        vault: TokenVault,
        *,
        leases: Leases,
        batch_size: int = REWRAP_BATCH,
        pause_seconds: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._sessionmaker = sessionmaker
        self._vault = vault
        self._leases = leases
        self._batch_size = batch_size
        self._pause = pause_seconds
        self._running = False
        self.last_run: RewrapResult | None = None

    @property
    def running(self) -> bool:
        return self._running

    async def pending(self) -> int:
        async with self._sessionmaker() as session:
            count = await self._vault.pending_rewrap(session)
        PENDING.set(count)
        return count

    async def status(self) -> KeyStatus:
        async with self._sessionmaker() as session:
            by_version = await BrokerTokenRepository.for_system(session).count_by_version()
        primary = self._vault.primary_version
        pending = sum(n for v, n in by_version.items() if v < primary)
        PENDING.set(pending)
        provider = self._vault.key_provider
        minimum = getattr(provider, "min_decryption_version", None)
        return KeyStatus(
            primary_version=primary,
            min_decryption_version=minimum if isinstance(minimum, int) else None,
            tokens_by_version=by_version,
            pending_rewrap=pending,
            rewrap_running=self._running,
            last_run=self.last_run,
        )

    async def run_once(self, stop: asyncio.Event | None = None) -> RewrapResult | None:
        """Re-wrap everything pending; None when another instance holds the lease.

        Passes run until nothing is left that this run can move: rows skipped because a
        writer held them (or written under an old version by an instance that had not seen
        the rotation yet) are picked up by the next pass. Returns early, with ``stopped``,
        when ``stop`` is set or the lease is lost; what was committed stays committed.
        Database and KMS errors propagate after the current batch rolled back.
        """
        local_key = self._local_key()
        if local_key is not None:
            if local_key in _LOCAL_RUNS:
                return None
            _LOCAL_RUNS.add(local_key)
        try:
            if not await self._leases.acquire(REWRAP_LEASE):
                return None
            self._running = True
            try:
                result = await self._passes(stop)
            finally:
                self._running = False
                await self._leases.release(REWRAP_LEASE)
                # Hold no database connection between runs (the lease's is dedicated).
                await self._leases.close()
        finally:
            if local_key is not None:
                _LOCAL_RUNS.discard(local_key)
        self.last_run = result
        return result

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """The lifespan's loop: when tokens are pending, re-wrap them under the lease."""
        try:
            while not stop.is_set():
                try:
                    if await self.pending() > 0:
                        result = await self.run_once(stop)
                        if result is None:
                            log.info("a key re-wrap is running on another instance")
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("the background key re-wrap failed; it will retry")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            await self.close()

    async def close(self) -> None:
        """Drop the lease connection (Postgres releases any lease still held)."""
        await self._leases.close()

    async def _passes(self, stop: asyncio.Event | None) -> RewrapResult:
        started = time.monotonic()
        start_pending = await self.pending()
        primary = self._vault.primary_version
        log.info(
            "key re-wrap started",
            extra={"primary_version": primary, "pending": start_pending},
        )
        total, batches = 0, 0
        failed: set[str] = set()
        while True:
            after: str | None = None
            moved_this_pass = 0
            while True:
                if (stop is not None and stop.is_set()) or not await self._leases.check():
                    return await self._finish(
                        primary, total, batches, failed, started=started, stopped=True
                    )
                async with self._sessionmaker() as session:
                    batch = await self._vault.rewrap_batch(
                        session, limit=self._batch_size, after_id=after
                    )
                    await session.commit()
                if batch.claimed == 0:
                    break
                batches += 1
                total += batch.rewrapped
                moved_this_pass += batch.rewrapped
                failed.update(batch.failed)
                primary = batch.primary_version
                after = batch.last_id
                REWRAPPED.inc(batch.rewrapped)
                estimate = max(0, start_pending - total)
                PENDING.set(estimate)
                log.info(
                    "key re-wrap batch committed",
                    extra={
                        "batch": batches,
                        "rewrapped": batch.rewrapped,
                        "failed": len(batch.failed),
                        "remaining_estimate": estimate,
                        "primary_version": primary,
                    },
                )
                if self._pause > 0:
                    await asyncio.sleep(self._pause)
            remaining = await self.pending()
            if remaining <= len(failed) or moved_this_pass == 0:
                return await self._finish(
                    primary, total, batches, failed, started=started, stopped=False
                )

    async def _finish(
        self,
        primary: int,
        total: int,
        batches: int,
        failed: set[str],
        *,
        started: float,
        stopped: bool,
    ) -> RewrapResult:
        remaining = await self.pending()
        result = RewrapResult(
            seconds=time.monotonic() - started,
            primary_version=primary,
            rewrapped=total,
            batches=batches,
            remaining=remaining,
            failed=tuple(sorted(failed)),
            stopped=stopped,
        )
        log.info(
            "key re-wrap ended",
            extra={
                "primary_version": primary,
                "rewrapped": total,
                "batches": batches,
                "remaining": remaining,
                "failed": len(failed),
                "stopped": stopped,
                "seconds": round(result.seconds, 3),
            },
        )
        return result

    def _local_key(self) -> str | None:
        if not isinstance(self._leases, LocalLeases):
            return None
        bind = self._sessionmaker.kw.get("bind")
        url = getattr(bind, "url", None)
        return database_key(url) if url is not None else "default"


async def tokens_below(sessionmaker: SessionMaker, version: int) -> int:
    """Token rows (revoked ones too) still wrapped under a key version below ``version``."""
    async with sessionmaker() as session:
        return await BrokerTokenRepository.for_system(session).count_below_version(version)

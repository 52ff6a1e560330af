"""The Tier A rotation policy: a credential older than its ``rotate_after`` is rotated.

Tier A tokens are stored with ``rotate_after`` 90 days out (the ADR's rotation pattern,
``TokenVault.store``). A scheduled sweep, single-flight across instances (the cluster-wide
lease ``token-rotation-sweep``), finds active Tier A tokens past that date and, per broker:

* where the broker can issue us a fresh credential by itself (``BrokerSpec.can_reissue``,
  e.g. an OAuth refresh that returns a new refresh token) and a ``Reissuer`` is plugged in,
  asks it to re-issue; storing the new credential resets ``rotate_after``. A failed
  re-issue falls through to flagging.
* otherwise (API keys: only the user can regenerate them) flags the connection: it gets
  ``rotation_due_at`` (``rotation_due`` in its JSON) and a ``connection.rotation_due`` event
  is appended to the outbox, once, in the same transaction. The connection keeps working:
  flagging is a request to the user, not a shutdown.

The flag clears when a fresh credential is stored for the connection (``TokenVault.store``,
reached by ``PUT /v1/connections/{id}/credentials`` or a re-issue) and on revocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.db.leases import Leases
from app.db.repositories.broker_tokens import DueToken
from app.db.repositories.connections import ConnectionRepository
from app.db.repositories.orders import OrderEventRepository
from app.services.clock import utcnow
from app.services.context import ServiceContext
from app.streaming.protocol import format_timestamp

log = logging.getLogger(__name__)

ROTATION_LEASE = "token-rotation-sweep"
EVENT_TYPE = "connection.rotation_due"


class Reissuer(Protocol):
    """Gets a fresh credential from the broker for one connection and stores it.

    The OAuth refresh flow fulfils this for brokers whose refresh re-issues the long-lived
    credential. It must store through ``TokenVault.store`` (which resets ``rotate_after``
    and clears the flag) and raise on any failure; the sweep then flags the connection.
    """

    async def reissue(self, *, user_id: str, connection_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SweepResult:
    flagged: int
    reissued: int
    reissue_failed: int


class TokenRotationSweep:
    def __init__(
        self,
        ctx: ServiceContext,
        *,
        leases: Leases,
        reissuer: Reissuer | None = None,
        batch_size: int = 200,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._ctx = ctx
        self._leases = leases
        self._reissuer = reissuer
        self._batch_size = batch_size
        self._clock = clock

    async def run_once(self) -> SweepResult | None:
        """One sweep over every due token; None when another instance is sweeping."""
        if not await self._leases.acquire(ROTATION_LEASE):
            return None
        try:
            return await self._sweep()
        finally:
            await self._leases.release(ROTATION_LEASE)
            await self._leases.close()  # no dedicated connection held between sweeps

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    result = await self.run_once()
                    if result is not None and (result.flagged or result.reissued):
                        log.info(
                            "rotation sweep",
                            extra={
                                "flagged": result.flagged,
                                "reissued": result.reissued,
                                "reissue_failed": result.reissue_failed,
                            },
                        )
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("the credential rotation sweep failed; it will retry")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            await self._leases.close()

    async def _sweep(self) -> SweepResult:
        flagged = reissued = failed = 0
        seen: set[str] = set()
        while True:
            async with self._ctx.sessionmaker() as session:
                due = await self._ctx.vault.due_for_rotation(session, limit=self._batch_size)
            fresh = [d for d in due if d.token_id not in seen]
            if not fresh:
                return SweepResult(flagged=flagged, reissued=reissued, reissue_failed=failed)
            for token in fresh:
                seen.add(token.token_id)
                if await self._try_reissue(token):
                    reissued += 1
                    continue
                if self._can_reissue(token):
                    failed += 1
                if await self._flag(token):
                    flagged += 1

    def _can_reissue(self, token: DueToken) -> bool:
        spec = self._ctx.registry.get(token.broker_slug)
        return spec is not None and spec.can_reissue and self._reissuer is not None

    async def _try_reissue(self, token: DueToken) -> bool:
        if not self._can_reissue(token):
            return False
        assert self._reissuer is not None
        try:
            await self._reissuer.reissue(user_id=token.user_id, connection_id=token.connection_id)
        except Exception:
            log.warning(
                "re-issuing a credential past its rotation date failed; flagging it",
                exc_info=True,
                extra={"connection_id": token.connection_id, "broker": token.broker_slug},
            )
            return False
        return True

    async def _flag(self, token: DueToken) -> bool:
        """Set ``rotation_due_at`` and append the event, once; False if nothing to flag.

        Re-checked under the connection's row lock: the token must still be its active
        one and still past due, and the connection unflagged and not revoked, so two
        sweeps (or a sweep racing a fresh key) never emit the event twice or wrongly.
        """
        now = self._clock()
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, token.user_id).get(
                token.connection_id, for_update=True
            )
            if (
                connection is None
                or connection.status == "revoked"
                or connection.rotation_due_at is not None
            ):
                return False
            active = await self._ctx.vault.active_token(
                session, user_id=token.user_id, connection_id=token.connection_id
            )
            if active is None or active[0] != token.token_id:
                return False
            rotate_after = active[1]
            if rotate_after is None or rotate_after > now:
                return False
            connection.rotation_due_at = now
            connection.updated_at = now
            OrderEventRepository.for_system(session).append(
                user_id=connection.user_id,
                type_=EVENT_TYPE,
                payload={
                    "connection_id": connection.id,
                    "status": connection.status,
                    "rotation_due": True,
                    "rotate_after": format_timestamp(rotate_after),
                },
                occurred_at=now,
                connection_id=connection.id,
            )
            await session.commit()
        log.info(
            "a credential is past its rotation date; the user is asked for a fresh one",
            extra={"connection_id": token.connection_id, "broker": token.broker_slug},
        )
        return True

"""The token lifecycle of OAuth connections: refresh ahead of expiry, and say when they die.

What it does, per OAuth connection (``BrokerSpec.oauth`` set) that is ``active`` or
``expiring``:

* Refreshes the access token ``token_refresh_ahead_seconds`` before it expires (and on
  demand, when an adapter is about to be built with an expired one), re-encrypting the new
  tokens through the vault in the same transaction that records ``expires_at``,
  ``last_refresh_at`` and ``last_refresh_outcome`` on the connection.
* ``invalid_grant`` is terminal: never retried; the connection becomes ``broken`` with one
  ``connection.broken`` event. So does a refresh token past its hard limit (Schwab's 7 days),
  without a request.
* A refresh token within ``connection_expiring_window`` (1 day) of its hard limit makes the
  connection ``expiring`` with one ``connection.expiring`` event (on the transition only).
* Other failures (5xx, timeouts, 429, other token endpoint errors) are recorded and retried
  on the next pass; the connection stays usable while its access token lasts.

Single flight, across instances: each refresh runs in one transaction that first locks the
connection row (``SELECT ... FOR NO KEY UPDATE``, which does not conflict with foreign-key
checks) and re-reads its expiry under the lock, so of two instances that both saw the token
due, the second finds it fresh and sends nothing. The background pass uses ``SKIP LOCKED``
(another instance is on it); on-demand refreshes wait for the lock. Within one process a
keyed ``asyncio.Lock`` does the same first (SQLite, which has no row locks, serialises
writers anyway). The token request is made while the row is locked: at most one HTTP
timeout (``broker_read_timeout_seconds``) per refresh.

Refresh tokens that rotate: a new value restarts the hard-limit clock; the same value
returned again (Schwab) keeps the original limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.http import HttpPool
from app.brokers.oauth import (
    ACCESS_TOKEN,
    REFRESH_TOKEN,
    InvalidGrant,
    OAuthClient,
    OAuthNotConfigured,
    TokenEndpointError,
)
from app.brokers.registry import BrokerRegistry, BrokerSpec
from app.config import Settings
from app.db.models import Connection
from app.db.repositories.connections import ConnectionRepository
from app.db.repositories.oauth_states import OAuthStateRepository
from app.db.session import SessionMaker
from app.security.vault import TokenVault
from app.services.clock import utcnow
from app.services.connections import append_connection_event

log = logging.getLogger(__name__)

REFRESHES = Counter(
    "brokerage_token_refresh_total", "OAuth token refresh attempts", ["broker", "outcome"]
)
BATCH = 100
# Used and expired OAuth states are kept this long (a replay is told "already used"), then purged.
STATE_RETENTION = timedelta(days=1)
# A forced refresh (the broker refused a token before its expiry) is skipped when the token
# is younger than this: another stream of the same connection already renewed it.
FORCE_MIN_AGE = timedelta(seconds=30)
_USABLE = ("active", "expiring")


class Outcome(StrEnum):
    refreshed = "ok"
    not_due = "not_due"
    skipped = "skipped"  # locked by another refresher, gone, or not an OAuth connection
    invalid_grant = "invalid_grant"
    refresh_token_expired = "refresh_token_expired"  # noqa: S105 - an outcome name
    credential_unreadable = "credential_unreadable"
    failed = "failed"


# Outcomes after which the connection is broken: only a new authorization helps.
TERMINAL = frozenset(
    {Outcome.invalid_grant, Outcome.refresh_token_expired, Outcome.credential_unreadable}
)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    outcome: Outcome
    status: str | None = None
    expires_at: datetime | None = None


@dataclass(slots=True)
class PassReport:
    """What one background pass did (for logs and tests)."""

    examined: int = 0
    refreshed: int = 0
    broken: int = 0
    failed: int = 0
    purged_states: int = 0


class _KeyedLocks:
    """One ``asyncio.Lock`` per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, wait: bool) -> AsyncIterator[bool]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        if not wait and lock.locked():
            yield False
            return
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield True
        finally:
            current, count = self._locks[key]
            if count <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (current, count - 1)


class TokenLifecycle:
    """Refreshes OAuth tokens (background passes and on demand) and revokes them on request."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: SessionMaker,
        registry: BrokerRegistry,
        vault: TokenVault,
        http: HttpPool,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._registry = registry
        self._vault = vault
        self._http = http
        self._clock = clock
        self._locks = _KeyedLocks()

    def client_for(self, spec: BrokerSpec) -> OAuthClient:
        """The OAuth client of ``spec`` on this deployment; ``OAuthNotConfigured`` if unusable."""
        if spec.oauth is None:
            raise OAuthNotConfigured(f"{spec.slug} is not an OAuth broker")
        return OAuthClient(spec.oauth.resolve(self._settings, spec.slug), self._http)

    # --- background ----------------------------------------------------------------------

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("token refresh pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def run_once(self) -> PassReport:
        """One pass over every due OAuth connection of every user, then purge old states."""
        report = PassReport()
        # SQLite has one writer and a refresh holds it for the token request: one at a time.
        width = 1 if self._settings.is_sqlite else max(1, self._settings.token_refresh_concurrency)
        gate = asyncio.Semaphore(width)
        slugs = oauth_slugs(self._registry)
        now = self._clock()
        after: str | None = None
        while slugs:
            async with self._sessionmaker() as session:
                due = await ConnectionRepository.for_system(session).due_for_refresh(
                    slugs,
                    now=now,
                    access_before=now
                    + timedelta(seconds=self._settings.token_refresh_ahead_seconds),
                    expiring_before=now + self._settings.connection_expiring_window,
                    limit=BATCH,
                    after_id=after,
                )
            await asyncio.gather(*(self._background_refresh(c, report, gate) for c in due))
            if len(due) < BATCH:
                break
            after = due[-1]
        async with self._sessionmaker() as session:
            report.purged_states = await OAuthStateRepository.for_system(session).purge(
                now - STATE_RETENTION
            )
            await session.commit()
        return report

    async def _background_refresh(
        self, connection_id: str, report: PassReport, gate: asyncio.Semaphore
    ) -> None:
        async with gate:
            report.examined += 1
            try:
                result = await self._refresh(connection_id, user_id=None, wait=False, force=False)
            except Exception:
                log.exception("token refresh failed", extra={"connection_id": connection_id})
                report.failed += 1
                return
        if result.outcome is Outcome.refreshed:
            report.refreshed += 1
        elif result.outcome in TERMINAL:
            report.broken += 1
        elif result.outcome is Outcome.failed:
            report.failed += 1

    # --- on demand -------------------------------------------------------------------------

    async def ensure_fresh(self, *, user_id: str, connection_id: str, force: bool = False) -> None:
        """Refresh the connection's access token now if it is (still) due, waiting for any
        refresh already running (here or on another instance). ``force``: also when it is
        not due (the broker refused it early), unless it is younger than ``FORCE_MIN_AGE``.

        Raises ``errors.ConnectionBroken`` (409) when the grant is gone (the connection is now
        ``broken``), ``errors.BrokerUnavailable`` (503) when the refresh failed and the
        access token has already expired (or was forced: the caller knows it is refused).
        A failed refresh of a still-valid token is not an error: the caller proceeds with it.
        """
        result = await self._refresh(connection_id, user_id=user_id, wait=True, force=force)
        if result.outcome in TERMINAL:
            raise errors.ConnectionBroken(
                "the broker no longer accepts this connection's authorization; connect it again"
            )
        if result.outcome is Outcome.failed and (
            force or result.expires_at is None or result.expires_at <= self._clock()
        ):
            raise errors.BrokerUnavailable("the broker could not refresh the access token")

    async def revoke_at_broker(self, *, user_id: str, connection_id: str) -> bool:
        """Revoke the connection's grant at the broker (RFC 7009), best effort.

        Revokes the refresh token (which ends the grant and its access tokens, RFC 7009
        §2.1) or, without one, the access token. Returns True when the broker confirmed.
        Failures are logged and answered False: disconnecting must not depend on the broker.
        """
        async with self._sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None:
                return False
            spec = self._registry.get(connection.broker_slug)
            if spec is None or spec.oauth is None or spec.oauth.revoke_url is None:
                return False
            try:
                credentials = await self._vault.credentials_for_read(
                    session, user_id=user_id, connection_id=connection_id
                )
            except errors.ConnectionBroken:
                return False
        try:
            client = self.client_for(spec)
            if credentials.get(REFRESH_TOKEN):
                hint = "refresh_token"
                return await client.revoke(credentials[REFRESH_TOKEN], token_type_hint=hint)
            hint = "access_token"
            return await client.revoke(credentials[ACCESS_TOKEN], token_type_hint=hint)
        except (broker_errors.BrokerError, OAuthNotConfigured) as exc:
            log.warning(
                "could not revoke a grant at the broker",
                extra={"broker": spec.slug, "connection_id": connection_id, "error": str(exc)},
            )
            return False

    # --- one refresh -------------------------------------------------------------------------

    async def _refresh(
        self, connection_id: str, *, user_id: str | None, wait: bool, force: bool
    ) -> RefreshResult:
        async with self._locks.hold(connection_id, wait=wait) as held:
            if not held:
                return RefreshResult(Outcome.skipped)
            async with self._sessionmaker() as session:
                stmt = (
                    select(Connection)
                    .where(Connection.id == connection_id)
                    .with_for_update(key_share=True, skip_locked=not wait)
                )
                if user_id is not None:
                    stmt = stmt.where(Connection.user_id == user_id)
                connection = (await session.execute(stmt)).scalar_one_or_none()
                if connection is None or connection.status not in _USABLE:
                    return RefreshResult(Outcome.skipped)
                spec = self._registry.get(connection.broker_slug)
                if spec is None or spec.oauth is None:
                    return RefreshResult(Outcome.skipped)
                result = await self._decide(session, spec, connection, force=force)
                await session.commit()
        if result.outcome is not Outcome.not_due:
            REFRESHES.labels(broker=spec.slug, outcome=result.outcome.value).inc()
        return result

    async def _decide(
        self, session: AsyncSession, spec: BrokerSpec, connection: Connection, *, force: bool
    ) -> RefreshResult:
        """Under the row lock: refresh if due, then settle the status. Appends events last."""
        assert spec.oauth is not None
        now = self._clock()
        if connection.refresh_expires_at is not None and connection.refresh_expires_at <= now:
            return self._break(session, connection, Outcome.refresh_token_expired, now)
        ahead = timedelta(seconds=self._settings.token_refresh_ahead_seconds)
        due = connection.expires_at is not None and connection.expires_at <= now + ahead
        forced = force and not _recently_issued(connection, now)
        outcome = Outcome.not_due
        if due or forced:
            outcome = await self._refresh_tokens(session, spec, connection, now)
            if outcome in TERMINAL:
                return self._break(session, connection, outcome, now)
        self._settle_status(session, connection, now)
        return RefreshResult(outcome, connection.status, connection.expires_at)

    async def _refresh_tokens(
        self, session: AsyncSession, spec: BrokerSpec, connection: Connection, now: datetime
    ) -> Outcome:
        assert spec.oauth is not None
        try:
            credentials = await self._vault.credentials_for_read(
                session, user_id=connection.user_id, connection_id=connection.id
            )
        except errors.ConnectionBroken:
            # Missing, revoked or undecryptable: nothing to refresh with, ever.
            return Outcome.credential_unreadable
        refresh_token = credentials.get(REFRESH_TOKEN)
        if not refresh_token:
            # Nothing to refresh with; the connection ends at its access token's expiry
            # (its refresh_expires_at), which _decide handles.
            return Outcome.not_due
        try:
            client = self.client_for(spec)
            response = await client.refresh(refresh_token)
        except InvalidGrant:
            return Outcome.invalid_grant
        except (broker_errors.BrokerError, OAuthNotConfigured) as exc:
            reason = exc.error if isinstance(exc, TokenEndpointError) else type(exc).__name__
            log.warning(
                "token refresh failed; will retry",
                extra={"broker": spec.slug, "connection_id": connection.id, "reason": reason},
            )
            connection.last_refresh_at = now
            connection.last_refresh_outcome = f"failed: {reason}"[:200]
            connection.updated_at = now
            return Outcome.failed
        refresh_expires_at = connection.refresh_expires_at
        if response.refresh_token and response.refresh_token != refresh_token:
            lifetime = spec.oauth.refresh_token_lifetime
            refresh_expires_at = None if lifetime is None else now + lifetime
        expires_at = response.expires_at(now, spec.oauth.access_token_lifetime)
        await self._vault.reseal(
            session,
            user_id=connection.user_id,
            connection_id=connection.id,
            credentials=response.credentials(previous=credentials, expires_at=expires_at),
            expires_at=expires_at,
            refresh_expires_at=refresh_expires_at,
        )
        connection.expires_at = expires_at
        connection.refresh_expires_at = refresh_expires_at
        connection.last_refresh_at = now
        connection.last_refresh_outcome = Outcome.refreshed.value
        connection.updated_at = now
        return Outcome.refreshed

    def _settle_status(self, session: AsyncSession, connection: Connection, now: datetime) -> None:
        """``active`` <-> ``expiring`` by the refresh token's hard limit; one event per change."""
        limit = connection.refresh_expires_at
        expiring = limit is not None and limit - now <= self._settings.connection_expiring_window
        target = "expiring" if expiring else "active"
        if connection.status == target:
            return
        connection.status = target
        connection.updated_at = now
        append_connection_event(session, connection)
        log.info(
            "connection status changed",
            extra={
                "connection_id": connection.id,
                "status": target,
                "broker": connection.broker_slug,
            },
        )

    def _break(
        self, session: AsyncSession, connection: Connection, outcome: Outcome, now: datetime
    ) -> RefreshResult:
        connection.status = "broken"
        connection.updated_at = now
        connection.last_refresh_at = now
        connection.last_refresh_outcome = outcome.value
        append_connection_event(session, connection, reason=outcome.value)
        log.warning(
            "oauth connection broken; the user must connect again",
            extra={
                "connection_id": connection.id,
                "broker": connection.broker_slug,
                "reason": outcome.value,
            },
        )
        return RefreshResult(outcome, connection.status, connection.expires_at)


def _recently_issued(connection: Connection, now: datetime) -> bool:
    """Whether the current access token is younger than ``FORCE_MIN_AGE``: issued at the
    last successful refresh, or at connect time if none (after a failed attempt its age is
    unknown, so it counts as old)."""
    if connection.last_refresh_at is None:
        return now - connection.created_at < FORCE_MIN_AGE
    if connection.last_refresh_outcome != Outcome.refreshed.value:
        return False
    return now - connection.last_refresh_at < FORCE_MIN_AGE


def oauth_slugs(registry: BrokerRegistry) -> Sequence[str]:
    """The brokers whose connections have tokens to refresh."""
    return [spec.slug for spec in registry.all() if spec.oauth is not None]

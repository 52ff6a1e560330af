"""Broker list and connections: creating (paper, API-key, platform), reading, revoking.

Ownership says whose credential a connection trades on: ``byob`` (the user's own key or
token, sealed in the vault), ``paper`` (our paper broker, no credential) or ``platform``
(the deployment's own default account on a broker, credential from the environment, e.g.
``BROKERAGE_ALPACA_PLATFORM_KEY_ID``/``_SECRET``). A platform connection is created per
user on request (``{"broker": "alpaca", "options": {"ownership": "platform"}}``) like any
other connection, so accounts and orders stay scoped to the user; kill-switches, the
paper-first gate and the audit chain apply to ``byob`` only (ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import (
    AuthKind,
    BrokerAccount,
    BrokerAdapter,
    RevokeOutcome,
    Tier,
    revoke_credential,
)
from app.brokers.environments import (
    LIVE,
    SANDBOX_LABEL,
    SANDBOX_MODE,
    environments_of,
    is_practice,
)
from app.brokers.registry import Activation, AdapterContext, BrokerSpec
from app.db.models import Account, Connection
from app.db.repositories.connections import AccountRepository, ConnectionRepository
from app.db.repositories.orders import OrderEventRepository, OrderRepository
from app.ids import new_id
from app.schemas.accounts import (
    BrokerList,
    BrokerOut,
    CapabilitiesOut,
    ConnectionCreate,
    ConnectionHealth,
    ConnectionHealthRow,
    ConnectionOut,
    ConnectionPage,
    CredentialsReplace,
)
from app.schemas.common import decode_time_cursor, encode_time_cursor
from app.security.credentials import Credentials
from app.services.broker_errors import to_app_error
from app.services.clock import utcnow
from app.services.context import ServiceContext
from app.services.kill_switches import KillSwitches
from app.services.orders import OrderService
from app.streaming.protocol import format_timestamp

log = logging.getLogger(__name__)

MAX_STARTING_CASH = Decimal("1000000000")
# ``last_refresh_outcome`` of a connection whose credential waits for the user at the broker
# (Webull's access token, confirmed in the Webull app). Such a connection is ``broken`` (no
# order, no read reaches the broker) until a check finds the credential confirmed.
PENDING_CONFIRMATION = "pending_confirmation"
CONFIRMED = "confirmed"
CONFIRMATION_FAILED = "confirmation_failed"
# ``last_refresh_outcome`` after the renewal pass extended an activated credential (Webull's
# 15-day access token) or found the broker would no longer renew it.
RENEWED = "renewed"
RENEWAL_FAILED = "renewal_failed"


def broker_out(spec: BrokerSpec) -> BrokerOut:
    return BrokerOut(
        slug=spec.slug,
        name=spec.name,
        tier=spec.tier.value,
        label=spec.label,  # type: ignore[arg-type]
        auth=spec.auth.value,
        capabilities=CapabilitiesOut.model_validate(spec.capabilities.as_dict()),
    )


def connection_out(connection: Connection, account_ids: list[str]) -> ConnectionOut:
    label = {"A": "Live", "B": "Live", "C": "Linked", "paper": "Paper"}[connection.tier]
    if is_practice(connection.environment):
        label = SANDBOX_LABEL
    return ConnectionOut(
        id=connection.id,
        broker=connection.broker_slug,
        tier=connection.tier,  # type: ignore[arg-type]
        ownership=connection.ownership,  # type: ignore[arg-type]
        status=connection.status,  # type: ignore[arg-type]
        display=connection.display,
        label=label,  # type: ignore[arg-type]
        created_at=connection.created_at,
        expires_at=connection.expires_at,
        refresh_expires_at=connection.refresh_expires_at,
        last_refresh_at=connection.last_refresh_at,
        last_refresh_outcome=connection.last_refresh_outcome,
        rotation_due=connection.rotation_due_at is not None,
        rotation_due_at=connection.rotation_due_at,
        accounts=account_ids,
        environment=connection.environment,
    )


def append_connection_event(
    session: AsyncSession, connection: Connection, *, reason: str | None = None
) -> None:
    """A ``connection.<status>`` event in the outbox (call last, then commit).

    The payload says when the access and refresh tokens expire (``connection.expiring``
    tells the frontend when the user must reconnect) and, for ``broken``, why.
    """
    payload: dict[str, str | None] = {
        "connection_id": connection.id,
        "status": connection.status,
        "expires_at": _timestamp(connection.expires_at),
        "refresh_expires_at": _timestamp(connection.refresh_expires_at),
    }
    if reason is not None:
        payload["reason"] = reason
    OrderEventRepository.for_system(session).append(
        user_id=connection.user_id,
        type_=f"connection.{connection.status}",
        payload=dict(payload),
        occurred_at=connection.updated_at,
        connection_id=connection.id,
    )


async def store_live_connection(
    ctx: ServiceContext,
    spec: BrokerSpec,
    connection: Connection,
    accounts: Iterable[Account] = (),
    *,
    credentials: Credentials | None,
    expires_at: datetime | None = None,
    refresh_expires_at: datetime | None = None,
    reason: str | None = None,
    announce: bool = True,
) -> None:
    """A new connection, its sealed credential (when it has one) and its accounts, in one
    transaction. ``announce``: append the connection event (not for a connection that is
    only being set up, such as an aggregator link awaiting its portal).

    The credential is sealed in the same transaction as the rows that point at it: a crash
    leaves either all of it or none of it.
    """
    async with ctx.sessionmaker() as session:
        ConnectionRepository.for_user(session, connection.user_id).add(connection)
        await session.flush()
        if credentials is not None:
            assert spec.token_tier is not None  # only brokers that keep a credential reach here
            await ctx.vault.store(
                session,
                user_id=connection.user_id,
                connection_id=connection.id,
                broker_slug=spec.slug,
                broker_tier=spec.token_tier,
                credentials=credentials,
                expires_at=expires_at,
                refresh_expires_at=refresh_expires_at,
            )
        repo = AccountRepository.for_user(session, connection.user_id)
        for account in accounts:
            repo.add(account)
        if announce:
            append_connection_event(session, connection, reason=reason)
        await session.commit()


def _timestamp(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


class ConnectionStreams(Protocol):
    """What revocation needs of the upstream stream supervisor (``UpstreamStreams``)."""

    async def stop_connection(self, connection_id: str) -> int: ...


async def mark_broken(ctx: ServiceContext, user_id: str, connection_id: str, outcome: str) -> bool:
    """Mark an active or expiring connection ``broken`` (its event in the same transaction).

    For a credential the broker refuses for good until the user re-connects (Plaid's
    ``ITEM_LOGIN_REQUIRED``). Returns whether the status changed.
    """
    async with ctx.sessionmaker() as session:
        connection = await ConnectionRepository.for_user(session, user_id).get(
            connection_id, for_update=True
        )
        if connection is None or connection.status not in ("active", "expiring"):
            return False
        now = utcnow()
        connection.status = "broken"
        connection.updated_at = now
        connection.last_refresh_outcome = outcome[:200]
        append_connection_event(session, connection)
        await session.commit()
    log.warning(
        "a connection's credential needs the user again; marked broken",
        extra={"connection_id": connection_id},
    )
    return True


class ConnectionService:
    def __init__(self, ctx: ServiceContext, *, streams: ConnectionStreams | None = None) -> None:
        self._ctx = ctx
        self._streams = streams

    def list_brokers(self) -> BrokerList:
        """Brokers offered for new connections: configured, and not hidden by a kill-switch
        (read from the environment now)."""
        switches = KillSwitches.from_environ()
        return BrokerList(
            items=[
                broker_out(s)
                for s in self._ctx.registry.available(self._ctx.settings)
                if not switches.hides_broker(slug=s.slug, tier=s.tier.value)
            ]
        )

    async def create(self, *, user_id: str, body: ConnectionCreate) -> ConnectionOut:
        spec = self._ctx.registry.get(body.broker)
        if spec is None or not spec.configured(self._ctx.settings):
            raise errors.UnknownBroker(f"no broker '{body.broker}' on this deployment")
        if body.options.get("ownership") == "platform":
            return await self._create_platform(user_id, spec, body)
        KillSwitches.from_environ().ensure_connectable(slug=spec.slug, tier=spec.tier.value)
        if spec.auth is AuthKind.oauth2:
            raise errors.ValidationFailed(
                f"connect {spec.name} through GET /v1/oauth/{spec.slug}/authorize"
            )
        if spec.auth is AuthKind.aggregator and spec.portal_connect:
            # Linked at the aggregator's hosted portal (SnapTrade): the connection starts here.
            from app.services.aggregators import AggregatorConnections

            return await AggregatorConnections(self._ctx).create(
                user_id=user_id, spec=spec, body=body
            )
        if spec.auth is AuthKind.aggregator:
            raise errors.ValidationFailed(
                f"connect {spec.name} through its link flow (POST /v1/{spec.slug}/link-token)"
            )
        if spec.auth is AuthKind.none:
            return await self._create_paper(user_id, spec, body)
        if spec.auth in (AuthKind.api_key, AuthKind.gateway) and spec.token_tier is not None:
            # A gateway connection stores the gateway's URL like a key: sealed, validated
            # with a real read first.
            return await self._create_api_key(user_id, spec, body)
        raise errors.UnknownBroker(f"connecting '{spec.slug}' is not available yet")

    async def _create_api_key(
        self, user_id: str, spec: BrokerSpec, body: ConnectionCreate
    ) -> ConnectionOut:
        """A BYOB API-key connection: validated against the broker, then stored sealed.

        The key is checked with a real read (the broker's account list) before anything is
        written; a refused key answers 422 ``invalid_credentials`` and leaves no row behind.
        The credential reaches the database only through the vault, in the same transaction
        as the connection and its accounts.

        Brokers with an activation step (``spec.credential_setup``: Webull issues an access
        token the user must confirm in its app) run it first; that signed call validates the
        key. While the broker waits for the user, the connection is stored ``broken`` with
        ``last_refresh_outcome = "pending_confirmation"`` and no accounts yet (the broker
        refuses reads until then); ``confirm_pending`` completes it.
        """
        environment = _environment_option(spec, body.options)
        try:
            credentials = (
                spec.check_credentials(body.credentials)
                if spec.check_credentials is not None
                else Credentials(body.credentials)
            )
        except ValueError as exc:
            raise errors.InvalidCredentials(str(exc)) from None
        activation = None
        if spec.credential_setup is not None:
            activation = await self._activate(
                spec, spec.credential_setup.begin, user_id, credentials, environment
            )
            if activation.state == "failed":
                raise errors.InvalidCredentials(f"{spec.name}: {activation.reason}")
            credentials = activation.credentials
        pending = activation is not None and activation.state == "pending"
        broker_accounts = (
            [] if pending else await self._broker_accounts(user_id, spec, credentials, environment)
        )
        assert spec.token_tier is not None
        now = utcnow()
        display = f"Linked: {spec.name}" if spec.tier is Tier.C else f"Connected: {spec.name}"
        if is_practice(environment):
            display = f"Connected: {spec.name} ({environment})"
        connection = Connection(
            id=new_id("con"),
            user_id=user_id,
            broker_slug=spec.slug,
            tier=spec.tier.value,
            ownership="byob",
            status="broken" if pending else "active",
            # API.md: "Connected: Schwab" for Live paths, "Linked: <institution>" for Tier C.
            display=(
                spec.credential_setup.pending_display
                if pending and spec.credential_setup is not None
                else display
            ),
            created_at=now,
            updated_at=now,
            expires_at=None if activation is None else activation.expires_at,
            last_refresh_at=now if pending else None,
            last_refresh_outcome=PENDING_CONFIRMATION if pending else None,
            environment=environment,
        )
        accounts = [live_account(user_id, connection, spec, a, now) for a in broker_accounts]
        await store_live_connection(
            self._ctx,
            spec,
            connection,
            accounts,
            credentials=credentials,
            expires_at=connection.expires_at,
            reason=activation.reason if pending and activation else None,
        )
        return connection_out(connection, [a.id for a in accounts])

    async def _activate(
        self,
        spec: BrokerSpec,
        step: Callable[[AdapterContext, Credentials], Awaitable[Activation]],
        user_id: str,
        credentials: Credentials,
        environment: str = LIVE,
    ) -> Activation:
        """Run a credential activation step; a refused key is ``invalid_credentials``."""
        context = self._ctx.adapter_context(user_id, broker=spec.slug, environment=environment)
        try:
            return await step(context, credentials)
        except broker_errors.AuthenticationFailed:
            raise errors.InvalidCredentials(f"{spec.name} did not accept this key") from None
        except broker_errors.BrokerError as exc:
            log.warning(
                "could not activate a new connection's key",
                extra={"broker": spec.slug, "reason": exc.reason},
            )
            raise to_app_error(exc) from None

    async def confirm_pending(self, *, user_id: str, connection_id: str) -> bool:
        """Ask the broker whether a waiting credential was confirmed; complete it if so.

        Confirmed: the credential is sealed again (as the broker now reports it), the
        accounts are read and stored, the connection becomes ``active`` with a
        ``connection.active`` event. Expired or refused: it stays ``broken`` with a
        ``connection.broken`` event naming why (the user connects again). Still waiting:
        only ``last_refresh_at`` moves. Returns whether the connection changed. Broker
        failures are logged and leave it as it was (the next check tries again); a change
        made meanwhile by another instance wins (the row is re-read under a lock).
        """
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None or connection.last_refresh_outcome != PENDING_CONFIRMATION:
                return False
            spec = self._ctx.registry.get(connection.broker_slug)
            if spec is None or spec.credential_setup is None or spec.token_tier is None:
                return False
            credentials = await self._ctx.vault.credentials_for_read(
                session, user_id=user_id, connection_id=connection_id
            )
        setup = spec.credential_setup
        broker_accounts: list[BrokerAccount] = []
        try:
            activation = await setup.check(self._ctx.connection_context(connection), credentials)
            if activation.state == "active":
                broker_accounts = await self._broker_accounts(
                    user_id, spec, activation.credentials, connection.environment
                )
        except (broker_errors.BrokerError, errors.AppError) as exc:
            log.warning(
                "could not check a connection waiting for confirmation",
                extra={"broker": spec.slug, "connection_id": connection_id, "error": str(exc)},
            )
            activation = None
        now = utcnow()
        async with self._ctx.sessionmaker() as session:
            repo = ConnectionRepository.for_user(session, user_id)
            connection = await repo.get(connection_id, for_update=True)
            if connection is None or connection.last_refresh_outcome != PENDING_CONFIRMATION:
                return False
            connection.last_refresh_at = now
            if activation is None or activation.state == "pending":
                await session.commit()
                return False
            await self._reseal(session, connection, activation)
            connection.updated_at = now
            ids: list[str] = []
            if activation.state == "active":
                connection.status = "active"
                connection.display = f"Connected: {spec.name}"
                connection.last_refresh_outcome = CONFIRMED
                accounts = AccountRepository.for_user(session, user_id)
                for found in broker_accounts:
                    account = live_account(user_id, connection, spec, found, now)
                    accounts.add(account)
                    ids.append(account.id)
                append_connection_event(session, connection)
            else:
                connection.display = f"{spec.name}: {activation.reason}; connect again"[:200]
                connection.last_refresh_outcome = CONFIRMATION_FAILED
                append_connection_event(session, connection, reason=activation.reason)
            await session.commit()
        log.info(
            "connection confirmation checked",
            extra={"connection_id": connection_id, "outcome": activation.state, "accounts": ids},
        )
        return True

    async def confirm_all_pending(self, *, limit: int = 100) -> int:
        """One background pass over every connection waiting for confirmation."""
        async with self._ctx.sessionmaker() as session:
            waiting = await ConnectionRepository.for_system(session).pending_confirmation(
                PENDING_CONFIRMATION, limit=limit
            )
        changed = 0
        for user_id, connection_id in waiting:
            changed += await self.confirm_pending(user_id=user_id, connection_id=connection_id)
        return changed

    async def renew_expiring(self, *, user_id: str, connection_id: str) -> bool:
        """Renew an active connection's credential at its broker before it expires.

        Renewed: the credential is sealed again as the broker reissued it, and
        ``expires_at``, ``last_refresh_at`` and ``last_refresh_outcome`` (``renewed``) move.
        Refused for good (Webull reports the token ``INVALID``/``EXPIRED``): the connection
        becomes ``broken`` with a ``connection.broken`` event (the user connects again).
        Any other broker failure is logged and leaves the connection as it was; the next
        pass tries again. The row is re-read under a lock and left alone if it changed
        meanwhile (another instance renewed it, the user replaced or revoked it), so one
        renewal wins. Returns whether the connection changed.
        """
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None or connection.status != "active":
                return False
            spec = self._ctx.registry.get(connection.broker_slug)
            setup = None if spec is None else spec.credential_setup
            if spec is None or setup is None or setup.renew is None:
                return False
            seen_expires_at = connection.expires_at
            credentials = await self._ctx.vault.credentials_for_read(
                session, user_id=user_id, connection_id=connection_id
            )
        try:
            activation: Activation | None = await setup.renew(
                self._ctx.connection_context(connection), credentials
            )
        except broker_errors.BrokerError as exc:
            log.warning(
                "could not renew a connection's credential; next pass retries",
                extra={"broker": spec.slug, "connection_id": connection_id, "reason": exc.reason},
            )
            activation = None
        if activation is None or activation.state == "pending":
            return False
        now = utcnow()
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(
                connection_id, for_update=True
            )
            if (
                connection is None
                or connection.status != "active"
                or connection.expires_at != seen_expires_at
            ):
                return False
            connection.updated_at = now
            connection.last_refresh_at = now
            if activation.state == "active":
                await self._reseal(session, connection, activation)
                connection.last_refresh_outcome = RENEWED
            else:
                connection.status = "broken"
                connection.display = f"{spec.name}: {activation.reason}; connect again"[:200]
                connection.last_refresh_outcome = RENEWAL_FAILED
                append_connection_event(session, connection, reason=activation.reason)
            await session.commit()
        log.info(
            "connection credential renewal",
            extra={"connection_id": connection_id, "outcome": activation.state},
        )
        return True

    async def _reseal(
        self, session: AsyncSession, connection: Connection, activation: Activation
    ) -> None:
        """Seal the credential again as the broker now reports it, with its new expiry."""
        await self._ctx.vault.reseal(
            session,
            user_id=connection.user_id,
            connection_id=connection.id,
            credentials=activation.credentials,
            expires_at=activation.expires_at,
            refresh_expires_at=None,
        )
        connection.expires_at = activation.expires_at

    async def renew_all_expiring(self, *, limit: int = 100) -> int:
        """One background pass: renew the credentials of active connections expiring within
        ``credential_renew_ahead_seconds`` (brokers with a ``renew`` hook only)."""
        slugs = [
            spec.slug
            for spec in self._ctx.registry.all()
            if spec.credential_setup is not None and spec.credential_setup.renew is not None
        ]
        ahead = timedelta(seconds=self._ctx.settings.credential_renew_ahead_seconds)
        async with self._ctx.sessionmaker() as session:
            due = await ConnectionRepository.for_system(session).renewal_due(
                slugs, utcnow() + ahead, limit=limit
            )
        changed = 0
        for user_id, connection_id in due:
            changed += await self.renew_expiring(user_id=user_id, connection_id=connection_id)
        return changed

    async def _broker_accounts(
        self, user_id: str, spec: BrokerSpec, credentials: Credentials, environment: str = LIVE
    ) -> list[BrokerAccount]:
        """The accounts a credential sees: a real read that proves the credential works.

        An adapter may refuse a credential before sending anything (an IBKR gateway URL off
        this deployment's allow-list): that is ``invalid_credentials`` too, with its reason.
        """
        try:
            adapter = spec.factory(
                self._ctx.adapter_context(user_id, broker=spec.slug, environment=environment),
                credentials,
            )
        except broker_errors.AuthenticationFailed as exc:
            raise errors.InvalidCredentials(f"{spec.name}: {exc.reason}") from None
        try:
            broker_accounts = await adapter.list_accounts()
        except broker_errors.AuthenticationFailed:
            raise errors.InvalidCredentials(f"{spec.name} did not accept this key") from None
        except broker_errors.BrokerError as exc:
            log.warning(
                "could not validate a new connection's key",
                extra={"broker": spec.slug, "reason": exc.reason},
            )
            raise to_app_error(exc) from None
        finally:
            await adapter.close()
        if not broker_accounts:
            raise errors.InvalidCredentials(f"{spec.name} shows no account for this key")
        return broker_accounts

    async def _create_platform(
        self, user_id: str, spec: BrokerSpec, body: ConnectionCreate
    ) -> ConnectionOut:
        """The user's connection to the platform's own default account on ``spec``.

        Takes no credentials (the deployment's own come from the environment) and is
        refused with 422 ``unknown_broker`` where none is configured. Kill-switches do not
        apply: they stop BYOB trading only. One active platform connection per user and
        broker (409 ``conflict`` for a second).
        """
        if body.credentials or set(body.options) != {"ownership"}:
            raise errors.ValidationFailed(
                "a platform connection takes no credentials and no other options"
            )
        credentials = spec.platform_credentials_for(self._ctx.settings)
        if credentials is None:
            raise errors.UnknownBroker(f"no platform {spec.name} account on this deployment")
        async with self._ctx.sessionmaker() as session:
            existing = await ConnectionRepository.for_user(session, user_id).find_active(
                broker_slug=spec.slug, ownership="platform"
            )
        if existing is not None:
            raise errors.Conflict(f"you already have a platform {spec.name} connection")
        broker_accounts = await self._broker_accounts(user_id, spec, credentials)
        now = utcnow()
        connection = Connection(
            id=new_id("con"),
            user_id=user_id,
            broker_slug=spec.slug,
            tier=spec.tier.value,
            ownership="platform",
            status="active",
            display=f"Connected: {spec.name}",
            created_at=now,
            updated_at=now,
        )
        accounts = [live_account(user_id, connection, spec, a, now) for a in broker_accounts]
        await store_live_connection(self._ctx, spec, connection, accounts, credentials=None)
        return connection_out(connection, [a.id for a in accounts])

    async def _validated_key(
        self, user_id: str, spec: BrokerSpec, raw: dict[str, str], environment: str = LIVE
    ) -> tuple[Credentials, list[BrokerAccount]]:
        """Shape-check an API key, then prove it with a real read (the broker's accounts).

        Raises ``InvalidCredentials`` (422) when the shape is wrong, the broker refuses the
        key or the key sees no account; other broker failures map as usual (503, 429).
        """
        try:
            credentials = (
                spec.check_credentials(raw)
                if spec.check_credentials is not None
                else Credentials(raw)
            )
        except ValueError as exc:
            raise errors.InvalidCredentials(str(exc)) from None
        return credentials, await self._broker_accounts(user_id, spec, credentials, environment)

    async def replace_credentials(
        self, *, user_id: str, connection_id: str, body: CredentialsReplace
    ) -> ConnectionOut:
        """Re-connect an API-key connection with a fresh key, keeping its id and accounts.

        This is how a user answers ``rotation_due``: the new key is validated against the
        broker like a new connection's, must reach at least one of this connection's broker
        accounts (a key of another account is a new connection, not a rotation) and must
        differ from the stored one. It is then sealed under the primary key version, the
        previous token is revoked in the same transaction, ``rotation_due`` is cleared and a
        ``broken`` connection becomes ``active`` again. Errors: 404 (not yours), 409
        ``connection_broken`` (revoked: revocation is final), 422 ``invalid_credentials`` or
        ``validation_error`` (an OAuth broker: use its flow), broker failures as usual.
        """
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None:
                raise errors.NotFound("no such connection")
            refs = await AccountRepository.for_user(session, user_id).refs_for_connection(
                connection_id
            )
        _ensure_not_revoked(connection)
        spec = self._ctx.spec_for(connection)
        if connection.ownership != "byob":
            raise errors.ValidationFailed(
                f"this {connection.ownership} connection holds no credential of yours to replace"
            )
        if spec.auth is not AuthKind.api_key or spec.token_tier is None:
            raise errors.ValidationFailed(
                f"{spec.name} connections do not take an API key; "
                + (
                    f"re-authorize through GET /v1/oauth/{spec.slug}/authorize"
                    if spec.auth is AuthKind.oauth2
                    else "they hold no credential to replace"
                )
            )
        credentials, broker_accounts = await self._validated_key(
            user_id, spec, body.credentials, connection.environment
        )
        if not set(refs) & {a.broker_account_id for a in broker_accounts}:
            raise errors.InvalidCredentials(
                f"this key is for another {spec.name} account; connect it as a new connection"
            )
        async with self._ctx.sessionmaker() as session:
            try:
                current = await self._ctx.vault.credentials_for_read(
                    session, user_id=user_id, connection_id=connection_id
                )
            except errors.ConnectionBroken:
                current = None  # unreadable or missing: any valid key is an improvement
            if current == credentials:
                raise errors.InvalidCredentials(
                    f"this is the key already stored; generate a new key at {spec.name}"
                )
            locked = await ConnectionRepository.for_user(session, user_id).get(
                connection_id, for_update=True
            )
            if locked is None:
                raise errors.NotFound("no such connection")
            _ensure_not_revoked(locked)
            await self._ctx.vault.store(
                session,
                user_id=user_id,
                connection_id=connection_id,
                broker_slug=spec.slug,
                broker_tier=spec.token_tier,
                credentials=credentials,
            )
            now = utcnow()
            locked.status = "active"
            locked.updated_at = now
            locked.last_refresh_at = now
            locked.last_refresh_outcome = "the credential was replaced by the user"
            append_connection_event(session, locked)
            await session.commit()
            ids = await AccountRepository.for_user(session, user_id).ids_for_connection(
                connection_id
            )
        return connection_out(locked, ids)

    async def _create_paper(
        self, user_id: str, spec: BrokerSpec, body: ConnectionCreate
    ) -> ConnectionOut:
        if body.credentials:
            raise errors.ValidationFailed("the paper broker takes no credentials")
        unknown = set(body.options) - {"starting_cash", "account_type"}
        if unknown:
            raise errors.ValidationFailed(f"unknown options: {', '.join(sorted(unknown))}")
        raw = body.options.get("starting_cash", self._ctx.settings.paper_default_starting_cash)
        starting_cash = _parse_cash(raw)
        # ``cash`` by default (what every paper account was before short sales); ``margin``
        # allows short stock (app/paper/engine.py).
        account_type = body.options.get("account_type", "cash")
        if account_type not in ("cash", "margin"):
            raise errors.ValidationFailed("account_type must be 'cash' or 'margin'")
        broker_account = await self._ctx.paper_engine.create_account(
            user_id, starting_cash, account_type=account_type
        )
        now = utcnow()
        connection = Connection(
            id=new_id("con"),
            user_id=user_id,
            broker_slug=spec.slug,
            tier="paper",
            ownership="paper",
            status="active",
            display="Paper",
            created_at=now,
            updated_at=now,
        )
        account = Account(
            id=new_id("acc"),
            user_id=user_id,
            connection_id=connection.id,
            broker_slug=spec.slug,
            tier="paper",
            mode="paper",
            name=broker_account.name,
            number_masked=broker_account.number_masked,
            broker_account_ref=broker_account.broker_account_id,
            currency=broker_account.currency,
            can_trade=True,
            created_at=now,
        )
        async with self._ctx.sessionmaker() as session:
            ConnectionRepository.for_user(session, user_id).add(connection)
            await session.flush()
            AccountRepository.for_user(session, user_id).add(account)
            append_connection_event(session, connection)
            await session.commit()
        return connection_out(connection, [account.id])

    async def health(self) -> ConnectionHealth:
        """Connections per broker and status over every user; callers must be admins."""
        async with self._ctx.sessionmaker() as session:
            rows = await ConnectionRepository.for_system(session).count_by_broker_and_status()
        return ConnectionHealth(
            items=[ConnectionHealthRow(broker=b, status=s, count=n) for b, s, n in rows],
            as_of=utcnow(),
        )

    async def get(self, *, user_id: str, connection_id: str) -> ConnectionOut:
        """The connection; one waiting for confirmation at the broker is checked first (at
        most every ``credential_confirm_interval_seconds``), so the answer is current."""
        async with self._ctx.sessionmaker() as session:
            waiting = await ConnectionRepository.for_user(session, user_id).get(connection_id)
        interval = timedelta(seconds=self._ctx.settings.credential_confirm_interval_seconds)
        if (
            waiting is not None
            and waiting.last_refresh_outcome == PENDING_CONFIRMATION
            and (waiting.last_refresh_at is None or utcnow() - waiting.last_refresh_at >= interval)
        ):
            await self.confirm_pending(user_id=user_id, connection_id=connection_id)
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None:
                raise errors.NotFound("no such connection")
            ids = await AccountRepository.for_user(session, user_id).ids_for_connection(
                connection.id
            )
        return connection_out(connection, ids)

    async def page(self, *, user_id: str, limit: int, cursor: str | None) -> ConnectionPage:
        after = decode_time_cursor(cursor)
        async with self._ctx.sessionmaker() as session:
            rows = await ConnectionRepository.for_user(session, user_id).page(
                limit=limit + 1, after=after
            )
            page = list(rows[:limit])
            ids = await AccountRepository.for_user(session, user_id).ids_for_connections(
                [c.id for c in page]
            )
        next_cursor = (
            encode_time_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        )
        return ConnectionPage(
            items=[connection_out(c, ids[c.id]) for c in page], next_cursor=next_cursor
        )

    async def revoke(self, *, user_id: str, connection_id: str) -> None:
        """Disconnect: cancel working orders, revoke the credential here and at the broker.

        1. Working orders are canceled first, while the credential still works: a resting
           order left at the broker would keep trading for a user who can no longer see or
           stop it. A cancel that fails is logged; the order stays visible and reconciled.
        2. The credential is decrypted once more (the broker's revoke call needs it), then
           the token is marked revoked, the connection ``revoked`` and its accounts stop
           taking orders, all in one committed transaction. From here on the vault refuses
           the token whatever the broker says or however this request ends.
        3. This instance's upstream streams of the connection stop now (another instance's
           at its next supervisor sync: its vault read is refused from then on).
        4. The broker's revoke call, where it has one (``SupportsRevoke``). Its outcome, a
           failure included, is logged and recorded in ``last_refresh_outcome``; a failure
           does not fail the request, because the token is already unusable here.

        Revocation is final: reconnecting creates a new connection.
        """
        await self._cancel_working_orders(user_id, connection_id)
        adapter = None
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None:
                raise errors.NotFound("no such connection")
            if connection.status == "revoked":
                return
            spec = self._ctx.registry.get(connection.broker_slug)
            # Only a BYOB connection holds the user's credential: a platform connection
            # trades on the deployment's own key, which a user's disconnect never revokes.
            holds_credential = (
                spec is not None and spec.token_tier is not None and connection.ownership == "byob"
            )
            oauth_grant = (
                holds_credential
                and spec is not None
                and spec.oauth is not None
                and spec.oauth.revoke_url is not None
            )
            if holds_credential and not oauth_grant:
                try:
                    adapter = await self._ctx.adapter_for(session, connection, for_order=False)
                except errors.AppError as exc:
                    log.warning(
                        "cannot read a credential being revoked; the broker is not called",
                        extra={"connection_id": connection_id, "code": exc.code},
                    )
        grant_revoked = False
        if oauth_grant and self._ctx.tokens is not None:
            # OAuth grants are revoked at the broker (RFC 7009) by the token lifecycle, which
            # reads the refresh token itself, so before the local revocation; best effort.
            grant_revoked = await self._ctx.tokens.revoke_at_broker(
                user_id=user_id, connection_id=connection_id
            )
        try:
            revoked = await self._revoke_locally(user_id, connection_id, holds_credential)
            if not revoked:
                return
            if self._streams is not None:
                await self._streams.stop_connection(connection_id)
            if holds_credential:
                assert spec is not None
                if oauth_grant:
                    outcome = (
                        f"revoked here and at {spec.name}"
                        if grant_revoked
                        else f"revoked here; {spec.name}'s revoke call failed (see the log)"
                    )
                else:
                    outcome = await self._revoke_at_broker(adapter, spec, connection_id)
                    adapter = None  # closed by _revoke_at_broker
                await self._record_outcome(user_id, connection_id, outcome)
        finally:
            if adapter is not None:
                await adapter.close()

    async def _revoke_locally(
        self, user_id: str, connection_id: str, holds_credential: bool
    ) -> bool:
        """Mark token, connection and accounts revoked; False if it already was."""
        async with self._ctx.sessionmaker() as session:
            repo = ConnectionRepository.for_user(session, user_id)
            connection = await repo.get(connection_id, for_update=True)
            if connection is None:
                raise errors.NotFound("no such connection")
            if connection.status == "revoked":
                return False
            now = utcnow()
            if holds_credential:
                await self._ctx.vault.revoke(session, user_id=user_id, connection_id=connection.id)
            connection.status = "revoked"
            connection.revoked_at = now
            connection.updated_at = now
            connection.rotation_due_at = None
            await AccountRepository.for_user(session, user_id).disable_trading(connection.id)
            append_connection_event(session, connection)
            await session.commit()
        return True

    async def _revoke_at_broker(
        self, adapter: BrokerAdapter | None, spec: BrokerSpec, connection_id: str
    ) -> str:
        """Call the broker's revoke where it has one; returns what to tell the user."""
        if adapter is None:
            return "revoked here; the credential could not be read, so the broker was not called"
        try:
            outcome = await revoke_credential(adapter)
        except Exception as exc:
            reason = exc.reason if isinstance(exc, broker_errors.BrokerError) else "error"
            log.warning(
                "the broker's revoke call failed; the credential is revoked here anyway",
                exc_info=not isinstance(exc, broker_errors.BrokerError),
                extra={"connection_id": connection_id, "broker": spec.slug, "reason": reason},
            )
            return f"revoked here; {spec.name}'s revoke call failed: {reason}"[:200]
        finally:
            await adapter.close()
        if outcome is RevokeOutcome.revoked:
            return f"revoked here and at {spec.name}"
        return (
            f"revoked here; {spec.name} has no revoke call for this credential, "
            f"delete it at {spec.name}"
        )[:200]

    async def _record_outcome(self, user_id: str, connection_id: str, outcome: str) -> None:
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(
                connection_id, for_update=True
            )
            if connection is not None:
                connection.last_refresh_outcome = outcome
                await session.commit()

    async def _cancel_working_orders(self, user_id: str, connection_id: str) -> None:
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None or connection.status == "revoked":
                return
            account_ids = await AccountRepository.for_user(session, user_id).ids_for_connection(
                connection_id
            )
            working = await OrderRepository.for_user(session, user_id).working_on_accounts(
                account_ids
            )
        orders = OrderService(self._ctx)
        for order_id in working:
            try:
                await orders.cancel(user_id=user_id, order_id=order_id)
            except errors.AppError as exc:
                log.warning(
                    "could not cancel a working order while disconnecting",
                    extra={"order_id": order_id, "code": exc.code},
                )


def _environment_option(spec: BrokerSpec, options: dict[str, str]) -> str:
    """``options.environment`` of an API-key connection: ``live`` (the default) or one of
    the broker's own paper/sandbox environments; no other option is taken."""
    unknown = set(options) - {"environment"}
    if unknown:
        raise errors.ValidationFailed(f"unknown options: {', '.join(sorted(unknown))}")
    environment = options.get("environment", LIVE)
    offered = environments_of(spec.slug)
    if environment not in offered:
        raise errors.ValidationFailed(
            f"{spec.name} has no {environment!r} environment: one of {', '.join(offered)}"
        )
    return environment


def _ensure_not_revoked(connection: Connection) -> None:
    if connection.status == "revoked":
        raise errors.ConnectionBroken("the connection was revoked; connect the broker again")


def live_account(
    user_id: str,
    connection: Connection,
    spec: BrokerSpec,
    found: BrokerAccount,
    now: datetime,
    *,
    can_trade: bool | None = None,
) -> Account:
    """A new account row for a broker account; ``can_trade`` defaults to what the broker
    path allows (an aggregator link may know better, per account)."""
    return Account(
        id=new_id("acc"),
        user_id=user_id,
        connection_id=connection.id,
        broker_slug=spec.slug,
        tier=spec.tier.value,
        mode=SANDBOX_MODE if is_practice(connection.environment) else "live",
        name=found.name,
        number_masked=found.number_masked,
        broker_account_ref=found.broker_account_id,
        currency=found.currency,
        can_trade=spec.capabilities.place_orders if can_trade is None else can_trade,
        created_at=now,
    )


def _parse_cash(raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise errors.ValidationFailed("starting_cash must be a decimal string") from exc
    if not value.is_finite() or value <= 0 or value > MAX_STARTING_CASH:
        raise errors.ValidationFailed(
            f"starting_cash must be above 0 and at most {MAX_STARTING_CASH}"
        )
    if value != value.quantize(Decimal("0.01")):
        raise errors.ValidationFailed("starting_cash takes at most 2 decimal places")
    return value


async def run_confirmations(
    service: ConnectionService, interval: float, stop: asyncio.Event
) -> None:
    """The background check of connections waiting for the user at their broker, and the
    renewal of activated credentials before they expire (each pass failing alone)."""
    while not stop.is_set():
        try:
            await service.confirm_all_pending()
        except Exception:
            log.exception("connection confirmation pass failed")
        try:
            await service.renew_all_expiring()
        except Exception:
            log.exception("connection credential renewal pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)

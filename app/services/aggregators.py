"""Tier B connections: brokerages reached through an aggregator (SnapTrade).

A connection here is one aggregator user, registered for it when it is created; the user's
secret is sealed in the vault (``tier_b``), never shown. The user links a brokerage in the
browser at the aggregator's portal; until then (and whenever the aggregator disables the
brokerage login) the connection is ``broken`` and ``POST /v1/connections/{id}/portal`` gives
a portal URL to (re)link it. The aggregator's links are read back (``sync``) when its webhook
says something changed and when the client asks (``POST /v1/connections/{id}/refresh``, e.g.
after the portal sent the browser back):

* status: ``active`` while every link works, ``broken`` when one is disabled or none exists;
* display: "Connected: Schwab via SnapTrade";
* accounts: one row per aggregator account, able to trade only when its link trades;
* read-only links (Fidelity): the credential is flipped to ``no_order_write``, so the vault
  refuses it to every order path (403 ``read_only_account``) before any broker call.

Disconnecting deletes the aggregator user (the adapter's ``revoke``, called by
``ConnectionService.revoke`` like any broker's revocation).

The aggregator user's id is derived from the connection id (``user_ref``), so a webhook
names its connection without a lookup table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import AggregatorAdapter, AuthKind, BrokerAdapter, InstitutionLink
from app.brokers.registry import BrokerSpec
from app.db.models import Account, Connection
from app.db.repositories.connections import AccountRepository, ConnectionRepository
from app.ids import new_id
from app.schemas.accounts import ConnectionCreate, ConnectionOut, PortalOut
from app.services.broker_errors import to_app_error
from app.services.clock import utcnow
from app.services.connections import (
    append_connection_event,
    connection_out,
    live_account,
    store_live_connection,
)
from app.services.context import ServiceContext
from app.services.reconciliation import Reconciler

log = logging.getLogger(__name__)

USER_REF_PREFIX = "bgw-"
_INSTITUTION = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,39}$")
AWAITING_PORTAL = "waiting for the brokerage to be linked at the Connection Portal"
LINK_DISABLED = "the aggregator disabled the brokerage login; relink it at the portal"
LINK_REMOVED = "the brokerage login was removed at the aggregator"
CREDENTIAL_REFUSED = "the aggregator refused this connection's credential"


def user_ref(connection_id: str) -> str:
    """The aggregator user of a connection (stable, unique, not secret)."""
    return USER_REF_PREFIX + connection_id


def connection_id_of(ref: str) -> str | None:
    return ref.removeprefix(USER_REF_PREFIX) if ref.startswith(USER_REF_PREFIX) else None


def _aggregator(adapter: BrokerAdapter) -> AggregatorAdapter:
    if not isinstance(adapter, AggregatorAdapter):
        raise errors.UnknownBroker("this broker is not reached through an aggregator")
    return adapter


def _display(links: list[InstitutionLink], spec: BrokerSpec) -> str:
    names = ", ".join(dict.fromkeys(link.institution for link in links))
    return f"Connected: {names} via {spec.name}"[:200]


class AggregatorConnections:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def _spec(self, connection: Connection) -> BrokerSpec:
        spec = self._ctx.spec_for(connection)
        if spec.auth is not AuthKind.aggregator or not spec.portal_connect:
            raise errors.ValidationFailed(
                f"{spec.name} connections are not linked through an aggregator"
            )
        return spec

    # --- create ----------------------------------------------------------------------------

    async def create(
        self, *, user_id: str, spec: BrokerSpec, body: ConnectionCreate
    ) -> ConnectionOut:
        """Register the aggregator user, store its secret sealed, answer the portal URL.

        Options: ``brokerage`` (the aggregator's slug, e.g. ``SCHWAB``) goes straight to that
        brokerage's login. Nothing is stored when the aggregator refuses or cannot be
        reached; a user registered before a later failure is deleted again (best effort).
        """
        if body.credentials:
            raise errors.ValidationFailed(
                f"{spec.name} connections take no credentials: the brokerage is linked in "
                "the browser at the portal URL this answer carries"
            )
        unknown = set(body.options) - {"brokerage"}
        if unknown:
            raise errors.ValidationFailed(f"unknown options: {', '.join(sorted(unknown))}")
        institution = _institution(body.options.get("brokerage"))
        connection_id = new_id("con")
        partner = _aggregator(spec.factory(self._ctx.adapter_context(user_id), None))
        try:
            credentials = await partner.register_user(user_ref(connection_id))
        except broker_errors.BrokerError as exc:
            raise _partner_error(spec, exc) from None
        finally:
            await partner.close()
        adapter = _aggregator(spec.factory(self._ctx.adapter_context(user_id), credentials))
        try:
            portal = await adapter.portal_link(institution=institution, reconnect=None)
            now = utcnow()
            connection = Connection(
                id=connection_id,
                user_id=user_id,
                broker_slug=spec.slug,
                tier=spec.tier.value,
                ownership="byob",
                status="broken",  # until the portal links a brokerage
                display=f"Connecting via {spec.name}",
                created_at=now,
                updated_at=now,
                last_refresh_at=now,
                last_refresh_outcome=AWAITING_PORTAL,
            )
            await store_live_connection(
                self._ctx, spec, connection, credentials=credentials, announce=False
            )
        except BaseException as exc:
            await _forget_user(adapter, spec)
            if isinstance(exc, broker_errors.BrokerError):
                raise _partner_error(spec, exc) from None
            raise
        finally:
            await adapter.close()
        log.info(
            "aggregator connection created; waiting for the portal",
            extra={"broker": spec.slug, "connection_id": connection.id},
        )
        out = connection_out(connection, [])
        return out.model_copy(
            update={"portal": PortalOut(url=portal.url, expires_at=portal.expires_at)}
        )

    # --- portal and refresh ------------------------------------------------------------------

    async def portal(
        self, *, user_id: str, connection_id: str, institution: str | None
    ) -> PortalOut:
        """A fresh portal URL: link a brokerage, or relink the one the aggregator disabled."""
        institution = _institution(institution)
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None:
                raise errors.NotFound("no such connection")
            self._spec(connection)
            if connection.status == "revoked":
                raise errors.ConnectionBroken("the connection was disconnected")
            adapter = _aggregator(await self._ctx.adapter_for(session, connection, for_order=False))
        try:
            links = await adapter.links()
            disabled = next((link for link in links if link.disabled), None)
            portal = await adapter.portal_link(
                institution=institution,
                reconnect=disabled.link_id if disabled is not None else None,
            )
        except broker_errors.BrokerError as exc:
            raise to_app_error(exc) from None
        finally:
            await adapter.close()
        return PortalOut(url=portal.url, expires_at=portal.expires_at)

    async def refresh(self, *, user_id: str, connection_id: str) -> ConnectionOut:
        """Read the connection's links back from the aggregator now; the connection as it is
        afterwards. A refused credential marks it ``broken`` (and answers it so)."""
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None:
                raise errors.NotFound("no such connection")
            self._spec(connection)
            if connection.status == "revoked":
                raise errors.ConnectionBroken("the connection was disconnected")
        await self.sync(user_id, connection_id)
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            assert connection is not None
            ids = await AccountRepository.for_user(session, user_id).ids_for_connection(
                connection_id
            )
        return connection_out(connection, ids)

    async def sync(self, user_id: str, connection_id: str) -> None:
        """Apply the aggregator's view of the connection's links, then look at its orders.

        Raises the mapped error when the aggregator cannot be read (transient failures);
        a refused credential is recorded as ``broken`` instead.
        """
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user_id).get(connection_id)
            if connection is None or connection.status == "revoked":
                return
            spec = self._spec(connection)
            adapter = _aggregator(await self._ctx.adapter_for(session, connection, for_order=False))
        try:
            links: list[InstitutionLink] | None = await adapter.links()
        except broker_errors.AuthenticationFailed:
            links = None
        except broker_errors.BrokerError as exc:
            log.warning(
                "could not read an aggregator connection",
                extra={"broker": spec.slug, "connection_id": connection_id, "reason": exc.reason},
            )
            raise to_app_error(exc) from None
        finally:
            await adapter.close()
        account_ids = await self._apply(user_id, connection_id, spec, links)
        if account_ids:
            await Reconciler(self._ctx).run_for_accounts(account_ids)

    async def _apply(
        self,
        user_id: str,
        connection_id: str,
        spec: BrokerSpec,
        links: list[InstitutionLink] | None,
    ) -> list[str]:
        now = utcnow()
        async with self._ctx.sessionmaker() as session:
            repo = ConnectionRepository.for_user(session, user_id)
            connection = await repo.get(connection_id, for_update=True)
            if connection is None or connection.status == "revoked":
                return []
            accounts = AccountRepository.for_user(session, user_id)
            existing = await accounts.for_connection(connection_id)
            previous = connection.status
            if links is None:
                status, outcome = "broken", CREDENTIAL_REFUSED
            elif not links:
                status = "broken"
                outcome = LINK_REMOVED if existing else AWAITING_PORTAL
            elif any(link.disabled for link in links):
                status, outcome = "broken", LINK_DISABLED
            else:
                status, outcome = "active", "ok"
            if links:
                connection.display = _display(links, spec)
                trading = any(link.trading for link in links)
                await self._ctx.vault.set_no_order_write(
                    session,
                    user_id=user_id,
                    connection_id=connection_id,
                    no_order_write=not trading,
                )
                self._upsert_accounts(session, connection, spec, links, existing, now)
            connection.status = status
            connection.last_refresh_at = now
            connection.last_refresh_outcome = outcome
            if status != previous:
                connection.updated_at = now
                append_connection_event(session, connection)
            await session.commit()
            ids = [a.id for a in await accounts.for_connection(connection_id)]
        if status != previous:
            log.info(
                "aggregator connection changed",
                extra={"connection_id": connection_id, "status": status, "outcome": outcome},
            )
        return ids

    def _upsert_accounts(
        self,
        session: AsyncSession,
        connection: Connection,
        spec: BrokerSpec,
        links: list[InstitutionLink],
        existing: Sequence[Account],
        now: datetime,
    ) -> None:
        by_ref = {a.broker_account_ref: a for a in existing}
        seen: set[str] = set()
        repo = AccountRepository.for_user(session, connection.user_id)
        for link in links:
            can_trade = link.trading and spec.capabilities.place_orders
            for found in link.accounts:
                seen.add(found.broker_account_id)
                account = by_ref.get(found.broker_account_id)
                if account is None:
                    account = live_account(
                        connection.user_id, connection, spec, found, now, can_trade=can_trade
                    )
                    repo.add(account)
                    by_ref[found.broker_account_id] = account
                else:
                    account.name = found.name
                    account.number_masked = found.number_masked
                    account.can_trade = can_trade
        for ref, account in by_ref.items():
            if ref not in seen:
                account.can_trade = False  # gone at the aggregator: kept for its orders

    # --- webhooks ------------------------------------------------------------------------------

    async def webhook(self, *, slug: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Verify an aggregator's webhook, then refresh the connection it names.

        A webhook that does not verify is refused (401 ``invalid_webhook_signature``) and
        logged; nothing in it is acted on. A verified one for an unknown connection, or of a
        type that changes nothing, is acknowledged and ignored. A refresh that fails is
        logged: reconciliation polls the orders anyway, and SnapTrade would only resend the
        webhook half an hour later.
        """
        spec = self._ctx.registry.get(slug)
        if spec is None or spec.webhook is None or not spec.configured(self._ctx.settings):
            raise errors.NotFound(f"no {slug} webhooks on this deployment")
        try:
            event = spec.webhook(self._ctx.settings, body, headers, utcnow())
        except broker_errors.WebhookRejected as exc:
            log.warning("webhook refused", extra={"broker": slug, "reason": exc.reason})
            raise errors.WebhookSignatureInvalid(exc.reason) from None
        log.info(
            "webhook received",
            extra={"broker": slug, "event": event.event_type, "webhook_id": event.event_id},
        )
        if not event.refresh:
            return
        connection_id = connection_id_of(event.user_ref)
        if connection_id is None:
            log.info("webhook for a user that is not ours", extra={"broker": slug})
            return
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_system(session).get(connection_id)
        if connection is None or connection.broker_slug != slug:
            log.info("webhook for an unknown connection", extra={"broker": slug})
            return
        try:
            await self.sync(connection.user_id, connection.id)
        except errors.AppError as exc:
            log.warning(
                "refresh after a webhook failed",
                extra={"broker": slug, "connection_id": connection.id, "code": exc.code},
            )


def _institution(value: str | None) -> str | None:
    if value is None:
        return None
    upper = value.strip().upper()
    if not _INSTITUTION.match(upper):
        raise errors.ValidationFailed("brokerage must be the aggregator's brokerage slug")
    return upper


def _partner_error(spec: BrokerSpec, exc: broker_errors.BrokerError) -> errors.AppError:
    """Failures of partner-level calls: a refused partner key is this deployment's problem
    (logged as an error), not the user's; the user sees the broker as unavailable."""
    if isinstance(exc, broker_errors.AuthenticationFailed):
        log.error("the aggregator refused the partner key", extra={"broker": spec.slug})
        return errors.BrokerUnavailable(f"{spec.name} is not available right now")
    log.warning(
        "an aggregator connection could not be created",
        extra={"broker": spec.slug, "reason": exc.reason},
    )
    return to_app_error(exc)


async def _forget_user(adapter: AggregatorAdapter, spec: BrokerSpec) -> None:
    try:
        await adapter.delete_user()
    except broker_errors.BrokerError as exc:
        log.warning(
            "could not delete an aggregator user",
            extra={"broker": spec.slug, "reason": exc.reason},
        )

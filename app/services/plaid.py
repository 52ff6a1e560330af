"""Linking investment accounts through Plaid (Tier C, "Linked") and Plaid's webhooks.

The flow (https://plaid.com/docs/link/):

1. ``link_token``: ``/link/token/create`` for the investments product, with our user id as
   ``client_user_id`` and, where this deployment has a public URL for it, our webhook URL
   (carrying the user id, so a webhook is matched among that user's connections only).
2. The frontend runs Link and gets a ``public_token``.
3. ``exchange``: ``/item/public_token/exchange`` -> the Item's ``access_token``; the Item's
   investment accounts (``/accounts/get``) and institution name
   (``/institutions/get_by_id``); then, in one transaction, the connection ("Linked:
   <institution>"), its accounts and the credential, sealed by the vault as a ``tier_c``
   token with ``no_order_write`` (the database refuses any other Tier C row).

Re-linking: Plaid gives a re-created Item new ``account_id``s. When the new Item's accounts
match accounts of one of the user's Plaid connections (``mapping.same_account``: the
persistent account id, else institution, type, subtype, mask and name), that connection is
re-used: its account rows keep their ids (their broker reference moves to the new
``account_id``), the new credential replaces the old one (the vault revokes it) and the old
Item is removed at Plaid (best effort: it would otherwise be billed and keep sending
webhooks). New accounts are added to it; accounts the new Item does not have are kept (their
reads then fail with the broker's reason) so that nothing the user saw disappears silently.

Webhooks are verified before anything is read from them (``auth.verify_webhook``); a bad
signature is 401 ``invalid_webhook_signature``, logged, and nothing is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import BrokerAccount
from app.brokers.http import HttpPool, timeouts_from
from app.brokers.plaid import auth, mapping
from app.brokers.plaid.adapter import PlaidAdapter, PlaidApi
from app.brokers.registry import BrokerSpec
from app.db.models import Account, Connection
from app.db.repositories.connections import AccountRepository, ConnectionRepository
from app.db.repositories.portfolio import PortfolioSnapshotRepository
from app.ids import new_id
from app.schemas.accounts import ConnectionOut
from app.schemas.plaid import LinkTokenOut, WebhookOut
from app.security.credentials import Credentials
from app.services.broker_errors import to_app_error
from app.services.clock import utcnow
from app.services.connections import (
    append_connection_event,
    connection_out,
    live_account,
    mark_broken,
)
from app.services.context import ServiceContext
from app.services.kill_switches import KillSwitches
from app.services.portfolio import AccountRead, AccountRef, snapshot_of

log = logging.getLogger(__name__)

SLUG = mapping.SLUG
LINKABLE = ("active", "expiring", "broken")


@dataclass(frozen=True, slots=True)
class _Relink:
    connection: Connection
    accounts: Sequence[Account]
    matches: dict[str, BrokerAccount]  # our account id -> the new Item's account


def _pair(old: Sequence[Account], new: Sequence[BrokerAccount]) -> dict[str, BrokerAccount]:
    """Old account rows -> new Item accounts, one to one, in order."""
    taken: set[str] = set()
    result: dict[str, BrokerAccount] = {}
    for account in old:
        for candidate in new:
            if candidate.broker_account_id in taken:
                continue
            if mapping.same_account(account.broker_account_ref, candidate.broker_account_id):
                result[account.id] = candidate
                taken.add(candidate.broker_account_id)
                break
    return result


def webhook_url(base: str, user_id: str) -> str:
    """The configured webhook URL with the user id as the ``user`` query parameter."""
    parts = urlsplit(base)
    query = "&".join(q for q in (parts.query, urlencode({"user": user_id})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class PlaidService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def _spec(self) -> BrokerSpec:
        spec = self._ctx.registry.get(SLUG)
        if spec is None or not spec.configured(self._ctx.settings):
            raise errors.UnknownBroker("Plaid is not available on this deployment")
        return spec

    @contextlib.asynccontextmanager
    async def _pool(self) -> AsyncIterator[HttpPool]:
        if self._ctx.broker_http is not None:
            yield self._ctx.broker_http
            return
        pool = HttpPool(timeouts=timeouts_from(self._ctx.settings))
        try:
            yield pool
        finally:
            await pool.aclose()

    # --- link ----------------------------------------------------------------------------

    async def link_token(self, *, user_id: str) -> LinkTokenOut:
        """A Link token for this user (422 ``unknown_broker`` where Plaid is not set up)."""
        spec = self._spec()
        KillSwitches.from_environ().ensure_connectable(slug=spec.slug, tier=spec.tier.value)
        base = self._ctx.settings.plaid_webhook_url
        hook = webhook_url(base, user_id) if base else None
        async with self._pool() as pool:
            try:
                token, expiration = await PlaidApi(self._ctx.settings, pool).create_link_token(
                    user_id, hook
                )
            except broker_errors.BrokerError as exc:
                raise to_app_error(exc) from exc
        try:
            expires = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        except ValueError:
            raise to_app_error(mapping.unknown("link token expiration", expiration)) from None
        if expires.tzinfo is None:
            raise to_app_error(mapping.unknown("link token expiration", expiration))
        return LinkTokenOut(link_token=token, expiration=expires)

    async def exchange(self, *, user_id: str, public_token: str) -> ConnectionOut:
        """Exchange Link's public token and store the Linked connection (see module doc).

        422 ``invalid_credentials`` when Plaid refuses the public token or the Item has no
        investment account (the Item is then removed at Plaid); broker errors otherwise.
        """
        spec = self._spec()
        KillSwitches.from_environ().ensure_connectable(slug=spec.slug, tier=spec.tier.value)
        async with self._pool() as pool:
            api = PlaidApi(self._ctx.settings, pool)
            try:
                exchanged = await api.exchange_public_token(public_token)
            except broker_errors.Rejected as exc:
                raise errors.InvalidCredentials(
                    f"Plaid did not accept the public token ({exc.reason})"
                ) from None
            except broker_errors.BrokerError as exc:
                raise to_app_error(exc) from exc
            try:
                credentials = auth.credentials_from_exchange(
                    exchanged.access_token, exchanged.item_id
                )
            except ValueError as exc:
                raise to_app_error(mapping.unknown("exchange answer", str(exc))) from None
            adapter = PlaidAdapter(self._ctx.settings, credentials, pool)
            try:
                institution, item_name, accounts = await adapter.linked_accounts()
                if not accounts:
                    await self._remove_quietly(api, credentials)
                    raise errors.InvalidCredentials("the linked login has no investment account")
                name = await self._institution_name(api, institution, item_name)
            except broker_errors.BrokerError as exc:
                raise to_app_error(exc) from exc
            finally:
                await adapter.close()
            connection_out, replaced = await self._store(
                user_id, spec, credentials, accounts, f"Linked: {name}"
            )
            if replaced is not None and replaced[auth.ITEM_ID] != credentials[auth.ITEM_ID]:
                await self._remove_quietly(api, replaced)
        return connection_out

    async def _institution_name(self, api: PlaidApi, institution: str, fallback: str | None) -> str:
        """``/institutions/get_by_id``; if that fails the link still stands, shown with the
        name the Item carried (or "Plaid")."""
        if not institution:
            return fallback or "Plaid"
        try:
            return await api.institution_name(institution)
        except broker_errors.BrokerError as exc:
            log.warning(
                "could not read a Plaid institution's name",
                extra={"broker": SLUG, "reason": exc.reason},
            )
            return fallback or "Plaid"

    async def _remove_quietly(self, api: PlaidApi, credentials: Credentials) -> None:
        try:
            await api.remove_item(credentials[auth.ACCESS_TOKEN])
        except broker_errors.BrokerError as exc:
            log.warning(
                "could not remove a Plaid Item no longer used",
                extra={"broker": SLUG, "reason": exc.reason},
            )

    async def _find_relink(
        self, session: AsyncSession, user_id: str, accounts: Sequence[BrokerAccount]
    ) -> _Relink | None:
        best: _Relink | None = None
        connections = await ConnectionRepository.for_user(session, user_id).of_broker(
            SLUG, LINKABLE
        )
        repo = AccountRepository.for_user(session, user_id)
        for connection in connections:
            existing = await repo.for_connection(connection.id)
            matches = _pair(existing, accounts)
            if matches and (best is None or len(matches) > len(best.matches)):
                best = _Relink(connection, existing, matches)
        return best

    async def _store(
        self,
        user_id: str,
        spec: BrokerSpec,
        credentials: Credentials,
        accounts: Sequence[BrokerAccount],
        display: str,
    ) -> tuple[ConnectionOut, Credentials | None]:
        """One transaction: the connection (new or re-linked), its accounts, the sealed
        credential. Returns the connection and, on a re-link, the credential it replaced."""
        assert spec.token_tier is not None
        now = utcnow()
        replaced: Credentials | None = None
        async with self._ctx.sessionmaker() as session:
            relink = await self._find_relink(session, user_id, accounts)
            repo = AccountRepository.for_user(session, user_id)
            if relink is not None:
                connection = await ConnectionRepository.for_user(session, user_id).get(
                    relink.connection.id, for_update=True
                )
                assert connection is not None
                with contextlib.suppress(errors.ConnectionBroken):
                    replaced = await self._ctx.vault.credentials_for_read(
                        session, user_id=user_id, connection_id=connection.id
                    )
                connection.status = "active"
                connection.display = display
                connection.updated_at = now
                connection.last_refresh_at = now
                connection.last_refresh_outcome = "re-linked through Plaid Link"
                matched_refs = set()
                for account in relink.accounts:
                    found = relink.matches.get(account.id)
                    if found is None:
                        continue
                    account.broker_account_ref = found.broker_account_id
                    account.name = found.name
                    account.number_masked = found.number_masked
                    matched_refs.add(found.broker_account_id)
                fresh = [a for a in accounts if a.broker_account_id not in matched_refs]
                log.info(
                    "Plaid re-link matched an existing connection",
                    extra={
                        "connection_id": connection.id,
                        "matched": len(matched_refs),
                        "added": len(fresh),
                    },
                )
            else:
                connection = Connection(
                    id=new_id("con"),
                    user_id=user_id,
                    broker_slug=spec.slug,
                    tier=spec.tier.value,
                    ownership="byob",
                    status="active",
                    display=display,
                    created_at=now,
                    updated_at=now,
                )
                ConnectionRepository.for_user(session, user_id).add(connection)
                fresh = list(accounts)
            await session.flush()
            for found in fresh:
                repo.add(live_account(user_id, connection, spec, found, now, can_trade=False))
            await session.flush()
            await self._ctx.vault.store(
                session,
                user_id=user_id,
                connection_id=connection.id,
                broker_slug=spec.slug,
                broker_tier=spec.token_tier,
                credentials=credentials,
                no_order_write=True,
            )
            append_connection_event(session, connection)
            ids = await repo.ids_for_connection(connection.id)
            await session.commit()
        return connection_out(connection, ids), replaced

    # --- webhooks ------------------------------------------------------------------------

    async def webhook(
        self, *, body: bytes, verification: str | None, user: str | None
    ) -> WebhookOut:
        """Verify a Plaid webhook, then act on it.

        401 ``invalid_webhook_signature`` (logged, nothing done) when it does not verify;
        503 when the verification key cannot be fetched (Plaid retries); 400 when a
        verified body is not a webhook.
        """
        self._spec()
        settings = self._ctx.settings
        try:
            kid = auth.webhook_key_id(verification)
            async with self._pool() as pool:
                api = PlaidApi(settings, pool)
                try:
                    key = await auth.keys_for(pool).get(kid, api.webhook_key)
                except broker_errors.Rejected:
                    raise auth.WebhookRejected("Plaid does not know the webhook's key id") from None
                except broker_errors.BrokerError as exc:
                    raise to_app_error(exc) from exc
            auth.verify_webhook(
                verification or "",
                body,
                key,
                now=time.time(),
                max_age=settings.plaid_webhook_max_age_seconds,
            )
        except auth.WebhookRejected as exc:
            log.warning("refused a Plaid webhook", extra={"broker": SLUG, "reason": exc.reason})
            raise errors.WebhookSignatureInvalid(exc.reason) from None
        try:
            hook = mapping.webhook_from_wire(json.loads(body))
        except (ValueError, broker_errors.UnknownBrokerValue):
            raise errors.BadRequest("the webhook body is not a Plaid webhook") from None
        found = await self._connection_for(user, hook.item_id)
        if found is None:
            log.info(
                "a Plaid webhook for an Item no connection has",
                extra={"broker": SLUG, "webhook_type": hook.webhook_type},
            )
            return WebhookOut(outcome="unknown_item")
        connection, credentials = found
        if hook.login_required:
            await mark_broken(self._ctx, connection.user_id, connection.id, "ITEM_LOGIN_REQUIRED")
            return WebhookOut(outcome="connection_broken")
        if hook.refreshes:
            return await self._refresh(connection, credentials, hook)
        log.info(
            "a Plaid webhook the gateway does not act on",
            extra={
                "broker": SLUG,
                "webhook_type": hook.webhook_type,
                "webhook_code": hook.webhook_code,
            },
        )
        return WebhookOut(outcome="ignored")

    async def _connection_for(
        self, user: str | None, item_id: str
    ) -> tuple[Connection, Credentials] | None:
        """The user's usable Plaid connection whose credential names ``item_id``."""
        if not user:
            return None
        async with self._ctx.sessionmaker() as session:
            connections = await ConnectionRepository.for_user(session, user).of_broker(
                SLUG, ("active", "expiring")
            )
            found = await self._ctx.vault.credentials_for_read_many(
                session, user_id=user, connection_ids=[c.id for c in connections]
            )
        for connection in connections:
            credentials = found.get(connection.id)
            if isinstance(credentials, Credentials) and credentials.get(auth.ITEM_ID) == item_id:
                return connection, credentials
        return None

    async def _refresh(
        self, connection: Connection, credentials: Credentials, hook: mapping.Webhook
    ) -> WebhookOut:
        """Read every account of the connection again and keep it as the portfolio's last
        good data; a login-required answer breaks the connection."""
        user_id = connection.user_id
        async with self._ctx.sessionmaker() as session:
            accounts = await AccountRepository.for_user(session, user_id).for_connection(
                connection.id
            )
        adapter = self._ctx.build_adapter(connection, credentials)
        reads: list[AccountRead] = []
        failed: list[str] = []
        try:
            for account in accounts:
                try:
                    balances = await adapter.get_balances(account.broker_account_ref)
                    positions = await adapter.get_positions(account.broker_account_ref)
                except broker_errors.ReauthorizationRequired as exc:
                    await mark_broken(self._ctx, user_id, connection.id, exc.reason)
                    return WebhookOut(outcome="connection_broken")
                except broker_errors.BrokerError as exc:
                    log.warning(
                        "a Plaid refresh could not read an account",
                        extra={"broker": SLUG, "account_id": account.id, "reason": exc.reason},
                    )
                    failed.append(account.id)
                    continue
                reads.append(AccountRead(AccountRef.of(account), balances, positions, utcnow()))
        finally:
            await adapter.close()
        now = utcnow()
        async with self._ctx.sessionmaker() as session:
            await PortfolioSnapshotRepository.for_user(session, user_id).save(
                [snapshot_of(r, user_id) for r in reads]
            )
            fresh = await ConnectionRepository.for_user(session, user_id).get(
                connection.id, for_update=True
            )
            if fresh is not None:
                fresh.last_refresh_at = now
                fresh.last_refresh_outcome = (
                    f"{hook.webhook_type} {hook.webhook_code}: "
                    f"{len(reads)} read, {len(failed)} failed"
                )
            await session.commit()
        return WebhookOut(outcome="refreshed")

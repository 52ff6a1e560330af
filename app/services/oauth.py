"""The OAuth connect flow: authorize (as the user) and callback (as the user's browser).

``authorize`` stores a pending authorization server-side (``oauth_states``: hashes of the
state and of a browser nonce, the PKCE verifier sealed by the vault, the exact redirect URI
and the checked ``return_to``; 10-minute TTL) and answers the broker's authorization URL
plus the nonce for an HttpOnly cookie. ``callback`` consumes the state atomically (single
use, even when the rest fails), checks it belongs to this broker, is unexpired and comes
from the browser that started it, exchanges the code (with the verifier and the redirect
URI stored at authorize time), discovers the accounts through the broker's adapter, and
only then writes the connection, its sealed tokens and accounts in one transaction.

Every callback outcome is a redirect to the state's ``return_to`` with ``connection_id`` or
``error=<code>`` (``CallbackError``); nothing is half-written: a failure after the code
exchange revokes the fresh grant at the broker (best effort) and stores nothing. Only a
callback whose state is unknown has no ``return_to``: it goes to ``oauth_failure_url`` or,
without one, answers 400 ``invalid_state``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from prometheus_client import Counter

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import AuthKind, BrokerAccount
from app.brokers.oauth import (
    ACCESS_TOKEN,
    REFRESH_TOKEN,
    InvalidGrant,
    OAuthClient,
    OAuthNotConfigured,
    TokenEndpointError,
    TokenResponse,
    new_code_verifier,
    new_state,
)
from app.brokers.registry import BrokerSpec
from app.db.models import Connection, OAuthState
from app.db.repositories.oauth_states import OAuthStateRepository
from app.ids import new_id
from app.security.credentials import Credentials
from app.security.envelope import Envelope
from app.security.oauth_state import (
    InvalidReturnTo,
    check_return_to,
    cookie_name,
    digest,
    landing_url,
    matches,
    new_browser_nonce,
)
from app.services.connections import live_account, store_live_connection
from app.services.context import ServiceContext
from app.services.token_lifecycle import TokenLifecycle

log = logging.getLogger(__name__)

CALLBACKS = Counter("brokerage_oauth_callbacks_total", "OAuth callbacks", ["broker", "outcome"])


class CallbackError(StrEnum):
    """The stable ``?error=`` codes of the callback redirect (clients branch on them)."""

    invalid_state = "invalid_state"  # unknown state, none at all, or another broker's
    state_expired = "state_expired"  # older than the 10-minute TTL
    state_used = "state_used"  # a replay: the state was already presented once
    state_mismatch = "state_mismatch"  # not the browser (cookie) that started the flow
    access_denied = "access_denied"  # the user declined at the broker
    authorization_failed = "authorization_failed"  # another broker error, or no code
    issuer_mismatch = "issuer_mismatch"  # RFC 9207 ``iss`` is not the broker's
    invalid_grant = "invalid_grant"  # the broker refused the code (expired, used, PKCE)
    token_exchange_failed = "token_exchange_failed"  # noqa: S105 - other token endpoint error
    broker_unavailable = "broker_unavailable"  # timeout, 5xx, 429, broker not configured
    no_accounts = "no_accounts"  # the authorization shows no account
    server_error = "server_error"  # our fault; logged


@dataclass(frozen=True, slots=True)
class BrowserCookie:
    """The browser-binding cookie: HttpOnly, SameSite=Lax, scoped to the callback path."""

    name: str
    value: str
    path: str
    secure: bool
    max_age: int


@dataclass(frozen=True, slots=True)
class Authorization:
    authorization_url: str
    expires_at: datetime
    cookie: BrowserCookie


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    """Where to send the browser (None: no known destination, answer 400 instead)."""

    location: str | None
    error: CallbackError | None
    connection_id: str | None
    cookie_name: str
    cookie_path: str | None
    cookie_secure: bool


class _Failed(Exception):
    def __init__(self, code: CallbackError, row: OAuthState | None = None) -> None:
        super().__init__(code.value)
        self.code = code
        self.row = row


class OAuthFlowService:
    def __init__(self, ctx: ServiceContext, tokens: TokenLifecycle) -> None:
        self._ctx = ctx
        self._tokens = tokens

    # --- authorize ---------------------------------------------------------------------------

    async def authorize(self, *, user_id: str, slug: str, return_to: str) -> Authorization:
        """Start a flow. Raises ``UnknownBroker`` (422, also when the broker's OAuth client is
        not configured here), ``ValidationFailed`` (not an OAuth broker), ``InvalidReturnTo``
        (422) and ``RateLimited`` (429, too many pending flows)."""
        settings = self._ctx.settings
        spec = self._ctx.registry.get(slug)
        if spec is None or not spec.configured(settings):
            raise errors.UnknownBroker(f"no broker '{slug[:40]}' on this deployment")
        if spec.auth is not AuthKind.oauth2 or spec.oauth is None:
            raise errors.ValidationFailed(f"connect {spec.name} through POST /v1/connections")
        try:
            client = self._tokens.client_for(spec)
        except OAuthNotConfigured as exc:
            log.error("oauth client not configured", extra={"broker": slug, "problem": str(exc)})
            raise errors.UnknownBroker(
                f"{spec.name} cannot be connected on this deployment"
            ) from None
        try:
            return_to = check_return_to(return_to, settings.oauth_return_to_allowlist)
        except InvalidReturnTo as exc:
            raise errors.InvalidReturnTo(str(exc)) from None
        now = self._ctx.clock()
        expires_at = now + timedelta(seconds=settings.oauth_state_ttl_seconds)
        state, nonce = new_state(), new_browser_nonce()
        verifier = new_code_verifier() if spec.oauth.pkce else None
        row = OAuthState(
            id=new_id("oas"),
            state_hash=digest(state),
            user_id=user_id,
            broker_slug=slug,
            browser_hash=digest(nonce),
            redirect_uri=client.config.redirect_uri,
            return_to=return_to,
            created_at=now,
            expires_at=expires_at,
        )
        if verifier is not None:
            sealed = self._ctx.vault.seal_flow_secret(
                user_id=user_id, flow_id=row.id, broker_slug=slug, value=verifier
            )
            row.verifier_ciphertext = sealed.ciphertext
            row.verifier_wrapped_key = sealed.wrapped_data_key
            row.verifier_key_version = sealed.key_version
        async with self._ctx.sessionmaker() as session:
            repo = OAuthStateRepository.for_user(session, user_id)
            if await repo.count_pending(now) >= settings.oauth_max_pending_states:
                ttl = str(settings.oauth_state_ttl_seconds)
                raise errors.RateLimited(
                    "too many connect flows in progress; finish or wait for one",
                    headers={"Retry-After": ttl},
                    extra={"retry_after": settings.oauth_state_ttl_seconds},
                )
            repo.add(row)
            await session.commit()
        redirect = urlsplit(client.config.redirect_uri)
        return Authorization(
            authorization_url=client.authorization_url(state=state, code_verifier=verifier),
            expires_at=expires_at,
            cookie=BrowserCookie(
                name=cookie_name(slug),
                value=nonce,
                path=redirect.path,
                secure=redirect.scheme == "https",
                max_age=settings.oauth_state_ttl_seconds,
            ),
        )

    # --- callback ----------------------------------------------------------------------------

    async def callback(
        self, *, slug: str, params: Mapping[str, str | None], browser_nonce: str | None
    ) -> CallbackOutcome:
        """Finish a flow; never raises for an expected failure (see ``CallbackError``)."""
        row: OAuthState | None = None
        try:
            row = await self._consume(params.get("state"))
            connection_id = await self._complete(slug, row, params, browser_nonce)
        except _Failed as failed:
            return self._failure(slug, failed.row or row, failed.code)
        except Exception:
            log.exception("oauth callback failed", extra={"broker": slug})
            return self._failure(slug, row, CallbackError.server_error)
        CALLBACKS.labels(broker=self._metric_label(slug), outcome="connected").inc()
        return _outcome(
            slug, row, landing_url(row.return_to, connection_id=connection_id), None, connection_id
        )

    async def _consume(self, state: str | None) -> OAuthState:
        """Use the state up, whatever happens next; ``state_used`` for the second caller."""
        if not state or len(state) > 512:
            raise _Failed(CallbackError.invalid_state)
        state_hash = digest(state)
        async with self._ctx.sessionmaker() as session:
            repo = OAuthStateRepository.for_system(session)
            consumed = await repo.consume(state_hash, self._ctx.clock())
            row = await repo.get_by_hash(state_hash)
            await session.commit()
        if row is None:
            raise _Failed(CallbackError.invalid_state)
        if not consumed:
            raise _Failed(CallbackError.state_used, row)
        return row

    async def _complete(
        self,
        slug: str,
        row: OAuthState,
        params: Mapping[str, str | None],
        browser_nonce: str | None,
    ) -> str:
        if row.broker_slug != slug:
            raise _Failed(CallbackError.invalid_state)  # another broker's state: mix-up
        if row.expires_at <= self._ctx.clock():
            raise _Failed(CallbackError.state_expired)
        if not matches(browser_nonce, row.browser_hash):
            raise _Failed(CallbackError.state_mismatch)
        spec = self._ctx.registry.get(slug)
        if spec is None or spec.oauth is None or not spec.oauth_ready(self._ctx.settings):
            raise _Failed(CallbackError.broker_unavailable)
        broker_error = params.get("error")
        if broker_error:
            log.info(
                "the broker refused the authorization",
                extra={"broker": slug, "error": broker_error[:64]},
            )
            if broker_error == "access_denied":
                raise _Failed(CallbackError.access_denied)
            raise _Failed(CallbackError.authorization_failed)
        if spec.oauth.issuer is not None and params.get("iss") != spec.oauth.issuer:
            raise _Failed(CallbackError.issuer_mismatch)
        code = params.get("code")
        if not code:
            raise _Failed(CallbackError.authorization_failed)
        client = self._tokens.client_for(spec)
        verifier = self._verifier(row)
        try:
            response = await client.exchange_code(
                code=code, redirect_uri=row.redirect_uri, code_verifier=verifier
            )
        except InvalidGrant:
            raise _Failed(CallbackError.invalid_grant) from None
        except (TokenEndpointError, broker_errors.UnknownBrokerValue) as exc:
            log.warning("token exchange refused", extra={"broker": slug, "reason": _reason(exc)})
            raise _Failed(CallbackError.token_exchange_failed) from None
        except broker_errors.BrokerError as exc:
            log.warning("token exchange failed", extra={"broker": slug, "reason": _reason(exc)})
            raise _Failed(CallbackError.broker_unavailable) from None
        now = self._ctx.clock()
        expires_at = response.expires_at(now, spec.oauth.access_token_lifetime)
        credentials = response.credentials(expires_at=expires_at)
        try:
            accounts = await self._accounts(spec, row.user_id, credentials)
            return await self._store(spec, row.user_id, response, credentials, accounts, now)
        except Exception:
            await self._revoke(client, credentials)
            raise

    def _verifier(self, row: OAuthState) -> str | None:
        if row.verifier_ciphertext is None:
            return None
        assert row.verifier_wrapped_key is not None
        assert row.verifier_key_version is not None
        return self._ctx.vault.open_flow_secret(
            user_id=row.user_id,
            flow_id=row.id,
            broker_slug=row.broker_slug,
            envelope=Envelope(
                ciphertext=row.verifier_ciphertext,
                wrapped_data_key=row.verifier_wrapped_key,
                key_version=row.verifier_key_version,
            ),
        )

    async def _accounts(
        self, spec: BrokerSpec, user_id: str, credentials: Credentials
    ) -> list[BrokerAccount]:
        adapter = spec.factory(self._ctx.adapter_context(user_id), credentials)
        try:
            accounts = await adapter.list_accounts()
        except broker_errors.AuthenticationFailed:
            raise _Failed(CallbackError.authorization_failed) from None
        except broker_errors.BrokerError as exc:
            log.warning(
                "account discovery failed", extra={"broker": spec.slug, "reason": _reason(exc)}
            )
            raise _Failed(CallbackError.broker_unavailable) from None
        finally:
            await adapter.close()
        if not accounts:
            raise _Failed(CallbackError.no_accounts)
        return accounts

    async def _store(
        self,
        spec: BrokerSpec,
        user_id: str,
        response: TokenResponse,
        credentials: Credentials,
        found: list[BrokerAccount],
        now: datetime,
    ) -> str:
        """The connection, its sealed tokens and its accounts, in one transaction. ``now``:
        when the tokens were issued (the exchange), which their lifetimes count from."""
        assert spec.oauth is not None
        assert spec.token_tier is not None
        expires_at = response.expires_at(now, spec.oauth.access_token_lifetime)
        if response.refresh_token:
            lifetime = spec.oauth.refresh_token_lifetime
            refresh_expires_at = None if lifetime is None else now + lifetime
        else:
            # No refresh token: the connection ends when its access token does.
            refresh_expires_at = expires_at
        connection = Connection(
            id=new_id("con"),
            user_id=user_id,
            broker_slug=spec.slug,
            tier=spec.tier.value,
            ownership="byob",
            status="active",
            display=f"Connected: {spec.name}",
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            refresh_expires_at=refresh_expires_at,
        )
        accounts = [live_account(user_id, connection, spec, a, now) for a in found]
        await store_live_connection(
            self._ctx,
            spec,
            connection,
            accounts,
            credentials=credentials,
            expires_at=expires_at,
            refresh_expires_at=refresh_expires_at,
        )
        log.info(
            "oauth connection created", extra={"broker": spec.slug, "connection_id": connection.id}
        )
        return connection.id

    async def _revoke(self, client: OAuthClient, credentials: Credentials) -> None:
        """Best effort: a grant we will not store should not stay alive at the broker."""
        token, hint = credentials.get(REFRESH_TOKEN), "refresh_token"
        if not token:
            token, hint = credentials[ACCESS_TOKEN], "access_token"
        try:
            await client.revoke(token, token_type_hint=hint)
        except broker_errors.BrokerError as exc:
            log.warning(
                "could not revoke an unused grant",
                extra={"broker": client.config.slug, "reason": _reason(exc)},
            )

    def _metric_label(self, slug: str) -> str:
        """The slug of a registered broker, else ``unknown``: the callback is reachable
        without a token, and a label per made-up slug would grow the metric without bound."""
        return slug if self._ctx.registry.get(slug) is not None else "unknown"

    def _failure(self, slug: str, row: OAuthState | None, code: CallbackError) -> CallbackOutcome:
        CALLBACKS.labels(broker=self._metric_label(slug), outcome=code.value).inc()
        log.info("oauth callback failed", extra={"broker": slug, "error": code.value})
        target = row.return_to if row is not None else self._ctx.settings.oauth_failure_url
        location = None if target is None else landing_url(target, error=code.value)
        return _outcome(slug, row, location, code, None)


def _outcome(
    slug: str,
    row: OAuthState | None,
    location: str | None,
    error: CallbackError | None,
    connection_id: str | None,
) -> CallbackOutcome:
    """The answer, with the browser cookie to clear (the flow's: its broker's name, the
    path of its redirect URI)."""
    parts = urlsplit(row.redirect_uri) if row is not None else None
    return CallbackOutcome(
        location=location,
        error=error,
        connection_id=connection_id,
        cookie_name=cookie_name(row.broker_slug if row is not None else slug),
        cookie_path=parts.path if parts is not None else None,
        cookie_secure=parts is not None and parts.scheme == "https",
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, TokenEndpointError):
        return exc.error
    return type(exc).__name__

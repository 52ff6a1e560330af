"""What services need from the running application, built once in the lifespan.

On-demand token refresh: an OAuth connection's adapter is built with a fresh access token.
The refresh must not run inside the caller's transaction (on SQLite that transaction holds
the single write lock, on Postgres the refreshed token must commit even if the caller rolls
back), so ``adapter_for`` does not refresh itself: inside ``with_fresh_tokens`` it raises
``RefreshRequired`` before anything was written, the scope lets the caller's transaction
end, refreshes (single-flight), and runs the work again. Outside a scope the stored token is
used as it is (the background refresher keeps tokens ahead of expiry).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers.base import BrokerAdapter
from app.brokers.environments import LIVE, settings_for
from app.brokers.http import HttpPool
from app.brokers.registry import AdapterContext, BrokerRegistry, BrokerSpec
from app.config import Settings
from app.db.models import Connection
from app.db.session import SessionMaker
from app.paper.engine import PaperEngine
from app.security.audit import AuditChain
from app.security.credentials import Credentials
from app.security.vault import TokenVault
from app.services.clock import utcnow

log = logging.getLogger(__name__)

USABLE_CONNECTION_STATUSES = frozenset({"active", "expiring"})
# Paper account ids a process remembers (``ServiceContext.note_paper_account``).
_PAPER_ACCOUNTS_REMEMBERED = 100_000
T = TypeVar("T")

# Connection ids already refreshed in the current ``with_fresh_tokens`` scope (None: no scope).
_REFRESH_SCOPE: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "brokerage_refresh_scope", default=None
)


class RefreshRequired(Exception):
    """Internal: the connection's access token must be refreshed before its adapter is built.

    Raised by ``adapter_for`` only inside ``with_fresh_tokens``, which always catches it.
    """

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection.id)
        self.connection_id = connection.id
        self.user_id = connection.user_id


class TokenRefresher(Protocol):
    """What ``ServiceContext`` needs of the token lifecycle (``app.services.token_lifecycle``)."""

    async def ensure_fresh(self, *, user_id: str, connection_id: str, force: bool = False) -> None:
        """Refresh now if still due (single-flight); raises ``errors.AppError`` on failure."""
        ...

    async def revoke_at_broker(self, *, user_id: str, connection_id: str) -> bool:
        """Revoke the grant at the broker (RFC 7009), best effort."""
        ...


@dataclass(frozen=True, slots=True)
class ServiceContext:
    settings: Settings
    sessionmaker: SessionMaker
    registry: BrokerRegistry
    paper_engine: PaperEngine
    vault: TokenVault
    audit: AuditChain
    broker_http: HttpPool | None = None
    # "Now" for the OAuth flow and the token lifecycle (tests inject a manual clock).
    clock: Callable[[], datetime] = utcnow
    tokens: TokenRefresher | None = None
    # Accounts this process has seen on the paper broker (an account never changes broker):
    # their placements read the account inside a transaction from the start, since the paper
    # broker's lock is taken with that read. A hint, in the order noted (an ordered set);
    # bounded by ``note_paper_account``.
    paper_accounts: dict[str, None] = field(default_factory=dict)

    def note_paper_account(self, account_id: str) -> None:
        """Remember a paper account; past the bound the one noted longest ago is forgotten
        (its next placement reads it once more outside a transaction)."""
        self.paper_accounts[account_id] = None
        if len(self.paper_accounts) > _PAPER_ACCOUNTS_REMEMBERED:
            del self.paper_accounts[next(iter(self.paper_accounts))]

    def spec_for(self, connection: Connection) -> BrokerSpec:
        spec = self.registry.get(connection.broker_slug)
        if spec is None:
            raise errors.ConnectionBroken(
                f"the broker '{connection.broker_slug}' is not available on this deployment"
            )
        return spec

    async def adapter_for(
        self, session: AsyncSession, connection: Connection, *, for_order: bool
    ) -> BrokerAdapter:
        """Build the connection's adapter with decrypted credentials.

        For order paths the vault refuses read-only (``no_order_write``) and revoked
        credentials before anything is decrypted. A ``platform`` connection uses the
        deployment's own credential from the settings, never the vault; it is
        ``ConnectionBroken`` when this deployment no longer configures one.
        """
        spec = self.spec_for(connection)
        credentials = None
        if spec.oauth is not None and self.tokens is not None and self.access_token_due(connection):
            refreshed = _REFRESH_SCOPE.get()
            if refreshed is not None and connection.id not in refreshed:
                raise RefreshRequired(connection)
            if refreshed is None:
                log.warning(
                    "building an adapter with an access token at or near expiry",
                    extra={"connection_id": connection.id, "broker": connection.broker_slug},
                )
        if connection.ownership == "platform":
            credentials = spec.platform_credentials_for(self.settings)
            if credentials is None:
                raise errors.ConnectionBroken(
                    f"this deployment has no platform {spec.name} account configured"
                )
        elif spec.token_tier is not None:
            if for_order:
                credentials = await self.vault.credentials_for_order(
                    session,
                    user_id=connection.user_id,
                    connection_id=connection.id,
                    version=connection.credential_version,
                )
            else:
                credentials = await self.vault.credentials_for_read(
                    session,
                    user_id=connection.user_id,
                    connection_id=connection.id,
                    version=connection.credential_version,
                )
        return spec.factory(self.connection_context(connection), credentials)

    async def ensure_order_credential(self, session: AsyncSession, connection: Connection) -> None:
        """Raise what ``adapter_for(..., for_order=True)`` would refuse with, decrypting nothing.

        The order router asks this of every account it weighs; only the chosen one's
        credential is opened.
        """
        spec = self.spec_for(connection)
        if connection.ownership == "platform":
            if spec.platform_credentials_for(self.settings) is None:
                raise errors.ConnectionBroken(
                    f"this deployment has no platform {spec.name} account configured"
                )
        elif spec.token_tier is not None:
            await self.vault.check_order_credential(
                session,
                user_id=connection.user_id,
                connection_id=connection.id,
                version=connection.credential_version,
            )

    def build_adapter(
        self, connection: Connection, credentials: Credentials | None
    ) -> BrokerAdapter:
        """The connection's adapter from credentials the caller already took from the vault."""
        return self.spec_for(connection).factory(self.connection_context(connection), credentials)

    def access_token_due(self, connection: Connection) -> bool:
        if connection.expires_at is None or connection.status not in USABLE_CONNECTION_STATUSES:
            return False
        leeway = timedelta(seconds=self.settings.token_refresh_leeway_seconds)
        return connection.expires_at <= self.clock() + leeway

    async def with_fresh_tokens(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work``; if an adapter it builds needs a token refresh, refresh and rerun it.

        ``work`` must build its adapters before it commits anything (every caller does: the
        adapter is built while the request is still being checked), because a first run cut
        short by ``RefreshRequired`` is rolled back and started over. Each connection is
        refreshed at most once per call. Refresh failures surface as the refresher's errors
        (409 ``connection_broken`` when the grant is gone, 503 ``broker_unavailable``).
        """
        refreshed: set[str] = set()
        scope = _REFRESH_SCOPE.set(refreshed)
        try:
            while True:
                try:
                    return await work()
                except RefreshRequired as due:
                    refreshed.add(due.connection_id)
                    assert self.tokens is not None  # adapter_for raises only with a refresher
                    await self.tokens.ensure_fresh(
                        user_id=due.user_id, connection_id=due.connection_id
                    )
        finally:
            _REFRESH_SCOPE.reset(scope)

    def adapter_context(
        self, owner: str, *, broker: str = "", environment: str = LIVE
    ) -> AdapterContext:
        """What an adapter is built with. ``environment``: a broker's own paper/sandbox
        (``app.brokers.environments``): that environment's hosts in the settings and rate
        buckets of its own in the shared pool."""
        if environment == LIVE:
            settings, http = self.settings, self.broker_http
        else:
            settings = settings_for(self.settings, broker, environment)
            http = (
                None if self.broker_http is None else self.broker_http.for_environment(environment)
            )
        return AdapterContext(
            settings=settings, paper_engine=self.paper_engine, owner=owner, http=http
        )

    def connection_context(self, connection: Connection) -> AdapterContext:
        return self.adapter_context(
            connection.user_id, broker=connection.broker_slug, environment=connection.environment
        )


def ensure_usable(connection: Connection) -> None:
    if connection.status not in USABLE_CONNECTION_STATUSES:
        raise errors.ConnectionBroken(f"the connection is {connection.status}")

"""What services need from the running application, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers.base import BrokerAdapter
from app.brokers.http import HttpPool
from app.brokers.registry import AdapterContext, BrokerRegistry, BrokerSpec
from app.config import Settings
from app.db.models import Connection
from app.db.session import SessionMaker
from app.paper.engine import PaperEngine
from app.security.audit import AuditChain
from app.security.credentials import Credentials
from app.security.vault import TokenVault

USABLE_CONNECTION_STATUSES = frozenset({"active", "expiring"})


@dataclass(frozen=True, slots=True)
class ServiceContext:
    settings: Settings
    sessionmaker: SessionMaker
    registry: BrokerRegistry
    paper_engine: PaperEngine
    vault: TokenVault
    audit: AuditChain
    broker_http: HttpPool | None = None

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
        if connection.ownership == "platform":
            credentials = spec.platform_credentials_for(self.settings)
            if credentials is None:
                raise errors.ConnectionBroken(
                    f"this deployment has no platform {spec.name} account configured"
                )
        elif spec.token_tier is not None:
            if for_order:
                credentials = await self.vault.credentials_for_order(
                    session, user_id=connection.user_id, connection_id=connection.id
                )
            else:
                credentials = await self.vault.credentials_for_read(
                    session, user_id=connection.user_id, connection_id=connection.id
                )
        return spec.factory(self.adapter_context(connection.user_id), credentials)

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
                session, user_id=connection.user_id, connection_id=connection.id
            )

    def build_adapter(
        self, connection: Connection, credentials: Credentials | None
    ) -> BrokerAdapter:
        """The connection's adapter from credentials the caller already took from the vault."""
        return self.spec_for(connection).factory(
            self.adapter_context(connection.user_id), credentials
        )

    def adapter_context(self, owner: str) -> AdapterContext:
        return AdapterContext(
            settings=self.settings,
            paper_engine=self.paper_engine,
            owner=owner,
            http=self.broker_http,
        )


def ensure_usable(connection: Connection) -> None:
    if connection.status not in USABLE_CONNECTION_STATUSES:
        raise errors.ConnectionBroken(f"the connection is {connection.status}")

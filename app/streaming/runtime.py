"""What the app's lifespan starts for streaming: the hub and what wakes it.

Postgres: a ``PgListener`` (LISTEN/NOTIFY), so any number of instances each fan out the
events every instance commits. SQLite (embedded, single instance): the in-process
``LocalNotifier`` wakes the hub after each commit of this process.

The hub reads the outbox tail through its own two-connection engine, not the request pool:
under load every pooled connection can be busy placing orders, and live delivery must not
queue behind them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import make_url

from app.db.session import create_engine, create_sessionmaker, database_key
from app.streaming.config import StreamSettings
from app.streaming.hub import Hub
from app.streaming.outbox import LocalNotifier, install_outbox_hooks
from app.streaming.pg_listener import ChannelHandler, PgListener


class StreamRuntime:
    """Owns the hub and its notification source; ``start``/``stop`` from the lifespan."""

    def __init__(
        self,
        database_url: str,
        settings: StreamSettings,
        handlers: Sequence[ChannelHandler] = (),
    ) -> None:
        install_outbox_hooks()
        self.settings = settings
        self._engine = create_engine(database_url, pool_size=2, max_overflow=0)
        self.hub = Hub(create_sessionmaker(self._engine), settings)
        self._url = make_url(database_url)
        self.listener: PgListener | None = None
        if self._url.get_backend_name() == "postgresql":
            self.listener = PgListener(database_url, self.hub, settings, handlers)
        self._local_token: int | None = None

    async def start(self) -> None:
        if self.listener is None:
            self._local_token = LocalNotifier.register(database_key(self._url), self.hub.notify)
        await self.hub.start()
        if self.listener is not None:
            await self.listener.start()

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        if self._local_token is not None:
            LocalNotifier.unregister(database_key(self._url), self._local_token)
            self._local_token = None
        await self.hub.stop()
        await self._engine.dispose()

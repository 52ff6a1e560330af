"""Postgres LISTEN on a dedicated asyncpg connection, with reconnect and catch-up.

The connection is not from the SQLAlchemy pool: a pooled connection would be recycled,
pre-pinged and shared, and LISTEN state belongs to one session. The payload of each
notification is an event id (``app.streaming.outbox``); the listener only wakes the hub,
which reads the rows itself.

Failure handling: the connection can die (server restart, ``pg_terminate_backend``, a
network cut) or go silent (half-open TCP). asyncpg's termination callback reports the
first; a ``SELECT 1`` probe every ``listener_probe_seconds`` with a timeout catches the
second. Either way the listener reconnects with exponential backoff, re-issues LISTEN,
and only then calls ``hub.resume()``, which reads the outbox after the hub's head. An
event committed while nobody listened is therefore read by that catch-up, and one committed
after LISTEN is notified: none is lost. Subscribers need not reconnect; their cursors are
untouched. The hub's own poll (``poll_seconds``) is a last resort if all else fails.

The same connection listens on further channels for whoever asks (``ChannelHandler``: the
credential cache's drops, ``app.security.credential_cache``); after each (re)connect each
handler's ``resync`` runs, since its notifications may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg  # type: ignore[import-untyped]
from prometheus_client import Counter, Gauge
from sqlalchemy.engine import make_url

from app.streaming.config import StreamSettings
from app.streaming.hub import Hub
from app.streaming.outbox import OUTBOX_CHANNEL

log = logging.getLogger(__name__)

APPLICATION_NAME = "brokerage-gateway-listener"

# Read from the listener at scrape time (``set_function``): the process's running listener,
# the last one started where several app instances share a process (tests), so another
# instance's reconnects never show as this one's state.
LISTENER_UP = Gauge("brokerage_stream_listener_connected", "1 while the LISTEN connection is up")


def _down() -> float:
    return 0.0


_reporting: PgListener | None = None
_Callback = Callable[[asyncpg.Connection, int, str, str], None]


LISTENER_RECONNECTS = Counter(
    "brokerage_stream_listener_connects_total", "LISTEN connections established"
)


class ChannelHandler(Protocol):
    """Another channel on the LISTEN connection: its payloads, and a call after each
    (re)connect (whatever was notified while nobody listened is lost)."""

    @property
    def channel(self) -> str: ...

    def notified(self, payload: str) -> None: ...

    def resync(self) -> None: ...


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+asyncpg://``) as a plain libpq-style DSN."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgListener:
    """Keeps one LISTEN connection alive for a hub; see the module docstring."""

    def __init__(
        self,
        database_url: str,
        hub: Hub,
        settings: StreamSettings,
        handlers: Sequence[ChannelHandler] = (),
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._hub = hub
        self._handlers = tuple(handlers)
        self._settings = settings
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._lost = asyncio.Event()
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the LISTEN connection (for operators and tests)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return None
        return int(conn.get_server_pid())

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_disconnected(self) -> None:
        await self._disconnected.wait()

    async def start(self) -> None:
        """Start listening; waits for the first attempt (a failure is retried in background)."""
        self._task = asyncio.create_task(self._run(), name="stream-pg-listener")
        global _reporting  # the one listener the process's gauge reads
        _reporting = self
        LISTENER_UP.set_function(self._up)
        await self._first_attempt.wait()

    def _up(self) -> float:
        return 1.0 if self.connected else 0.0

    async def stop(self) -> None:
        global _reporting
        if _reporting is self:
            _reporting = None
            LISTENER_UP.set_function(_down)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_terminated(self, _conn: asyncpg.Connection) -> None:
        self._lost.set()

    def _on_notify(self, _conn: asyncpg.Connection, _pid: int, _channel: str, payload: str) -> None:
        try:
            event_id = int(payload)
        except ValueError:
            log.warning("unexpected notification payload on %s", OUTBOX_CHANNEL)
            self._hub.resume()
            return
        self._hub.notify(event_id)

    @staticmethod
    def _forward(handler: ChannelHandler) -> _Callback:
        def forward(_conn: asyncpg.Connection, _pid: int, _channel: str, payload: str) -> None:
            try:
                handler.notified(payload)
            except Exception:  # a handler's bug must not end the LISTEN connection
                log.exception("the handler of channel %s failed", handler.channel)

        return forward

    async def _run(self) -> None:
        backoff = self._settings.reconnect_min_seconds
        while True:
            conn: asyncpg.Connection | None = None
            lost = self._lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._settings.listener_probe_timeout_seconds,
                    server_settings={"application_name": APPLICATION_NAME},
                )
                conn.add_termination_listener(self._on_terminated)
                await conn.add_listener(OUTBOX_CHANNEL, self._on_notify)
                for handler in self._handlers:
                    await conn.add_listener(handler.channel, self._forward(handler))
                self._conn = conn
                self.connects += 1
                LISTENER_RECONNECTS.inc()
                self._disconnected.clear()
                self._connected.set()
                self._first_attempt.set()
                # LISTEN is active: whatever committed before it is in the table now.
                self._hub.resume()
                for handler in self._handlers:
                    handler.resync()
                backoff = self._settings.reconnect_min_seconds
                await self._watch(conn, lost)
                log.warning("the LISTEN connection was lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the LISTEN connection failed (%s); retrying", type(exc).__name__)
            finally:
                self._conn = None
                self._connected.clear()
                self._disconnected.set()
                self._first_attempt.set()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._settings.reconnect_max_seconds)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is gone or stops answering the probe."""
        while not lost.is_set():
            try:
                async with asyncio.timeout(self._settings.listener_probe_seconds):
                    await lost.wait()
                return
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(self._settings.listener_probe_timeout_seconds):
                    await conn.fetchval("SELECT 1")
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return

"""How the HTTP server runs the app: uvicorn on h11, with limits for slow clients.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but it waits
forever for a connection that sends nothing, or sends a request head a byte at a time:
``GuardedH11Protocol`` closes such a connection once ``http_header_timeout_seconds`` pass
without a complete request head. A body that stops arriving is the app's to time out
(``BodySizeLimitMiddleware``, 408). h11 (not httptools) is used so the head size limit is
ours to set (``h11_max_incomplete_event_size``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

import h11
import uvicorn
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app.config import Settings, get_settings
from app.streaming.protocol import SEND_MORE


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not deliver a request head.

    The timeout is ``config.header_timeout`` when ``guard`` set it, else the environment's
    ``BROKERAGE_HTTP_HEADER_TIMEOUT_SECONDS`` (each worker process of ``--workers`` reads it).
    """

    _head_timer: asyncio.TimerHandle | None = None

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        configured = getattr(config, "header_timeout", None)
        self.header_timeout = float(
            configured if configured is not None else get_settings().http_header_timeout_seconds
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle now: uvicorn's keep-alive timer runs until the next byte arrives.
        self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Arm the timer while a request head is incomplete; disarm it once it is read.

        h11 stays in ``IDLE`` for the peer until the whole head was parsed; a connection
        waiting for its keep-alive timer (nothing received since the last response) is
        left to that timer.
        """
        if self.transport.is_closing():
            return
        waiting_for_head = self.conn.their_state is h11.IDLE and (
            self.timeout_keep_alive_task is None
        )
        if waiting_for_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)
        elif not waiting_for_head:
            self._cancel_head_timer()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class CoalescedTransport(asyncio.Transport):
    """A transport that can hold writes and hand them to the socket as one write.

    A stream subscriber's queued events are sent one WebSocket message each, and each
    ``websocket.send`` made uvicorn write to the socket at once: one system call (and one
    wake-up of the reader) per message. While held (``hold``), writes are kept; ``release``
    writes them, in order, as one. Not held, a write goes straight through, so nothing
    waits that was not asked to. A hold never outlives the event-loop turn it began in: a
    batch interrupted (its sender suspended or gone) is written at the next turn anyway.
    ``close`` writes what is held first; ``abort`` and a socket already closing drop it.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held = False
        self._pending: list[bytes | bytearray | memoryview] = []

    def hold(self) -> None:
        if not self._held:
            self._held = True
            self._loop.call_soon(self.release)

    def release(self) -> None:
        self._held = False
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            self._pending.append(data)
        else:
            self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.release()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._pending = False, []
        self._transport.abort()

    def write_eof(self) -> None:
        self.release()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class CoalescingWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (websockets, sans-I/O) that writes a batch of messages
    with one socket write: a ``websocket.send`` carrying ``SEND_MORE`` true
    (``app.streaming.protocol``) is held, and written with the next send without it. Each
    message is still its own WebSocket frame; a server without this protocol ignores the
    key and writes each at once."""

    _coalesced: CoalescedTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._coalesced = CoalescedTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(self._coalesced)

    async def send(self, message: ASGISendEvent) -> None:
        more = message["type"] == "websocket.send" and message.get(SEND_MORE) is True
        if more:
            self._coalesced.hold()
        try:
            await super().send(message)
        finally:
            if not more:
                self._coalesced.release()


PROTOCOL = "app.server:GuardedH11Protocol"
WEBSOCKET_PROTOCOL = "app.server:CoalescingWebSocketsProtocol"


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options every way of serving the app uses (``brokerage serve``, tests)."""
    return {
        "http": PROTOCOL,
        "ws": WEBSOCKET_PROTOCOL,
        "timeout_keep_alive": settings.http_keep_alive_timeout_seconds,
        "h11_max_incomplete_event_size": settings.http_max_header_bytes,
    }


def guard(config: uvicorn.Config, settings: Settings) -> uvicorn.Config:
    """Give an in-process server's config these settings' head timeout."""
    config.header_timeout = settings.http_header_timeout_seconds  # type: ignore[attr-defined]
    return config

"""How the HTTP server runs the app: uvicorn on httptools, with limits for slow clients.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but it waits
forever for a connection that sends nothing, or sends a request head a byte at a time, and
its httptools protocol never bounds a request head. ``GuardedHttpToolsProtocol`` closes a
connection once ``http_header_timeout_seconds`` pass without a complete request head, and
answers 400 to a head still incomplete after ``http_max_header_bytes``. A body that stops
arriving is the app's to time out (``BodySizeLimitMiddleware``, 408).

httptools (llhttp, in C) rather than h11 (pure Python): about 0.2 ms less CPU per request
(scripts/bench/orders' bare endpoint, measured with both), with the same two guards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

import uvicorn
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app.config import Settings, get_settings
from app.streaming.protocol import SEND_MORE


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size bound for request heads.

    A connection is waiting for a head from its start, and again from the first byte after
    a response (an idle keep-alive connection is left to uvicorn's keep-alive timer). While
    it waits, the head timer runs (``config.header_timeout`` when ``guard`` set it, else
    ``BROKERAGE_HTTP_HEADER_TIMEOUT_SECONDS``: each worker process of ``--workers`` reads
    the environment), and the bytes received count against ``config.max_header_bytes`` (else
    ``BROKERAGE_HTTP_MAX_HEADER_BYTES``). As with h11's bound, a head that arrives whole in
    one read is parsed at once; the bound is on what a slow head makes the server hold.
    """

    _head_timer: asyncio.TimerHandle | None = None
    # False from the connection's start and from each message's first byte until its head
    # is complete.
    _head_complete = False
    _head_bytes = 0

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        timeout = getattr(config, "header_timeout", None)
        limit = getattr(config, "max_header_bytes", None)
        if timeout is None or limit is None:
            settings = get_settings()
            timeout = settings.http_header_timeout_seconds if timeout is None else timeout
            limit = settings.http_max_header_bytes if limit is None else limit
        self.header_timeout = float(timeout)
        self.max_header_bytes = int(limit)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or self.parser is None:
            self._cancel_head_timer()
            return
        if self._head_complete:
            self._cancel_head_timer()
            return
        # Still inside a head after this read: all of it is head (or a pipelined request's
        # tail before it, counted too: the bound errs towards refusing).
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self._cancel_head_timer()
            self.send_400_response("Request head too large.")
            return
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_complete = False
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_complete = True
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle now: uvicorn's keep-alive timer runs until the next byte arrives.
        self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

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


PROTOCOL = "app.server:GuardedHttpToolsProtocol"
WEBSOCKET_PROTOCOL = "app.server:CoalescingWebSocketsProtocol"


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options every way of serving the app uses (``brokerage serve``, tests)."""
    return {
        "http": PROTOCOL,
        "ws": WEBSOCKET_PROTOCOL,
        "timeout_keep_alive": settings.http_keep_alive_timeout_seconds,
    }


def guard(config: uvicorn.Config, settings: Settings) -> uvicorn.Config:
    """Give an in-process server's config these settings' head timeout and head bound."""
    config.header_timeout = settings.http_header_timeout_seconds  # type: ignore[attr-defined]
    config.max_header_bytes = settings.http_max_header_bytes  # type: ignore[attr-defined]
    return config

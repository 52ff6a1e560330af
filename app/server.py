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
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import Settings, get_settings


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


PROTOCOL = "app.server:GuardedH11Protocol"


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options every way of serving the app uses (``brokerage serve``, tests)."""
    return {
        "http": PROTOCOL,
        "timeout_keep_alive": settings.http_keep_alive_timeout_seconds,
        "h11_max_incomplete_event_size": settings.http_max_header_bytes,
    }


def guard(config: uvicorn.Config, settings: Settings) -> uvicorn.Config:
    """Give an in-process server's config these settings' head timeout."""
    config.header_timeout = settings.http_header_timeout_seconds  # type: ignore[attr-defined]
    return config

"""The reconnect loop every upstream order stream shares; brokers supply the protocol.

A broker's order stream (Alpaca ``trade_updates``, Tradier account events, the tastytrade
account streamer, Schwab ``ACCT_ACTIVITY``, the Coinbase ``user`` channel) has no replay.
So after any gap (a drop, a failed handshake, a connection open but silent past
``idle_timeout``) the stream reconnects with jittered exponential backoff, handshakes and
subscribes again, and first yields a REST catch-up of recent orders before live updates.
Applying a report twice is harmless (the order state table drops duplicates).

``UpstreamStream`` holds that loop; a subclass in ``app/brokers/<slug>/stream.py`` keeps
its protocol: where to connect (``_open``), the handshake/subscription (``_handshake``),
the catch-up (``_catch_up``) and how frames become updates (``_read``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from app.brokers import errors
from app.brokers.base import BrokerOrder, OrderUpdate
from app.observability import UPSTREAM_CONNECTS, UPSTREAM_INTERRUPTIONS

log = logging.getLogger(__name__)

# What ends one connection but not the stream: the loop reconnects after it.
INTERRUPTIONS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    InvalidHandshake,
    InvalidURI,
    WebSocketException,
    errors.Transient,
    errors.UnknownBrokerValue,
    ValueError,
)


class StreamRefused(Exception):
    """The broker answered a handshake or subscription with a refusal (a token it no longer
    takes, a request it turned down): counted, and after ``max_refused`` in a row, fatal."""


def decode_object(frame: str | bytes, what: str, broker: str) -> dict[str, Any]:
    """One JSON object frame (text or binary), fractions as ``Decimal``."""
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    message = json.loads(text, parse_float=Decimal)
    if not isinstance(message, dict):
        raise errors.UnknownBrokerValue(
            f"{broker} sent an unknown {what}: {type(message).__name__!r}", broker=broker
        )
    return message


def frames_logger(module: str) -> logging.Logger:
    """The websockets connection logger of one stream module. The library logs every frame
    at DEBUG, credentials in auth messages included, so this logger never goes below INFO."""
    frames = logging.getLogger(module + ".frames")
    frames.setLevel(logging.INFO)
    return frames


class UpstreamStream:
    """Order updates of one account, for ever (or until the broker refuses the credential).

    Subclasses set ``broker``, ``name`` (for logs), ``frames`` (``frames_logger(__name__)``)
    and the connection options, and implement ``_handshake``, ``_catch_up_orders`` and
    ``_read``. ``connects`` and ``silences`` count what happened, for tests and metrics.
    """

    broker: str
    name: str
    frames: logging.Logger
    ping_interval: float = 10.0
    max_size: int = 2**22
    interruptions: tuple[type[Exception], ...] = INTERRUPTIONS
    # Refusals in a row after which the credential is taken as dead; None: a refusal is
    # only an interruption.
    max_refused: int | None = None

    def __init__(
        self,
        account_ref: str,
        *,
        idle_timeout: float,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._account_ref = account_ref
        self.idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self._max_backoff = max_backoff
        self.connects = 0
        self.silences = 0  # connections restarted because they went silent

    # --- the protocol, per broker -----------------------------------------------------------

    async def _open(self) -> str:
        """Whatever precedes a connection (a session, the streamer's address); the URL."""
        raise NotImplementedError

    async def _handshake(self, ws: ClientConnection) -> None:
        """Authenticate and subscribe; raise ``StreamRefused`` or ``AuthenticationFailed``
        when the broker says no."""
        raise NotImplementedError

    async def _catch_up_orders(self) -> list[BrokerOrder]:
        """Recent orders over REST: what a gap may have hidden."""
        raise NotImplementedError

    def _read(self, ws: ClientConnection) -> AsyncIterator[OrderUpdate]:
        """Updates from this connection until it drops, goes silent or closes."""
        raise NotImplementedError

    def _finished(self) -> bool:
        """True when the stream should end quietly (its credential expired)."""
        return False

    def _refused_for_good(self, exc: StreamRefused) -> errors.AuthenticationFailed:
        return errors.AuthenticationFailed(
            f"{self.name} refused the credential: {exc}", broker=self.broker
        )

    # --- the shared loop --------------------------------------------------------------------

    async def _catch_up(self) -> list[OrderUpdate]:
        orders = await self._catch_up_orders()
        return [OrderUpdate(self._account_ref, o, o.updated_at) for o in orders]

    async def updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates for ever. Raises AuthenticationFailed when the credential stops
        working (a REST call or the handshake says so, or ``max_refused`` refusals)."""
        failures = 0
        refused = 0
        while True:
            if self._finished():
                log.info("%s: credential expired; ending for a fresh one", self.name)
                return
            try:
                url = await self._open()
                async with connect(
                    url,
                    open_timeout=self._handshake_timeout,
                    # Protocol-level pings as well: a half-open TCP connection fails fast.
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_interval,
                    max_size=self.max_size,
                    logger=self.frames,
                ) as ws:
                    await self._handshake(ws)
                    self.connects += 1
                    UPSTREAM_CONNECTS.labels(broker=self.broker).inc()
                    failures = refused = 0
                    for update in await self._catch_up():
                        yield update
                    async for update in self._read(ws):
                        yield update
            except errors.AuthenticationFailed:
                if self._finished():
                    return
                raise
            except StreamRefused as exc:
                refused += 1
                log.warning(
                    "%s refused the connection", self.name, extra=self._extra(reason=str(exc))
                )
                if self.max_refused is not None and refused >= self.max_refused:
                    raise self._refused_for_good(exc) from None
            except self.interruptions as exc:
                log.warning(
                    "%s interrupted; reconnecting",
                    self.name,
                    extra=self._extra(error=type(exc).__name__),
                )
            failures += 1
            UPSTREAM_INTERRUPTIONS.labels(broker=self.broker).inc()
            delay = min(self._max_backoff, 0.25 * 2 ** min(failures, 8))
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter

    async def _recv(self, ws: ClientConnection) -> str | bytes | None:
        """The next frame, or None when nothing came for ``idle_timeout``: an open but
        silent connection, logged and counted; the caller returns and the loop restarts
        (the catch-up covers the gap)."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for around recv() can swallow
            # a cancellation that arrives with a frame (gh-86296), and a stopped stream would
            # keep running.
            async with asyncio.timeout(self.idle_timeout):
                return await ws.recv()
        except TimeoutError:
            log.warning("%s silent; restarting", self.name, extra=self._extra())
            self.silences += 1
            return None

    def _skipped(self, what: str, **extra: object) -> None:
        """Log (loudly, with the traceback) a message the mapping refused; the stream goes on."""
        log.error(
            "%s: %s with a value the mapping does not know; skipped",
            self.name,
            what,
            exc_info=True,
            extra=self._extra(**extra),
        )

    def _extra(self, **extra: object) -> dict[str, object]:
        return {"broker": self.broker, **extra}

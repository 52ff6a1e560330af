"""The reconnect loop every streaming market-data session shares; brokers supply the
protocol (reference "Design implications" C.1, C.6).

``UpstreamMarketSession`` is a ``MarketDataSession`` over one WebSocket. It keeps the wanted
set and what the broker holds, and on ``update`` hands the subclass the difference
(``SubscriptionDiff``) to put on the wire in the broker's own way: set-replacing brokers
(Alpaca, Tradier, Schwab ``SUBS``) send ``diff.wanted``, the others ``diff.added`` and
``diff.removed``. After any interruption (a drop, a failed
handshake, a connection silent past ``idle_timeout``) it yields ``MarketGap`` once, reconnects
with jittered exponential backoff, subscribes to everything wanted, and yields
``MarketResubscribed`` before the first event of the new connection: never a silent hole.
``AuthenticationFailed`` is raised (after the gap): no reconnect helps it.

A subclass in ``app/brokers/<slug>/market_stream.py`` implements ``_open`` (the URL, after
whatever precedes it: a session id, a quote token), ``_handshake`` (authenticate),
``_send_subscription`` (one diff on the wire) and ``_read`` (frames to events, using
``_recv`` for the idle timeout). Limits are checked by ``check_subscription`` before
anything is sent, so a refused ``update`` changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from app.brokers import errors
from app.brokers.base import (
    MarketDataCapabilities,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketResubscribed,
)
from app.brokers.market_data.subscription import SubscriptionDiff, check_subscription
from app.brokers.upstream_stream import INTERRUPTIONS, StreamRefused

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UpstreamMarketSession:
    """One upstream market-data connection (a ``MarketDataSession``; one reader).

    Subclasses set ``broker``, ``name`` and ``frames`` (``upstream_stream.frames_logger``).
    ``connects``, ``gaps`` and ``silences`` count what happened.
    """

    broker: str
    name: str
    frames: logging.Logger
    ping_interval: float = 10.0
    max_size: int = 2**22
    headers: dict[str, str] | None = None  # extra opening-handshake headers (a codec choice)
    # Appended to the gap's reason when the server's certificate is not verified (where a
    # deployment gives a broker host's CA bundle).
    tls_hint: str = ""
    interruptions: tuple[type[Exception], ...] = (*INTERRUPTIONS, StreamRefused)

    def __init__(
        self,
        capabilities: MarketDataCapabilities,
        *,
        idle_timeout: float,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
        clock: Callable[[], datetime] = _utcnow,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.capabilities = capabilities
        # For ``wss://`` URLs (None: the default verifying context).
        self._tls = tls
        self.idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self._max_backoff = max_backoff
        self._clock = clock
        self._wanted = MarketDataSubscription()
        self._held = MarketDataSubscription()  # what the current connection subscribed
        self._ws: ClientConnection | None = None
        self._lock = asyncio.Lock()  # one subscription change on the wire at a time
        self._closed = asyncio.Event()
        self.connects = 0
        self.gaps = 0
        self.silences = 0

    # --- the protocol, per broker -----------------------------------------------------------

    async def _open(self) -> str:
        """Whatever precedes a connection; the URL."""
        raise NotImplementedError

    async def _handshake(self, ws: ClientConnection) -> None:
        """Authenticate; raise ``AuthenticationFailed`` or ``StreamRefused``."""
        raise NotImplementedError

    async def _send_subscription(self, ws: ClientConnection, diff: SubscriptionDiff) -> None:
        """Put one change on the wire: ``diff.wanted`` for a set-replacing broker, else
        ``diff.added`` and ``diff.removed``."""
        raise NotImplementedError

    def _read(self, ws: ClientConnection) -> AsyncIterator[MarketEvent]:
        """Events from this connection until it drops, goes silent (``_recv`` returns
        None: return) or closes."""
        raise NotImplementedError

    # --- the shared part --------------------------------------------------------------------

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The TLS context of ``wss://`` connections (None: the default one)."""
        return self._tls

    @property
    def wanted(self) -> MarketDataSubscription:
        return self._wanted

    async def update(self, wanted: MarketDataSubscription) -> None:
        """Replace the wanted set: ``MarketDataLimit`` (nothing changed) beyond the caps;
        otherwise the diff is sent now if connected, or with everything at the next
        connection. A send that fails is not an error here: the connection's reader sees
        the drop, and the reconnect subscribes the whole set."""
        check_subscription(self.capabilities, wanted, broker=self.broker)
        async with self._lock:
            self._wanted = wanted
            ws = self._ws
            if ws is None:
                return
            diff = SubscriptionDiff.between(self._held, wanted)
            if diff.is_empty():
                return
            try:
                await self._send_subscription(ws, diff)
            except self.interruptions as exc:
                log.warning(
                    "%s: subscription change not sent; the reconnect sends it",
                    self.name,
                    extra={"broker": self.broker, "error": type(exc).__name__},
                )
                return
            self._held = wanted

    async def events(self) -> AsyncIterator[MarketEvent]:
        failures = 0
        gap_open = False
        while not self._closed.is_set():
            try:
                url = await self._open()
                tls: dict[str, Any] = {}
                if self._tls is not None and url.startswith("wss://"):
                    tls["ssl"] = self._tls
                async with connect(
                    url,
                    open_timeout=self._handshake_timeout,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_interval,
                    max_size=self.max_size,
                    additional_headers=self.headers,
                    logger=self.frames,
                    **tls,
                ) as ws:
                    await self._handshake(ws)
                    async with self._lock:
                        self._held = MarketDataSubscription()
                        wanted = self._wanted
                        if not wanted.is_empty():
                            await self._send_subscription(
                                ws, SubscriptionDiff.between(self._held, wanted)
                            )
                        self._held = wanted
                        self._ws = ws
                    self.connects += 1
                    failures = 0
                    if gap_open:
                        gap_open = False
                        yield MarketResubscribed(at=self._clock())
                    async for event in self._read(ws):
                        yield event
                    if self._closed.is_set():
                        return
                    raise TimeoutError("the connection ended")
            except errors.AuthenticationFailed as exc:
                self._ws = None
                if not gap_open:
                    self.gaps += 1
                    yield MarketGap(reason=f"{self.name}: {exc.reason}", since=self._clock())
                raise
            except self.interruptions as exc:
                self._ws = None
                if self._closed.is_set():
                    return
                reason = f"{self.name} interrupted ({type(exc).__name__})"
                if isinstance(exc, ssl.SSLCertVerificationError):
                    # A configuration error: say which, and what fixes it.
                    reason = (
                        f"{self.name}: the server's TLS certificate was not verified"
                        f" ({exc.verify_message}){self.tls_hint}"
                    )
                    log.error(reason, extra={"broker": self.broker})
                else:
                    log.warning(
                        "%s interrupted; reconnecting",
                        self.name,
                        extra={"broker": self.broker, "error": type(exc).__name__},
                    )
                if not gap_open:
                    gap_open = True
                    self.gaps += 1
                    yield MarketGap(reason=reason, since=self._clock())
            finally:
                self._ws = None
            failures += 1
            delay = min(self._max_backoff, 0.25 * 2 ** min(failures, 8))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._closed.wait(),
                    random.uniform(delay / 2, delay),  # noqa: S311 - jitter
                )

    async def _recv(self, ws: ClientConnection) -> str | bytes | None:
        """The next frame, or None when nothing came for ``idle_timeout`` (counted)."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                return await ws.recv()
        except TimeoutError:
            log.warning("%s silent; reconnecting", self.name, extra={"broker": self.broker})
            self.silences += 1
            return None

    async def close(self) -> None:
        self._closed.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

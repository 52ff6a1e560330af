"""tastytrade's account streamer: upstream order notifications, reconnected and caught up.

Protocol (tastytrade/tastytrade-api-js ``lib/account-streamer.ts``, tastyware/tastytrade
``AlertStreamer``; hosts wss://streamer.tastyworks.com and, for the sandbox,
wss://streamer.cert.tastyworks.com):

1. connect; every message we send carries ``auth-token`` (``"Bearer <access token>"``),
   ``request-id`` (counting up) and ``source``;
2. send ``{"action": "connect", "value": ["<account-number>"], ...}``, receive
   ``{"status": "ok", "action": "connect", "web-socket-session-id": "...", "value": [...],
   "request-id": 1}`` (``"status": "error"`` with a ``message`` when refused);
3. send ``{"action": "heartbeat", ...}`` every ``heartbeat_interval`` seconds (the JS SDK's
   interval is 20 s), answered ``{"status": "ok", "action": "heartbeat", ...}``;
4. receive notifications ``{"type": "Order", "data": {<order>}, "timestamp": <epoch ms>}``
   (other types: AccountBalance, CurrentPosition, ...; several may come as
   ``{"results": [...]}``).

The heartbeat answers make silence detectable: a connection that stays open but says
nothing (no notification, no heartbeat answer) for ``idle_timeout`` is restarted. The stream
has no replay, so every (re)connection first yields a REST catch-up of the live orders;
applying a report twice is harmless (the state table drops duplicates).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from app.brokers import errors
from app.brokers.base import BrokerOrder, OrderUpdate
from app.brokers.tastytrade import auth, mapping

log = logging.getLogger(__name__)
# The websockets library logs every frame at DEBUG, access tokens included. Its connection
# logger is ours and never goes below INFO.
_ws_log = logging.getLogger(__name__ + ".frames")
_ws_log.setLevel(logging.INFO)

CatchUp = Callable[[str], Awaitable[list[BrokerOrder]]]
SOURCE = "brokerage-gateway"
# A connect refused this many times in a row, each with a freshly minted token: the grant
# may no longer use the account.
MAX_REFUSED_CONNECTS = 2


def decode(frame: str | bytes) -> dict[str, Any]:
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    message = json.loads(text, parse_float=Decimal)
    if not isinstance(message, dict):
        raise mapping.unknown("streamer message", type(message).__name__)
    return message


class _Refused(Exception):
    """The streamer answered ``status: error`` to our connect or heartbeat."""


class AccountStreamer:
    def __init__(
        self,
        url: str,
        account_ref: str,
        *,
        token: Callable[[], Awaitable[str]],
        invalidate: Callable[[str], None],
        catch_up: CatchUp,
        heartbeat_interval: float = 20.0,
        idle_timeout: float = 65.0,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._url = url
        self._account_ref = account_ref
        self._token = token
        self._invalidate = invalidate
        self._catch_up = catch_up
        self.heartbeat_interval = heartbeat_interval
        self.idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self._max_backoff = max_backoff
        self._request_id = 0
        self._last_token: str | None = None
        self.connects = 0
        self.heartbeats_sent = 0
        self.silences = 0  # connections restarted because they went silent

    def __repr__(self) -> str:
        return f"AccountStreamer(url={self._url!r})"

    async def _send(self, ws: ClientConnection, action: str, value: object = None) -> str:
        """Send one action with a current token; returns the token used."""
        token = await self._token()
        self._request_id += 1
        message: dict[str, Any] = {
            "action": action,
            "auth-token": auth.bearer(token),
            "request-id": self._request_id,
            "source": SOURCE,
        }
        if value is not None:
            message["value"] = value
        await ws.send(json.dumps(message))
        self._last_token = token
        return token

    async def _handshake(self, ws: ClientConnection) -> None:
        token = await self._send(ws, "connect", [self._account_ref])
        request_id = self._request_id
        deadline = time.monotonic() + self._handshake_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer to the streamer connect")
            async with asyncio.timeout(remaining):
                raw = await ws.recv()
            message = decode(raw)
            if message.get("action") != "connect" or message.get("request-id") not in (
                request_id,
                None,
            ):
                continue  # a notification or an unrelated answer before the ack
            if message.get("status") == "ok":
                return
            self._invalidate(token)
            raise _Refused(str(message.get("message") or "connect refused"))

    async def updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates for ever. Raises AuthenticationFailed when the grant stops working
        (the refresh token is refused, or every connect is refused with fresh tokens)."""
        failures = 0
        refused = 0
        while True:
            try:
                async with connect(
                    self._url,
                    open_timeout=self._handshake_timeout,
                    # Protocol-level pings as well: a half-open TCP connection fails fast.
                    ping_interval=10,
                    ping_timeout=10,
                    max_size=2**22,
                    logger=_ws_log,
                ) as ws:
                    await self._handshake(ws)
                    self.connects += 1
                    failures = refused = 0
                    for order in await self._catch_up(self._account_ref):
                        yield OrderUpdate(self._account_ref, order, order.updated_at)
                    async for update in self._read(ws):
                        yield update
            except errors.AuthenticationFailed:
                raise
            except _Refused as exc:
                refused += 1
                log.warning(
                    "tastytrade streamer refused the connection's token",
                    extra={"broker": mapping.SLUG, "reason": str(exc)},
                )
                if refused >= MAX_REFUSED_CONNECTS:
                    raise errors.AuthenticationFailed(
                        f"the tastytrade account streamer refused the grant: {exc}",
                        broker=mapping.SLUG,
                    ) from None
            except (
                OSError,
                TimeoutError,
                InvalidHandshake,
                InvalidURI,
                WebSocketException,
                errors.Transient,
                errors.UnknownBrokerValue,
                ValueError,
            ) as exc:
                log.warning(
                    "tastytrade account streamer interrupted; reconnecting",
                    extra={"broker": mapping.SLUG, "error": type(exc).__name__},
                )
            failures += 1
            delay = min(self._max_backoff, 0.25 * 2 ** min(failures, 8))
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter

    async def _read(self, ws: ClientConnection) -> AsyncIterator[OrderUpdate]:
        """Notifications until the connection drops or goes silent; heartbeats meanwhile."""
        last_heard = time.monotonic()
        next_heartbeat = last_heard + self.heartbeat_interval
        while True:
            now = time.monotonic()
            if now >= next_heartbeat:
                await self._send(ws, "heartbeat")
                self.heartbeats_sent += 1
                next_heartbeat = now + self.heartbeat_interval
            wait = min(next_heartbeat, last_heard + self.idle_timeout) - now
            if now - last_heard >= self.idle_timeout:
                log.warning("tastytrade account streamer silent; restarting")
                self.silences += 1
                return
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for around recv() can swallow a
                # cancellation that arrives with a frame, and the stream would not stop.
                async with asyncio.timeout(max(wait, 0.001)):
                    raw = await ws.recv()
            except TimeoutError:
                continue
            last_heard = time.monotonic()
            message = decode(raw)
            batch = message.get("results")
            for one in batch if isinstance(batch, list) else [message]:
                if not isinstance(one, dict):
                    continue
                if one.get("action") == "heartbeat" and one.get("status") not in (None, "ok"):
                    # A heartbeat refused (its token expired): reconnect with a fresh one.
                    if self._last_token is not None:
                        self._invalidate(self._last_token)
                    raise _Refused(str(one.get("message") or "heartbeat refused"))
                try:
                    update = mapping.update_from_notification(one, self._account_ref)
                except errors.UnknownBrokerValue:
                    log.error(
                        "tastytrade order notification with a value the mapping does not "
                        "know; skipped",
                        exc_info=True,
                        extra={"broker": mapping.SLUG},
                    )
                    continue
                if update is not None:
                    yield update

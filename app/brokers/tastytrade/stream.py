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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from app.brokers import errors
from app.brokers.base import BrokerOrder, OrderUpdate
from app.brokers.tastytrade import auth, mapping
from app.brokers.upstream_stream import (
    StreamRefused,
    UpstreamStream,
    decode_object,
    frames_logger,
)

log = logging.getLogger(__name__)

CatchUp = Callable[[str], Awaitable[list[BrokerOrder]]]
SOURCE = "brokerage-gateway"


def decode(frame: str | bytes) -> dict[str, Any]:
    return decode_object(frame, "streamer message", mapping.SLUG)


class AccountStreamer(UpstreamStream):
    broker = mapping.SLUG
    name = "tastytrade account streamer"
    frames = frames_logger(__name__)  # never DEBUG: every frame we send carries a token
    # A connect refused this many times in a row, each with a freshly minted token: the
    # grant may no longer use the account.
    max_refused = 2

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
        **timing: float,
    ) -> None:
        """``timing``: ``handshake_timeout``, ``max_backoff`` (``UpstreamStream``)."""
        super().__init__(account_ref, idle_timeout=idle_timeout, **timing)
        self._url = url
        self._token = token
        self._invalidate = invalidate
        self._catch_up_from = catch_up
        self.heartbeat_interval = heartbeat_interval
        self._request_id = 0
        self._last_token: str | None = None
        self.heartbeats_sent = 0

    def __repr__(self) -> str:
        return f"AccountStreamer(url={self._url!r})"

    def _refused_for_good(self, exc: StreamRefused) -> errors.AuthenticationFailed:
        return errors.AuthenticationFailed(
            f"the tastytrade account streamer refused the grant: {exc}", broker=mapping.SLUG
        )

    async def _open(self) -> str:
        return self._url

    async def _catch_up_orders(self) -> list[BrokerOrder]:
        return await self._catch_up_from(self._account_ref)

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
            raise StreamRefused(str(message.get("message") or "connect refused"))

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
                log.warning("%s silent; restarting", self.name, extra={"broker": self.broker})
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
                    raise StreamRefused(str(one.get("message") or "heartbeat refused"))
                try:
                    update = mapping.update_from_notification(one, self._account_ref)
                except errors.UnknownBrokerValue:
                    self._skipped("order notification")
                    continue
                if update is not None:
                    yield update

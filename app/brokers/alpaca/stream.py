"""Alpaca's ``trade_updates`` WebSocket: upstream order updates, reconnected and caught up.

Protocol (https://docs.alpaca.markets/docs/websocket-streaming):

1. connect ``wss://api.alpaca.markets/stream``;
2. send ``{"action": "auth", "key": ..., "secret": ...}``, receive
   ``{"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}}``
   (``"unauthorized"`` for a bad key);
3. send ``{"action": "listen", "data": {"streams": ["trade_updates"]}}``, receive
   ``{"stream": "listening", "data": {"streams": ["trade_updates"]}}``;
4. receive ``{"stream": "trade_updates", "data": {"event": ..., "order": {...}, ...}}``.

Alpaca may send frames as binary (JSON in a binary frame; the docs note it for the paper
host), so both frame kinds are decoded. The stream has no replay: after any gap (a drop, a
failed handshake, or a connection that stays open but silent longer than ``idle_timeout``)
the stream reconnects with backoff and first yields a REST catch-up of recent orders;
applying a report twice is harmless (the state table drops duplicates).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from app.brokers import errors
from app.brokers.alpaca import auth, mapping
from app.brokers.base import BrokerOrder, OrderUpdate
from app.security.credentials import Credentials

log = logging.getLogger(__name__)
# The websockets library logs every frame at DEBUG, the auth message (key and secret)
# included. Its connection logger is ours and never goes below INFO.
_ws_log = logging.getLogger(__name__ + ".frames")
_ws_log.setLevel(logging.INFO)

CatchUp = Callable[[str], Awaitable[list[BrokerOrder]]]


def decode(frame: str | bytes) -> dict[str, Any]:
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    message = json.loads(text)
    if not isinstance(message, dict):
        raise mapping.unknown("stream message", type(message).__name__)
    return message


class TradeUpdatesStream:
    def __init__(
        self,
        url: str,
        credentials: Credentials,
        account_ref: str,
        *,
        catch_up: CatchUp,
        idle_timeout: float = 120.0,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._url = url
        self._credentials = credentials
        self._account_ref = account_ref
        self._catch_up = catch_up
        self.idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self._max_backoff = max_backoff
        self.connects = 0

    def __repr__(self) -> str:
        return f"TradeUpdatesStream(url={self._url!r})"

    async def _handshake(self, ws: ClientConnection) -> None:
        async def expect(stream: str) -> dict[str, Any]:
            async with asyncio.timeout(self._handshake_timeout):
                raw = await ws.recv()
            message = decode(raw)
            if message.get("stream") != stream:
                raise mapping.unknown("stream handshake answer", message.get("stream"))
            data = message.get("data")
            return data if isinstance(data, dict) else {}

        await ws.send(json.dumps(auth.auth_message(self._credentials)))
        answer = await expect("authorization")
        if answer.get("status") != "authorized":
            raise errors.AuthenticationFailed(
                "Alpaca refused the stream's credentials", broker=mapping.SLUG
            )
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        listening = await expect("listening")
        streams = listening.get("streams")
        if not isinstance(streams, list) or "trade_updates" not in streams:
            raise mapping.unknown("listening streams", streams)

    async def updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates for ever. Raises AuthenticationFailed when the key stops working."""
        failures = 0
        while True:
            try:
                async with connect(
                    self._url,
                    open_timeout=self._handshake_timeout,
                    ping_interval=10,
                    ping_timeout=10,
                    max_size=2**22,
                    logger=_ws_log,
                ) as ws:
                    await self._handshake(ws)
                    self.connects += 1
                    failures = 0
                    for order in await self._catch_up(self._account_ref):
                        yield OrderUpdate(self._account_ref, order, order.updated_at)
                    async for update in self._read(ws):
                        yield update
            except errors.AuthenticationFailed:
                raise
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
                    "alpaca trade_updates stream interrupted; reconnecting",
                    extra={"broker": mapping.SLUG, "error": type(exc).__name__},
                )
            failures += 1
            delay = min(self._max_backoff, 0.25 * 2 ** min(failures, 8))
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter

    async def _read(self, ws: ClientConnection) -> AsyncIterator[OrderUpdate]:
        while True:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for around recv() can swallow a
                # cancellation that arrives with a frame, and the stream would not stop.
                async with asyncio.timeout(self.idle_timeout):
                    raw = await ws.recv()
            except TimeoutError:
                # Open but silent: restart, and the catch-up covers whatever we missed.
                log.warning("alpaca trade_updates stream silent; restarting")
                return
            message = decode(raw)
            if message.get("stream") != "trade_updates":
                continue
            try:
                yield mapping.update_from_event(message.get("data"), self._account_ref)
            except errors.UnknownBrokerValue:
                log.error(
                    "alpaca trade update with a value the mapping does not know; skipped",
                    exc_info=True,
                    extra={"broker": mapping.SLUG},
                )

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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from app.brokers import errors
from app.brokers.alpaca import auth, mapping
from app.brokers.base import BrokerOrder, OrderUpdate
from app.brokers.upstream_stream import UpstreamStream, decode_object, frames_logger
from app.security.credentials import Credentials

CatchUp = Callable[[str], Awaitable[list[BrokerOrder]]]


def decode(frame: str | bytes) -> dict[str, Any]:
    return decode_object(frame, "stream message", mapping.SLUG)


class TradeUpdatesStream(UpstreamStream):
    broker = mapping.SLUG
    name = "alpaca trade_updates stream"
    frames = frames_logger(__name__)  # never DEBUG: the auth frame carries key and secret

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        account_ref: str,
        *,
        catch_up: CatchUp,
        idle_timeout: float = 120.0,
        **timing: float,
    ) -> None:
        """``timing``: ``handshake_timeout``, ``max_backoff`` (``UpstreamStream``)."""
        super().__init__(account_ref, idle_timeout=idle_timeout, **timing)
        self._url = url
        self._credentials = credentials
        self._catch_up_from = catch_up

    def __repr__(self) -> str:
        return f"TradeUpdatesStream(url={self._url!r})"

    async def _open(self) -> str:
        return self._url

    async def _catch_up_orders(self) -> list[BrokerOrder]:
        return await self._catch_up_from(self._account_ref)

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

    async def _read(self, ws: ClientConnection) -> AsyncIterator[OrderUpdate]:
        while (raw := await self._recv(ws)) is not None:
            message = decode(raw)
            if message.get("stream") != "trade_updates":
                continue
            try:
                update = mapping.update_from_event(message.get("data"), self._account_ref)
            except errors.UnknownBrokerValue:
                self._skipped("trade update")
                continue
            if update is not None:  # None: a leg of an mleg order on its own (no parent id)
                yield update

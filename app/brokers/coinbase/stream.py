"""The Advanced Trade ``user`` channel: upstream order updates, kept alive and caught up.

Protocol (https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/
websocket-channels and the ``user`` page of the AsyncAPI reference; coinbase-advanced-py
``websocket_base._build_subscription_message``):

1. connect ``wss://advanced-trade-ws-user.coinbase.com``;
2. send ``{"type": "subscribe", "channel": "heartbeats", "jwt": <jwt>}`` and
   ``{"type": "subscribe", "channel": "user", "jwt": <jwt>}`` (``product_ids`` omitted: all
   products). Each message carries its own JWT (no ``uri`` claim; it lives 120 s). A
   refused JWT is answered ``{"type": "error", "message": "authentication failure"}``
   (coinbase/coinbase-advanced-py#19);
3. receive ``{"channel": "subscriptions", ..., "events": [{"subscriptions": {"user":
   [...], "heartbeats": [...]}}]}``;
4. receive ``{"channel": "user", "sequence_num": n, "events": [{"type": "snapshot" |
   "update", "orders": [...]}]}`` and ``{"channel": "heartbeats", "events":
   [{"current_time", "heartbeat_counter"}]}`` every second.

"Most channels close within 60-90 seconds if no updates are sent": the heartbeats
subscription keeps the connection open, and makes silence detectable: a connection that says
nothing for ``idle_timeout`` is restarted. ``sequence_num`` counts every message of one
connection; a jump means messages were lost, and the stream catches up over REST. The
channel has no replay, so every (re)connection first yields a REST catch-up of the newest
orders, and the snapshot's open orders (batched by 50) are left to that catch-up. Applying a
report twice is harmless (the state table drops duplicates).

An order entry that does not carry the whole order (a cancelled order's size, an empty
limit price) is read over REST (``fetch``) before it is reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import WebSocketException

from app.brokers import errors
from app.brokers.base import BrokerOrder, OrderUpdate
from app.brokers.coinbase import mapping
from app.brokers.upstream_stream import (
    StreamRefused,
    UpstreamStream,
    decode_object,
    frames_logger,
)

log = logging.getLogger(__name__)

CatchUp = Callable[[str], Awaitable[list[BrokerOrder]]]
Fetch = Callable[[str, str], Awaitable[BrokerOrder]]
CHANNELS = ("heartbeats", "user")


def decode(frame: str | bytes) -> dict[str, Any]:
    return decode_object(frame, "user channel message", mapping.SLUG)


class UserChannelStream(UpstreamStream):
    broker = mapping.SLUG
    name = "coinbase user channel"
    frames = frames_logger(__name__)  # never DEBUG: each subscribe message carries a JWT
    max_size = 2**23
    # Subscriptions refused this many times in a row, each with a fresh JWT: the key no
    # longer works (a REST call would say 401 as well).
    max_refused = 2

    def __init__(
        self,
        url: str,
        account_ref: str,
        *,
        jwt: Callable[[], str],
        catch_up: CatchUp,
        fetch: Fetch,
        idle_timeout: float = 15.0,
        **timing: float,
    ) -> None:
        """``timing``: ``handshake_timeout``, ``max_backoff`` (``UpstreamStream``)."""
        super().__init__(account_ref, idle_timeout=idle_timeout, **timing)
        self._url = url
        self._jwt = jwt
        self._catch_up_from = catch_up
        self._fetch = fetch
        self._sequence = -1  # the last sequence_num seen on this connection
        self.gaps = 0  # sequence jumps caught up over REST

    def __repr__(self) -> str:
        return f"UserChannelStream(url={self._url!r})"

    def _refused_for_good(self, exc: StreamRefused) -> errors.AuthenticationFailed:
        return errors.AuthenticationFailed(
            f"the Coinbase user channel refused the API key: {exc}", broker=mapping.SLUG
        )

    async def _open(self) -> str:
        return self._url

    async def _catch_up_orders(self) -> list[BrokerOrder]:
        return await self._catch_up_from(self._account_ref)

    async def _handshake(self, ws: ClientConnection) -> None:
        """Subscribe to heartbeats and user; remembers the last sequence number seen."""
        for channel in CHANNELS:
            await ws.send(json.dumps({"type": "subscribe", "channel": channel, "jwt": self._jwt()}))
        deadline = time.monotonic() + self._handshake_timeout
        confirmed: set[str] = set()
        self._sequence = -1
        while not {"user", "heartbeats"} <= confirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no subscription confirmation on the user channel")
            async with asyncio.timeout(remaining):
                raw = await ws.recv()
            message = decode(raw)
            if message.get("type") == "error":
                raise StreamRefused(str(message.get("message") or "subscription refused"))
            if isinstance(message.get("sequence_num"), int):
                self._sequence = max(self._sequence, message["sequence_num"])
            if message.get("channel") != "subscriptions":
                continue  # a heartbeat or a snapshot before the confirmation
            for event in message.get("events") or []:
                subscriptions = event.get("subscriptions") if isinstance(event, dict) else None
                if isinstance(subscriptions, dict):
                    confirmed.update(str(k) for k in subscriptions)

    async def _read(self, ws: ClientConnection) -> AsyncIterator[OrderUpdate]:
        """Messages until the connection drops or goes silent; a gap is caught up in place."""
        while (raw := await self._recv(ws)) is not None:
            message = decode(raw)
            if message.get("type") == "error":
                raise WebSocketException(f"user channel error: {message.get('message')}")
            number = message.get("sequence_num")
            if isinstance(number, int):
                if self._sequence >= 0 and number > self._sequence + 1:
                    self.gaps += 1
                    log.warning(
                        "coinbase user channel skipped messages; catching up",
                        extra={"broker": mapping.SLUG, "missed": number - self._sequence - 1},
                    )
                    for caught_up in await self._catch_up():
                        yield caught_up
                self._sequence = max(self._sequence, number)
            if message.get("channel") != "user":
                continue
            occurred = mapping.opt_ts(message.get("timestamp"), "timestamp")
            for event in message.get("events") or []:
                if not isinstance(event, dict) or event.get("type") != "update":
                    continue  # the snapshot's open orders come from the REST catch-up
                for item in event.get("orders") or []:
                    update = await self._update(item, occurred)
                    if update is not None:
                        yield update

    async def _update(self, item: object, occurred: Any) -> OrderUpdate | None:
        try:
            entry = mapping.event_order(item)
        except errors.UnknownBrokerValue:
            self._skipped("order")
            return None
        order = entry.order
        if order is None:
            try:
                order = await self._fetch(self._account_ref, entry.order_id)
            except errors.UnknownBrokerValue:
                log.info(
                    "coinbase order outside the gateway's model; skipped",
                    extra={"broker": mapping.SLUG, "broker_order_id": entry.order_id},
                )
                return None
            except errors.Rejected as exc:  # gone meanwhile, or not ours to read
                log.warning(
                    "coinbase order of a user channel update could not be read; skipped",
                    extra={"broker": mapping.SLUG, "reason": exc.reason},
                )
                return None
        return OrderUpdate(self._account_ref, order, occurred or order.updated_at)

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
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from app.brokers import errors
from app.brokers.base import BrokerOrder, OrderUpdate
from app.brokers.coinbase import mapping

log = logging.getLogger(__name__)
# The websockets library logs every frame at DEBUG, the subscribe message's JWT included.
# Its connection logger is ours and never goes below INFO.
_ws_log = logging.getLogger(__name__ + ".frames")
_ws_log.setLevel(logging.INFO)

CatchUp = Callable[[str], Awaitable[list[BrokerOrder]]]
Fetch = Callable[[str, str], Awaitable[BrokerOrder]]
CHANNELS = ("heartbeats", "user")
# Subscriptions refused this many times in a row, each with a fresh JWT: the key no longer
# works (a REST call would say 401 as well).
MAX_REFUSED = 2


def decode(frame: str | bytes) -> dict[str, Any]:
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    message = json.loads(text, parse_float=Decimal)
    if not isinstance(message, dict):
        raise mapping.unknown("user channel message", type(message).__name__)
    return message


class _Refused(Exception):
    """Coinbase answered a subscription with ``{"type": "error"}``."""


class _Gap(Exception):
    """Messages were lost on this connection (a ``sequence_num`` jump)."""


class UserChannelStream:
    def __init__(
        self,
        url: str,
        account_ref: str,
        *,
        jwt: Callable[[], str],
        catch_up: CatchUp,
        fetch: Fetch,
        idle_timeout: float = 15.0,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._url = url
        self._account_ref = account_ref
        self._jwt = jwt
        self._catch_up = catch_up
        self._fetch = fetch
        self.idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self._max_backoff = max_backoff
        self.connects = 0
        self.silences = 0  # connections restarted because they went silent
        self.gaps = 0  # sequence jumps caught up over REST

    def __repr__(self) -> str:
        return f"UserChannelStream(url={self._url!r})"

    async def _subscribe(self, ws: ClientConnection) -> int:
        """Subscribe to heartbeats and user; returns the last sequence number seen."""
        for channel in CHANNELS:
            await ws.send(json.dumps({"type": "subscribe", "channel": channel, "jwt": self._jwt()}))
        deadline = time.monotonic() + self._handshake_timeout
        confirmed: set[str] = set()
        sequence = -1
        while not {"user", "heartbeats"} <= confirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no subscription confirmation on the user channel")
            async with asyncio.timeout(remaining):
                raw = await ws.recv()
            message = decode(raw)
            if message.get("type") == "error":
                raise _Refused(str(message.get("message") or "subscription refused"))
            if isinstance(message.get("sequence_num"), int):
                sequence = max(sequence, message["sequence_num"])
            if message.get("channel") != "subscriptions":
                continue  # a heartbeat or a snapshot before the confirmation
            for event in message.get("events") or []:
                subscriptions = event.get("subscriptions") if isinstance(event, dict) else None
                if isinstance(subscriptions, dict):
                    confirmed.update(str(k) for k in subscriptions)
        return sequence

    async def updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates for ever. Raises AuthenticationFailed when the key stops working
        (the REST catch-up answers 401, or every subscription is refused with fresh JWTs)."""
        failures = 0
        refused = 0
        while True:
            try:
                async with connect(
                    self._url,
                    open_timeout=self._handshake_timeout,
                    ping_interval=10,
                    ping_timeout=10,
                    max_size=2**23,
                    logger=_ws_log,
                ) as ws:
                    sequence = await self._subscribe(ws)
                    self.connects += 1
                    failures = refused = 0
                    for order in await self._catch_up(self._account_ref):
                        yield OrderUpdate(self._account_ref, order, order.updated_at)
                    async for update in self._read(ws, sequence):
                        yield update
            except errors.AuthenticationFailed:
                raise
            except _Refused as exc:
                refused += 1
                log.warning(
                    "coinbase refused the user channel subscription",
                    extra={"broker": mapping.SLUG, "reason": str(exc)},
                )
                if refused >= MAX_REFUSED:
                    raise errors.AuthenticationFailed(
                        f"the Coinbase user channel refused the API key: {exc}",
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
                    "coinbase user channel interrupted; reconnecting",
                    extra={"broker": mapping.SLUG, "error": type(exc).__name__},
                )
            failures += 1
            delay = min(self._max_backoff, 0.25 * 2 ** min(failures, 8))
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter

    async def _read(self, ws: ClientConnection, sequence: int) -> AsyncIterator[OrderUpdate]:
        """Messages until the connection drops or goes silent; a gap is caught up in place."""
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation
                # that arrives as the message does (gh-86296), and heartbeats arrive every
                # second, so a stopped stream could keep running.
                async with asyncio.timeout(self.idle_timeout):
                    raw = await ws.recv()
            except TimeoutError:
                # Open but silent (not even heartbeats): restart; the catch-up covers it.
                log.warning("coinbase user channel silent; restarting")
                self.silences += 1
                return
            message = decode(raw)
            if message.get("type") == "error":
                raise WebSocketException(f"user channel error: {message.get('message')}")
            number = message.get("sequence_num")
            if isinstance(number, int):
                if sequence >= 0 and number > sequence + 1:
                    self.gaps += 1
                    log.warning(
                        "coinbase user channel skipped messages; catching up",
                        extra={"broker": mapping.SLUG, "missed": number - sequence - 1},
                    )
                    for order in await self._catch_up(self._account_ref):
                        yield OrderUpdate(self._account_ref, order, order.updated_at)
                sequence = max(sequence, number)
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
            log.error(
                "coinbase user channel order with a value the mapping does not know; skipped",
                exc_info=True,
                extra={"broker": mapping.SLUG},
            )
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

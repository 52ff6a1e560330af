"""Tradier account streaming: order events over a WebSocket, reconnected and caught up.

Protocol (beta; https://documentation.tradier.com/brokerage-api/streaming/wss-account-websocket):

1. ``POST /v1/accounts/events/session`` -> ``{"stream": {"url", "sessionid"}}``; the session
   id must be used within five minutes, and only one session may be open at a time;
2. connect ``wss://ws.tradier.com/v1/accounts/events`` and send
   ``{"events": ["order"], "sessionid": "...", "excludeAccounts": []}``;
3. receive ``{"event": "heartbeat", "status": "active", "timestamp": ...}`` about once a
   minute and ``{"id", "event": "order", "status", "type", "price", "stop_price",
   "avg_fill_price", "exec_quantity", "last_fill_quantity", "remaining_quantity",
   "create_date", "transaction_date", "account", "tag"}`` per order change
   (https://docs.tradier.com/docs/account-streaming-responses).

An order event has no symbol, side, quantity or duration, so it cannot become a complete
``BrokerOrder`` by itself: each event is a signal, and the order is read with
``GET .../orders/{id}`` (the authoritative state). The token sees every account of its user;
events for other accounts are ignored here.

The stream has no replay: after any gap (a drop, a failed handshake, a session refused, or a
connection that stays open but silent longer than ``idle_timeout``, heartbeats included) it
reconnects with backoff on a new session and first yields a REST catch-up of the account's
orders. A refused token (401 on the session) ends the stream with ``AuthenticationFailed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from app.brokers import errors
from app.brokers.base import BrokerOrder, OrderUpdate
from app.brokers.tradier import mapping

log = logging.getLogger(__name__)
# The websockets library logs every frame at DEBUG, the session id included.
_ws_log = logging.getLogger(__name__ + ".frames")
_ws_log.setLevel(logging.INFO)

CreateSession = Callable[[], Awaitable[str]]
FetchOrder = Callable[[str, str], Awaitable[BrokerOrder]]
CatchUp = Callable[[str], Awaitable[list[BrokerOrder]]]


def decode(frame: str | bytes) -> dict[str, Any]:
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    return mapping.stream_event(json.loads(text, parse_float=Decimal))


def subscription(session_id: str) -> str:
    return json.dumps({"events": ["order"], "sessionid": session_id, "excludeAccounts": []})


class AccountEventsStream:
    def __init__(
        self,
        url: str,
        account_ref: str,
        *,
        create_session: CreateSession,
        fetch_order: FetchOrder,
        catch_up: CatchUp,
        idle_timeout: float = 150.0,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._url = url
        self._account_ref = account_ref
        self._create_session = create_session
        self._fetch_order = fetch_order
        self._catch_up = catch_up
        # Heartbeats come about every 60 s; 150 s of nothing means the stream is dead.
        self.idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self._max_backoff = max_backoff
        self.connects = 0

    def __repr__(self) -> str:
        return f"AccountEventsStream(url={self._url!r})"

    async def updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates for ever. Raises AuthenticationFailed when the token stops working."""
        failures = 0
        while True:
            try:
                session_id = await self._create_session()
                async with connect(
                    self._url,
                    open_timeout=self._handshake_timeout,
                    ping_interval=20,
                    ping_timeout=20,
                    max_size=2**20,
                    logger=_ws_log,
                ) as ws:
                    await ws.send(subscription(session_id))
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
                errors.OutcomeUnknown,
                errors.Rejected,
                errors.UnknownBrokerValue,
                ValueError,
            ) as exc:
                log.warning(
                    "tradier account stream interrupted; reconnecting",
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
                # Open but silent (not even heartbeats): restart; the catch-up covers the gap.
                log.warning("tradier account stream silent; restarting")
                return
            try:
                event = decode(raw)
            except (ValueError, errors.UnknownBrokerValue):
                log.error(
                    "tradier stream message the mapping does not know; skipped",
                    exc_info=True,
                    extra={"broker": mapping.SLUG},
                )
                continue
            if event["event"] != "order" or event.get("account") != self._account_ref:
                continue
            try:
                # Unknown statuses are refused here loudly; the REST read decides the state.
                mapping.check_status(event.get("status"))
                broker_order_id = mapping.order_id(event.get("id"))
            except errors.UnknownBrokerValue:
                log.error(
                    "tradier order event with a value the mapping does not know; skipped",
                    exc_info=True,
                    extra={"broker": mapping.SLUG},
                )
                continue
            try:
                order = await self._fetch_order(self._account_ref, broker_order_id)
            except mapping.UnmodeledOrder:
                continue
            try:
                fills = mapping.fill_from_event(event, order)
            except errors.UnknownBrokerValue:
                log.error(
                    "tradier order event with fill figures the mapping does not know",
                    exc_info=True,
                    extra={"broker": mapping.SLUG},
                )
                fills = ()  # the order itself (read over REST) is still right
            yield OrderUpdate(self._account_ref, order, order.updated_at, fills=fills)

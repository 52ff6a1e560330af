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
the stream serves a set of those accounts (all of a connection's: one session at a time is
allowed, so one stream serves them all) and ignores events of the others.

Multileg orders: the events carry no legs. A leg's event is an order event of its own whose
``parent_id`` names the multileg order (the field is in the definitions of
https://docs.tradier.com/docs/account-streaming-responses); either way the multileg order is
read over REST with its ``leg`` list, and each leg's new fills are the growth of its
``exec_quantity`` since the stream last read it (``mapping.leg_fills``), reported as fills
with ``leg_symbol``. A catch-up read records the legs' state without reporting fills.

The stream has no replay: after any gap (a drop, a failed handshake, a session refused, or a
connection that stays open but silent longer than ``idle_timeout``, heartbeats included) it
reconnects with backoff on a new session and first yields a REST catch-up of each account's
orders. A refused token (401 on the session) ends the stream with ``AuthenticationFailed``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection

from app.brokers import errors
from app.brokers.base import BrokerOrder, OrderUpdate
from app.brokers.tradier import mapping
from app.brokers.upstream_stream import INTERRUPTIONS, UpstreamStream, frames_logger

CreateSession = Callable[[], Awaitable[str]]
FetchOrder = Callable[[str, str], Awaitable[BrokerOrder]]
CatchUp = Callable[[str], Awaitable[list[BrokerOrder]]]


def decode(frame: str | bytes) -> dict[str, Any]:
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    return mapping.stream_event(json.loads(text, parse_float=Decimal))


def subscription(session_id: str) -> str:
    return json.dumps({"events": ["order"], "sessionid": session_id, "excludeAccounts": []})


class AccountEventsStream(UpstreamStream):
    broker = mapping.SLUG
    name = "tradier account stream"
    frames = frames_logger(__name__)  # never DEBUG: the subscription carries the session id
    ping_interval = 20.0
    max_size = 2**20
    # A session refused by REST (OutcomeUnknown, Rejected) is one more reason to reconnect.
    interruptions = (*INTERRUPTIONS, errors.OutcomeUnknown, errors.Rejected)

    def __init__(
        self,
        url: str,
        account_refs: Sequence[str],
        *,
        create_session: CreateSession,
        fetch_order: FetchOrder,
        catch_up: CatchUp,
        idle_timeout: float = 150.0,
        **timing: float,
    ) -> None:
        """``timing``: ``handshake_timeout``, ``max_backoff`` (``UpstreamStream``)."""
        # Heartbeats come about every 60 s; 150 s of nothing means the stream is dead.
        if isinstance(account_refs, str) or not account_refs:
            raise TypeError("account_refs: a sequence of one or more account numbers")
        super().__init__(account_refs[0], idle_timeout=idle_timeout, **timing)
        self._account_refs = frozenset(account_refs)
        self._url = url
        self._create_session = create_session
        self._fetch_order = fetch_order
        self._catch_up_from = catch_up
        self._session_id = ""
        self._legs: mapping.LegState = {}

    def __repr__(self) -> str:
        return f"AccountEventsStream(url={self._url!r})"

    async def _open(self) -> str:
        self._session_id = await self._create_session()  # used within five minutes
        return self._url

    async def _handshake(self, ws: ClientConnection) -> None:
        await ws.send(subscription(self._session_id))

    async def _catch_up(self) -> list[OrderUpdate]:
        # Every account of the stream, each under its own ref (not the one-account default).
        updates: list[OrderUpdate] = []
        for account_ref in sorted(self._account_refs):
            orders = await self._catch_up_from(account_ref)
            for order in orders:
                mapping.remember_legs(order, self._legs)
            updates += [OrderUpdate(account_ref, o, o.updated_at) for o in orders]
        return updates

    async def _read(self, ws: ClientConnection) -> AsyncIterator[OrderUpdate]:
        while (raw := await self._recv(ws)) is not None:
            try:
                event = decode(raw)
            except (ValueError, errors.UnknownBrokerValue):
                self._skipped("stream message")
                continue
            account_ref = event.get("account")
            if event["event"] != "order" or account_ref not in self._account_refs:
                continue
            assert isinstance(account_ref, str)
            try:
                # Unknown statuses are refused here loudly; the REST read decides the state.
                mapping.check_status(event.get("status"))
                broker_order_id = mapping.event_order_id(event)
            except errors.UnknownBrokerValue:
                self._skipped("order event")
                continue
            try:
                order = await self._fetch_order(account_ref, broker_order_id)
            except mapping.UnmodeledOrder:
                continue
            if order.legs:
                fills = mapping.leg_fills(order, self._legs)
                yield OrderUpdate(account_ref, order, order.updated_at, fills=fills)
                continue
            try:
                fills = mapping.fill_from_event(event, order)
            except errors.UnknownBrokerValue:
                self._skipped("order event's fill figures")
                fills = ()  # the order itself (read over REST) is still right
            yield OrderUpdate(account_ref, order, order.updated_at, fills=fills)

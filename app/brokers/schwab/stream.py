"""Schwab's Streamer ``ACCT_ACTIVITY`` service: upstream order events, reconnected and caught up.

Protocol (Streamer API, https://developer.schwab.com/products/trader-api--individual/details/documentation/Market%20Data%20Production
"Streamer"; alexgolec/schwab-py ``schwab/streaming.py`` and its tests):

1. ``GET /trader/v1/userPreference`` -> ``streamerInfo[0]``: ``streamerSocketUrl``,
   ``schwabClientCustomerId``, ``schwabClientCorrelId``, ``schwabClientChannel``,
   ``schwabClientFunctionId``;
2. connect to ``streamerSocketUrl``; every request is ``{"requests": [{"service", "requestid",
   "command", "SchwabClientCustomerId", "SchwabClientCorrelId", "parameters"}]}``;
3. ``ADMIN``/``LOGIN`` with ``{"Authorization": <access token>, "SchwabClientChannel",
   "SchwabClientFunctionId"}``; the answer is ``{"response": [{"service": "ADMIN", "command":
   "LOGIN", "requestid", "content": {"code": 0, "msg": ...}}]}``, code 0 = success, 3 =
   login denied;
4. ``ACCT_ACTIVITY``/``SUBS`` with ``{"keys": <correl id>, "fields": "0,1,2,3"}``;
5. ``{"data": [{"service": "ACCT_ACTIVITY", "content": [{"seq", "key", "1": <account number>,
   "2": <message type>, "3": <message data>}]}]}``; heartbeats arrive as
   ``{"notify": [{"heartbeat": "<epoch ms>"}]}``.

Message types (QuantConnect Lean ``Models/Enums/Stream/MessageType.cs``): ``SUBSCRIBED``,
``OrderCreated``, ``OrderAccepted``, ``ExecutionRequested``, ``ExecutionRequestCreated``,
``ExecutionRequestCompleted``, ``ExecutionCreated``, ``CancelAccepted``,
``OrderUROutCompleted``, ``OrderFillCompleted``, ``ChangeCreated``, ``ChangeAccepted``; their
data is a JSON object with ``SchwabOrderID`` and ``AccountNumber``. Its nested event shapes
are sparsely documented, so an event is used only to learn *which* order changed: the order
itself is read over REST and mapped by the same strict mapping as every other read; an
update carries the order's fills from that read, each leg's tagged with its symbol. An event
without an order id triggers a REST catch-up instead.

The stream has no replay: after any gap (a drop, a failed login, a connection open but
silent past ``idle_timeout``) it reconnects with backoff, logs in again, resubscribes and
first yields a REST catch-up. The access token lives 30 minutes and is fixed for this
stream: once it has expired the iterator ends, and the supervisor starts a new stream with
the refreshed token from the vault.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection

from app.brokers import errors
from app.brokers.base import BrokerOrder, OrderUpdate
from app.brokers.oauth import ACCESS_TOKEN, access_token_expires_at
from app.brokers.schwab import mapping
from app.brokers.upstream_stream import StreamRefused, UpstreamStream, frames_logger
from app.security.credentials import Credentials

if TYPE_CHECKING:
    from app.brokers.schwab.adapter import SchwabAdapter

log = logging.getLogger(__name__)

LOGIN_DENIED = 3
# Streamer response codes after which the server closes the session.
CLOSING_CODES = frozenset({12, 30})  # CLOSE_CONNECTION, STOP_STREAMING
SUBSCRIBED = "SUBSCRIBED"
# Fills, per leg for a combo (tagged with the leg's symbol): the execution events'
# (``ExecutionCreated``, ``OrderFillCompleted``) nested shape is not documented, so every
# update carries the fills of the REST read of the order its event names:
# ``orderActivityCollection[].executionLegs[]`` joined to ``orderLegCollection[]`` by
# ``legId``. Events arrive after the state they announce, so an ``OrderAccepted`` read may
# already show the fill; fill ids are stable (order:activity:leg), so a fill seen in two
# updates is one fill.
ERROR = "ERROR"


def decode(frame: str | bytes) -> dict[str, Any]:
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    message = mapping.loads(text)
    if not isinstance(message, dict):
        raise mapping.unknown("stream message", type(message).__name__)
    return message


def order_ids(message_data: object) -> set[str]:
    """``SchwabOrderID`` of one ``ACCT_ACTIVITY`` message's data (a JSON string)."""
    if not isinstance(message_data, str) or not message_data.strip():
        return set()
    try:
        data = json.loads(message_data)
    except ValueError:
        return set()
    found: set[str] = set()
    if isinstance(data, dict):
        value = data.get("SchwabOrderID")
        if isinstance(value, int | str) and str(value).isdigit():
            found.add(str(value))
    return found


class AccountActivityStream(UpstreamStream):
    broker = mapping.SLUG
    name = "schwab ACCT_ACTIVITY stream"
    frames = frames_logger(__name__)  # never DEBUG: the LOGIN request carries the token
    ping_interval = 20.0

    def __init__(
        self,
        adapter: SchwabAdapter,
        credentials: Credentials,
        account_ref: str,
        *,
        idle_timeout: float = 60.0,
        **timing: float,
    ) -> None:
        """``timing``: ``handshake_timeout``, ``max_backoff`` (``UpstreamStream``)."""
        super().__init__(account_ref, idle_timeout=idle_timeout, **timing)
        self._adapter = adapter
        self._credentials = credentials
        self._ids = itertools.count(1)
        self._info: dict[str, str] = {}
        self._number: str | None = None
        self._streamer_url = adapter.streamer_url_override

    def __repr__(self) -> str:
        return f"AccountActivityStream(account_ref={self._account_ref!r})"

    def _finished(self) -> bool:
        """The access token (fixed for this stream) expired: the supervisor starts a new
        stream with the refreshed token from the vault."""
        expires_at = access_token_expires_at(self._credentials)
        if expires_at is None:
            return False  # an access token without a recorded expiry: let Schwab decide
        return expires_at <= datetime.now(UTC)

    async def _open(self) -> str:
        self._info = await self._adapter.streamer_info()
        self._number = await self._account_number()
        return self._streamer_url or self._info["streamerSocketUrl"]

    async def _catch_up_orders(self) -> list[BrokerOrder]:
        return await self._adapter.recent_orders(self._account_ref)

    def _request(
        self, info: dict[str, str], service: str, command: str, parameters: dict[str, str]
    ) -> tuple[str, str]:
        request_id = str(next(self._ids))
        body = {
            "requests": [
                {
                    "service": service,
                    "requestid": request_id,
                    "command": command,
                    "SchwabClientCustomerId": info["schwabClientCustomerId"],
                    "SchwabClientCorrelId": info["schwabClientCorrelId"],
                    "parameters": parameters,
                }
            ]
        }
        return request_id, json.dumps(body)

    async def _await_response(
        self, ws: ClientConnection, request_id: str, service: str, command: str
    ) -> int:
        """The response code of one request; other frames before it are dropped (the
        catch-up after the handshake covers anything they said)."""
        while True:
            async with asyncio.timeout(self._handshake_timeout):
                raw = await ws.recv()
            message = decode(raw)
            for response in message.get("response") or []:
                if not isinstance(response, dict):
                    continue
                if (
                    response.get("requestid") == request_id
                    and response.get("service") == service
                    and response.get("command") == command
                ):
                    content = response.get("content") or {}
                    code = content.get("code") if isinstance(content, dict) else None
                    if isinstance(code, bool) or not isinstance(code, int):
                        raise mapping.unknown("stream response code", code)
                    return code

    async def _handshake(self, ws: ClientConnection) -> None:
        info = self._info
        request_id, frame = self._request(
            info,
            "ADMIN",
            "LOGIN",
            {
                "Authorization": self._credentials[ACCESS_TOKEN],
                "SchwabClientChannel": info["schwabClientChannel"],
                "SchwabClientFunctionId": info["schwabClientFunctionId"],
            },
        )
        await ws.send(frame)
        code = await self._await_response(ws, request_id, "ADMIN", "LOGIN")
        if code == LOGIN_DENIED:
            raise errors.AuthenticationFailed(
                "Schwab's streamer refused the access token", broker=mapping.SLUG
            )
        if code != 0:
            raise StreamRefused(f"LOGIN answered {code}")
        request_id, frame = self._request(
            info,
            "ACCT_ACTIVITY",
            "SUBS",
            {"keys": info["schwabClientCorrelId"], "fields": "0,1,2,3"},
        )
        await ws.send(frame)
        code = await self._await_response(ws, request_id, "ACCT_ACTIVITY", "SUBS")
        if code != 0:
            raise StreamRefused(f"ACCT_ACTIVITY SUBS answered {code}")

    async def _account_number(self) -> str | None:
        numbers = await self._adapter.account_numbers()
        for number, hash_value in numbers.items():
            if hash_value == self._account_ref:
                return number
        return None

    async def _read(self, ws: ClientConnection) -> AsyncIterator[OrderUpdate]:
        number = self._number
        while (raw := await self._recv(ws)) is not None:
            message = decode(raw)
            for response in message.get("response") or []:
                content = response.get("content") if isinstance(response, dict) else None
                code = content.get("code") if isinstance(content, dict) else None
                if code in CLOSING_CODES:
                    log.warning(
                        "schwab streamer closed the session",
                        extra={"broker": mapping.SLUG, "code": code},
                    )
                    return
            for data in message.get("data") or []:
                if not isinstance(data, dict) or data.get("service") != "ACCT_ACTIVITY":
                    continue
                for item in data.get("content") or []:
                    async for update in self._activity(item, number):
                        yield update

    async def _activity(self, item: object, number: str | None) -> AsyncIterator[OrderUpdate]:
        if not isinstance(item, dict):
            return
        if number is not None and str(item.get("1")) != number:
            return  # another account of the same login
        message_type = item.get("2")
        if message_type == SUBSCRIBED:
            return
        if message_type == ERROR:
            log.error("schwab ACCT_ACTIVITY error message", extra={"broker": mapping.SLUG})
            return
        ids = order_ids(item.get("3"))
        if not ids:
            for update in await self._catch_up():
                yield update
            return
        for order_id in sorted(ids):
            try:
                order, fills = await self._adapter.get_order_and_fills(self._account_ref, order_id)
            except errors.OrderNotFound:
                continue
            except errors.UnknownBrokerValue:
                log.error(
                    "schwab order the mapping cannot represent; update skipped",
                    exc_info=True,
                    extra={"broker": mapping.SLUG, "broker_order_id": order_id},
                )
                continue
            yield OrderUpdate(self._account_ref, order, order.updated_at, fills)

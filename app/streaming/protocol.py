"""The order-event wire format: cursors, the Event body, and the ``/v1/stream`` messages.

This module is the single place that knows the shapes API.md ("Order events") fixes, and the
choices it leaves to us. The same ``event_body`` feeds ``GET /v1/events`` and the WebSocket,
so the two can never disagree.

Cursors
    An event's cursor is its outbox row id rendered as a decimal string (``"1234"``). It is
    opaque to clients: they store it and hand it back. Ids only grow, and the append path
    (``app.streaming.outbox``) makes them commit in id order, so "everything after cursor
    c" is a complete, ordered answer. ``"0"`` means "from the very beginning". A cursor is
    bad (``invalid_cursor``) when it is not a decimal string of at most 19 digits (an
    unsigned integer is accepted too), or when it lies beyond the caller's latest event: a
    cursor from the future would silently skip events, so it is refused rather than honoured.

Client messages (text frames, JSON objects, at most ``max_message_bytes``)
    ``{"type": "auth", "token": "<JWT>"}`` first, within ``auth_timeout_seconds`` (10 s).
    It may be sent again later with a fresh token of the same user to extend the stream
    past the first token's expiry.
    ``{"type": "subscribe", "accounts": ["acc_..."] | "*", "after": "<cursor>" | null}``
    once per connection. ``"*"`` is every account of the user, including accounts
    connected later, and connection-level events; a list is exactly those accounts (each
    must belong to the user, else ``not_found``). ``after`` null (or absent) starts at the
    user's latest event: live events only.

Server messages
    ``{"type": "authenticated", "user_id", "expires_at"}`` after each accepted ``auth``.
    ``{"type": "subscribed", "accounts", "after"}``: the subscription starts after ``after``.
    ``{"type": "event", "event": Event}``: every event after ``after``, backlog first then
    live, in cursor order, each at most once per subscription.
    ``{"type": "heartbeat", "cursor"}`` every ``heartbeat_seconds`` (15 s) once subscribed;
    ``cursor`` is the last event delivered (or the subscription's start).
    ``{"type": "resync", "after"}``: the subscriber fell behind (its bounded queue
    overflowed). The server drops what it had queued and resumes from ``after`` by reading
    the database, so the client needs to do nothing: no event is skipped or repeated.
    ``{"type": "error", "code", "detail"}``, codes in ``ErrorCode``.

Close codes (``CloseCode``)
    4401 not authenticated: no ``auth`` in time, a first message other than ``auth``, a
    rejected token, a token that expired mid-stream, a re-``auth`` as another user.
    4408 the client accepted no data for ``send_timeout_seconds``.
    1008 too many protocol errors (``max_protocol_errors``).
    1009 a frame over the transport's limit (uvicorn ``ws_max_size``).
    1011 an unexpected server error; 1013 the identity service is unreachable (retry);
    1001/1012 the server is shutting down. Reconnect with the last cursor after any close.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from app.db.models import OrderEvent
from app.schemas.orders import Order

# An ASGI ``websocket.send`` extension key: true says more messages follow at once, so a
# server that knows it (``app.server.CoalescingWebSocketsProtocol``) may hold this one and
# write it to the socket together with the next. Each stays its own message; any other
# ASGI server ignores the key.
SEND_MORE = "brokerage.more"

MAX_CURSOR = 2**63 - 1
_MAX_CURSOR_DIGITS = 19


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 4401
    TOO_SLOW = 4408


class ErrorCode(StrEnum):
    """Stable ``error`` codes; clients branch on them."""

    # not JSON, nested too deeply for the parser, or not an object with a string "type"
    malformed_json = "malformed_json"
    unsupported_frame = "unsupported_frame"  # a binary frame
    message_too_large = "message_too_large"  # a text frame over max_message_bytes
    unknown_type = "unknown_type"
    validation_error = "validation_error"  # a known type with missing or ill-typed fields
    auth_required = "auth_required"  # the first message was not auth (then 4401)
    auth_timeout = "auth_timeout"  # no auth in time (then 4401)
    unauthorized = "unauthorized"  # the token was refused (then 4401)
    token_expired = "token_expired"  # noqa: S105 - expired mid-stream (then 4401)
    user_mismatch = "user_mismatch"  # re-auth as another user (then 4401)
    not_found = "not_found"  # an account that does not exist or is another user's
    invalid_cursor = "invalid_cursor"
    already_subscribed = "already_subscribed"
    too_many_errors = "too_many_errors"  # then 1008
    service_unavailable = "service_unavailable"  # identity service down (then 1013)
    internal_error = "internal_error"  # then 1011
    # market.subscribe / market.unsubscribe (app.streaming.market); nothing changed.
    unknown_channel = "unknown_channel"  # a channel other than quotes/trades/bars/greeks
    invalid_symbol = "invalid_symbol"  # malformed (greeks: not an OCC option symbol)
    invalid_interval = "invalid_interval"  # a bar interval other than 1m/5m/15m/1h/1d
    unknown_symbol = "unknown_symbol"  # the broker does not know it
    too_many_symbols = "too_many_symbols"  # beyond the broker's plan or the gateway's cap
    market_data_unsupported = "market_data_unsupported"  # the broker lacks the channel
    market_data_rejected = "market_data_rejected"  # the broker refused otherwise
    market_data_unavailable = "market_data_unavailable"  # the broker did not answer
    connection_broken = "connection_broken"  # the account's connection is not usable


class InvalidCursorError(ValueError):
    """A cursor that is not a decimal string (or integer) in range."""


def parse_cursor(value: str | int) -> int:
    """The event id a client cursor stands for; raises ``InvalidCursorError``."""
    if isinstance(value, bool):
        raise InvalidCursorError("a cursor is a decimal string")
    if isinstance(value, int):
        number = value
    else:
        if not value or len(value) > _MAX_CURSOR_DIGITS or not value.isascii():
            raise InvalidCursorError("a cursor is a decimal string of at most 19 digits")
        if not value.isdigit():
            raise InvalidCursorError("a cursor is a decimal string of at most 19 digits")
        number = int(value)
    if number < 0 or number > MAX_CURSOR:
        raise InvalidCursorError("the cursor is out of range")
    return number


def format_cursor(event_id: int) -> str:
    return str(event_id)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 UTC with a ``Z``, the same rendering as every REST timestamp."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the Event body --------------------------------------------------------------------


class Event(BaseModel):
    """One order event (API.md): the REST and WebSocket body, documented in OpenAPI."""

    model_config = ConfigDict(frozen=True)

    cursor: str = Field(description="Opaque; pass it back as `after` to resume after this event")
    type: str = Field(examples=["order.filled", "connection.expiring"])
    account_id: str | None
    order_id: str | None
    connection_id: str | None = None
    order: Order | None = Field(description="The order after the change (order.* events)")
    connection: dict[str, Any] | None = Field(
        default=None, description="The connection after the change (connection.* events)"
    )
    occurred_at: str = Field(description="RFC 3339 UTC")


class EventPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[Event]
    next_cursor: str | None = Field(
        description="Set when more events are available right now: pass it as `after`. "
        "Null means the page reached the end; poll again later with the last item's cursor."
    )


def event_body(row: OrderEvent) -> dict[str, Any]:
    """The API.md Event for an outbox row. The stored payload is already JSON-ready.

    The payload was rendered by the writer (decimal strings, UTC timestamps) in the same
    transaction as the change, so it is passed through as stored, never recomputed.
    """
    is_order = row.type.startswith("order.")
    is_connection = row.type.startswith("connection.")
    return {
        "cursor": format_cursor(row.id),
        "type": row.type,
        "account_id": row.account_id,
        "order_id": row.order_id,
        "connection_id": row.connection_id,
        "order": row.payload if is_order else None,
        "connection": row.payload if is_connection else None,
        "occurred_at": format_timestamp(row.occurred_at),
    }


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def event_frame(row: OrderEvent) -> str:
    """The ``event`` message, rendered once per event and shared by every subscriber."""
    return _dumps({"type": "event", "event": event_body(row)})


# --- client messages --------------------------------------------------------------------


class _ClientMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthMessage(_ClientMessage):
    type: Literal["auth"]
    token: StrictStr = Field(min_length=1, max_length=8192)


# An account id as the API hands them out (``acc_<hex>``): printable ASCII. Anything else
# (a NUL, control characters, 10 kB of text) is a validation error, never a database query.
AccountIdField = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[!-~]+$")]


class SubscribeMessage(_ClientMessage):
    type: Literal["subscribe"]
    accounts: list[AccountIdField] | Literal["*"]
    after: StrictStr | StrictInt | None = None


CLIENT_MESSAGES: dict[str, type[_ClientMessage]] = {
    "auth": AuthMessage,
    "subscribe": SubscribeMessage,
}


# --- server messages --------------------------------------------------------------------


def authenticated_message(user_id: str, expires_at: datetime | None) -> str:
    return _dumps(
        {
            "type": "authenticated",
            "user_id": user_id,
            "expires_at": None if expires_at is None else format_timestamp(expires_at),
        }
    )


def subscribed_message(accounts: list[str] | None, after: int) -> str:
    return _dumps(
        {
            "type": "subscribed",
            "accounts": "*" if accounts is None else accounts,
            "after": format_cursor(after),
        }
    )


def heartbeat_message(cursor: int) -> str:
    return _dumps({"type": "heartbeat", "cursor": format_cursor(cursor)})


def resync_message(after: int) -> str:
    return _dumps({"type": "resync", "after": format_cursor(after)})


def error_message(code: ErrorCode, detail: str) -> str:
    return _dumps({"type": "error", "code": code.value, "detail": detail})

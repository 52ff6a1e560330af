"""Order events: ``GET /v1/events`` (a page after a cursor) and ``WS /v1/stream`` (live)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import JSONResponse

from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_responses
from app.api.state import AppState
from app.services.events import StreamSession
from app.streaming.protocol import EventPage

router = APIRouter(prefix=API_PREFIX, tags=["events"])

STREAM_PROTOCOL = """
Events are in cursor order. A cursor is an opaque string (today the decimal event id);
`after` omitted or `"0"` starts at the beginning. A malformed cursor, or one beyond your
newest event, is a 400 `invalid_cursor` (a cursor from the future would skip events).
`account_id` (repeatable) restricts the page to those accounts, each of which must be
yours (else 404 `not_found`). To poll, pass the last item's `cursor` as `after`.

**`WS /v1/stream`** (not listed in OpenAPI; the same Event body). Client messages:
`{"type": "auth", "token": "<JWT>"}` first, within 10 s (sent again later with a fresh
token of the same user, it extends the stream); then once
`{"type": "subscribe", "accounts": ["<id>", ...] | "*", "after": "<cursor>" | null}`
(`null`: live events only). Server messages: `{"type": "authenticated", "user_id",
"expires_at"}`, `{"type": "subscribed", "accounts", "after"}`, `{"type": "event", "event":
Event}` (backlog then live, in cursor order, each at most once), `{"type": "heartbeat",
"cursor"}` every 15 s, `{"type": "resync", "after"}` (you fell behind; the server resumes
from `after` by itself, nothing is skipped or repeated), `{"type": "error", "code",
"detail"}`. Error codes: `malformed_json`, `unsupported_frame`, `message_too_large`
(16 KiB), `unknown_type`, `validation_error`, `auth_required`, `auth_timeout`,
`unauthorized`, `token_expired`, `user_mismatch`, `not_found` (an account that is not
yours), `invalid_cursor`, `already_subscribed`, `too_many_errors`, `service_unavailable`,
`internal_error`. Close codes: 4401 not authenticated (no or bad auth, token expired),
4408 the client read nothing for 30 s, 1008 too many bad messages, 1009 frame too large
for the transport, 1011 server error, 1013 try again later, 1012 server restart.
Reconnect with your last cursor after any close.

**Market data on the same socket** (after `auth`, with or without `subscribe`):
`{"type": "market.subscribe", "account_id", "quotes": [..], "trades": [..], "bars":
{"1m"|"5m"|"15m"|"1h"|"1d": [..]}, "greeks": [OCC symbols]}` and `{"type":
"market.unsubscribe", ...}` are answered with `{"type": "market.subscribed", "account_id",
"quotes", "trades", "bars", "greeks"}` (the account's full set) or an `error` that changed
nothing (`unknown_channel`, `invalid_symbol`, `invalid_interval`, `unknown_symbol`,
`too_many_symbols`, `not_found`, `market_data_unsupported`, `market_data_rejected`,
`market_data_unavailable`, `connection_broken`). Then `quote`, `trade`, `bar` and `greeks`
frames (`symbol`, `ts`, `received_at`, `source`; a new bars subscription first gets the
last final bars from the broker's history, then its live bars, none twice and none
missing), `market.gap` / `market.resubscribed`
around an upstream reconnect, and `{"type": "market.resync", "reason": "slow_consumer",
"dropped", "since"}` when trades/bars/greeks were dropped for a slow reader (quotes
conflate instead). Bars over REST: `GET /v1/accounts/{account_id}/bars`.
"""

Limit = Annotated[int, Query(ge=1, le=500)]


@router.get(
    "/events",
    name="list_events",
    response_model=EventPage,
    description=STREAM_PROTOCOL,
    responses=problem_responses(400, 401, 404, 422),
)
async def list_events(
    user: CurrentUser,
    state: State,
    after: Annotated[
        str | None,
        Query(
            max_length=40,
            description="A cursor",
            # What parse_cursor takes (anything else is a 400 invalid_cursor); documented,
            # not enforced here, so the refusal keeps its stable code.
            json_schema_extra={"pattern": "^[0-9]{1,19}$"},
        ),
    ] = None,
    limit: Limit = 100,
    account_id: Annotated[list[str] | None, Query(max_length=100)] = None,
) -> JSONResponse:
    """Your order events after a cursor, oldest first."""
    page = await state.events.page(
        user_id=user.user_id, after=after, limit=limit, account_ids=account_id
    )
    return JSONResponse(page)


@router.websocket("/stream", name="stream")
async def stream(websocket: WebSocket) -> None:
    """The live order-event stream; the protocol is in ``app.streaming.protocol``."""
    state: AppState = websocket.app.state.brokerage
    await websocket.accept()
    session = StreamSession(
        websocket,
        verifier=state.verifier,
        events=state.events,
        hub=state.stream.hub,
        settings=state.stream.settings,
        market=state.market,
    )
    await session.run()

"""Order events for their owner: the ``GET /v1/events`` page and the ``/v1/stream`` session.

``EventService`` answers the questions both transports ask of the database, always scoped
to one user: which accounts are theirs, whether a cursor is acceptable, what comes after a
cursor. ``StreamSession`` runs one WebSocket connection through the protocol documented
in ``app.streaming.protocol`` (auth, subscribe, backlog then live, heartbeats, resync,
errors and close codes).

A session has three tasks: the reader (client frames), the writer (backlog, live events,
heartbeats; the only task that sends events) and a supervisor (auth deadline, token
expiry, heartbeat timer, stalled-send watchdog). Whichever decides the connection is over
closes it once; ``run`` then cancels the others and unregisters from the hub.

What can fail and what the client sees: a bad frame or request -> an ``error`` message and
the connection stays (up to ``max_protocol_errors``, then 1008); authentication problems
-> ``error`` then 4401; the database unreachable -> ``error`` ``service_unavailable`` then
1013; a client that reads nothing for ``send_timeout_seconds`` -> 4408 (or a dropped
connection, if even the close frame cannot be written); a bug -> 1011. None of these
affects another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import jwt
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers.base import MarketDataSubscription
from app.db.models import OrderEvent
from app.db.repositories.connections import AccountRepository
from app.db.repositories.orders import OrderEventRepository
from app.db.session import SessionMaker
from app.security.jwt import Principal, TokenVerifier
from app.services.clock import utcnow
from app.services.market_data import MarketClient, MarketDataError, MarketDataService, parse_request
from app.streaming.config import StreamSettings
from app.streaming.hub import Hub, Subscription
from app.streaming.market import MarketSubscribeMessage, subscribed_frame
from app.streaming.protocol import (
    CLIENT_MESSAGES,
    SEND_MORE,
    AuthMessage,
    CloseCode,
    ErrorCode,
    InvalidCursorError,
    SubscribeMessage,
    authenticated_message,
    error_message,
    event_body,
    event_frame,
    heartbeat_message,
    parse_cursor,
    resync_message,
    subscribed_message,
)

log = logging.getLogger(__name__)

CLOSES = Counter("brokerage_stream_closes_total", "Stream connections closed by us", ["code"])
# Event frames written to subscribers' WebSockets: ``live`` (woken by the hub) or ``backlog``
# (read from the outbox after a subscribe or a resync).
SENT = Counter(
    "brokerage_stream_events_sent_total", "Event frames sent to WebSocket subscribers", ["path"]
)
_SENT_LIVE = SENT.labels(path="live")
MARKET_SENT = Counter(
    "brokerage_market_frames_sent_total", "Market-data frames written to WebSocket clients"
)

# Order-event messages plus market data (app.streaming.market).
_MESSAGES: dict[str, type[BaseModel]] = {
    **CLIENT_MESSAGES,
    "market.subscribe": MarketSubscribeMessage,
    "market.unsubscribe": MarketSubscribeMessage,
}

# How long a close (error message + close frame) may take before the connection is dropped.
CLOSE_GRACE_SECONDS = 1.0


class EventService:
    """Reads of one user's order events; raises ``NotFound`` / ``InvalidCursor``."""

    def __init__(self, sessionmaker: SessionMaker) -> None:
        self._sessionmaker = sessionmaker

    async def page(
        self,
        *,
        user_id: str,
        after: str | None,
        limit: int,
        account_ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The events after ``after`` (default: from the beginning), oldest first."""
        cursor = 0 if after is None else _parse(after)
        accounts = None if not account_ids else list(dict.fromkeys(account_ids))
        async with self._sessionmaker() as session:
            if accounts is not None:
                await self._check_accounts(session, user_id, accounts)
            repo = OrderEventRepository.for_user(session, user_id)
            await self._check_cursor(repo, cursor)
            rows = await repo.list_after(cursor, limit=limit + 1, account_ids=accounts)
        items = [event_body(row) for row in rows[:limit]]
        next_cursor = items[-1]["cursor"] if len(rows) > limit else None
        return {"items": items, "next_cursor": next_cursor}

    async def open_subscription(
        self, *, user_id: str, accounts: Sequence[str] | None, after: int | None
    ) -> int:
        """Check a subscription request; returns the cursor it starts after.

        ``after`` None starts at the user's newest event (live only). A cursor beyond the
        user's newest event is refused: honouring it would skip events.
        """
        async with self._sessionmaker() as session:
            if accounts is not None:
                await self._check_accounts(session, user_id, accounts)
            repo = OrderEventRepository.for_user(session, user_id)
            if after is None:
                return await repo.latest_id()
            await self._check_cursor(repo, after)
            return after

    async def backlog(
        self, *, user_id: str, after: int, accounts: frozenset[str] | None, limit: int
    ) -> Sequence[OrderEvent]:
        async with self._sessionmaker() as session:
            return await OrderEventRepository.for_user(session, user_id).list_after(
                after, limit=limit, account_ids=None if accounts is None else sorted(accounts)
            )

    @staticmethod
    async def _check_accounts(session: AsyncSession, user_id: str, accounts: Sequence[str]) -> None:
        repo = AccountRepository.for_user(session, user_id)
        for account_id in accounts:
            if await repo.get(account_id) is None:
                # Another user's account answers exactly like a missing one.
                raise errors.NotFound(f"no such account: {account_id[:64]}")

    @staticmethod
    async def _check_cursor(repo: OrderEventRepository, cursor: int) -> None:
        if cursor > 0 and cursor > await repo.latest_id():
            raise errors.InvalidCursor("the cursor is ahead of your newest event")


def _parse(value: str | int) -> int:
    try:
        return parse_cursor(value)
    except InvalidCursorError as exc:
        raise errors.InvalidCursor(str(exc)) from None


def token_expiry(token: str) -> datetime | None:
    """The ``exp`` of a token the verifier has already accepted (so no signature check)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return datetime.fromtimestamp(exp, UTC)


class WebSocketPort(Protocol):
    """What the session needs of a WebSocket (Starlette's satisfies it)."""

    async def receive(self) -> Mapping[str, Any]: ...

    async def send_text(self, data: str) -> None: ...

    async def send(self, message: MutableMapping[str, Any]) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class _PeerGone(Exception):
    """Sending failed: the client disconnected."""


class StreamSession:
    """One ``/v1/stream`` connection, already accepted; ``run`` returns when it is over."""

    def __init__(
        self,
        ws: WebSocketPort,
        *,
        verifier: TokenVerifier,
        events: EventService,
        hub: Hub,
        settings: StreamSettings,
        market: MarketDataService | None = None,
    ) -> None:
        self._ws = ws
        self._market = market
        self._market_client: MarketClient | None = None
        self._verifier = verifier
        self._events = events
        self._hub = hub
        self._settings = settings
        self._principal: Principal | None = None
        self._expires_at: datetime | None = None
        self._subscription: Subscription | None = None
        self._cursor = 0
        self._errors = 0
        self._closing = False
        self._finished = asyncio.Event()
        self._changed = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._sending_since: float | None = None
        self._heartbeat_due = False
        self._next_heartbeat = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        self._spawn(self._read_loop(), "stream-reader")
        self._spawn(self._supervise(), "stream-supervisor")
        try:
            await self._finished.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._subscription is not None:
                self._hub.remove(self._subscription)
            if self._market_client is not None and self._market is not None:
                try:
                    await self._market.remove_client(self._market_client)
                except Exception:
                    log.exception("releasing a connection's market data failed")

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # only we cancel: run() cleaning up, or a stuck writer being let go
        if task.exception() is not None:
            log.error("stream task failed", exc_info=task.exception())
        self._finished.set()

    # --- sending and closing -------------------------------------------------------------

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            self._sending_since = asyncio.get_running_loop().time()
            try:
                await self._ws.send_text(text)
            except Exception as exc:
                raise _PeerGone() from exc
            finally:
                self._sending_since = None

    async def _send_events(self, items: list[tuple[int, str]]) -> None:
        """The live hot path: queued frames above our cursor, in order, under one lock.

        Each frame is its own message; all but the last say ``SEND_MORE``, so the server
        may write the batch to the socket at once (one system call, not one per message).
        """
        clock = asyncio.get_running_loop().time
        send = self._ws.send
        sent = 0
        async with self._send_lock:
            try:
                cursor = self._cursor
                fresh = []
                for event_id, frame in items:
                    if event_id > cursor:
                        fresh.append((event_id, frame))
                        cursor = event_id
                last = len(fresh) - 1
                for n, (event_id, frame) in enumerate(fresh):
                    self._sending_since = clock()
                    await send({"type": "websocket.send", "text": frame, SEND_MORE: n < last})
                    self._cursor = event_id
                    sent += 1
            except Exception as exc:
                raise _PeerGone() from exc
            finally:
                self._sending_since = None
                # Counted once per batch: a labelled child looked up per frame was about a
                # twentieth of the fan-out's CPU at 80,000 frames a second.
                if sent:
                    _SENT_LIVE.inc(sent)

    async def _close(self, code: CloseCode, error: ErrorCode | None, detail: str = "") -> None:
        """Say why (when there is something to say), close, and end the session. Once."""
        if self._closing:
            return
        self._closing = True
        CLOSES.labels(code=str(int(code))).inc()
        try:
            async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                async with self._send_lock:
                    if error is not None:
                        await self._ws.send_text(error_message(error, detail))
                    await self._ws.close(int(code))
        except Exception:
            log.debug("closing a stream connection failed (client gone or stuck)")
        finally:
            self._finished.set()

    async def _reject(self, code: ErrorCode, detail: str) -> None:
        """An ``error`` for a bad client message: fatal before auth, counted after it."""
        if self._principal is None:
            await self._close(CloseCode.UNAUTHORIZED, code, detail)
            return
        self._errors += 1
        await self._send(error_message(code, detail))
        if self._errors >= self._settings.max_protocol_errors:
            await self._close(
                CloseCode.POLICY_VIOLATION,
                ErrorCode.too_many_errors,
                f"{self._errors} bad messages on this connection",
            )

    # --- reader --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while not self._closing:
                message = await self._ws.receive()
                kind = message.get("type")
                if kind == "websocket.disconnect":
                    return
                if kind == "websocket.receive":
                    await self._handle(message)
        except _PeerGone:
            return
        except (SQLAlchemyError, OSError):
            log.warning("the database failed during a stream request", exc_info=True)
            await self._close(
                CloseCode.TRY_AGAIN_LATER,
                ErrorCode.service_unavailable,
                "the service cannot read events right now; reconnect with your cursor",
            )
        except Exception:
            log.exception("stream request failed")
            await self._close(CloseCode.INTERNAL_ERROR, ErrorCode.internal_error, "internal error")

    async def _handle(self, message: Mapping[str, Any]) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            await self._reject(ErrorCode.unsupported_frame, "send JSON messages in text frames")
            return
        limit = self._settings.max_message_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            await self._reject(
                ErrorCode.message_too_large, f"messages are limited to {limit} bytes"
            )
            return
        try:
            data = json.loads(text)
        except ValueError:
            await self._reject(ErrorCode.malformed_json, "the message is not valid JSON")
            return
        except RecursionError:
            # Thousands of nested brackets fit in a frame; the parser gives up on them.
            await self._reject(ErrorCode.malformed_json, "the message is nested too deeply")
            return
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            await self._reject(
                ErrorCode.malformed_json, 'a message is a JSON object with a string "type"'
            )
            return
        model = _MESSAGES.get(data["type"])
        if model is None:
            await self._reject(ErrorCode.unknown_type, "unknown message type")
            return
        if self._principal is None and model is not AuthMessage:
            await self._reject(ErrorCode.auth_required, 'the first message must be "auth"')
            return
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            await self._reject(ErrorCode.validation_error, _summary(exc))
            return
        if isinstance(parsed, AuthMessage):
            await self._authenticate(parsed)
        elif isinstance(parsed, SubscribeMessage):
            await self._subscribe(parsed)
        elif isinstance(parsed, MarketSubscribeMessage):
            await self._market_request(parsed)

    async def _authenticate(self, message: AuthMessage) -> None:
        try:
            principal = await self._verifier.verify(message.token)
        except errors.Unauthorized as exc:
            await self._close(CloseCode.UNAUTHORIZED, ErrorCode.unauthorized, exc.detail)
            return
        except errors.ServiceUnavailable:
            await self._close(
                CloseCode.TRY_AGAIN_LATER,
                ErrorCode.service_unavailable,
                "the identity service is unavailable; try again",
            )
            return
        if self._principal is not None and principal.user_id != self._principal.user_id:
            await self._close(
                CloseCode.UNAUTHORIZED, ErrorCode.user_mismatch, "the token is for another user"
            )
            return
        expires_at = token_expiry(message.token)
        if expires_at is not None and expires_at <= utcnow():
            await self._close(CloseCode.UNAUTHORIZED, ErrorCode.token_expired, "token expired")
            return
        self._principal = principal
        self._expires_at = expires_at
        self._changed.set()
        await self._send(authenticated_message(principal.user_id, expires_at))

    async def _subscribe(self, message: SubscribeMessage) -> None:
        assert self._principal is not None
        if self._subscription is not None:
            await self._reject(
                ErrorCode.already_subscribed, "one subscription per connection; reconnect to change"
            )
            return
        accounts: list[str] | None = None
        if message.accounts != "*":
            accounts = list(dict.fromkeys(message.accounts))
            if not accounts or len(accounts) > self._settings.max_subscribe_accounts:
                await self._reject(
                    ErrorCode.validation_error,
                    f'accounts: give 1..{self._settings.max_subscribe_accounts} ids, or "*"',
                )
                return
        after: int | None = None
        if message.after is not None:
            try:
                after = parse_cursor(message.after)
            except InvalidCursorError as exc:
                await self._reject(ErrorCode.invalid_cursor, str(exc))
                return
        try:
            start = await self._events.open_subscription(
                user_id=self._principal.user_id, accounts=accounts, after=after
            )
        except errors.NotFound as exc:
            await self._reject(ErrorCode.not_found, exc.detail)
            return
        except errors.InvalidCursor as exc:
            await self._reject(ErrorCode.invalid_cursor, exc.detail)
            return
        if self._closing:
            return
        subscription = Subscription(
            self._principal.user_id,
            None if accounts is None else frozenset(accounts),
            self._settings.queue_size,
        )
        # Registered before the backlog is read: see app.streaming.hub on why no gap.
        self._hub.add(subscription)
        self._subscription = subscription
        self._cursor = start
        await self._send(subscribed_message(accounts, start))
        self._next_heartbeat = asyncio.get_running_loop().time() + self._settings.heartbeat_seconds
        self._changed.set()
        self._spawn(self._write_loop(subscription), "stream-writer")

    # --- market data -------------------------------------------------------------------

    async def _market_request(self, message: MarketSubscribeMessage) -> None:
        """``market.subscribe`` / ``market.unsubscribe``: answered with the account's full
        set, or an ``error`` frame having changed nothing."""
        assert self._principal is not None
        if self._market is None:
            await self._reject(
                ErrorCode.market_data_unsupported, "market data is not enabled on this server"
            )
            return
        unknown = message.unknown_channels()
        if unknown:
            await self._reject(
                ErrorCode.unknown_channel,
                f"unknown channel {unknown[0][:32]!r}: use quotes, trades, bars, greeks",
            )
            return
        try:
            request = parse_request(message.quotes, message.trades, message.bars, message.greeks)
            client = self._market_client
            if client is None:
                client = self._market.new_client(self._principal.user_id)
            before = client.wanted(message.account_id)
            if message.type == "market.subscribe":
                wanted = await self._market.subscribe(client, message.account_id, request)
            else:
                wanted = await self._market.unsubscribe(client, message.account_id, request)
        except MarketDataError as exc:
            await self._reject(ErrorCode(exc.code), exc.detail)
            return
        # Through the feed, so it precedes every frame of the new set (and follows the old).
        client.feed.control(subscribed_frame(message.account_id, wanted))
        added_bars = request.bars - before.bars
        if message.type == "market.subscribe" and added_bars:
            # Recent final bars from history, stitched to the live ones, after the answer.
            await self._market.backfill(
                client, message.account_id, MarketDataSubscription(bars=added_bars)
            )
        if self._market_client is None:
            self._market_client = client
            self._spawn(self._market_write_loop(client), "stream-market-writer")

    async def _market_write_loop(self, client: MarketClient) -> None:
        """The only task that sends market data: whatever the feed holds, oldest first
        (a ``market.resync`` first when frames were dropped), under the send lock."""
        feed = client.feed
        clock = asyncio.get_running_loop().time
        send = self._ws.send_text
        try:
            while not self._closing:
                await feed.wait()  # returns at once while the feed holds anything
                frames = feed.take()
                if not frames:
                    continue
                async with self._send_lock:
                    try:
                        for frame in frames:
                            self._sending_since = clock()
                            await send(frame)
                    except Exception as exc:
                        raise _PeerGone() from exc
                    finally:
                        self._sending_since = None
                MARKET_SENT.inc(len(frames))
        except _PeerGone:
            return

    # --- writer --------------------------------------------------------------------------

    async def _write_loop(self, sub: Subscription) -> None:
        try:
            await self._catch_up(sub)
            while not self._closing:
                if sub.overflowed:
                    # Fell behind live: drop the queue, say so, re-read from our cursor.
                    sub.clear_overflow()
                    await self._send(resync_message(self._cursor))
                    await self._catch_up(sub)
                    continue
                items = sub.take()
                if items:
                    await self._send_events(items)
                    continue
                if self._heartbeat_due:
                    self._heartbeat_due = False
                    await self._send(heartbeat_message(self._cursor))
                    continue
                await sub.wait()
        except _PeerGone:
            return
        except (SQLAlchemyError, OSError):
            log.warning("the database failed while streaming a backlog", exc_info=True)
            await self._close(
                CloseCode.TRY_AGAIN_LATER,
                ErrorCode.service_unavailable,
                "the service cannot read events right now; reconnect with your cursor",
            )

    async def _catch_up(self, sub: Subscription) -> None:
        """Send everything after our cursor, until there is no more: from the hub's memory
        when it holds the cursor's range, else from the database (one bounded read at a
        time per instance, see ``Hub.backlog_read``).

        An overflow while catching up needs no ``resync``: the queue is dropped and the
        next read (which starts after the drop) covers whatever was in it.
        """
        batch = self._settings.read_batch
        assert self._principal is not None
        user_id = self._principal.user_id
        while True:
            if sub.overflowed:
                sub.clear_overflow()
            items = self._hub.recent_after(user_id, self._cursor, sub.accounts, batch)
            if items is None:
                async with self._hub.backlog_read:
                    rows = await self._events.backlog(
                        user_id=user_id, after=self._cursor, accounts=sub.accounts, limit=batch
                    )
                items = [(row.id, event_frame(row)) for row in rows]
            for event_id, frame in items:
                if event_id > self._cursor:
                    await self._send(frame)
                    self._cursor = event_id
                    SENT.labels(path="backlog").inc()
            if len(items) < batch and not sub.overflowed:
                return

    # --- supervisor ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self._settings
        auth_deadline = loop.time() + settings.auth_timeout_seconds
        while not self._closing:
            now = loop.time()
            if self._principal is None and now >= auth_deadline:
                await self._close(
                    CloseCode.UNAUTHORIZED,
                    ErrorCode.auth_timeout,
                    f"no auth message within {settings.auth_timeout_seconds:g} s",
                )
                return
            expires_in: float | None = None
            if self._expires_at is not None:
                expires_in = (self._expires_at - utcnow()).total_seconds()
                if expires_in <= 0:
                    await self._close(
                        CloseCode.UNAUTHORIZED, ErrorCode.token_expired, "token expired"
                    )
                    return
            sending_since = self._sending_since
            if sending_since is not None and now - sending_since >= settings.send_timeout_seconds:
                await self._close_too_slow()
                return
            subscription = self._subscription
            if subscription is not None and now >= self._next_heartbeat:
                self._heartbeat_due = True
                subscription.poke()
                self._next_heartbeat = now + settings.heartbeat_seconds

            deadlines = [now + settings.send_timeout_seconds / 2]
            if sending_since is not None:
                deadlines.append(sending_since + settings.send_timeout_seconds)
            if self._principal is None:
                deadlines.append(auth_deadline)
            if expires_in is not None:
                deadlines.append(now + expires_in)
            if subscription is not None:
                deadlines.append(self._next_heartbeat)
            self._changed.clear()
            try:
                async with asyncio.timeout(max(0.0, min(deadlines) - now)):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _close_too_slow(self) -> None:
        """The client accepted nothing for ``send_timeout_seconds``: let it go.

        The writer is stuck in a send; cancelling it frees the send lock so the close frame
        can at least be queued. A client that still reads nothing never sees it, and its
        connection is dropped when the session ends.
        """
        for task in self._tasks:
            if task.get_name() in ("stream-writer", "stream-market-writer"):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        log.info("closing a stream connection that accepts no data")
        await self._close(CloseCode.TOO_SLOW, None)


def _summary(exc: ValidationError) -> str:
    """Field errors without the submitted values (a token must never be echoed)."""
    parts = []
    for detail in exc.errors(include_input=False)[:5]:
        loc = ".".join(str(p) for p in detail.get("loc", ())) or "message"
        parts.append(f"{loc}: {detail.get('msg', 'invalid')}")
    return "; ".join(parts)

"""The per-instance fan-out: read the outbox tail once, hand each event to local subscribers.

One ``Hub`` runs per app instance. Something tells it "new events were committed" (the
Postgres listener, the in-process ``LocalNotifier`` on SQLite, or its own safety poll); it
then reads every row after its ``head`` from the database, renders each event once and
offers the frame to the subscriptions of the event's user. Notifications carry ids only
and are only hints: the rows read from the database by cursor are the truth, so a lost or
duplicated notification can delay an event, never lose or repeat one.

Each ``Subscription`` has a bounded queue. ``offer`` never blocks and never awaits: when
the queue is full the subscription is marked ``overflowed`` and its queue dropped, and its
writer (in ``app.services.events``) resynchronises it from its own cursor by reading the
database. A slow or stuck subscriber therefore costs the hub one ``len()`` check per event
and never delays anyone else.

Why live events and a backlog never leave a gap: a subscription is registered with the hub
*before* its backlog is read. Every event the hub dispatches after registration lands in
the queue; every event dispatched before it was committed before the backlog read began,
so the backlog contains it. The writer sends only ids above its cursor, so the overlap is
dropped and the order is strictly increasing.

Catching up from memory: for each user with a subscription on this instance the hub keeps
that user's most recent frames (``recent_events_per_user``), from the moment the user's
first subscription arrived. A subscriber that fell behind (``resync``) or resumes from a
recent cursor is served from there, with no database read at all; only a cursor older than
what the hub holds is read from the database, and those reads are bounded per instance
(``backlog_read_concurrency``), so the number of database connections never grows with the
number of subscribers that fall behind.

Isolation: events are routed by the row's ``user_id`` to that user's subscriptions only,
then filtered by the subscription's account set (accounts the service has verified belong
to the user). Nothing a client sends can change either key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import Counter, Gauge

from app.db.models import OrderEvent
from app.db.repositories.orders import OrderEventRepository
from app.db.session import SessionMaker
from app.streaming.config import StreamSettings
from app.streaming.protocol import event_frame

log = logging.getLogger(__name__)

SUBSCRIBERS = Gauge("brokerage_stream_subscribers", "Live order-event subscriptions")
DISPATCHED = Counter(
    "brokerage_stream_events_dispatched_total", "Events handed to subscriber queues"
)
RESYNCS = Counter(
    "brokerage_stream_resyncs_total", "Subscriber queues that overflowed and were resynchronised"
)
TAIL_READS = Counter("brokerage_stream_tail_reads_total", "Outbox tail reads by the hubs")
TAIL_FAILURES = Counter("brokerage_stream_tail_failures_total", "Failed outbox tail reads")
CATCH_UPS = Counter(
    "brokerage_stream_catch_ups_total",
    "Subscriber catch-ups (backlog or resync), by where they were served from",
    ["source"],
)


class RecentFrames:
    """One user's most recent event frames, oldest first, and what they cover.

    ``floor``: every event of the user with ``floor < id <= hub.head`` is held (the hub
    appends each one as it reads the tail); older ones may not be.
    """

    __slots__ = ("floor", "frames")

    def __init__(self, floor: int, size: int) -> None:
        self.floor = floor
        self.frames: deque[tuple[int, str | None, str]] = deque(maxlen=size)

    def append(self, event_id: int, account_id: str | None, frame: str) -> None:
        frames = self.frames
        if frames.maxlen is not None and len(frames) == frames.maxlen:
            self.floor = frames[0][0]  # about to be evicted
        frames.append((event_id, account_id, frame))

    def after(
        self, cursor: int, accounts: frozenset[str] | None, limit: int
    ) -> list[tuple[int, str]] | None:
        """The frames after ``cursor`` for ``accounts``, oldest first (at most ``limit``),
        or None when ``cursor`` is older than what is held."""
        if cursor < self.floor:
            return None
        found: list[tuple[int, str]] = []
        # Newest first until the cursor, then reversed: a caught-up subscriber costs little.
        for event_id, account_id, frame in reversed(self.frames):
            if event_id <= cursor:
                break
            if accounts is None or account_id in accounts:
                found.append((event_id, frame))
        found.reverse()
        return found[:limit]


class Subscription:
    """One subscriber's live feed: who, which accounts, and a bounded queue of frames.

    ``accounts`` is None for "every account of the user" (including connection-level
    events, which have no account). Owned by one writer task; the hub only calls ``offer``.
    """

    __slots__ = ("_items", "_max", "_waiter", "accounts", "overflowed", "user_id")

    def __init__(self, user_id: str, accounts: frozenset[str] | None, max_queue: int) -> None:
        self.user_id = user_id
        self.accounts = accounts
        self.overflowed = False
        self._items: deque[tuple[int, str]] = deque()
        self._max = max_queue
        # A bare future rather than an asyncio.Event: this is the per-delivery hot path.
        self._waiter: asyncio.Future[None] | None = None

    def wants(self, account_id: str | None) -> bool:
        return self.accounts is None or account_id in self.accounts

    def offer(self, event_id: int, account_id: str | None, frame: str) -> None:
        """Queue one event for this subscriber; never blocks. Full queue -> overflowed."""
        if self.accounts is not None and account_id not in self.accounts:
            return
        if self.overflowed:
            return
        if len(self._items) >= self._max:
            self.overflowed = True
            self._items.clear()
            RESYNCS.inc()
        else:
            self._items.append((event_id, frame))
        self._wakeup()

    def _wakeup(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def take(self) -> list[tuple[int, str]]:
        """Everything queued so far, oldest first, leaving the queue empty."""
        if not self._items:
            return []
        items = list(self._items)
        self._items.clear()
        return items

    def clear_overflow(self) -> None:
        """Forget the queue and the overflow: the writer is about to re-read the database."""
        self.overflowed = False
        self._items.clear()

    @property
    def pending(self) -> int:
        return len(self._items)

    def poke(self) -> None:
        """Wake the writer for something other than an event (heartbeat due, closing)."""
        self._wakeup()

    async def wait(self) -> None:
        """Return when an event is queued, the queue overflowed, or ``poke`` was called."""
        if self._items or self.overflowed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None


class ConnectionWatcher(Protocol):
    """Told of every ``connection.revoked``/``connection.broken`` this hub reads (whoever
    committed it, on any instance): market data ends with its connection everywhere."""

    def watching(self) -> bool:
        """Whether the tail must be read for it even with no order-event subscriber."""
        ...

    def connection_ended(self, connection_id: str) -> None: ...


ENDING_EVENTS = frozenset({"connection.revoked", "connection.broken"})


class Hub:
    """Reads the outbox tail and fans out to this instance's subscriptions.

    ``start`` positions the head at the newest committed event; ``notify`` (a committed
    id) and ``resume`` (the listener reconnected: notifications may have been missed) wake
    the tail reader. Tail reads that fail (database down) are retried with backoff; the
    head does not move, so nothing is skipped.
    """

    def __init__(self, sessionmaker: SessionMaker, settings: StreamSettings) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._by_user: dict[str, set[Subscription]] = {}
        self._recent: dict[str, RecentFrames] = {}
        self._backlog_reads = asyncio.Semaphore(settings.backlog_read_concurrency)
        self._count = 0
        self._head = 0
        self._notified = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watchers: list[ConnectionWatcher] = []

    @property
    def head(self) -> int:
        """The newest event id this hub has read (and offered to its subscribers)."""
        return self._head

    @property
    def subscriber_count(self) -> int:
        return self._count

    async def start(self) -> None:
        async with self._sessionmaker() as session:
            self._head = await OrderEventRepository.for_system(session).latest_id()
        self._notified = self._head
        self._task = asyncio.create_task(self._run(), name="stream-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def watch_connections(self, watcher: ConnectionWatcher) -> None:
        """Tell ``watcher`` of each connection that ends, from now on."""
        self._watchers.append(watcher)

    def notify(self, event_id: int) -> None:
        """An event with this id was committed (a hint; the database is read for the rows)."""
        if event_id > self._notified:
            self._notified = event_id
        self._wake.set()

    def resume(self) -> None:
        """Notifications may have been lost (listener reconnected): read the tail now."""
        self._wake.set()

    def add(self, subscription: Subscription) -> None:
        subs = self._by_user.setdefault(subscription.user_id, set())
        if subscription.user_id not in self._recent:
            # Everything this user commits after ``head`` will be read and held from now on.
            self._recent[subscription.user_id] = RecentFrames(
                self._head, self._settings.recent_events_per_user
            )
        if subscription not in subs:
            subs.add(subscription)
            self._count += 1
            SUBSCRIBERS.inc()

    def remove(self, subscription: Subscription) -> None:
        subs = self._by_user.get(subscription.user_id)
        if subs is None or subscription not in subs:
            return
        subs.discard(subscription)
        if not subs:
            del self._by_user[subscription.user_id]
            del self._recent[subscription.user_id]
        self._count -= 1
        SUBSCRIBERS.dec()

    def recent_after(
        self, user_id: str, cursor: int, accounts: frozenset[str] | None, limit: int
    ) -> list[tuple[int, str]] | None:
        """The user's frames after ``cursor`` that this hub holds in memory (oldest first,
        at most ``limit``), or None when the cursor is older than what it holds (then the
        caller reads the database through ``backlog_read``). Only frames up to ``head``:
        later ones reach a registered subscription's queue."""
        recent = self._recent.get(user_id)
        found = None if recent is None else recent.after(cursor, accounts, limit)
        CATCH_UPS.labels("memory" if found is not None else "database").inc()
        return found

    @property
    def backlog_read(self) -> asyncio.Semaphore:
        """Held around every backlog read from the database: bounds the connections that
        subscribers catching up can take, however many fall behind at once."""
        return self._backlog_reads

    async def _run(self) -> None:
        backoff = self._settings.reconnect_min_seconds
        while True:
            try:
                async with asyncio.timeout(self._settings.poll_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._by_user and not any(w.watching() for w in self._watchers):
                # Nobody to deliver to. Every id up to the newest notified one has committed
                # (or rolled back): ids commit in order. A subscriber that arrives later
                # reads its own backlog, so the head may skip ahead without a read. No await
                # between the check and the assignment, so no subscriber can slip in.
                self._head = max(self._head, self._notified)
                self._recent.clear()  # nobody subscribed, so nothing is held
                continue
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                TAIL_FAILURES.inc()
                log.exception("reading the order-event outbox failed; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.reconnect_max_seconds)
                self._wake.set()
            else:
                backoff = self._settings.reconnect_min_seconds

    async def _drain(self) -> None:
        batch = self._settings.read_batch
        while True:
            TAIL_READS.inc()
            async with self._sessionmaker() as session:
                rows = await OrderEventRepository.for_system(session).list_after(
                    self._head, limit=batch
                )
            self._dispatch(rows)
            if len(rows) < batch:
                return

    def _dispatch(self, rows: Iterable[OrderEvent]) -> None:
        for row in rows:
            if row.type in ENDING_EVENTS and row.connection_id is not None:
                for watcher in self._watchers:
                    watcher.connection_ended(row.connection_id)
            subs = self._by_user.get(row.user_id)
            # Read off the row once: an ORM attribute costs more than a local, and this
            # loop runs once per subscriber per event.
            event_id, account_id = row.id, row.account_id
            if subs:
                frame = event_frame(row)
                offered = 0
                for sub in subs:
                    if sub.wants(account_id):
                        sub.offer(event_id, account_id, frame)
                        offered += 1
                if offered:
                    DISPATCHED.inc(offered)
                self._recent[row.user_id].append(event_id, account_id, frame)
            self._head = event_id

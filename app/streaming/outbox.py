"""How an outbox row is written so that readers can trust "everything after cursor c".

Why this exists
    Readers (the hub's tail, a subscriber's backlog, ``GET /v1/events``) ask for events
    with ``id > cursor``. On Postgres the id comes from a sequence, and a sequence hands out
    numbers in *insert* order, not *commit* order: a transaction holding id 10 can commit
    after id 11 was already read and delivered, and a reader at cursor 11 would skip 10
    forever. On SQLite the single writer makes insert order and commit order the same.

The choice: serialise the publication of event ids, at commit (Postgres)
    An insert into ``order_events`` gets a provisional, negative id from
    ``order_events_provisional_id_seq`` and takes no lock. A ``DEFERRABLE INITIALLY
    DEFERRED`` constraint trigger (migration 0017) fires for each inserted row inside
    COMMIT: it takes the transaction-scoped advisory lock
    ``pg_advisory_xact_lock(OUTBOX_LOCK_KEY)``, draws the row's reader-visible id from
    ``order_events_id_seq`` and rewrites the row's id to it. Postgres runs deferred
    triggers at the start of its commit processing, before the commit record is written
    and before the transaction becomes visible
    (https://www.postgresql.org/docs/15/sql-createtrigger.html: a deferred constraint
    trigger fires "at the end of the transaction"), and releases the lock only after the
    commit is visible (``ProcArrayEndTransaction`` precedes lock release; both orders are
    those of ``CommitTransaction`` in Postgres's src/backend/access/transam/xact.c:
    ``AfterTriggerFireDeferred``, then ``RecordTransactionCommit``, then
    ``ProcArrayEndTransaction``, then ``ResourceOwnerRelease(..LOCKS..)``). So a later id
    is always drawn after every earlier id has committed or rolled back, ids become
    visible in id order, and rolled-back ids are harmless gaps. Provisional ids are never
    visible to another transaction (they are renumbered before the commit is), and no
    writer (ORM, Core, a script) can skip the trigger.

    The lock is held only for the server-side end of a commit (the deferred triggers, the
    commit record and its WAL flush), not across the client's round trip from the insert
    to its COMMIT, where an application busy with other requests can keep a transaction
    open for a long time. Until 0017 a statement-level ``BEFORE INSERT`` trigger took the
    lock at the insert and every order transaction of every user queued behind that round
    trip (``scripts/bench/stream --lock-cost`` and ``scripts/bench/orders`` measure it).
    The alternative, tracking in-flight ids and waiting for gaps to fill, costs nothing on
    the write path but needs a visibility timeout that turns a slow transaction into a
    lost event; we prefer a short serialised step to a rule with a timeout in it.

    Consequence for writers: the id an insert returns (``RETURNING id``, an ORM object's
    ``id`` after flush or commit) on Postgres is the provisional one, not the cursor; read
    it back by another column (``order_id``) after commit when it is needed. Nothing in the
    application uses it. The deferred trigger updates only the rows this transaction
    inserted, so it takes no row lock another appender could hold.

Notification
    The same deferred trigger calls ``pg_notify(OUTBOX_CHANNEL, '<the id it published>')``:
    ids only, never rows, one per event (a notification is only a wake-up; readers read by
    cursor). NOTIFY is
    transactional, so nothing is announced for a rolled-back change, and announcements
    arrive in commit order. Each instance's listener turns them into a wake-up of its hub,
    which then reads the rows itself.

    On SQLite there is no NOTIFY: the ORM hooks below (and ``note_core_append`` for the
    Core inserts of the order hot path) remember the highest id on the session and, after
    the session commits, ``LocalNotifier`` wakes every hub of this process that serves the
    same database file. A rollback forgets it. This is the single-instance embedded mode.

The SQLite hooks are installed once per process by ``install_outbox_hooks()``, which
``app.services.order_updates`` (the only module that appends events) calls at import.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper, Session, SessionTransaction, object_session

from app.db.models import OrderEvent
from app.db.session import database_key

log = logging.getLogger(__name__)

# "order-ev" in ASCII as a signed 64-bit key; any constant works as long as it is shared.
# Both values are written into the trigger of migration 0017: change them together.
OUTBOX_LOCK_KEY = 0x6F726465722D6576
OUTBOX_CHANNEL = "brokerage_order_events"

_SQLITE_PENDING = "brokerage_outbox_sqlite_pending"
_FLUSHED_MAX = "brokerage_outbox_flushed_max"

_installed = False
_install_lock = threading.Lock()


class LocalNotifier:
    """The in-process stand-in for NOTIFY (SQLite): committed event ids, per database file.

    Hubs register a callback for their database; ``publish`` is called after a commit,
    possibly from another thread (a sync session), and each callback runs on its hub's
    event loop.
    """

    _lock = threading.Lock()
    _listeners: dict[str, dict[int, tuple[asyncio.AbstractEventLoop, Callable[[int], None]]]] = {}
    _next_token = 0

    @classmethod
    def register(cls, database: str, callback: Callable[[int], None]) -> int:
        loop = asyncio.get_running_loop()
        with cls._lock:
            cls._next_token += 1
            token = cls._next_token
            cls._listeners.setdefault(database, {})[token] = (loop, callback)
        return token

    @classmethod
    def unregister(cls, database: str, token: int) -> None:
        with cls._lock:
            listeners = cls._listeners.get(database)
            if listeners is not None:
                listeners.pop(token, None)
                if not listeners:
                    del cls._listeners[database]

    @classmethod
    def publish(cls, database: str, event_id: int) -> None:
        with cls._lock:
            targets = list(cls._listeners.get(database, {}).values())
        for loop, callback in targets:
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                callback(event_id)
            else:
                loop.call_soon_threadsafe(callback, event_id)


def _after_insert(_mapper: Mapper[Any], connection: Connection, target: Any) -> None:
    # SQLite: remember the highest id of this flush; one announcement per commit follows.
    # (Postgres announces from its trigger.)
    if connection.dialect.name == "postgresql":
        return
    session = object_session(target)
    if session is None:  # pragma: no cover - ORM inserts always belong to a session
        return
    event_id = int(target.id)
    if event_id > session.info.get(_FLUSHED_MAX, 0):
        session.info[_FLUSHED_MAX] = event_id


def _after_flush_postexec(session: Session, _context: Any) -> None:
    event_id: int | None = session.info.pop(_FLUSHED_MAX, None)
    if event_id is None:
        return
    connection = session.connection()
    key = database_key(connection.engine.url)
    pending: dict[str, int] = session.info.setdefault(_SQLITE_PENDING, {})
    pending[key] = max(pending.get(key, 0), event_id)


def note_core_append(session: Session, event_id: int) -> None:
    """A Core insert into ``order_events`` (no ORM hook sees it) gave ``event_id``: on
    SQLite it is announced after the session commits, as a flushed ORM event would be.
    Postgres announces from its trigger; nothing to do there."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return
    key = database_key(bind.engine.url)
    pending: dict[str, int] = session.info.setdefault(_SQLITE_PENDING, {})
    pending[key] = max(pending.get(key, 0), event_id)


def _after_commit(session: Session) -> None:
    pending: dict[str, int] | None = session.info.pop(_SQLITE_PENDING, None)
    if not pending:
        return
    for database, event_id in pending.items():
        LocalNotifier.publish(database, event_id)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without ``after_commit`` having announced: it rolled
    # back, so what it inserted is gone; announce nothing. A savepoint ending changes
    # nothing (the outer transaction may still commit what it holds).
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_SQLITE_PENDING, None)
        session.info.pop(_FLUSHED_MAX, None)


def install_outbox_hooks() -> None:
    """Install the ORM hooks (idempotent, process-wide, every engine and session)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        event.listen(OrderEvent, "after_insert", _after_insert)
        event.listen(Session, "after_flush_postexec", _after_flush_postexec)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_transaction_end", _after_transaction_end)
        _installed = True

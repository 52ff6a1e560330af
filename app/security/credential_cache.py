"""Opened credentials kept in memory for a short while, dropped on every instance at once.

What it saves
    Every order (and every read of a live account) opens its connection's credential: a
    read of the token row, the data key unwrapped by the key provider (a KMS call in
    production) and the AES-GCM decryption. The plaintext does not change between two
    orders, so ``TokenVault`` keeps it here, per connection, for
    ``BROKERAGE_CREDENTIAL_CACHE_SECONDS`` (0: off) and at most
    ``BROKERAGE_CREDENTIAL_CACHE_SIZE`` connections (least recently used out first).

Why it is never stale
    An entry is keyed by the connection's ``credential_version`` (migration 0016), read with
    the connection row that every order and read loads anyway. Every write that changes
    which credential opens or whether it may place orders bumps that version in its own
    transaction: triggers on ``broker_tokens`` count a new token and any change of its
    ciphertext (replacement, OAuth refresh, rotation), ``no_order_write``, ``revoked_at`` or
    tier, whoever writes it; a flush hook below counts a connection becoming ``broken`` or
    ``revoked``. A request that sees the new row therefore misses the old entry, also on an
    instance that never heard of the change. The order
    gates still check the connection's status and the entry's ``no_order_write`` flag on a
    hit, before any broker call. A re-wrap under a new key-encryption key changes only the
    wrap of the data key, never the plaintext, so it leaves entries valid.

Dropping at once, everywhere
    The same writes announce the connection id: on Postgres with ``pg_notify`` on
    ``CREDENTIALS_CHANNEL`` inside the writing transaction (the ``broker_tokens`` trigger,
    or the flush hook; sent only if it commits), which
    each instance's LISTEN connection (``app.streaming.pg_listener``) hands to its cache;
    after a LISTEN reconnect the whole cache is cleared, since notifications may have been
    missed. On SQLite (one process) the ids are kept on the session and dropped from every
    cache of this process serving the same database file after the commit.

Nothing here logs or shows a secret: ``CachedCredential`` leaves its credentials out of its
repr, and ``Credentials`` masks its values anyway.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, event, func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from app.db.models import Connection
from app.db.session import database_key
from app.security.credentials import Credentials

CREDENTIALS_CHANNEL = "brokerage_credentials"
# A connection in one of these statuses opens no credential: its entry goes at once.
_ENDED_STATUSES = frozenset({"broken", "revoked"})
_PENDING = "brokerage_credential_changes"


@dataclass(frozen=True, slots=True)
class CachedCredential:
    """One connection's opened credential and what the order gates need of its token row."""

    token_id: str
    version: int
    broker_tier: str
    no_order_write: bool
    expires_at: float
    credentials: Credentials = field(repr=False, compare=False)


class CredentialCache:
    """Per instance: connection id -> its opened credential at one ``credential_version``.

    Thread-safe (a SQLite commit in a worker thread may drop entries). ``ttl_seconds`` 0
    (or ``max_entries`` 0) turns it off: nothing is kept and every lookup misses.
    """

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self.clock = clock  # monotonic seconds (tests move it)
        self._entries: OrderedDict[str, CachedCredential] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"CredentialCache(entries={len(self)}, ttl_seconds={self._ttl})"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._entries

    @property
    def enabled(self) -> bool:
        return self._ttl > 0 and self._max > 0

    def get(self, connection_id: str, version: int) -> CachedCredential | None:
        """The entry for this connection at exactly ``version``, if fresh; else None."""
        with self._lock:
            entry = self._entries.get(connection_id)
            if entry is None:
                self.misses += 1
                return None
            if entry.version != version or entry.expires_at <= self.clock():
                if entry.version <= version:  # superseded or expired: it is of no more use
                    del self._entries[connection_id]
                self.misses += 1
                return None
            self._entries.move_to_end(connection_id)
            self.hits += 1
            return entry

    def peek(self, connection_id: str) -> CachedCredential | None:
        """The entry held for the connection, whatever its version or age (no bookkeeping)."""
        return self._entries.get(connection_id)

    def put(
        self,
        connection_id: str,
        version: int,
        *,
        token_id: str,
        broker_tier: str,
        no_order_write: bool,
        credentials: Credentials,
    ) -> None:
        """Keep a credential just opened at ``version`` (never over a newer entry)."""
        if not self.enabled:
            return
        entry = CachedCredential(
            token_id=token_id,
            version=version,
            broker_tier=broker_tier,
            no_order_write=no_order_write,
            expires_at=self.clock() + self._ttl,
            credentials=credentials,
        )
        with self._lock:
            current = self._entries.get(connection_id)
            if current is not None and current.version > version:
                return
            self._entries[connection_id] = entry
            self._entries.move_to_end(connection_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def drop(self, connection_id: str) -> None:
        with self._lock:
            if self._entries.pop(connection_id, None) is not None:
                self.dropped += 1

    def drop_many(self, connection_ids: Iterable[str]) -> None:
        for connection_id in connection_ids:
            self.drop(connection_id)

    def clear(self) -> None:
        with self._lock:
            self.dropped += len(self._entries)
            self._entries.clear()

    # --- the LISTEN connection's handler (``app.streaming.pg_listener.ChannelHandler``) ---

    @property
    def channel(self) -> str:
        return CREDENTIALS_CHANNEL

    def notified(self, payload: str) -> None:
        """A ``CREDENTIALS_CHANNEL`` notification: comma-separated connection ids."""
        self.drop_many(part for part in payload.split(",") if part)

    def resync(self) -> None:
        """The LISTEN connection (re)connected: drops may have been missed, forget all."""
        self.clear()


# --- announcing a change ------------------------------------------------------------------

# Postgres limits a payload to 8000 bytes; ids are about 30 characters.
_IDS_PER_NOTIFICATION = 100


class LocalCaches:
    """SQLite (single process): the caches of this process, per database file."""

    _lock = threading.Lock()
    _caches: dict[str, list[CredentialCache]] = {}

    @classmethod
    def register(cls, database: str, cache: CredentialCache) -> None:
        with cls._lock:
            cls._caches.setdefault(database, []).append(cache)

    @classmethod
    def unregister(cls, database: str, cache: CredentialCache) -> None:
        with cls._lock:
            caches = cls._caches.get(database, [])
            if cache in caches:
                caches.remove(cache)
            if not caches:
                cls._caches.pop(database, None)

    @classmethod
    def drop(cls, database: str, connection_ids: Iterable[str]) -> None:
        ids = list(connection_ids)
        with cls._lock:
            caches = list(cls._caches.get(database, []))
        for cache in caches:
            cache.drop_many(ids)


def _chunks(ids: list[str]) -> Iterable[str]:
    for start in range(0, len(ids), _IDS_PER_NOTIFICATION):
        yield ",".join(ids[start : start + _IDS_PER_NOTIFICATION])


def _announce(session: Session, connection_ids: list[str]) -> None:
    """Postgres: NOTIFY in the session's transaction; SQLite: remember until the commit."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        for payload in _chunks(sorted(connection_ids)):
            connection.execute(select(func.pg_notify(CREDENTIALS_CHANNEL, payload)))
        return
    pending: dict[str, set[str]] = session.info.setdefault(_PENDING, {})
    pending.setdefault(database_key(connection.engine.url), set()).update(connection_ids)


def _remember_locally(session: Session, connection_ids: list[str]) -> None:
    if session.connection().dialect.name != "postgresql":  # Postgres: the trigger notified
        _announce(session, connection_ids)


async def credential_written(session: AsyncSession, connection_id: str) -> None:
    """After the vault wrote the connection's token row in this transaction.

    The database counted the change (the triggers of migration 0016) and, on Postgres,
    announced it; here the copy of the connection row this session holds, if any, learns
    the new version, and on SQLite the cache entry is dropped once the commit is through.
    """
    await session.run_sync(_remember_locally, [connection_id])
    key = identity_key(Connection, connection_id)
    held = session.sync_session.identity_map.get(key)
    if isinstance(held, Connection):
        await session.refresh(held, ["credential_version"])


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    # A connection becoming broken or revoked, whoever writes it: bump and announce. The
    # bump is computed by the database (``+ 1`` in SQL), never from the copy in memory,
    # which may be older than a trigger's bump: the version only ever grows.
    ended: dict[str, Connection] = {}
    for obj in session.dirty:
        if not isinstance(obj, Connection) or obj.status not in _ENDED_STATUSES:
            continue
        if inspect(obj).attrs.status.history.added:
            ended[obj.id] = obj
    if not ended:
        return
    table = cast(Table, Connection.__table__)
    connection = session.connection()
    ids = sorted(ended)
    connection.execute(
        update(table)
        .where(table.c.id.in_(ids))
        .values(credential_version=table.c.credential_version + 1)
    )
    bumped = connection.execute(
        select(table.c.id, table.c.credential_version).where(table.c.id.in_(ids))
    )
    for connection_id, version in bumped:
        set_committed_value(ended[connection_id], "credential_version", version)
    _announce(session, ids)


def _after_commit(session: Session) -> None:
    pending: dict[str, set[str]] | None = session.info.pop(_PENDING, None)
    for database, ids in (pending or {}).items():
        LocalCaches.drop(database, ids)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_PENDING, None)  # rolled back (a commit popped it already)


_installed = False
_install_lock = threading.Lock()


def install_credential_hooks() -> None:
    """Install the session hooks (idempotent, process-wide); ``TokenVault`` calls it."""
    global _installed
    with _install_lock:
        if _installed:
            return
        event.listen(Session, "before_flush", _before_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_transaction_end", _after_transaction_end)
        _installed = True

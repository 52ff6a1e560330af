"""The tamper-evident audit chain of live order actions on user-supplied credentials.

Every place, modify and cancel on a BYOB connection appends an entry in the same
transaction as the order change it records (ARCHITECTURE.md, "Credentials, tokens and
secrets"). An entry's ``entry_hash`` is HMAC-SHA256, keyed with a secret the database never
holds, over the previous entry's hash and the entry's own canonical content. Without the key
nobody can write an entry that verifies, so an edited, deleted, inserted or reordered row
shows up at that row when the chain is verified.

Each user has a chain of their own (``user:<user id>``): appends to one chain serialize on
its head row (locked by an upsert on Postgres; SQLite has a single writer), so ``seq`` is
gapless and each chain stays linear with any number of app instances, while different users'
live orders never wait for each other. The lock is taken last in the order transaction and
released at its commit: never held across a broker call. Entries written before chains were
per user form the frozen ``global`` chain, verified as before. An entry's canonical content
names its chain (except in the legacy chain), so an entry moved to another chain does not
verify there.

What a chain cannot prove on its own: an attacker with write access who deletes a chain's
last entries *and* rewinds its head row to an earlier entry's stored hash (or deletes a whole
chain with its head) leaves a shorter chain that verifies. Anchoring the heads outside the
database (exporting them periodically) closes that; it is not done here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AuditChainHead, AuditEntry
from app.db.repositories.audit import (
    LEGACY_CHAIN,
    AuditChainHeadMissing,
    AuditRepository,
    user_chain,
)
from app.db.session import SessionMaker
from app.security.keyring import create_private_file, read_private_file

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
MIN_KEY_LENGTH = 32
VERIFY_BATCH = 1000

AuditAction = Literal["place", "modify", "cancel", "exercise"]
Problem = Literal[
    "head_missing", "entry_missing", "chain_broken", "entry_altered", "unexpected_entry"
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def load_or_create_audit_key(path: Path) -> tuple[SecretStr, bool]:
    """Read the development audit key from ``path`` (``{"audit_key": "..."}``), creating it
    (mode 0600, never overwriting one that exists) if absent.

    Returns the key and whether this call created it. Losing the file makes every existing
    entry fail verification: back it up with the database. Raises ``ValueError`` for a
    malformed file or a short key, ``OSError`` when it cannot be written.
    """
    created = False
    if not path.exists():
        created = create_private_file(path, json.dumps({"audit_key": secrets.token_urlsafe(48)}))
    try:
        data = json.loads(read_private_file(path))
    except ValueError:
        raise ValueError(f"{path} is not valid JSON") from None
    value = data.get("audit_key") if isinstance(data, dict) else None
    if not isinstance(value, str) or len(value) < MIN_KEY_LENGTH:
        raise ValueError(f"{path} has no audit_key of at least {MIN_KEY_LENGTH} characters")
    return SecretStr(value), created


def request_fingerprint(method: str, path: str, body: object) -> str:
    """SHA-256 of the canonical request (method, path, JSON body; sorted keys, no spaces).

    Only the client's request goes in: credentials never travel in an order request.
    """
    canonical = json.dumps(
        {"method": method, "path": path, "body": body}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What one entry says: who did what, where, on which request, with what result."""

    user_id: str
    action: AuditAction
    order_id: str
    account_id: str
    connection_id: str
    broker_slug: str
    request_fingerprint: str
    outcome: str


def canonical_content(entry: AuditEntry) -> bytes:
    """The bytes the entry's HMAC covers besides ``prev_hash``: every column but the hashes
    (the legacy ``global`` chain's entries were hashed without a ``chain`` field)."""
    occurred_at = entry.occurred_at.astimezone(UTC).isoformat(timespec="microseconds")
    chain = {} if entry.chain == LEGACY_CHAIN else {"chain": entry.chain}
    return json.dumps(
        {
            **chain,
            "seq": entry.seq,
            "occurred_at": occurred_at,
            "user_id": entry.user_id,
            "action": entry.action,
            "order_id": entry.order_id,
            "account_id": entry.account_id,
            "connection_id": entry.connection_id,
            "broker_slug": entry.broker_slug,
            "request_fingerprint": entry.request_fingerprint,
            "outcome": entry.outcome,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """One chain checked; ``first_bad_seq`` names where it breaks."""

    chain: str
    ok: bool
    entries_checked: int
    head_seq: int | None
    first_bad_seq: int | None = None
    problem: Problem | None = None
    detail: str = "the audit chain is intact"


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """Every chain checked. The top-level ``first_bad_seq``/``problem``/``detail``/``chain``
    are those of the first broken chain (by name); ``failures`` lists every broken chain.
    ``head_seq`` is the sum of the heads' last seqs (the entries the heads record)."""

    ok: bool
    entries_checked: int
    head_seq: int | None
    first_bad_seq: int | None = None
    problem: Problem | None = None
    detail: str = "the audit chain is intact"
    chain: str | None = None
    chains_checked: int = 0
    failures: tuple[ChainVerification, ...] = ()

    @classmethod
    def of(cls, chains: list[ChainVerification]) -> AuditVerification:
        failures = tuple(c for c in chains if not c.ok)
        first = failures[0] if failures else None
        return cls(
            ok=first is None,
            entries_checked=sum(c.entries_checked for c in chains),
            head_seq=sum(c.head_seq or 0 for c in chains),
            first_bad_seq=first.first_bad_seq if first else None,
            problem=first.problem if first else None,
            detail=(
                f"chain {first.chain}: {first.detail}" if first else "the audit chains are intact"
            ),
            chain=first.chain if first else None,
            chains_checked=len(chains),
            failures=failures,
        )


def head_missing(entry: AuditEntry) -> AuditChainHeadMissing:
    """The error for an entry whose (chain, seq) is taken: the head was deleted or rewound."""
    return AuditChainHeadMissing(
        f"the head of audit chain {entry.chain} is missing or rewound: entry {entry.seq} exists"
    )


# Chains whose last committed head a process remembers (a few hundred bytes each).
_REMEMBERED_HEADS = 10_000


class AuditChain:
    """Appends entries under the chain-head lock and verifies the whole chain.

    Raises ``ValueError`` at construction for a key shorter than 32 characters.
    """

    def __init__(self, key: SecretStr, *, clock: Callable[[], datetime] = _utcnow) -> None:
        raw = key.get_secret_value()
        if len(raw) < MIN_KEY_LENGTH:
            raise ValueError(f"the audit key must be at least {MIN_KEY_LENGTH} characters")
        self._key = raw.encode()
        self._clock = clock
        self._heads: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._placing: dict[str, int] = {}

    def __repr__(self) -> str:
        return "AuditChain(key=<secret>)"

    def remembered_head(self, chain: str) -> tuple[int, str] | None:
        """The (seq, hash) this process last wrote at ``chain``'s head, a hint (noted at or
        just before its commit): the order path hashes its entry against it and appends
        only if the head is still there (another instance or path may have moved it since,
        or the commit failed), else locks and reads it."""
        return self._heads.get(chain)

    async def lock_before_claim(self, session: AsyncSession, user_id: str) -> None:
        """Lock the user's chain head (created at the genesis if new) before this
        transaction claims an Idempotency-Key, for an action that will append to the chain.

        Every path that takes both takes the head first (the order path's statements do), so
        two requests with one key, at two endpoints, never wait for each other in opposite
        orders (a deadlock). Postgres only: SQLite's one writer cannot interleave them. The
        head stays locked until the transaction ends.
        """
        if session.get_bind().dialect.name != "postgresql":
            return
        repo = AuditRepository(session)
        await repo.lock_head(user_chain(user_id), genesis_hash=GENESIS_HASH, now=self.now())

    def start_placing(self, chain: str) -> bool:
        """Note a live placement on ``chain`` in progress in this process (until
        ``end_placing``); whether another one already was, whose appends may move the head
        under this one."""
        others = self._placing.get(chain, 0)
        self._placing[chain] = others + 1
        return others > 0

    def end_placing(self, chain: str) -> None:
        left = self._placing.get(chain, 1) - 1
        if left > 0:
            self._placing[chain] = left
        else:
            self._placing.pop(chain, None)

    def remember_head(self, chain: str, seq: int, entry_hash: str) -> None:
        """Note a head this process wrote (the last ``_REMEMBERED_HEADS`` chains). A head
        behind the one noted already is ignored: two commits may finish in either order."""
        known = self._heads.get(chain)
        if known is not None and known[0] > seq:
            return
        self._heads[chain] = (seq, entry_hash)
        self._heads.move_to_end(chain)
        if len(self._heads) > _REMEMBERED_HEADS:
            self._heads.popitem(last=False)

    def _hash(self, prev_hash: str, content: bytes) -> str:
        return hmac.new(self._key, prev_hash.encode() + b"\n" + content, hashlib.sha256).hexdigest()

    async def append(
        self, session: AsyncSession, record: AuditRecord, *, occurred_at: datetime | None = None
    ) -> AuditEntry:
        """Add the next entry of the record's user's chain to the caller's transaction (the
        caller commits, or rolls back).

        Call it as the last write before the commit: it locks the user's chain head, which
        that user's other appenders then wait for until this transaction ends. Raises
        ``AuditChainHeadMissing`` when the chain's entries exist but its head row was
        deleted or rewound (the append would collide with an existing entry).
        """
        repo = AuditRepository(session)
        chain = user_chain(record.user_id)
        now = self.now()
        last_seq, last_hash = await repo.lock_head(chain, genesis_hash=GENESIS_HASH, now=now)
        entry = self.next_entry(record, last_seq, last_hash, occurred_at=occurred_at or now)
        await session.flush()  # the caller's own changes first: their errors are theirs
        try:
            await repo.append_entry(entry, now=now)
        except IntegrityError as exc:
            raise head_missing(entry) from exc
        self.remember_head(entry.chain, entry.seq, entry.entry_hash)  # before the commit: a hint
        return entry

    def now(self) -> datetime:
        return self._clock()

    def next_entry(
        self, record: AuditRecord, last_seq: int, last_hash: str, *, occurred_at: datetime
    ) -> AuditEntry:
        """The entry that follows (``last_seq``, ``last_hash``), the head of the record's
        user's chain as locked by the caller (``AuditRepository.lock_head``, or the order
        hot path's combined statements), hashed; not written."""
        entry = AuditEntry(
            chain=user_chain(record.user_id),
            seq=last_seq + 1,
            occurred_at=occurred_at,
            user_id=record.user_id,
            action=record.action,
            order_id=record.order_id,
            account_id=record.account_id,
            connection_id=record.connection_id,
            broker_slug=record.broker_slug,
            request_fingerprint=record.request_fingerprint,
            outcome=record.outcome,
            prev_hash=last_hash,
        )
        # Hash what the database will give back: UTC, microseconds (both backends keep them).
        entry.occurred_at = entry.occurred_at.astimezone(UTC)
        entry.entry_hash = self._hash(entry.prev_hash, canonical_content(entry))
        return entry

    async def verify(
        self, sessionmaker: SessionMaker, *, chain: str | None = None
    ) -> AuditVerification:
        """Check every chain (or only ``chain``) from its first entry to its head, in one
        consistent snapshot.

        On Postgres the read runs REPEATABLE READ, so appends committing meanwhile neither
        show up half-way nor look like tampering. Per chain, the first problem found:
        ``entry_missing`` (a gap, or entries after the head's last seq gone),
        ``chain_broken`` (an entry does not follow the one before it: deleted, reordered or
        inserted rows), ``entry_altered`` (content or hash changed), ``unexpected_entry``
        (rows past the head), ``head_missing`` (entries without a head row).
        """
        async with sessionmaker() as session:
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            try:
                return AuditVerification.of(await self._verify_all(AuditRepository(session), chain))
            finally:
                await session.rollback()

    async def _verify_all(self, repo: AuditRepository, only: str | None) -> list[ChainVerification]:
        results: list[ChainVerification] = []
        orphans = await repo.chains_without_head()
        if only is not None:
            head = await repo.head(only)
            heads = [head] if head is not None else []
            orphans = [c for c in orphans if c == only]
        else:
            heads = []
            after: str | None = None
            while batch := await repo.heads(after_chain=after, limit=VERIFY_BATCH):
                heads.extend(batch)
                after = batch[-1].chain
        for name in orphans:
            log.error("audit chain %s has entries but no head row", name)
            results.append(
                ChainVerification(
                    chain=name,
                    ok=False,
                    entries_checked=0,
                    head_seq=None,
                    problem="head_missing",
                    detail="the audit chain head row is missing",
                )
            )
        for head in heads:
            results.append(await self._verify_chain(repo, head))
        results.sort(key=lambda c: c.chain)
        return results

    async def _verify_chain(self, repo: AuditRepository, head: AuditChainHead) -> ChainVerification:
        expected, prev, checked = 1, GENESIS_HASH, 0
        chain, head_seq, head_hash = head.chain, head.last_seq, head.last_hash

        def bad(seq: int, problem: Problem, detail: str) -> ChainVerification:
            log.error("audit chain %s verification failed at seq %s: %s", chain, seq, detail)
            return ChainVerification(
                chain=chain,
                ok=False,
                entries_checked=checked,
                head_seq=head_seq,
                first_bad_seq=seq,
                problem=problem,
                detail=detail,
            )

        while True:
            batch = await repo.page(chain, after_seq=expected - 1, limit=VERIFY_BATCH)
            if not batch:
                break
            for entry in batch:
                if entry.seq > head_seq:
                    return bad(
                        entry.seq,
                        "unexpected_entry",
                        f"entry {entry.seq} lies past the chain head ({head_seq})",
                    )
                if entry.seq != expected:
                    return bad(expected, "entry_missing", f"entry {expected} is missing")
                if not hmac.compare_digest(entry.prev_hash, prev):
                    return bad(
                        entry.seq,
                        "chain_broken",
                        f"entry {entry.seq} does not follow entry {entry.seq - 1}",
                    )
                if not hmac.compare_digest(
                    self._hash(entry.prev_hash, canonical_content(entry)), entry.entry_hash
                ):
                    return bad(entry.seq, "entry_altered", f"entry {entry.seq} was altered")
                prev = entry.entry_hash
                expected += 1
                checked += 1
        if head_seq != checked:
            return bad(
                checked + 1,
                "entry_missing",
                f"the chain head records {head_seq} entries; entry {checked + 1} is missing",
            )
        if not hmac.compare_digest(head_hash, prev):
            return bad(head_seq, "chain_broken", f"the chain head does not match entry {head_seq}")
        return ChainVerification(chain=chain, ok=True, entries_checked=checked, head_seq=head_seq)

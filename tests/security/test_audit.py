"""The audit chain on its own: append, verify, and every kind of tampering it must catch.

These tests tamper on purpose, so they run on a database of this module's own (one per
backend), never on the run's shared databases.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import stat
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.migrate import upgrade
from app.db.models import AuditChainHead, AuditEntry, PaperAccount
from app.db.repositories.audit import (
    LEGACY_CHAIN,
    AuditChainHeadMissing,
    AuditRepository,
    user_chain,
)
from app.db.session import SessionMaker, create_engine, create_sessionmaker
from app.ids import new_id
from app.security.audit import (
    GENESIS_HASH,
    AuditChain,
    AuditRecord,
    canonical_content,
    load_or_create_audit_key,
    request_fingerprint,
)
from tests.conftest import new_user, own_database
from tests.postgres import fresh_database

KEY = SecretStr("k" * 40)
ALICE = user_chain("alice")


def record(user: str = "alice", outcome: str = "accepted", **overrides: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "user_id": user,
        "action": "place",
        "order_id": new_id("ord"),
        "account_id": new_id("acc"),
        "connection_id": new_id("con"),
        "broker_slug": "alpaca",
        "request_fingerprint": hashlib.sha256(b"body").hexdigest(),
        "outcome": outcome,
    }
    values.update(overrides)
    return AuditRecord(**values)


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def shared_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest_asyncio.fixture(scope="module")
async def chain_db(
    shared_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SessionMaker]:
    async with own_database(shared_url, tmp_path_factory.mktemp("audit")) as url:
        engine = create_engine(url)
        try:
            yield create_sessionmaker(engine)
        finally:
            await engine.dispose()


async def reset(sessionmaker: SessionMaker) -> None:
    async with sessionmaker() as session:
        await session.execute(delete(AuditEntry))
        await session.execute(delete(AuditChainHead))
        session.add(
            AuditChainHead(
                chain=LEGACY_CHAIN, last_seq=0, last_hash=GENESIS_HASH, updated_at=datetime.now(UTC)
            )
        )
        await session.commit()


async def append(sessionmaker: SessionMaker, count: int, chain: AuditChain | None = None) -> None:
    chain = chain or AuditChain(KEY)
    for i in range(count):
        async with sessionmaker() as session:
            await chain.append(session, record(outcome=f"accepted-{i}"))
            await session.commit()


async def test_an_intact_chain_verifies(chain_db: SessionMaker) -> None:
    await reset(chain_db)
    chain = AuditChain(KEY)
    empty = await chain.verify(chain_db)
    assert (empty.ok, empty.entries_checked, empty.head_seq) == (True, 0, 0)
    await append(chain_db, 5, chain)
    result = await chain.verify(chain_db)
    assert (result.ok, result.entries_checked, result.head_seq, result.first_bad_seq) == (
        True,
        5,
        5,
        None,
    )
    async with chain_db() as session:
        entries = await AuditRepository(session).page(ALICE, after_seq=0, limit=10)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))


async def test_the_hash_is_an_hmac_over_the_previous_hash_and_the_content(
    chain_db: SessionMaker,
) -> None:
    await reset(chain_db)
    await append(chain_db, 2)
    async with chain_db() as session:
        first, second = await AuditRepository(session).page(ALICE, after_seq=0, limit=10)
    for entry in (first, second):
        expected = hmac.new(
            KEY.get_secret_value().encode(),
            entry.prev_hash.encode() + b"\n" + canonical_content(entry),
            hashlib.sha256,
        ).hexdigest()
        assert entry.entry_hash == expected
    content = json.loads(canonical_content(second))
    assert set(content) == {
        "chain",
        "seq",
        "occurred_at",
        "user_id",
        "action",
        "order_id",
        "account_id",
        "connection_id",
        "broker_slug",
        "request_fingerprint",
        "outcome",
    }


Tamper = Callable[[AsyncSession], Coroutine[Any, Any, object]]


async def _edit_outcome(session: AsyncSession) -> None:
    await session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(outcome="filled"))


async def _edit_who(session: AsyncSession) -> None:
    await session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(user_id="mallory"))


async def _edit_time(session: AsyncSession) -> None:
    entry = (await session.execute(select(AuditEntry).where(AuditEntry.seq == 3))).scalar_one()
    entry.occurred_at = entry.occurred_at - timedelta(microseconds=1)


async def _rehash_without_the_key(session: AsyncSession) -> None:
    """Edit the content and recompute the hash as someone without the key would."""
    entry = (await session.execute(select(AuditEntry).where(AuditEntry.seq == 3))).scalar_one()
    entry.outcome = "rejected"
    entry.entry_hash = hashlib.sha256(
        entry.prev_hash.encode() + b"\n" + canonical_content(entry)
    ).hexdigest()


async def _edit_prev_hash(session: AsyncSession) -> None:
    await session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(prev_hash="f" * 64))


async def _delete_middle(session: AsyncSession) -> None:
    await session.execute(delete(AuditEntry).where(AuditEntry.seq == 3))


async def _delete_last(session: AsyncSession) -> None:
    await session.execute(delete(AuditEntry).where(AuditEntry.seq == 5))


async def _delete_and_renumber(session: AsyncSession) -> None:
    """Remove entry 3 and close the gap, so seq runs 1..4 again."""
    await session.execute(delete(AuditEntry).where(AuditEntry.seq == 3))
    for seq in (4, 5):
        await session.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(seq=seq - 1))
    await session.execute(
        update(AuditChainHead).where(AuditChainHead.chain == ALICE).values(last_seq=4)
    )


async def _swap(session: AsyncSession) -> None:
    """Reorder: entries 2 and 3 trade places."""
    for old, new in ((2, -1), (3, 2), (-1, 3)):
        await session.execute(update(AuditEntry).where(AuditEntry.seq == old).values(seq=new))


async def _insert_past_head(session: AsyncSession) -> None:
    last = (await session.execute(select(AuditEntry).where(AuditEntry.seq == 5))).scalar_one()
    forged = AuditEntry(
        chain=ALICE,
        seq=6,
        occurred_at=datetime.now(UTC),
        user_id="mallory",
        action="place",
        order_id=new_id("ord"),
        account_id=new_id("acc"),
        connection_id=new_id("con"),
        broker_slug="alpaca",
        request_fingerprint="0" * 64,
        outcome="accepted",
        prev_hash=last.entry_hash,
        entry_hash="a" * 64,
    )
    session.add(forged)


async def _drop_head(session: AsyncSession) -> None:
    await session.execute(delete(AuditChainHead))


@pytest.mark.parametrize(
    ("tamper", "problem", "first_bad_seq"),
    [
        (_edit_outcome, "entry_altered", 3),
        (_edit_who, "entry_altered", 3),
        (_edit_time, "entry_altered", 3),
        (_rehash_without_the_key, "entry_altered", 3),
        (_edit_prev_hash, "chain_broken", 3),
        (_delete_middle, "entry_missing", 3),
        (_delete_last, "entry_missing", 5),
        (_delete_and_renumber, "chain_broken", 3),
        (_swap, "chain_broken", 2),
        (_insert_past_head, "unexpected_entry", 6),
        (_drop_head, "head_missing", None),
    ],
)
async def test_tampering_is_found_at_the_first_bad_entry(
    chain_db: SessionMaker, tamper: Tamper, problem: str, first_bad_seq: int | None
) -> None:
    await reset(chain_db)
    await append(chain_db, 5)
    async with chain_db() as session:
        await tamper(session)
        await session.commit()
    result = await AuditChain(KEY).verify(chain_db)
    assert result.ok is False
    assert (result.problem, result.first_bad_seq) == (problem, first_bad_seq)
    if first_bad_seq is not None:
        assert str(first_bad_seq) in result.detail


async def test_another_key_does_not_verify(chain_db: SessionMaker) -> None:
    await reset(chain_db)
    await append(chain_db, 2)
    result = await AuditChain(SecretStr("x" * 40)).verify(chain_db)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "entry_altered", 1)


async def test_appends_after_a_verified_chain_continue_it(chain_db: SessionMaker) -> None:
    await reset(chain_db)
    chain = AuditChain(KEY)
    await append(chain_db, 3, chain)
    assert (await chain.verify(chain_db)).ok
    await append(chain_db, 3, chain)
    result = await chain.verify(chain_db)
    assert (result.ok, result.head_seq) == (True, 6)


async def test_the_entry_commits_and_rolls_back_with_the_change_it_records(
    chain_db: SessionMaker,
) -> None:
    await reset(chain_db)
    chain = AuditChain(KEY)

    async def change_and_append(session: AsyncSession) -> str:
        now = datetime.now(UTC)
        row = PaperAccount(
            id=new_id("pa"),
            owner=new_user(),
            starting_cash=Decimal(1),
            cash=Decimal(1),
            reserved_cash=Decimal(0),
            seq=0,
            cycles_completed=0,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await chain.append(session, record(order_id=row.id))
        return row.id

    async with chain_db() as session:
        rolled_back = await change_and_append(session)
        await session.rollback()
    async with chain_db() as session:
        committed = await change_and_append(session)
        await session.commit()

    async with chain_db() as session:
        repo = AuditRepository(session)
        assert await session.get(PaperAccount, rolled_back) is None
        assert list(await repo.for_order(rolled_back)) == []
        assert await session.get(PaperAccount, committed) is not None
        [entry] = await repo.for_order(committed)
        assert entry.seq == 1  # the rolled-back append left no gap
        head = await repo.head(ALICE)
        assert head is not None
        assert (head.last_seq, head.last_hash) == (1, entry.entry_hash)
    assert (await chain.verify(chain_db)).ok


async def test_many_concurrent_appenders_keep_one_linear_chain(
    chain_db: SessionMaker, shared_url: str
) -> None:
    """Postgres: one user's appenders in separate connections queue on that user's chain
    head. (SQLite has one writer; the same run there serializes on BEGIN IMMEDIATE.)"""
    await reset(chain_db)
    chain = AuditChain(KEY)
    started = asyncio.Event()
    count = 40

    async def one(i: int) -> int:
        await started.wait()
        async with chain_db() as session:
            entry = await chain.append(session, record(outcome=f"accepted-{i}"))
            await asyncio.sleep(0)  # let the others reach the head lock while it is held
            await session.commit()
            return entry.seq

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    started.set()
    seqs = await asyncio.gather(*tasks)
    assert sorted(seqs) == list(range(1, count + 1))
    result = await chain.verify(chain_db)
    assert (result.ok, result.entries_checked) == (True, count)


async def test_different_users_chains_do_not_wait_for_each_other(
    postgres_url: str, tmp_path: Path
) -> None:
    """On Postgres a user's append holding its chain head does not block another user's
    append. (SQLite has one writer for everything, so there is nothing to show there.)"""
    async with own_database(postgres_url, tmp_path) as url:
        engine = create_engine(url)
        try:
            sessionmaker = create_sessionmaker(engine)
            chain = AuditChain(KEY)
            async with sessionmaker() as holding:
                await chain.append(holding, record(user="alice"))  # alice's head stays locked
                async with sessionmaker() as other:
                    entry = await asyncio.wait_for(
                        chain.append(other, record(user="bob")), timeout=10
                    )
                    await other.commit()
                assert (entry.chain, entry.seq) == (user_chain("bob"), 1)
                await holding.commit()
            result = await chain.verify(sessionmaker)
            assert (result.ok, result.entries_checked, result.chains_checked) == (True, 2, 3)
        finally:
            await engine.dispose()


async def test_tampering_in_one_chain_is_reported_for_that_chain_only(
    chain_db: SessionMaker,
) -> None:
    await reset(chain_db)
    chain = AuditChain(KEY)
    for user in ("alice", "bob", "carol"):
        for _ in range(3):
            async with chain_db() as session:
                await chain.append(session, record(user=user))
                await session.commit()
    async with chain_db() as session:
        for user in ("bob", "carol"):
            await session.execute(
                update(AuditEntry)
                .where(AuditEntry.chain == user_chain(user), AuditEntry.seq == 2)
                .values(outcome="filled")
            )
        await session.commit()
    result = await chain.verify(chain_db)
    assert result.ok is False
    assert [(f.chain, f.problem, f.first_bad_seq) for f in result.failures] == [
        (user_chain("bob"), "entry_altered", 2),
        (user_chain("carol"), "entry_altered", 2),
    ]
    assert (result.chain, result.first_bad_seq) == (user_chain("bob"), 2)
    alone = await chain.verify(chain_db, chain=user_chain("alice"))
    assert (alone.ok, alone.entries_checked) == (True, 3)


async def test_an_entry_moved_to_another_chain_does_not_verify(chain_db: SessionMaker) -> None:
    await reset(chain_db)
    chain = AuditChain(KEY)
    for user in ("alice", "bob"):
        async with chain_db() as session:
            await chain.append(session, record(user=user))
            await session.commit()
    async with chain_db() as session:
        # Make bob's only entry look like alice's second one, hash chain and all.
        [alice_entry] = await AuditRepository(session).page(ALICE, after_seq=0, limit=10)
        await session.execute(
            update(AuditEntry)
            .where(AuditEntry.chain == user_chain("bob"))
            .values(chain=ALICE, seq=2, prev_hash=alice_entry.entry_hash)
        )
        await session.execute(
            update(AuditChainHead).where(AuditChainHead.chain == ALICE).values(last_seq=2)
        )
        await session.commit()
    result = await chain.verify(chain_db, chain=ALICE)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "entry_altered", 2)


async def test_an_append_without_a_head_row_is_refused(chain_db: SessionMaker) -> None:
    """A chain whose entries exist but whose head was deleted is not started again."""
    await reset(chain_db)
    await append(chain_db, 2)
    async with chain_db() as session:
        await session.execute(delete(AuditChainHead).where(AuditChainHead.chain == ALICE))
        await session.commit()
    async with chain_db() as session:
        with pytest.raises(AuditChainHeadMissing):
            await AuditChain(KEY).append(session, record())
    result = await AuditChain(KEY).verify(chain_db)
    assert (result.ok, result.chain, result.problem) == (False, ALICE, "head_missing")
    await reset(chain_db)


async def test_the_migration_creates_the_genesis_head(shared_url: str, tmp_path: Path) -> None:
    async with own_database(shared_url, tmp_path) as url:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text("SELECT chain, last_seq, last_hash FROM audit_chain_head")
                    )
                ).all()
        finally:
            await engine.dispose()
    assert [tuple(r) for r in rows] == [(LEGACY_CHAIN, 0, GENESIS_HASH)]


def _legacy_hash(prev_hash: str, content: dict[str, object]) -> str:
    """How entries were hashed when one global chain held them (no ``chain`` field)."""
    body = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(
        KEY.get_secret_value().encode(), prev_hash.encode() + b"\n" + body, hashlib.sha256
    ).hexdigest()


async def test_the_migration_carries_the_global_chain_over_intact(
    shared_url: str, tmp_path: Path
) -> None:
    """A database with a global chain written before per-user chains, upgraded: the old
    entries verify unchanged as the ``global`` chain, and new appends go to user chains."""

    async def run(url: str) -> None:
        await asyncio.to_thread(upgrade, url, "0008")
        engine = create_engine(url)
        try:
            prev = GENESIS_HASH
            async with engine.begin() as conn:
                for seq in (1, 2, 3):
                    content: dict[str, object] = {
                        "seq": seq,
                        "occurred_at": f"2026-11-30T10:00:0{seq}.000001+00:00",
                        "user_id": f"user-{seq}",
                        "action": "place",
                        "order_id": f"ord-{seq}",
                        "account_id": "acc-1",
                        "connection_id": "con-1",
                        "broker_slug": "alpaca",
                        "request_fingerprint": "0" * 64,
                        "outcome": "accepted",
                    }
                    entry_hash = _legacy_hash(prev, content)
                    await conn.execute(
                        text(
                            "INSERT INTO audit_entries (seq, occurred_at, user_id, action, "
                            "order_id, account_id, connection_id, broker_slug, "
                            "request_fingerprint, outcome, prev_hash, entry_hash) VALUES (:seq, "
                            ":occurred_at, :user_id, :action, :order_id, :account_id, "
                            ":connection_id, :broker_slug, :request_fingerprint, :outcome, "
                            ":prev_hash, :entry_hash)"
                        ),
                        {
                            **content,
                            "occurred_at": datetime.fromisoformat(str(content["occurred_at"])),
                            "prev_hash": prev,
                            "entry_hash": entry_hash,
                        },
                    )
                    prev = entry_hash
                await conn.execute(
                    text("UPDATE audit_chain_head SET last_seq = 3, last_hash = :h WHERE id = 1"),
                    {"h": prev},
                )
        finally:
            await engine.dispose()
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        try:
            sessionmaker = create_sessionmaker(engine)
            chain = AuditChain(KEY)
            carried = await chain.verify(sessionmaker, chain=LEGACY_CHAIN)
            assert (carried.ok, carried.entries_checked, carried.head_seq) == (True, 3, 3)
            async with sessionmaker() as session:
                entry = await chain.append(session, record(user="user-1"))
                await session.commit()
            assert (entry.chain, entry.seq) == (user_chain("user-1"), 1)
            result = await chain.verify(sessionmaker)
            assert (result.ok, result.entries_checked, result.chains_checked) == (True, 4, 2)
        finally:
            await engine.dispose()

    if shared_url.startswith("sqlite"):
        await run(f"sqlite+aiosqlite:///{tmp_path / 'legacy.db'}")
    else:
        async with fresh_database(shared_url) as url:
            await run(url)


# --- keys and fingerprints ---------------------------------------------------------------


def test_a_short_key_is_refused_and_the_key_never_shows() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        AuditChain(SecretStr("short"))
    chain = AuditChain(KEY)
    assert KEY.get_secret_value() not in repr(chain)


def test_the_development_key_is_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "audit-key.json"
    key, created = load_or_create_audit_key(path)
    assert created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, created_again = load_or_create_audit_key(path)
    assert not created_again
    assert again.get_secret_value() == key.get_secret_value()
    assert len(key.get_secret_value()) >= 32

    path.write_text("not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_or_create_audit_key(path)
    path.write_text(json.dumps({"audit_key": "short"}))
    with pytest.raises(ValueError, match="no audit_key"):
        load_or_create_audit_key(path)


def test_the_fingerprint_is_the_sha256_of_the_canonical_request() -> None:
    body = {"symbol": "AAPL", "quantity": "1"}
    expected = hashlib.sha256(
        b'{"body":{"quantity":"1","symbol":"AAPL"},"method":"POST","path":"/v1/x"}'
    ).hexdigest()
    assert request_fingerprint("POST", "/v1/x", body) == expected
    assert request_fingerprint("POST", "/v1/x", {"quantity": "1", "symbol": "AAPL"}) == expected


def test_the_heads_a_process_remembers_are_a_bounded_hint() -> None:
    """The last committed head per chain, most recent kept: past the bound the chain least
    recently noted is forgotten (its next order locks and reads the head instead)."""
    chain = AuditChain(KEY)
    assert chain.remembered_head("user:a") is None
    chain.remember_head("user:a", 1, "h1")
    chain.remember_head("user:a", 2, "h2")
    assert chain.remembered_head("user:a") == (2, "h2")
    chain.remember_head("user:a", 1, "h1")  # an older commit finishing last
    assert chain.remembered_head("user:a") == (2, "h2")
    for n in range(10_000):
        chain.remember_head(f"user:{n}", n, f"h{n}")
    assert chain.remembered_head("user:a") is None  # the oldest, pushed out
    assert chain.remembered_head("user:0") == (0, "h0")
    assert chain.remembered_head("user:9999") == (9999, "h9999")


def test_placements_in_progress_are_counted_per_chain() -> None:
    chain = AuditChain(KEY)
    assert chain.start_placing("user:a") is False
    assert chain.start_placing("user:a") is True  # another one is in progress
    assert chain.start_placing("user:b") is False  # chains are independent
    chain.end_placing("user:a")
    assert chain.start_placing("user:a") is True  # one is still in progress
    chain.end_placing("user:a")
    chain.end_placing("user:a")
    chain.end_placing("user:a")  # more ends than starts: nothing below zero
    assert chain.start_placing("user:a") is False

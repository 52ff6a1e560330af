"""Key rotation without downtime, on Postgres: rotate, re-wrap in the background, retire.

Each test has a database of its own (a re-wrap touches every token row) and a keyring file
in ``tmp_path``; the CLI runs as a real process, as an operator would run it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.leases import AdvisoryLeases, leases_for
from app.db.models import BrokerToken, Connection
from app.db.session import SessionMaker, create_engine, create_sessionmaker
from app.security.credentials import Credentials
from app.security.envelope import AssociatedData, EnvelopeCipher
from app.security.keyring import (
    DecryptionError,
    KeyringFile,
    KeyVersionRetired,
    LocalKeyProvider,
    load_or_create_keyring,
)
from app.security.vault import TokenVault
from app.services.key_rewrap import REWRAP_LEASE, KeyRewrap
from tests.conftest import new_user
from tests.harness import running_app, settings_for_tests
from tests.services.rotation_support import isolated_postgres, open_all, secret_for, seed_tokens

BROKERAGE = Path(sys.executable).with_name("brokerage")


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "BROKERAGE_KEYRING_PATH": str(tmp_path / "keyring.json"),
        "BROKERAGE_DEV_SECRETS_PATH": str(tmp_path / "dev-secrets.json"),
        "BROKERAGE_ENVIRONMENT": "development",
        "BROKERAGE_LOG_LEVEL": "WARNING",
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(BROKERAGE), *args], env=env, capture_output=True, text=True, check=False, timeout=300
    )


class Db:
    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self.sessionmaker: SessionMaker = create_sessionmaker(engine)

    async def versions(self) -> dict[int, int]:
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(BrokerToken.key_version, func.count()).group_by(BrokerToken.key_version)
            )
            return {int(v): int(n) for v, n in rows.all()}

    async def users(self) -> dict[str, str]:
        async with self.sessionmaker() as session:
            rows = await session.execute(select(Connection.id, Connection.user_id))
            return {str(c): str(u) for c, u in rows.all()}


@pytest_asyncio.fixture
async def db(postgres_url: str) -> AsyncIterator[Db]:
    async with isolated_postgres(postgres_url) as url:
        engine = create_engine(url)
        try:
            yield Db(url, engine)
        finally:
            await engine.dispose()


async def test_rotate_then_the_apps_background_rewrap_then_retire(db: Db, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    old, _ = load_or_create_keyring(keyring)
    expected = await seed_tokens(db.sessionmaker, EnvelopeCipher(old), 1200)
    aad = AssociatedData("u", "c", "alpaca", "tier_a")
    sealed_under_v1 = EnvelopeCipher(old).seal(b"kept outside the database", aad)
    env = _env(tmp_path, db.url)

    rotated = _run(env, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "key version 2 is now primary" in rotated.stdout
    refused = _run(env, "keys", "retire", "--below", "2")
    assert refused.returncode == 1
    assert "refused: 1200 token(s) still use a key version below 2" in refused.stderr
    assert LocalKeyProvider.from_json(keyring.read_text()).min_decryption_version == 1

    settings = settings_for_tests(
        db.url,
        keyring_json=None,
        keyring_path=keyring,
        background_tasks=True,
        rewrap_interval_seconds=0.05,
        rotation_sweep_seconds=3600,
    )
    async with running_app(settings) as h:
        admin = {"Authorization": f"Bearer {h.token(new_user('ops'), admin=True)}"}
        body: dict[str, object] = {}
        for _ in range(1200):  # the lifespan's re-wrap task works on its own
            body = (await h.client.get("/v1/admin/keys", headers=admin)).json()
            if body["pending_rewrap"] == 0 and body["last_run_here"] is not None:
                break
            await asyncio.sleep(0.05)
        assert body["primary_version"] == 2
        assert body["pending_rewrap"] == 0
        assert body["tokens_by_version"] == [{"version": 2, "tokens": 1200}]
        last = h.state.keys.last_run
        assert last is not None
        assert (last.rewrapped, last.remaining, last.failed) == (1200, 0, ())
        assert last.batches >= 3  # 500 rows a batch, each its own transaction

        # A token stored now goes under the primary version.
        some_connection, some_user = next(iter((await db.users()).items()))
        async with h.state.ctx.sessionmaker() as session:
            fresh = secret_for(-1)
            token_id = await h.state.ctx.vault.store(
                session,
                user_id=some_user,
                connection_id=some_connection,
                broker_slug="alpaca",
                broker_tier="tier_a",
                credentials=fresh,
            )
            await session.commit()
            stored = await session.get(BrokerToken, token_id)
            assert stored is not None
            assert stored.key_version == 2
            assert (
                await h.state.ctx.vault.credentials_for_read(
                    session, user_id=some_user, connection_id=some_connection
                )
                == fresh
            )
        expected[some_connection] = fresh

        retired = _run(env, "keys", "retire", "--below", "2")
        assert retired.returncode == 0, retired.stderr
        assert "key versions below 2 are retired" in retired.stdout
        provider = h.state.ctx.vault.key_provider
        assert isinstance(provider, KeyringFile)
        provider.reload(force=True)  # the app follows the file (within a second by itself)
        with pytest.raises(KeyVersionRetired, match="key version 1 is retired"):
            EnvelopeCipher(provider).open(sealed_under_v1, aad)
        keys_now = (await h.client.get("/v1/admin/keys", headers=admin)).json()
        assert keys_now["min_decryption_version"] == 2

    now = LocalKeyProvider.from_json(keyring.read_text())
    assert (now.primary_version, now.min_decryption_version) == (2, 2)
    found, versions = await open_all(db.sessionmaker, EnvelopeCipher(now))
    assert found == expected
    assert versions == {2: 1201}
    status = _run(env, "keys", "status")
    assert "version 2: 1201 token(s)" in status.stdout
    assert "pending re-wrap: 0" in status.stdout


async def test_a_rewrap_killed_midway_leaves_every_token_readable_and_a_rerun_finishes(
    db: Db, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    old, _ = load_or_create_keyring(keyring)
    expected = await seed_tokens(db.sessionmaker, EnvelopeCipher(old), 3000)
    env = _env(tmp_path, db.url)
    assert _run(env, "keys", "rotate").returncode == 0

    process = subprocess.Popen(  # noqa: S603, ASYNC220 - starting it does not block
        [str(BROKERAGE), "keys", "rewrap", "--batch-size", "100", "--pause", "0.05"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        versions: dict[int, int] = {}
        for _ in range(3000):  # until a few batches have committed
            versions = await db.versions()
            if versions.get(2, 0) >= 300:
                break
            await asyncio.sleep(0.02)
        assert process.poll() is None, "the re-wrap finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    rotated = EnvelopeCipher(LocalKeyProvider.from_json(keyring.read_text()))
    found, versions = await open_all(db.sessionmaker, rotated)
    assert found == expected, "every token reads after the kill, old version or new"
    assert versions[1] > 0
    assert versions[2] >= 300
    assert versions[2] % 100 == 0, "only whole batches committed"
    assert sum(versions.values()) == 3000

    # Postgres released the killed process's advisory lock with its connection.
    again = _run(env, "keys", "rewrap")
    assert again.returncode == 0, again.stderr
    assert f"re-wrapped {versions[1]} token(s) under key version 2" in again.stdout
    assert "0 remaining" in again.stdout
    found, versions = await open_all(db.sessionmaker, rotated)
    assert found == expected
    assert versions == {2: 3000}


class KmsGoingDown:
    """A key provider whose ``wrap`` fails after ``healthy_wraps`` calls (a KMS outage).

    Stands in for a KMS, an external service; the keys themselves are a real keyring.
    """

    def __init__(self, inner: LocalKeyProvider, healthy_wraps: int) -> None:
        self._inner = inner
        self._left = healthy_wraps

    @property
    def primary_version(self) -> int:
        return self._inner.primary_version

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]:
        if self._left <= 0:
            raise ConnectionError("KMS endpoint unreachable")
        self._left -= 1
        return self._inner.wrap(data_key, aad)

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes:
        return self._inner.unwrap(version, wrapped, aad)


async def test_an_aborted_batch_rolls_back_whole_and_the_next_run_finishes(db: Db) -> None:
    old = LocalKeyProvider.generate()
    expected = await seed_tokens(db.sessionmaker, EnvelopeCipher(old), 1000)
    new = old.rotated()
    failing = KeyRewrap(
        db.sessionmaker,
        TokenVault(EnvelopeCipher(KmsGoingDown(new, healthy_wraps=250))),
        leases=leases_for(db.engine),
        batch_size=100,
    )
    with pytest.raises(ConnectionError, match="KMS"):
        await failing.run_once()
    # Batches 1 and 2 committed; batch 3 failed at its 51st row and rolled back entirely.
    assert await db.versions() == {1: 800, 2: 200}
    found, _ = await open_all(db.sessionmaker, EnvelopeCipher(new))
    assert found == expected

    healthy = KeyRewrap(
        db.sessionmaker,
        TokenVault(EnvelopeCipher(new)),
        leases=leases_for(db.engine),
        batch_size=100,
    )
    result = await healthy.run_once()  # the failed run released its lease
    assert result is not None
    assert (result.rewrapped, result.remaining, result.failed) == (800, 0, ())
    found, versions = await open_all(db.sessionmaker, EnvelopeCipher(new))
    assert found == expected
    assert versions == {2: 1000}


async def test_concurrent_token_writes_during_a_rewrap_lose_nothing(db: Db) -> None:
    old = LocalKeyProvider.generate()
    expected = await seed_tokens(db.sessionmaker, EnvelopeCipher(old), 2000)
    users = await db.users()
    new = old.rotated()
    vault = TokenVault(EnvelopeCipher(new))
    job = KeyRewrap(
        db.sessionmaker, vault, leases=leases_for(db.engine), batch_size=50, pause_seconds=0.005
    )
    run = asyncio.create_task(job.run_once())
    for _ in range(2000):
        if (await db.versions()).get(2, 0) > 0:
            break
        await asyncio.sleep(0.01)

    rng = random.Random(7)
    connections = sorted(expected)
    history = {c: [v] for c, v in expected.items()}  # every credential each one ever had
    writes: list[str] = []
    writes_during_run: list[int] = []
    reads_during_run: list[int] = []

    async def writer(worker: int) -> None:
        index = 0
        mine = connections[worker::4]  # one writer per connection: the last write is known
        while not run.done():
            index += 1
            connection_id = rng.choice(mine)
            fresh = Credentials(api_key_id=f"W{worker}-{index}", api_secret_key=os.urandom(8).hex())
            history[connection_id].append(fresh)  # before it can be read
            async with db.sessionmaker() as session:
                token_id = await vault.store(
                    session,
                    user_id=users[connection_id],
                    connection_id=connection_id,
                    broker_slug="alpaca",
                    broker_tier="tier_a",
                    credentials=fresh,
                )
                await session.commit()
                stored = await session.get(BrokerToken, token_id)
                assert stored is not None
                assert stored.key_version == 2, "writes during a re-wrap use the primary"
            expected[connection_id] = fresh
            writes.append(token_id)
            if job.running:
                writes_during_run.append(1)

    async def reader() -> None:
        while not run.done():
            connection_id = rng.choice(connections)
            async with db.sessionmaker() as session:
                got = await vault.credentials_for_read(
                    session, user_id=users[connection_id], connection_id=connection_id
                )
            # A writer may replace it at any moment; never anything it did not hold.
            assert got in history[connection_id]
            if job.running:
                reads_during_run.append(1)

    await asyncio.gather(*(writer(w) for w in range(4)), reader(), reader())
    result = await run
    assert result is not None
    assert len(writes_during_run) > 20
    assert len(reads_during_run) > 20
    assert result.remaining == 0

    found, versions = await open_all(db.sessionmaker, EnvelopeCipher(new))
    assert found == expected, "every connection reads its latest credential"
    assert versions == {2: 2000 + len(writes)}, "revoked rows are re-wrapped too"


async def test_one_rewrap_at_a_time_across_instances(db: Db, tmp_path: Path) -> None:
    old = LocalKeyProvider.generate()
    await seed_tokens(db.sessionmaker, EnvelopeCipher(old), 10)
    holder = AdvisoryLeases(db.engine)  # another instance, mid-run
    assert await holder.acquire(REWRAP_LEASE)
    try:
        job = KeyRewrap(
            db.sessionmaker, TokenVault(EnvelopeCipher(old.rotated())), leases=leases_for(db.engine)
        )
        assert await job.run_once() is None
        assert await db.versions() == {1: 10}

        keyring = tmp_path / "keyring.json"
        keyring.write_text(old.rotated().to_json())
        keyring.chmod(0o600)
        busy = _run(_env(tmp_path, db.url), "keys", "rewrap")
        assert busy.returncode == 3
        assert "already running" in busy.stderr
    finally:
        await holder.close()
    result = await job.run_once()
    assert result is not None
    assert result.rewrapped == 10


async def test_a_token_under_a_lost_key_is_reported_not_fatal(db: Db) -> None:
    lost = LocalKeyProvider.generate()
    kept = LocalKeyProvider.generate()
    await seed_tokens(db.sessionmaker, EnvelopeCipher(lost), 3)
    expected = await seed_tokens(db.sessionmaker, EnvelopeCipher(kept), 5)
    # A keyring that has version 1 under another key: the 3 "lost" wraps do not authenticate.
    job = KeyRewrap(
        db.sessionmaker, TokenVault(EnvelopeCipher(kept.rotated())), leases=leases_for(db.engine)
    )
    result = await job.run_once()
    assert result is not None
    assert (result.rewrapped, len(result.failed), result.remaining) == (5, 3, 3)
    assert await db.versions() == {1: 3, 2: 5}
    with pytest.raises(DecryptionError):
        await open_all(db.sessionmaker, EnvelopeCipher(kept.rotated()))
    async with db.sessionmaker() as session:
        rows = (
            await session.execute(select(BrokerToken).where(BrokerToken.key_version == 2))
        ).scalars()
        assert {row.connection_id for row in rows} == set(expected)

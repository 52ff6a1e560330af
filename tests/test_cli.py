"""The ``brokerage`` command as an operator runs it: a real process with real settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import delete, select

from app.db.models import AuditEntry, BrokerToken, Connection
from app.db.repositories.audit import user_chain
from app.db.session import create_engine, create_sessionmaker
from app.ids import new_id
from app.security.audit import AuditChain, AuditRecord
from app.security.credentials import Credentials
from app.security.envelope import EnvelopeCipher
from app.security.jwt import HS256Verifier
from app.security.keyring import load_or_create_keyring
from app.security.vault import TokenVault
from tests.conftest import new_user
from tests.harness import keyring_json_for_tests

BROKERAGE = Path(sys.executable).with_name("brokerage")


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(BROKERAGE), *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "BROKERAGE_KEYRING_PATH": str(tmp_path / "keyring.json"),
        "BROKERAGE_DEV_SECRETS_PATH": str(tmp_path / "dev-secrets.json"),
        "BROKERAGE_ENVIRONMENT": "development",
    }


async def test_token_prints_a_jwt_the_server_accepts(tmp_path: Path) -> None:
    env = _env(tmp_path)
    printed = _run(env, "token", "--user", "alice", "--admin")
    assert printed.returncode == 0, printed.stderr
    assert "NOT FOR PRODUCTION" in printed.stderr
    secret = json.loads((tmp_path / "dev-secrets.json").read_text())["jwt_secret"]
    principal = await HS256Verifier(secret).verify(printed.stdout.strip())
    assert (principal.user_id, principal.is_admin) == ("alice", True)


async def test_keys_rotate_then_rewrap_moves_every_token_to_the_new_version(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    url = env["DATABASE_URL"]
    assert _run(env, "migrate").returncode == 0
    provider, _created = load_or_create_keyring(tmp_path / "keyring.json")
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    user = new_user()
    now = datetime.now(UTC)
    async with sessionmaker() as session:
        connection = Connection(
            id=new_id("con"),
            user_id=user,
            broker_slug="tradier",
            tier="A",
            ownership="byob",
            status="active",
            display="Tradier",
            created_at=now,
            updated_at=now,
        )
        session.add(connection)
        await session.flush()
        await TokenVault(EnvelopeCipher(provider)).store(
            session,
            user_id=user,
            connection_id=connection.id,
            broker_slug="tradier",
            broker_tier="tier_a",
            credentials=Credentials(access_token="cli-rotation-secret-value"),
        )
        await session.commit()

    rotated = _run(env, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    rewrapped = _run(env, "keys", "rewrap")
    assert rewrapped.returncode == 0, rewrapped.stderr
    assert "re-wrapped 1 token(s) under key version 2" in rewrapped.stdout

    new_provider, created = load_or_create_keyring(tmp_path / "keyring.json")
    assert not created
    async with sessionmaker() as session:
        versions = (await session.execute(select(BrokerToken.key_version))).scalars().all()
        assert list(versions) == [2]
        credentials = await TokenVault(EnvelopeCipher(new_provider)).credentials_for_read(
            session, user_id=user, connection_id=connection.id
        )
    assert credentials["access_token"] == "cli-rotation-secret-value"
    await engine.dispose()


async def test_keys_retire_with_a_keyring_from_the_environment_says_where_to_change_it(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    env["BROKERAGE_KEYRING_JSON"] = (
        load_or_create_keyring(tmp_path / "other.json")[0].rotated().to_json()
    )
    assert _run(env, "migrate").returncode == 0
    retired = _run(env, "keys", "retire", "--below", "2")
    assert retired.returncode == 2
    assert "set its min_decryption_version to 2 there" in retired.stderr
    status = _run(env, "keys", "status")
    assert status.returncode == 0, status.stderr
    assert "primary key version: 2" in status.stdout
    assert "pending re-wrap: 0" in status.stdout
    bad = _run(env, "keys", "rewrap", "--batch-size", "0")
    assert bad.returncode == 2
    assert "must be at least 1" in bad.stderr


def _audit_env(tmp_path: Path) -> dict[str, str]:
    return _env(tmp_path) | {"BROKERAGE_AUDIT_KEY": "cli-audit-key-" + "x" * 40}


async def test_audit_verify_exits_non_zero_naming_the_first_bad_entry(tmp_path: Path) -> None:
    env = _audit_env(tmp_path)
    assert _run(env, "migrate").returncode == 0
    empty = _run(env, "audit", "verify")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout)["ok"] is True

    engine = create_engine(env["DATABASE_URL"])
    sessionmaker = create_sessionmaker(engine)
    chain = AuditChain(SecretStr(env["BROKERAGE_AUDIT_KEY"]))
    user = new_user()
    for i in range(3):
        async with sessionmaker() as session:
            await chain.append(
                session,
                AuditRecord(
                    user_id=user,
                    action="place",
                    order_id=new_id("ord"),
                    account_id=new_id("acc"),
                    connection_id=new_id("con"),
                    broker_slug="alpaca",
                    request_fingerprint="0" * 64,
                    outcome=f"accepted-{i}",
                ),
            )
            await session.commit()
    intact = _run(env, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert json.loads(intact.stdout) == {
        "ok": True,
        "entries_checked": 3,
        "head_seq": 3,
        "first_bad_seq": None,
        "problem": None,
        "detail": "the audit chains are intact",
        "chain": None,
        "chains_checked": 2,  # the user's, and the (empty) pre-per-user global chain
        "failures": [],
    }

    async with sessionmaker() as session:
        await session.execute(
            delete(AuditEntry).where(AuditEntry.chain == user_chain(user), AuditEntry.seq == 2)
        )
        await session.commit()
    await engine.dispose()
    broken = _run(env, "audit", "verify")
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert (report["ok"], report["first_bad_seq"], report["problem"]) == (
        False,
        2,
        "entry_missing",
    )
    assert report["chain"] == user_chain(user)
    assert f"audit chain {user_chain(user)} BROKEN at seq 2" in broken.stderr

    other_key = _run(env | {"BROKERAGE_AUDIT_KEY": "another-key-" + "y" * 40}, "audit", "verify")
    assert other_key.returncode == 1


def test_audit_verify_generates_a_development_key_but_production_needs_one(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    assert _run(env, "migrate").returncode == 0
    generated = _run(env, "audit", "verify")
    assert generated.returncode == 0, generated.stderr
    assert "NOT FOR PRODUCTION" in generated.stderr
    assert (tmp_path / "audit-key.json").exists()  # next to the development JWT secret

    production = env | {
        "BROKERAGE_ENVIRONMENT": "production",
        "BROKERAGE_JWT_SECRET": "p" * 40,
        "BROKERAGE_KEYRING_JSON": keyring_json_for_tests(),
    }
    refused = _run(production, "audit", "verify")
    assert refused.returncode != 0
    assert "BROKERAGE_AUDIT_KEY" in refused.stderr

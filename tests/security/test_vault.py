"""The token vault on both backends: storage, refusal rules, isolation and no plaintext at rest."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app import errors
from app.db.base import Base
from app.db.models import BrokerToken, Connection
from app.db.session import SessionMaker
from app.ids import new_id
from app.security.credentials import Credentials
from app.security.envelope import EnvelopeCipher
from app.security.keyring import LocalKeyProvider
from app.security.vault import (
    CredentialMissing,
    CredentialRevoked,
    CredentialUnreadable,
    ReadOnlyCredential,
    TokenVault,
)
from tests.conftest import new_user

TIERS = {"tier_a": "A", "tier_b": "B", "tier_c": "C"}


def _provider() -> LocalKeyProvider:
    return LocalKeyProvider({1: os.urandom(32)}, 1)


def _vault(provider: LocalKeyProvider | None = None) -> TokenVault:
    return TokenVault(EnvelopeCipher(provider or _provider()))


def _secrets() -> Credentials:
    marker = os.urandom(8).hex()
    return Credentials(
        access_token=f"AT-plaintext-{marker}", refresh_token=f"RT-plaintext-{marker}"
    )


async def _connection(
    sessionmaker: SessionMaker, user_id: str, tier: str = "tier_a", slug: str = "tradier"
) -> str:
    now = datetime.now(UTC)
    connection = Connection(
        id=new_id("con"),
        user_id=user_id,
        broker_slug=slug,
        tier=TIERS[tier],
        ownership="byob",
        status="active",
        display=slug.title(),
        created_at=now,
        updated_at=now,
    )
    async with sessionmaker() as session:
        session.add(connection)
        await session.commit()
    return connection.id


async def _store(
    sessionmaker: SessionMaker,
    vault: TokenVault,
    user_id: str,
    connection_id: str,
    credentials: Credentials,
    tier: str = "tier_a",
    **options: bool,
) -> str:
    async with sessionmaker() as session:
        token_id = await vault.store(
            session,
            user_id=user_id,
            connection_id=connection_id,
            broker_slug="tradier",
            broker_tier=tier,
            credentials=credentials,
            **options,
        )
        await session.commit()
    return token_id


async def test_store_then_read_round_trip(sessionmaker: SessionMaker) -> None:
    vault, user = _vault(), new_user()
    connection_id = await _connection(sessionmaker, user)
    credentials = _secrets()
    token_id = await _store(sessionmaker, vault, user, connection_id, credentials)
    async with sessionmaker() as session:
        assert (
            await vault.credentials_for_read(session, user_id=user, connection_id=connection_id)
            == credentials
        )
        assert (
            await vault.credentials_for_order(session, user_id=user, connection_id=connection_id)
            == credentials
        )
        row = await session.get(BrokerToken, token_id)
    assert row is not None
    assert row.key_version == 1
    assert not row.no_order_write
    assert row.rotate_after is not None
    assert row.rotate_after - row.created_at == timedelta(days=90)


async def test_no_plaintext_anywhere_in_the_database(sessionmaker: SessionMaker) -> None:
    vault, user = _vault(), new_user()
    connection_id = await _connection(sessionmaker, user)
    credentials = _secrets()
    await _store(sessionmaker, vault, user, connection_id, credentials)
    needles = [v.encode() for v in credentials.values()]
    needles += [base64.b64encode(n) for n in needles] + [credentials.to_json_bytes()]
    dumped_rows = 0
    async with sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                dumped_rows += 1
                for value in row:
                    raws = [repr(value).encode()]
                    if isinstance(value, bytes | bytearray | memoryview):
                        raw = bytes(value)
                        raws += [raw, raw.decode("utf-8", errors="ignore").encode()]
                    else:
                        raws.append(str(value).encode())
                    for raw in raws:
                        for needle in needles:
                            assert needle not in raw, f"plaintext found in {table.name}"
    assert dumped_rows > 0


async def test_order_path_refuses_read_only_before_decrypting(sessionmaker: SessionMaker) -> None:
    vault, user = _vault(), new_user()
    linked = await _connection(sessionmaker, user, "tier_c")
    flagged = await _connection(sessionmaker, user, "tier_b")
    await _store(sessionmaker, vault, user, linked, _secrets(), "tier_c")
    await _store(sessionmaker, vault, user, flagged, _secrets(), "tier_b", no_order_write=True)
    # A vault whose keys cannot open these tokens: the refusal must come before decryption.
    blind = _vault()
    async with sessionmaker() as session:
        row = (
            await session.execute(select(BrokerToken).where(BrokerToken.connection_id == linked))
        ).scalar_one()
        assert row.no_order_write, "Tier C is always stored no_order_write"
        for connection_id in (linked, flagged):
            with pytest.raises(ReadOnlyCredential) as info:
                await blind.credentials_for_order(
                    session, user_id=user, connection_id=connection_id
                )
            assert isinstance(info.value, errors.ReadOnlyAccount)
            assert info.value.status == 403
            assert info.value.code == "read_only_account"
            # Reads are still allowed for Linked accounts.
            assert await vault.credentials_for_read(
                session, user_id=user, connection_id=connection_id
            )
            with pytest.raises(CredentialUnreadable):
                await blind.credentials_for_read(session, user_id=user, connection_id=connection_id)


async def test_revoked_and_missing_credentials_are_refused(sessionmaker: SessionMaker) -> None:
    vault, user = _vault(), new_user()
    connection_id = await _connection(sessionmaker, user)
    empty = await _connection(sessionmaker, user)
    await _store(sessionmaker, vault, user, connection_id, _secrets())
    async with sessionmaker() as session:
        await vault.revoke(session, user_id=user, connection_id=connection_id)
        await session.commit()
    async with sessionmaker() as session:
        for call in (vault.credentials_for_order, vault.credentials_for_read):
            with pytest.raises(CredentialRevoked) as revoked:
                await call(session, user_id=user, connection_id=connection_id)
            assert isinstance(revoked.value, errors.ConnectionBroken)
            assert revoked.value.status == 409
            with pytest.raises(CredentialMissing) as missing:
                await call(session, user_id=user, connection_id=empty)
            assert missing.value.code == "connection_broken"
        row = (
            await session.execute(
                select(BrokerToken).where(BrokerToken.connection_id == connection_id)
            )
        ).scalar_one()
        assert row.revoked_at is not None
        assert row.token_ciphertext, "revocation keeps the row for audit"


async def test_reading_many_answers_each_connection_on_its_own(
    sessionmaker: SessionMaker,
) -> None:
    """One bad token (revoked, missing, unreadable, another user's) never fails the others."""
    vault, user, other = _vault(), new_user(), new_user("other")
    good, replaced, revoked, empty, tampered = [
        await _connection(sessionmaker, user) for _ in range(5)
    ]
    foreign = await _connection(sessionmaker, other)
    good_secrets, newest = _secrets(), _secrets()
    await _store(sessionmaker, vault, user, good, good_secrets)
    await _store(sessionmaker, vault, user, replaced, _secrets())
    await _store(sessionmaker, vault, user, replaced, newest)
    await _store(sessionmaker, vault, user, revoked, _secrets())
    tampered_token = await _store(sessionmaker, vault, user, tampered, _secrets())
    await _store(sessionmaker, vault, other, foreign, _secrets())
    async with sessionmaker() as session:
        await vault.revoke(session, user_id=user, connection_id=revoked)
        await session.execute(
            update(BrokerToken)
            .where(BrokerToken.id == tampered_token)
            .values(token_ciphertext=b"not a ciphertext")
        )
        await session.commit()
    async with sessionmaker() as session:
        found = await vault.credentials_for_read_many(
            session,
            user_id=user,
            connection_ids=[good, replaced, revoked, empty, tampered, foreign],
        )
    assert found[good] == good_secrets
    assert found[replaced] == newest
    assert isinstance(found[revoked], CredentialRevoked)
    assert isinstance(found[empty], CredentialMissing)
    assert isinstance(found[tampered], CredentialUnreadable)
    assert isinstance(found[foreign], CredentialMissing)  # as if it did not exist


async def test_storing_again_replaces_the_active_token(sessionmaker: SessionMaker) -> None:
    vault, user = _vault(), new_user()
    connection_id = await _connection(sessionmaker, user)
    first = await _store(sessionmaker, vault, user, connection_id, _secrets())
    newer = _secrets()
    second = await _store(sessionmaker, vault, user, connection_id, newer)
    async with sessionmaker() as session:
        assert (
            await vault.credentials_for_read(session, user_id=user, connection_id=connection_id)
            == newer
        )
        old = await session.get(BrokerToken, first)
        new = await session.get(BrokerToken, second)
    assert old is not None
    assert old.revoked_at is not None
    assert new is not None
    assert new.revoked_at is None


async def test_check_constraint_refuses_writable_tier_c(sessionmaker: SessionMaker) -> None:
    user = new_user()
    connection_id = await _connection(sessionmaker, user, "tier_c")
    now = datetime.now(UTC)
    async with sessionmaker() as session:
        session.add(
            BrokerToken(
                id=new_id("tok"),
                connection_id=connection_id,
                user_id=user,
                broker_tier="tier_c",
                broker_slug="tradier",
                no_order_write=False,
                token_ciphertext=b"x" * 40,
                wrapped_data_key=b"y" * 60,
                key_version=1,
                created_at=now,
                updated_at=now,
            )
        )
        with pytest.raises(IntegrityError):
            await session.flush()
        await session.rollback()


async def test_another_user_cannot_reach_the_token(sessionmaker: SessionMaker) -> None:
    vault, owner, intruder = _vault(), new_user("owner"), new_user("intruder")
    connection_id = await _connection(sessionmaker, owner)
    await _store(sessionmaker, vault, owner, connection_id, _secrets())
    async with sessionmaker() as session:
        for call in (vault.credentials_for_read, vault.credentials_for_order):
            with pytest.raises(CredentialMissing):
                await call(session, user_id=intruder, connection_id=connection_id)
        with pytest.raises(errors.NotFound):
            await vault.store(
                session,
                user_id=intruder,
                connection_id=connection_id,
                broker_slug="tradier",
                broker_tier="tier_a",
                credentials=_secrets(),
            )
        await vault.revoke(session, user_id=intruder, connection_id=connection_id)
        await session.commit()
    async with sessionmaker() as session:
        assert await vault.credentials_for_read(session, user_id=owner, connection_id=connection_id)


async def test_ciphertext_copied_to_another_row_does_not_decrypt(
    sessionmaker: SessionMaker,
) -> None:
    vault, victim, attacker = _vault(), new_user("victim"), new_user("attacker")
    victim_connection = await _connection(sessionmaker, victim)
    attacker_connection = await _connection(sessionmaker, attacker)
    victim_token = await _store(sessionmaker, vault, victim, victim_connection, _secrets())
    attacker_token = await _store(sessionmaker, vault, attacker, attacker_connection, _secrets())
    async with sessionmaker() as session:
        source = await session.get(BrokerToken, victim_token)
        assert source is not None
        await session.execute(
            update(BrokerToken)
            .where(BrokerToken.id == attacker_token)
            .values(
                token_ciphertext=source.token_ciphertext,
                wrapped_data_key=source.wrapped_data_key,
                key_version=source.key_version,
            )
        )
        await session.commit()
    async with sessionmaker() as session:
        with pytest.raises(CredentialUnreadable) as info:
            await vault.credentials_for_read(
                session, user_id=attacker, connection_id=attacker_connection
            )
    assert "plaintext" not in str(info.value)


async def test_store_refuses_a_tier_that_does_not_match_the_connection(
    sessionmaker: SessionMaker,
) -> None:
    vault, user = _vault(), new_user()
    linked = await _connection(sessionmaker, user, "tier_c")
    async with sessionmaker() as session:
        with pytest.raises(ValueError, match="tier"):
            await vault.store(
                session,
                user_id=user,
                connection_id=linked,
                broker_slug="tradier",
                broker_tier="tier_b",
                credentials=_secrets(),
            )


async def test_rewrap_batches_move_tokens_to_the_new_primary(sessionmaker: SessionMaker) -> None:
    provider, user = _provider(), new_user()
    connections = [await _connection(sessionmaker, user) for _ in range(3)]
    originals = [_secrets() for _ in connections]
    for connection_id, credentials in zip(connections, originals, strict=True):
        await _store(sessionmaker, _vault(provider), user, connection_id, credentials)

    rotated = _vault(provider.rotated())
    after: str | None = None
    moved, foreign = 0, 0
    while True:  # batches of 2: keyset pagination by id, one transaction each
        async with sessionmaker() as session:
            batch = await rotated.rewrap_batch(session, limit=2, after_id=after)
            await session.commit()
        if batch.claimed == 0:
            break
        assert batch.primary_version == 2
        moved += batch.rewrapped
        foreign += len(batch.failed)
        after = batch.last_id
    # Other tests' tokens sit in the same database under keys this vault cannot open: they
    # are reported as failed and left as they are, never fatal.
    assert moved >= 3
    async with sessionmaker() as session:
        for connection_id, credentials in zip(connections, originals, strict=True):
            row = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection_id)
                )
            ).scalar_one()
            assert row.key_version == 2
            assert (
                await rotated.credentials_for_read(
                    session, user_id=user, connection_id=connection_id
                )
                == credentials
            )


async def test_a_revoked_connection_never_gets_a_credential_again(
    sessionmaker: SessionMaker,
) -> None:
    vault, user = _vault(), new_user()
    connection_id = await _connection(sessionmaker, user)
    await _store(sessionmaker, vault, user, connection_id, _secrets())
    async with sessionmaker() as session:
        await vault.revoke(session, user_id=user, connection_id=connection_id)
        connection = await session.get(Connection, connection_id)
        assert connection is not None
        connection.status = "revoked"
        connection.revoked_at = datetime.now(UTC)
        await session.commit()
    with pytest.raises(CredentialRevoked):
        await _store(sessionmaker, vault, user, connection_id, _secrets())
    async with sessionmaker() as session:
        with pytest.raises(CredentialRevoked):
            await vault.credentials_for_read(session, user_id=user, connection_id=connection_id)


async def test_reprs_hold_no_secret(sessionmaker: SessionMaker) -> None:
    vault, user = _vault(), new_user()
    connection_id = await _connection(sessionmaker, user)
    credentials = _secrets()
    token_id = await _store(sessionmaker, vault, user, connection_id, credentials)
    async with sessionmaker() as session:
        row = await session.get(BrokerToken, token_id)
    texts = [repr(row), str(row), repr(credentials), str(credentials), f"{credentials}"]
    texts.append(repr(vault))
    for text in texts:
        for value in credentials.values():
            assert value not in text
            assert row is not None
            assert row.token_ciphertext.hex() not in text
    assert repr(credentials) == "Credentials({'access_token': '***', 'refresh_token': '***'})"
    assert json.loads(credentials.to_json_bytes()) == dict(credentials)


async def test_reseal_replaces_the_active_token_in_place(sessionmaker: SessionMaker) -> None:
    vault, user = _vault(), new_user()
    connection_id = await _connection(sessionmaker, user)
    token_id = await _store(sessionmaker, vault, user, connection_id, _secrets())
    async with sessionmaker() as session:
        before = await session.get(BrokerToken, token_id)
        assert before is not None
        old_ciphertext, old_wrap = before.token_ciphertext, before.wrapped_data_key
    refreshed = _secrets()
    expires = datetime.now(UTC) + timedelta(minutes=30)
    async with sessionmaker() as session:
        same_id = await vault.reseal(
            session,
            user_id=user,
            connection_id=connection_id,
            credentials=refreshed,
            expires_at=expires,
            refresh_expires_at=None,
        )
        await session.commit()
    assert same_id == token_id
    async with sessionmaker() as session:
        assert (
            await vault.credentials_for_read(session, user_id=user, connection_id=connection_id)
            == refreshed
        )
        rows = (
            (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection_id)
                )
            )
            .scalars()
            .all()
        )
    assert len(rows) == 1
    assert rows[0].token_ciphertext != old_ciphertext
    assert rows[0].wrapped_data_key != old_wrap  # a fresh data key
    assert rows[0].expires_at == expires


async def test_reseal_refuses_revoked_and_other_users_tokens(sessionmaker: SessionMaker) -> None:
    vault, user, other = _vault(), new_user(), new_user()
    connection_id = await _connection(sessionmaker, user)
    await _store(sessionmaker, vault, user, connection_id, _secrets())
    async with sessionmaker() as session:
        with pytest.raises(CredentialMissing):
            await vault.reseal(
                session,
                user_id=other,
                connection_id=connection_id,
                credentials=_secrets(),
                expires_at=None,
                refresh_expires_at=None,
            )
        await vault.revoke(session, user_id=user, connection_id=connection_id)
        await session.commit()
    async with sessionmaker() as session:
        with pytest.raises(CredentialRevoked):
            await vault.reseal(
                session,
                user_id=user,
                connection_id=connection_id,
                credentials=_secrets(),
                expires_at=None,
                refresh_expires_at=None,
            )


def test_flow_secrets_are_bound_to_their_flow() -> None:
    vault = _vault()
    sealed = vault.seal_flow_secret(
        user_id="u1", flow_id="oas_1", broker_slug="schwab", value="verifier-" + "x" * 40
    )
    assert b"verifier-" not in sealed.ciphertext
    assert (
        vault.open_flow_secret(user_id="u1", flow_id="oas_1", broker_slug="schwab", envelope=sealed)
        == "verifier-" + "x" * 40
    )
    for user, flow, slug in (
        ("u2", "oas_1", "schwab"),
        ("u1", "oas_2", "schwab"),
        ("u1", "oas_1", "tradier"),
    ):
        with pytest.raises(CredentialUnreadable):
            vault.open_flow_secret(user_id=user, flow_id=flow, broker_slug=slug, envelope=sealed)


async def test_a_credential_is_made_read_only_after_it_was_stored(
    sessionmaker: SessionMaker,
) -> None:
    """An aggregator link learnt to be read-only (Fidelity) flips its stored credential."""
    vault, user = _vault(), new_user()
    linked = await _connection(sessionmaker, user, "tier_b")
    await _store(sessionmaker, vault, user, linked, _secrets(), "tier_b")
    blind = _vault()  # the flag is flipped and enforced without decrypting anything
    async with sessionmaker() as session:
        flip = blind.set_no_order_write
        assert await flip(session, user_id=user, connection_id=linked, no_order_write=True)
        assert not await flip(session, user_id=user, connection_id=linked, no_order_write=True)
        await session.commit()
    async with sessionmaker() as session:
        with pytest.raises(ReadOnlyCredential):
            await blind.credentials_for_order(session, user_id=user, connection_id=linked)
        assert await vault.credentials_for_read(session, user_id=user, connection_id=linked)
        assert await vault.set_no_order_write(
            session, user_id=user, connection_id=linked, no_order_write=False
        )
        await session.commit()
    async with sessionmaker() as session:
        assert await vault.credentials_for_order(session, user_id=user, connection_id=linked)
    tier_c = await _connection(sessionmaker, user, "tier_c")
    await _store(sessionmaker, vault, user, tier_c, _secrets(), "tier_c")
    async with sessionmaker() as session:
        with pytest.raises(ValueError, match="tier C"):
            await vault.set_no_order_write(
                session, user_id=user, connection_id=tier_c, no_order_write=False
            )
        with pytest.raises(CredentialMissing):
            await vault.set_no_order_write(
                session, user_id=new_user("other"), connection_id=linked, no_order_write=True
            )

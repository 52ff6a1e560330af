"""The credential cache: an opened credential per connection kept in memory, never stale.

Two app instances on one Postgres database (each with its own LISTEN connection) place
live orders through one fake Alpaca with warm caches; a change made on instance A
(revocation, a new key, an OAuth-style refresh in place, ``no_order_write``) is dropped
from B's cache through NOTIFY and refused or picked up by B's next order. The version on
the connection row guards the same even when the notification is lost. SQLite (one
process) drops at the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic import SecretStr
from sqlalchemy import func, update

from app.db.models import BrokerToken
from app.db.repositories.connections import ConnectionRepository
from app.security.credential_cache import CachedCredential, CredentialCache
from app.security.credentials import Credentials
from app.security.vault import TokenVault
from tests.brokers.alpaca.support import Running, running_fake
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests
from tests.services.support import assert_problem

ORDERS = ("POST", "/v2/orders")
WAIT = 10.0


class Ticks:
    """A manual monotonic clock for a cache."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the cache on its own ------------------------------------------------------------------


def _put(cache: CredentialCache, connection_id: str, version: int, secret: str) -> None:
    cache.put(
        connection_id,
        version,
        token_id="tok_1",
        broker_tier="tier_a",
        no_order_write=False,
        credentials=Credentials(api_key_id="PKID", api_secret_key=secret),
    )


def test_an_entry_serves_only_its_version_until_it_expires() -> None:
    ticks = Ticks()
    cache = CredentialCache(ttl_seconds=60, max_entries=10, clock=ticks)
    _put(cache, "con_1", 3, "s3")
    hit = cache.get("con_1", 3)
    assert hit is not None
    assert hit.credentials["api_secret_key"] == "s3"
    assert cache.get("con_1", 2) is None, "an older row never sees a newer entry's version"
    assert "con_1" in cache, "and does not evict it"
    assert cache.get("con_1", 4) is None, "a newer row misses the superseded entry"
    assert "con_1" not in cache, "which goes at once"
    _put(cache, "con_1", 4, "s4")
    _put(cache, "con_1", 3, "s3")  # a slow reader of the old row never overwrites
    newest = cache.get("con_1", 4)
    assert newest is not None
    assert newest.credentials["api_secret_key"] == "s4"
    ticks.now += 59.9
    assert cache.get("con_1", 4) is not None
    ticks.now += 0.2
    assert cache.get("con_1", 4) is None, "expired"
    assert len(cache) == 0
    assert (cache.hits, cache.misses) == (3, 3)


def test_the_cache_is_bounded_and_drops_by_notification() -> None:
    cache = CredentialCache(ttl_seconds=60, max_entries=2)
    for n in range(3):
        _put(cache, f"con_{n}", 0, f"s{n}")
    assert "con_0" not in cache, "the least recently used went"
    assert len(cache) == 2
    assert cache.get("con_1", 0) is not None
    _put(cache, "con_3", 0, "s3")
    assert "con_2" not in cache
    assert "con_1" in cache
    cache.notified("con_1,con_3,con_unknown")
    assert len(cache) == 0
    _put(cache, "con_4", 0, "s4")
    cache.resync()  # the LISTEN connection came back: whatever it missed is forgotten
    assert len(cache) == 0


def test_a_zero_lifetime_keeps_nothing() -> None:
    cache = CredentialCache(ttl_seconds=0, max_entries=10)
    _put(cache, "con_1", 0, "s")
    assert not cache.enabled
    assert len(cache) == 0
    assert cache.get("con_1", 0) is None


def test_no_repr_shows_a_cached_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cache = CredentialCache(ttl_seconds=60, max_entries=10)
    _put(cache, "con_1", 0, "s3cr3t-value-Zq")
    entry = cache.get("con_1", 0)
    assert isinstance(entry, CachedCredential)
    logging.getLogger("test").info("cached %r %s %r", entry, entry, cache)
    for shown in (repr(entry), str(entry), repr(cache), str(entry.credentials), caplog.text):
        assert "s3cr3t-value-Zq" not in shown
        assert "PKID" not in shown
    assert "tok_1" in repr(entry), "the repr still says which token it is"


# --- through the app -----------------------------------------------------------------------


@dataclass
class Instances:
    a: Harness
    b: Harness
    alpaca: Running

    def orders_sent(self) -> list[str]:
        """The key id of every order placement the fake received, in order."""
        return [
            key for method, path, key in self.alpaca.fake.keyed_requests if (method, path) == ORDERS
        ]


@contextlib.asynccontextmanager
async def two_instances(db_url: str) -> AsyncIterator[Instances]:
    """Two instances of one deployment (same database, JWT secret and fake Alpaca)."""
    async with running_fake() as alpaca:
        platform = alpaca.fake.add_account(cash="1000000")
        settings = settings_for_tests(
            db_url,
            alpaca_trading_url=alpaca.url,
            alpaca_data_url=alpaca.url,
            paper_first_cycles=0,
            alpaca_platform_key_id=SecretStr(platform.key_id),
            alpaca_platform_secret=SecretStr(platform.secret),
        )
        async with running_app(settings) as a, running_app(settings) as b:
            yield Instances(a, b, alpaca)


async def _connect(h: Harness, alpaca: Running, user: str) -> tuple[str, str]:
    account = alpaca.account
    response = await h.client.post(
        "/v1/connections",
        json={
            "broker": "alpaca",
            "credentials": {"api_key_id": account.key_id, "api_secret_key": account.secret},
        },
        headers=h.auth(user),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body["accounts"][0]


async def _order(h: Harness, user: str, account_id: str) -> None:
    placed = await h.place(user, account_id, order_type="limit", limit_price="1.00")
    assert placed.status_code == 201, placed.text


def _cache(h: Harness) -> CredentialCache:
    return h.state.ctx.vault.cache


async def _dropped(h: Harness, connection_id: str) -> None:
    """Wait until the instance's cache no longer holds the connection (NOTIFY arrived)."""
    async with asyncio.timeout(WAIT):
        while connection_id in _cache(h):  # noqa: ASYNC110 - dropped by the listener
            await asyncio.sleep(0.01)


async def _warm(ins: Instances, user: str, connection_id: str, account_id: str) -> None:
    for h in (ins.a, ins.b):
        await _order(h, user, account_id)
        assert connection_id in _cache(h)


async def test_a_revocation_on_one_instance_refuses_the_next_order_on_the_other(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with two_instances(postgres_url) as ins:
        user = new_user()
        connection_id, account_id = await _connect(ins.a, ins.alpaca, user)
        secret = ins.alpaca.account.secret
        await _warm(ins, user, connection_id, account_id)
        decrypts = ins.b.state.ctx.vault.decrypts
        await _order(ins.b, user, account_id)
        assert ins.b.state.ctx.vault.decrypts == decrypts, "a warm cache opens nothing"

        deleted = await ins.a.client.delete(
            f"/v1/connections/{connection_id}", headers=ins.a.auth(user)
        )
        assert deleted.status_code == 204
        await _dropped(ins.b, connection_id)
        assert connection_id not in _cache(ins.a)
        sent = len(ins.orders_sent())
        for h in (ins.b, ins.a):
            refused = await h.place(user, account_id, order_type="limit", limit_price="1.00")
            assert_problem(refused, 409, "connection_broken")
        assert len(ins.orders_sent()) == sent, "no order reached the broker"
        assert secret not in caplog.text


async def test_a_lost_notification_still_never_serves_a_changed_credential(
    postgres_url: str,
) -> None:
    """B's entry is put back after the drop, as if the NOTIFY had never arrived: the
    version on the connection row (read by every order) makes it unusable."""
    async with two_instances(postgres_url) as ins:
        user = new_user()
        connection_id, account_id = await _connect(ins.a, ins.alpaca, user)
        await _warm(ins, user, connection_id, account_id)
        stale = _cache(ins.b).peek(connection_id)
        assert stale is not None

        async with ins.a.state.ctx.sessionmaker() as session:
            changed = await ins.a.state.ctx.vault.set_no_order_write(
                session, user_id=user, connection_id=connection_id, no_order_write=True
            )
            await session.commit()
        assert changed
        await _dropped(ins.b, connection_id)
        _cache(ins.b).put(
            connection_id,
            stale.version,
            token_id=stale.token_id,
            broker_tier=stale.broker_tier,
            no_order_write=False,
            credentials=stale.credentials,
        )
        sent = len(ins.orders_sent())
        for h in (ins.a, ins.b):
            refused = await h.place(user, account_id, order_type="limit", limit_price="1.00")
            assert_problem(refused, 403, "read_only_account")
        assert len(ins.orders_sent()) == sent, "no order reached the broker"


async def test_no_order_write_refuses_on_both_instances(postgres_url: str) -> None:
    async with two_instances(postgres_url) as ins:
        user = new_user()
        connection_id, account_id = await _connect(ins.a, ins.alpaca, user)
        await _warm(ins, user, connection_id, account_id)
        async with ins.a.state.ctx.sessionmaker() as session:
            await ins.a.state.ctx.vault.set_no_order_write(
                session, user_id=user, connection_id=connection_id, no_order_write=True
            )
            await session.commit()
        await _dropped(ins.b, connection_id)
        sent = len(ins.orders_sent())
        for h in (ins.a, ins.b):
            refused = await h.place(user, account_id, order_type="limit", limit_price="1.00")
            assert_problem(refused, 403, "read_only_account")
        assert len(ins.orders_sent()) == sent
        # Reads still open the credential (a read-only link reads).
        for h in (ins.a, ins.b):
            balances = await h.client.get(
                f"/v1/accounts/{account_id}/balances", headers=h.auth(user)
            )
            assert balances.status_code == 200, balances.text


async def test_a_new_key_is_used_by_the_next_order_on_both_instances(
    postgres_url: str,
) -> None:
    async with two_instances(postgres_url) as ins:
        user = new_user()
        connection_id, account_id = await _connect(ins.a, ins.alpaca, user)
        await _warm(ins, user, connection_id, account_id)
        old_key = ins.alpaca.account.key_id
        assert ins.orders_sent()[-2:] == [old_key, old_key]

        fresh = ins.alpaca.fake.regenerate_key(old_key)  # the old key stops working
        replaced = await ins.a.client.put(
            f"/v1/connections/{connection_id}/credentials",
            json={"credentials": {"api_key_id": fresh.key_id, "api_secret_key": fresh.secret}},
            headers=ins.a.auth(user),
        )
        assert replaced.status_code == 200, replaced.text
        await _dropped(ins.b, connection_id)
        for h in (ins.b, ins.a):
            await _order(h, user, account_id)
        assert ins.orders_sent()[-2:] == [fresh.key_id, fresh.key_id]


async def test_a_credential_refreshed_in_place_is_used_on_both_instances(
    postgres_url: str,
) -> None:
    """``reseal`` (an OAuth refresh replaces the token in place, same row) on instance A."""
    async with two_instances(postgres_url) as ins:
        user = new_user()
        connection_id, account_id = await _connect(ins.a, ins.alpaca, user)
        await _warm(ins, user, connection_id, account_id)
        fresh = ins.alpaca.fake.regenerate_key(ins.alpaca.account.key_id)
        vault: TokenVault = ins.a.state.ctx.vault
        async with ins.a.state.ctx.sessionmaker() as session:
            await vault.reseal(
                session,
                user_id=user,
                connection_id=connection_id,
                credentials=Credentials(api_key_id=fresh.key_id, api_secret_key=fresh.secret),
                expires_at=None,
                refresh_expires_at=None,
            )
            await session.commit()
        await _dropped(ins.b, connection_id)
        for h in (ins.a, ins.b):
            await _order(h, user, account_id)
        assert ins.orders_sent()[-2:] == [fresh.key_id, fresh.key_id]


async def test_a_broken_connection_drops_its_credential_everywhere(postgres_url: str) -> None:
    async with two_instances(postgres_url) as ins:
        user = new_user()
        connection_id, account_id = await _connect(ins.a, ins.alpaca, user)
        await _warm(ins, user, connection_id, account_id)
        async with ins.a.state.ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, user).get(connection_id)
            assert connection is not None
            before = connection.credential_version
            connection.status = "broken"
            await session.commit()
            assert connection.credential_version == before + 1
        await _dropped(ins.b, connection_id)
        await _dropped(ins.a, connection_id)
        sent = len(ins.orders_sent())
        refused = await ins.b.place(user, account_id, order_type="limit", limit_price="1.00")
        assert_problem(refused, 409, "connection_broken")
        assert len(ins.orders_sent()) == sent


async def test_a_rolled_back_change_drops_nothing(db_url: str) -> None:
    async with running_fake() as alpaca:
        settings = settings_for_tests(
            db_url, alpaca_trading_url=alpaca.url, alpaca_data_url=alpaca.url, paper_first_cycles=0
        )
        async with running_app(settings) as h:
            user, marker_user = new_user(), new_user()
            connection_id, account_id = await _connect(h, alpaca, user)
            marker_id, marker_account = await _connect(h, alpaca, marker_user)
            await _order(h, user, account_id)
            await _order(h, marker_user, marker_account)
            vault = h.state.ctx.vault
            async with h.state.ctx.sessionmaker() as session:
                await vault.revoke(session, user_id=user, connection_id=connection_id)
                await session.rollback()
            # A committed change after it: announcements arrive in commit order, so once
            # this one is here, one for the rolled-back change would have been too.
            async with h.state.ctx.sessionmaker() as session:
                await vault.revoke(session, user_id=marker_user, connection_id=marker_id)
                await session.commit()
            await _dropped(h, marker_id)
            assert connection_id in _cache(h)
            decrypts = vault.decrypts
            await _order(h, user, account_id)
            assert vault.decrypts == decrypts


async def test_one_instance_drops_at_the_commit_and_reopens_an_expired_entry(
    db_url: str,
) -> None:
    """Both backends, one instance: SQLite drops in process at the commit (no NOTIFY)."""
    async with running_fake() as alpaca:
        settings = settings_for_tests(
            db_url, alpaca_trading_url=alpaca.url, alpaca_data_url=alpaca.url, paper_first_cycles=0
        )
        async with running_app(settings) as h:
            vault = h.state.ctx.vault
            ticks = Ticks()
            vault.cache.clock = ticks  # the cache the instance's listener drops from
            user = new_user()
            connection_id, account_id = await _connect(h, alpaca, user)
            start = vault.decrypts
            await _order(h, user, account_id)
            await _order(h, user, account_id)
            assert vault.decrypts == start + 1, "opened once, then served from memory"
            ticks.now += 61
            await _order(h, user, account_id)
            assert vault.decrypts == start + 2, "the expired entry was opened again"
            assert connection_id in vault.cache

            deleted = await h.client.delete(
                f"/v1/connections/{connection_id}", headers=h.auth(user)
            )
            assert deleted.status_code == 204
            if h.state.engine.dialect.name == "sqlite":
                assert connection_id not in vault.cache, "dropped at the commit"
            else:
                await _dropped(h, connection_id)
            refused = await h.place(user, account_id, order_type="limit", limit_price="1.00")
            assert_problem(refused, 409, "connection_broken")


async def test_a_zero_lifetime_opens_the_credential_for_every_order(db_url: str) -> None:
    async with running_fake() as alpaca:
        settings = settings_for_tests(
            db_url,
            alpaca_trading_url=alpaca.url,
            alpaca_data_url=alpaca.url,
            paper_first_cycles=0,
            credential_cache_seconds=0,
        )
        async with running_app(settings) as h:
            user = new_user()
            connection_id, account_id = await _connect(h, alpaca, user)
            start = h.state.ctx.vault.decrypts
            for _ in range(3):
                await _order(h, user, account_id)
            assert h.state.ctx.vault.decrypts == start + 3
            assert connection_id not in _cache(h)


async def test_a_token_written_outside_the_vault_is_counted_and_dropped_everywhere(
    postgres_url: str,
) -> None:
    """The triggers count any writer (an operator's UPDATE in psql): B drops the entry
    through the trigger's NOTIFY and both refuse."""
    async with two_instances(postgres_url) as ins:
        user = new_user()
        connection_id, account_id = await _connect(ins.a, ins.alpaca, user)
        await _warm(ins, user, connection_id, account_id)
        before = await _version(ins.a, user, connection_id)
        async with ins.a.state.ctx.sessionmaker() as session:
            await session.execute(
                update(BrokerToken)
                .where(BrokerToken.connection_id == connection_id)
                .values(no_order_write=True)
            )
            await session.commit()
        assert await _version(ins.a, user, connection_id) == before + 1
        await _dropped(ins.b, connection_id)
        await _dropped(ins.a, connection_id)
        sent = len(ins.orders_sent())
        for h in (ins.a, ins.b):
            refused = await h.place(user, account_id, order_type="limit", limit_price="1.00")
            assert_problem(refused, 403, "read_only_account")
        assert len(ins.orders_sent()) == sent


async def test_a_rewrap_leaves_the_version_alone(db_url: str) -> None:
    """Only the wrap of the data key changes: the plaintext in memory is still right."""
    async with running_fake() as alpaca:
        settings = settings_for_tests(
            db_url, alpaca_trading_url=alpaca.url, alpaca_data_url=alpaca.url, paper_first_cycles=0
        )
        async with running_app(settings) as h:
            user = new_user()
            connection_id, _ = await _connect(h, alpaca, user)
            before = await _version(h, user, connection_id)
            async with h.state.ctx.sessionmaker() as session:
                await session.execute(
                    update(BrokerToken)
                    .where(BrokerToken.connection_id == connection_id)
                    .values(key_version=BrokerToken.key_version, updated_at=func.now())
                )
                await session.commit()
            assert await _version(h, user, connection_id) == before
            async with h.state.ctx.sessionmaker() as session:
                await session.execute(
                    update(BrokerToken)
                    .where(BrokerToken.connection_id == connection_id)
                    .values(revoked_at=func.now())
                )
                await session.commit()
            assert await _version(h, user, connection_id) == before + 1


async def _version(h: Harness, user: str, connection_id: str) -> int:
    async with h.state.ctx.sessionmaker() as session:
        connection = await ConnectionRepository.for_user(session, user).get(connection_id)
        assert connection is not None
        return connection.credential_version


async def test_the_version_only_grows_even_from_a_stale_copy(db_url: str) -> None:
    """A connection marked broken from a copy read before a token change still counts up
    from the database's value (a stale copy never moves the version back)."""
    async with running_fake() as alpaca:
        settings = settings_for_tests(
            db_url, alpaca_trading_url=alpaca.url, alpaca_data_url=alpaca.url, paper_first_cycles=0
        )
        async with running_app(settings) as h:
            user = new_user()
            connection_id, _ = await _connect(h, alpaca, user)
            before = await _version(h, user, connection_id)
            async with h.state.ctx.sessionmaker() as stale_session:
                stale = await ConnectionRepository.for_user(stale_session, user).get(connection_id)
                assert stale is not None
                await stale_session.commit()  # the copy outlives its transaction
                async with h.state.ctx.sessionmaker() as session:
                    await h.state.ctx.vault.set_no_order_write(
                        session, user_id=user, connection_id=connection_id, no_order_write=True
                    )
                    await session.commit()
                assert stale.credential_version == before
                stale.status = "broken"
                await stale_session.commit()
                assert stale.credential_version == before + 2
            assert await _version(h, user, connection_id) == before + 2

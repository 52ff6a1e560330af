"""The OAuth token lifecycle against the fake authorization server over real sockets.

Time is a manual clock shared by the app and the fake; nothing sleeps. The refresher is
driven by calling ``run_once`` (background tasks are off in tests) or by reads and orders
that need a fresh access token.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from app.db.base import Base
from app.db.models import BrokerToken, Connection, OAuthState, Order, OrderEvent
from app.security.credentials import Credentials
from app.services.upstream import UpstreamStreams
from tests.brokers.oauth import example
from tests.brokers.oauth.example import example_registry
from tests.brokers.oauth.support import (
    OAuthRun,
    another_instance,
    connection_events,
    connection_row,
    running_oauth,
    stored_credentials,
)
from tests.conftest import new_user
from tests.harness import Harness
from tests.postgres import _as_asyncpg_dsn
from tests.streaming.support import eventually

AHEAD = timedelta(seconds=1800 - 299)  # inside the 300 s refresh-ahead window
EXPIRED = timedelta(seconds=1801)  # the 1800 s access token has expired


async def _connection(run: OAuthRun, connection_id: str) -> Connection:
    return await connection_row(run.harness, connection_id)


async def _stored(run: OAuthRun, user: str, connection_id: str) -> Credentials:
    return await stored_credentials(run.harness, user, connection_id)


async def _connection_events(run: OAuthRun, connection_id: str) -> list[OrderEvent]:
    return await connection_events(run.harness, connection_id)


async def _token_rows(run: OAuthRun, connection_id: str) -> int:
    async with run.harness.state.ctx.sessionmaker() as session:
        return int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(BrokerToken)
                    .where(BrokerToken.connection_id == connection_id)
                )
            ).scalar_one()
        )


async def _connected(run: OAuthRun) -> tuple[str, str, str]:
    """(user, connection id, the fake's grant id) after a successful connect."""
    user = new_user()
    connection_id = await run.connect(user)
    [grant] = run.fake.grants_of(run.owner.name)
    return user, connection_id, grant.id


async def _balances(harness: Harness, user: str, account_id: str) -> Any:
    return await harness.client.get(
        f"/v1/accounts/{account_id}/balances", headers=harness.auth(user)
    )


async def test_refreshes_ahead_of_expiry_in_place(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user, connection_id, grant_id = await _connected(run)
        before = await _stored(run, user, connection_id)
        created = await _connection(run, connection_id)

        # The test database is shared: the pass may also see other tests' connections, so
        # what is checked is this connection's grant at the fake and its own row.
        await run.harness.state.tokens.run_once()
        assert run.fake.refreshes(grant_id) == []  # not due yet

        run.clock.advance(AHEAD)
        report = await run.harness.state.tokens.run_once()
        assert report.refreshed >= 1
        assert [r.status for r in run.fake.refreshes(grant_id)] == [200]

        after = await _stored(run, user, connection_id)
        assert after["access_token"] != before["access_token"]
        assert after["access_token"] in run.fake.access
        assert after["refresh_token"] == before["refresh_token"]
        row = await _connection(run, connection_id)
        now = run.clock.now()
        assert row.expires_at == now + timedelta(seconds=1800)
        assert row.refresh_expires_at == created.refresh_expires_at  # same refresh token
        assert row.last_refresh_at == now
        assert row.last_refresh_outcome == "ok"
        assert row.status == "active"
        assert await _token_rows(run, connection_id) == 1  # re-sealed in place
        assert [e.type for e in await _connection_events(run, connection_id)] == [
            "connection.active"
        ]

        # Fresh again: the next pass leaves it alone.
        await run.harness.state.tokens.run_once()
        assert len(run.fake.refreshes(grant_id)) == 1


async def test_an_adapter_is_built_with_a_fresh_token(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user, connection_id, grant_id = await _connected(run)
        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]
        account = accounts[0]["id"]
        run.clock.advance(EXPIRED)

        answer = await _balances(run.harness, user, account)
        assert answer.status_code == 200, answer.text
        assert len(run.fake.refreshes(grant_id)) == 1
        stored = await _stored(run, user, connection_id)
        assert example.BUILT[-1].access_token == stored["access_token"]
        path, status = run.fake.api_requests[-1]
        assert (path.endswith("/balances"), status) == (True, 200)
        assert all(status == 200 for _, status in run.fake.api_requests)  # never a 401

        again = await _balances(run.harness, user, account)
        assert again.status_code == 200
        assert len(run.fake.refreshes(grant_id)) == 1


async def test_concurrent_reads_on_one_instance_refresh_once(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user, _connection_id, grant_id = await _connected(run)
        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]
        run.clock.advance(EXPIRED)
        answers = await asyncio.gather(
            *(_balances(run.harness, user, a["id"]) for a in accounts * 2)
        )
        assert [a.status_code for a in answers] == [200] * 4
        assert len(run.fake.refreshes(grant_id)) == 1


async def test_an_order_on_an_expired_token_refreshes_first(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user, _connection_id, grant_id = await _connected(run)
        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]
        run.clock.advance(EXPIRED)
        placed = await run.harness.place(user, accounts[0]["id"], key=uuid.uuid4().hex)
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] == "accepted"
        assert len(run.fake.refreshes(grant_id)) == 1
        assert len(run.fake.orders_placed) == 1
        async with run.harness.state.ctx.sessionmaker() as session:
            orders = (
                await session.execute(
                    select(func.count()).select_from(Order).where(Order.user_id == user)
                )
            ).scalar_one()
        assert orders == 1


async def test_invalid_grant_breaks_the_connection_once_and_is_never_retried(
    db_url: str,
) -> None:
    async with running_oauth(db_url) as run:
        user, connection_id, grant_id = await _connected(run)
        run.fake.revoke_grants(run.owner.name)  # the user withdrew access at the broker
        run.clock.advance(AHEAD)
        report = await run.harness.state.tokens.run_once()
        assert report.broken >= 1  # the shared test database may hold others' connections
        [refused] = run.fake.refreshes(grant_id)
        assert (refused.status, refused.error) == (400, "invalid_grant")

        row = await _connection(run, connection_id)
        assert row.status == "broken"
        assert row.last_refresh_outcome == "invalid_grant"
        events = await _connection_events(run, connection_id)
        assert [e.type for e in events] == ["connection.active", "connection.broken"]
        assert events[-1].payload["reason"] == "invalid_grant"
        assert events[-1].account_id is None

        for _ in range(3):
            run.clock.advance(timedelta(hours=1))
            await run.harness.state.tokens.run_once()
        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]
        read = await _balances(run.harness, user, accounts[0]["id"])
        assert read.status_code == 409
        assert read.json()["code"] == "connection_broken"
        assert len(run.fake.refreshes(grant_id)) == 1  # never retried
        assert len(await _connection_events(run, connection_id)) == 2

        listed = (
            await run.harness.client.get("/v1/events", headers=run.harness.auth(user))
        ).json()["items"]
        assert listed[-1]["type"] == "connection.broken"
        assert listed[-1]["connection"]["reason"] == "invalid_grant"


async def test_invalid_grant_on_demand_answers_connection_broken(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user, connection_id, grant_id = await _connected(run)
        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]
        run.fake.revoke_grants(run.owner.name)
        run.clock.advance(EXPIRED)
        read = await _balances(run.harness, user, accounts[0]["id"])
        assert read.status_code == 409
        assert read.json()["code"] == "connection_broken"
        again = await _balances(run.harness, user, accounts[0]["id"])
        assert again.status_code == 409
        assert len(run.fake.refreshes(grant_id)) == 1
        assert (await _connection(run, connection_id)).status == "broken"
        types = [e.type for e in await _connection_events(run, connection_id)]
        assert types == ["connection.active", "connection.broken"]


async def test_expiring_is_announced_once_then_the_hard_limit_breaks(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user, connection_id, grant_id = await _connected(run)
        created = await _connection(run, connection_id)
        assert created.refresh_expires_at is not None

        run.clock.advance(timedelta(days=5, hours=23))  # 25 h left: not yet
        await run.harness.state.tokens.run_once()
        assert (await _connection(run, connection_id)).status == "active"

        run.clock.advance(timedelta(hours=2))  # 23 h left
        await run.harness.state.tokens.run_once()
        row = await _connection(run, connection_id)
        assert row.status == "expiring"
        assert row.refresh_expires_at == created.refresh_expires_at
        for _ in range(3):
            run.clock.advance(timedelta(hours=1))
            await run.harness.state.tokens.run_once()
        events = await _connection_events(run, connection_id)
        assert [e.type for e in events] == ["connection.active", "connection.expiring"]
        assert events[-1].payload[
            "refresh_expires_at"
        ] == created.refresh_expires_at.isoformat().replace("+00:00", "Z")
        out = (
            await run.harness.client.get(
                f"/v1/connections/{connection_id}", headers=run.harness.auth(user)
            )
        ).json()
        assert out["status"] == "expiring"

        sent = len(run.fake.refreshes(grant_id))
        run.clock.set(created.refresh_expires_at + timedelta(seconds=1))
        report = await run.harness.state.tokens.run_once()
        assert report.broken == 1
        row = await _connection(run, connection_id)
        assert row.status == "broken"
        assert row.last_refresh_outcome == "refresh_token_expired"
        assert len(run.fake.refreshes(grant_id)) == sent  # no request for a dead token
        types = [e.type for e in await _connection_events(run, connection_id)]
        assert types == ["connection.active", "connection.expiring", "connection.broken"]


async def test_rotated_refresh_tokens_are_used_and_restart_the_limit(db_url: str) -> None:
    async with running_oauth(db_url, fake_options={"rotate_refresh_tokens": True}) as run:
        user, connection_id, grant_id = await _connected(run)
        first = (await _stored(run, user, connection_id))["refresh_token"]
        for _ in range(2):
            run.clock.advance(AHEAD)
            report = await run.harness.state.tokens.run_once()
            assert report.refreshed == 1
        assert [r.status for r in run.fake.refreshes(grant_id)] == [200, 200]
        stored = await _stored(run, user, connection_id)
        assert stored["refresh_token"] == run.fake.grants[grant_id].refresh_token
        assert stored["refresh_token"] != first
        assert not run.fake.grants[grant_id].revoked  # no superseded token was ever re-sent
        row = await _connection(run, connection_id)
        assert row.refresh_expires_at == run.clock.now() + timedelta(days=7)


async def test_a_transient_failure_is_recorded_and_retried(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        _user, connection_id, _grant_id = await _connected(run)
        expires_at = (await _connection(run, connection_id)).expires_at
        run.fake.faults.server_errors = 1
        run.clock.advance(AHEAD)
        report = await run.harness.state.tokens.run_once()
        assert (report.refreshed, report.failed) == (0, 1)
        row = await _connection(run, connection_id)
        assert row.status == "active"
        assert row.expires_at == expires_at
        assert row.last_refresh_outcome == "failed: OutcomeUnknown"

        report = await run.harness.state.tokens.run_once()
        assert report.refreshed == 1
        # The 503 is answered before the fake looks at the grant: count every refresh.
        assert [r.status for r in run.fake.refreshes()] == [503, 200]
        assert (await _connection(run, connection_id)).last_refresh_outcome == "ok"


async def test_an_expired_token_that_cannot_be_refreshed_answers_503(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user, connection_id, _grant_id = await _connected(run)
        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]
        run.fake.faults.rate_limited = 1
        run.clock.advance(EXPIRED)
        read = await _balances(run.harness, user, accounts[0]["id"])
        assert read.status_code == 503
        assert read.json()["code"] == "broker_unavailable"
        assert (await _connection(run, connection_id)).status == "active"
        retry = await _balances(run.harness, user, accounts[0]["id"])
        assert retry.status_code == 200
        assert [r.status for r in run.fake.refreshes()] == [429, 200]


async def _waiting_locks(dsn: str) -> int:
    """Lock waits of the sessions on this test's database only (a row lock wait is on a
    ``transactionid``, which names no database): the server is shared with other test
    processes (pytest-xdist workers) and anyone else's databases."""
    conn = await asyncpg.connect(_as_asyncpg_dsn(dsn))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN "
                "(SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
            )
        )
    finally:
        await conn.close()


async def _until(check: Any) -> None:
    """Poll ``check()`` until it holds (no timing is asserted; the bound only stops a hang)."""
    await eventually(check, within=20.0)


@pytest.mark.postgres_only
async def test_two_instances_refreshing_at_once_send_one_token_request(
    postgres_url: str,
) -> None:
    async with (
        running_oauth(postgres_url, broker_read_timeout_seconds=10.0) as run,
        another_instance(run) as other,
    ):
        user, connection_id, grant_id = await _connected(run)
        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]

        # On demand: both instances read with an expired token at the same moment.
        run.clock.advance(EXPIRED)
        run.fake.hold_token_requests()
        first = asyncio.create_task(_balances(run.harness, user, accounts[0]["id"]))

        async def first_is_at_the_broker() -> bool:
            return run.fake.waiting == 1

        await _until(first_is_at_the_broker)
        second = asyncio.create_task(_balances(other, user, accounts[1]["id"]))

        async def second_waits_for_the_row_lock() -> bool:
            return await _waiting_locks(postgres_url) >= 1

        await _until(second_waits_for_the_row_lock)
        run.fake.release_token_requests()
        answers = await asyncio.gather(first, second)
        assert [a.status_code for a in answers] == [200, 200]
        assert len(run.fake.refreshes(grant_id)) == 1

        # Background: both refreshers run a pass at the same moment; one skips the row.
        run.clock.advance(AHEAD)
        run.fake.hold_token_requests()
        pass_a = asyncio.create_task(run.harness.state.tokens.run_once())
        await _until(first_is_at_the_broker)
        report_b = await other.state.tokens.run_once()
        assert report_b.refreshed == 0
        run.fake.release_token_requests()
        report_a = await pass_a
        assert report_a.refreshed == 1
        assert len(run.fake.refreshes(grant_id)) == 2
        assert (await _connection(run, connection_id)).last_refresh_outcome == "ok"


def _secrets_of(run: OAuthRun) -> list[str]:
    values = [run.client.client_secret, *run.fake.access]
    for grant in run.fake.grants.values():
        values.extend([grant.refresh_token or "", *grant.superseded])
    values.extend(c.verifier or "" for c in run.fake.codes.values())
    return [v for v in values if v]


async def test_no_plaintext_token_in_any_table_or_log(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_oauth(db_url, fake_options={"rotate_refresh_tokens": True}) as run:
        user, _connection_id, _ = await _connected(run)
        run.clock.advance(AHEAD)
        await run.harness.state.tokens.run_once()
        accounts = (
            await run.harness.client.get("/v1/accounts", headers=run.harness.auth(user))
        ).json()["items"]
        run.clock.advance(EXPIRED)
        assert (await _balances(run.harness, user, accounts[0]["id"])).status_code == 200
        run.fake.faults.server_errors = 1
        run.clock.advance(AHEAD)
        await run.harness.state.tokens.run_once()  # a failure is logged too
        codes = list(run.fake.codes)
        secrets = _secrets_of(run)
        assert len(secrets) >= 6

        dump: list[Any] = []
        async with run.harness.state.ctx.sessionmaker() as session:
            for table in Base.metadata.sorted_tables:
                for row in (await session.execute(select(table))).all():
                    dump.extend(row)
    for value in dump:
        for secret in [*secrets, *codes]:
            if isinstance(value, bytes):
                assert secret.encode() not in value
            else:
                assert secret not in str(value)

    for record in caplog.records:
        text = " ".join(
            [record.getMessage(), record.exc_text or ""]
            + [str(v) for v in record.__dict__.values()]
        )
        for secret in secrets:
            assert secret not in text, record.name
        if record.name.startswith("app"):
            for code in codes:
                assert code not in text, record.name


async def _stream_all(run: OAuthRun) -> None:
    """One upstream supervisor pass over every streaming account, until all streams end."""
    streams = UpstreamStreams(run.harness.state.ctx, restart_delay=0)
    await streams.sync()
    assert streams.running

    async def ended() -> bool:
        return not streams.running

    try:
        await _until(ended)
    finally:
        await streams.close()


async def test_a_stream_refused_early_renews_the_token_once(db_url: str) -> None:
    async with running_oauth(db_url, registry=example_registry(streaming=True)) as run:
        user, connection_id, grant_id = await _connected(run)
        stored = await _stored(run, user, connection_id)
        run.clock.advance(timedelta(minutes=5))
        run.fake.access[stored["access_token"]].revoked = True  # dropped early by the broker
        await _stream_all(run)  # two accounts: two streams refused with the same token
        assert len(run.fake.refreshes(grant_id)) == 1
        row = await _connection(run, connection_id)
        assert (row.status, row.last_refresh_outcome) == ("active", "ok")
        assert [e.type for e in await _connection_events(run, connection_id)] == [
            "connection.active"
        ]
        assert run.fake.api_requests[-1][1] == 200  # the restarted stream got in


async def test_a_stream_refused_because_the_grant_is_gone_breaks_once(db_url: str) -> None:
    async with running_oauth(db_url, registry=example_registry(streaming=True)) as run:
        _user, connection_id, grant_id = await _connected(run)
        run.clock.advance(timedelta(minutes=5))
        run.fake.revoke_grants(run.owner.name)
        await _stream_all(run)
        assert len(run.fake.refreshes(grant_id)) == 1
        assert (await _connection(run, connection_id)).status == "broken"
        types = [e.type for e in await _connection_events(run, connection_id)]
        assert types == ["connection.active", "connection.broken"]


async def test_the_background_task_refreshes_and_purges_old_states(db_url: str) -> None:
    async with running_oauth(db_url) as run:
        user, connection_id, grant_id = await _connected(run)
        async with run.browser() as browser:
            await run.start(browser, user)  # a flow left unfinished
        run.clock.advance(AHEAD)
        stop = asyncio.Event()
        task = asyncio.create_task(run.harness.state.tokens.run(3600.0, stop))

        async def refreshed() -> bool:
            return len(run.fake.refreshes(grant_id)) == 1

        await _until(refreshed)
        stop.set()
        await task
        assert (await _connection(run, connection_id)).last_refresh_outcome == "ok"

        run.clock.advance(timedelta(days=1, minutes=11))
        report = await run.harness.state.tokens.run_once()
        assert report.purged_states >= 2
        async with run.harness.state.ctx.sessionmaker() as session:
            left = (
                await session.execute(
                    select(func.count()).select_from(OAuthState).where(OAuthState.user_id == user)
                )
            ).scalar_one()
        assert left == 0


async def test_a_stream_whose_renewal_fails_for_now_retries_instead_of_breaking(
    db_url: str,
) -> None:
    async with running_oauth(db_url, registry=example_registry(streaming=True), accounts=1) as run:
        user, connection_id, _grant_id = await _connected(run)
        stored = await _stored(run, user, connection_id)
        run.clock.advance(timedelta(minutes=5))
        run.fake.access[stored["access_token"]].revoked = True
        run.fake.faults.server_errors = 1  # the first renewal attempt meets a 503
        await _stream_all(run)
        assert [r.status for r in run.fake.refreshes()] == [503, 200]
        assert (await _connection(run, connection_id)).status == "active"
        assert [e.type for e in await _connection_events(run, connection_id)] == [
            "connection.active"
        ]


async def test_without_a_refresh_token_the_connection_ends_with_its_access_token(
    db_url: str,
) -> None:
    async with running_oauth(db_url, fake_options={"issue_refresh_tokens": False}) as run:
        user, connection_id, _grant_id = await _connected(run)
        assert "refresh_token" not in await _stored(run, user, connection_id)
        row = await _connection(run, connection_id)
        assert row.refresh_expires_at == row.expires_at  # nothing can extend it
        await run.harness.state.tokens.run_once()  # 30 minutes left: within the 1-day window
        assert (await _connection(run, connection_id)).status == "expiring"
        run.clock.advance(EXPIRED)
        await run.harness.state.tokens.run_once()
        row = await _connection(run, connection_id)
        assert (row.status, row.last_refresh_outcome) == ("broken", "refresh_token_expired")
        assert run.fake.refreshes() == []
        types = [e.type for e in await _connection_events(run, connection_id)]
        assert types == ["connection.active", "connection.expiring", "connection.broken"]


async def test_a_background_pass_refreshes_many_connections(db_url: str) -> None:
    async with running_oauth(db_url, accounts=1) as run:
        connected = [await _connected_again(run) for _ in range(6)]
        run.clock.advance(AHEAD)
        report = await run.harness.state.tokens.run_once()
        assert report.refreshed >= 6  # the shared test database may hold others' connections
        for _, connection_id in connected:
            assert (await _connection(run, connection_id)).last_refresh_outcome == "ok"
        assert len(run.fake.refreshes()) == 6


async def _connected_again(run: OAuthRun) -> tuple[str, str]:
    user = new_user()
    return user, await run.connect(user)

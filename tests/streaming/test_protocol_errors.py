"""Every error path of ``WS /v1/stream``: the stable code, the close code, and a server that
stays up and keeps serving the other connections."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.streaming.config import StreamSettings
from tests.conftest import new_user
from tests.streaming.support import Instance, StreamClient, append_events, serve


async def _authed(instance: Instance, client: StreamClient, user: str) -> None:
    await client.auth(instance.token(user))


async def _still_serves(instance: Instance) -> None:
    """A fresh connection can subscribe and receive: the server is up."""
    user = new_user("alive")
    account = await instance.paper_account(user)
    async with instance.client() as client:
        await client.auth(instance.token(user))
        await client.subscribe("*", after=None)
        ids = await append_events(instance.sessionmaker, user, account, 1)
        [event] = await client.events(1)
        assert event["cursor"] == str(ids[0])


# --- before authentication: an error, then 4401 ------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "subscribe", "accounts": "*", "after": None}, "auth_required"),
        ("not json at all", "malformed_json"),
        ("[1, 2]", "malformed_json"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "auth"}, "validation_error"),
        ({"type": "auth", "token": 42}, "validation_error"),
        (b"\x00\x01binary", "unsupported_frame"),
        ({"type": "auth", "token": "x" * 20000}, "message_too_large"),
        ({"type": "auth", "token": "not.a.jwt"}, "unauthorized"),
    ],
)
async def test_anything_but_a_good_auth_first_is_closed_4401(
    instance: Instance, frame: dict[str, Any] | str | bytes, code: str
) -> None:
    async with instance.client() as client:
        await client.send(frame)
        close_code, before = await client.closed()
    assert close_code == 4401
    assert [m["type"] for m in before] == ["error"]
    assert before[0]["code"] == code
    assert "x" * 100 not in before[0]["detail"]  # the token is never echoed


async def test_a_token_signed_with_another_secret_is_refused(instance: Instance) -> None:
    from app.security.jwt import issue_dev_token

    forged = issue_dev_token("another-secret-that-is-long-enough-" + "z" * 16, new_user())
    async with instance.client() as client:
        await client.send({"type": "auth", "token": forged})
        close_code, before = await client.closed()
    assert close_code == 4401
    assert before == [{"type": "error", "code": "unauthorized", "detail": "bad signature"}]


async def test_an_expired_token_is_refused(instance: Instance) -> None:
    expired = instance.token(new_user(), ttl=timedelta(seconds=-120))
    async with instance.client() as client:
        await client.send({"type": "auth", "token": expired})
        close_code, before = await client.closed()
    assert close_code == 4401
    assert before[0]["code"] == "unauthorized"
    assert before[0]["detail"] == "token expired"


async def test_no_auth_in_time_is_closed_4401(pg_a: Instance) -> None:
    async with serve(pg_a.settings, StreamSettings(auth_timeout_seconds=0.3)) as quick:
        async with quick.client() as client:
            close_code, before = await client.closed()
    assert close_code == 4401
    assert before == [
        {"type": "error", "code": "auth_timeout", "detail": "no auth message within 0.3 s"}
    ]


async def test_token_expiry_mid_stream_closes_4401(instance: Instance) -> None:
    user = new_user()
    token = instance.token(user, ttl=timedelta(seconds=2))
    async with instance.client() as client:
        authenticated = await client.auth(token)
        assert authenticated["user_id"] == user
        expires_at = datetime.fromisoformat(authenticated["expires_at"])
        await client.subscribe("*", after=None)
        close_code, before = await client.closed(within=30)
    assert close_code == 4401
    assert before[-1] == {"type": "error", "code": "token_expired", "detail": "token expired"}
    assert datetime.now(UTC) >= expires_at
    assert {m["type"] for m in before[:-1]} <= {"heartbeat"}


async def test_re_auth_with_a_fresh_token_extends_the_stream(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    async with instance.client() as client:
        first = await client.auth(instance.token(user, ttl=timedelta(seconds=2)))
        await client.subscribe("*", after=None)
        second = await client.auth(instance.token(user, ttl=timedelta(hours=1)))
        assert second["expires_at"] > first["expires_at"]
        # Wait (bounded) until the first token is past its expiry, reading heartbeats.
        first_expiry = datetime.fromisoformat(first["expires_at"])
        async with asyncio.timeout(30):
            while datetime.now(UTC) < first_expiry + timedelta(seconds=1):
                await client.recv_type("heartbeat")
        ids = await append_events(instance.sessionmaker, user, account, 1)
        [event] = await client.events(1)
        assert event["cursor"] == str(ids[0])


async def test_re_auth_as_another_user_is_closed_4401(instance: Instance) -> None:
    async with instance.client() as client:
        await client.auth(instance.token(new_user()))
        await client.send({"type": "auth", "token": instance.token(new_user())})
        close_code, before = await client.closed()
    assert close_code == 4401
    assert before[-1]["code"] == "user_mismatch"


# --- after authentication: an error, and the connection stays -----------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "malformed_json"),
        ('"a string"', "malformed_json"),
        ({"type": 7}, "malformed_json"),
        ({"type": "unsubscribe"}, "unknown_type"),
        ({"type": "subscribe"}, "validation_error"),
        ({"type": "subscribe", "accounts": 5}, "validation_error"),
        ({"type": "subscribe", "accounts": [], "after": None}, "validation_error"),
        ({"type": "subscribe", "accounts": "*", "after": True}, "validation_error"),
        ({"type": "subscribe", "accounts": "*", "extra": 1}, "validation_error"),
        ({"type": "subscribe", "accounts": "*", "after": "abc"}, "invalid_cursor"),
        ({"type": "subscribe", "accounts": "*", "after": "-1"}, "invalid_cursor"),
        ({"type": "subscribe", "accounts": "*", "after": -1}, "invalid_cursor"),
        ({"type": "subscribe", "accounts": "*", "after": "9" * 20}, "invalid_cursor"),
        ({"type": "subscribe", "accounts": "*", "after": "\uff11\uff12"}, "invalid_cursor"),
        ({"type": "subscribe", "accounts": "*", "after": "999999999999"}, "invalid_cursor"),
        ({"type": "subscribe", "accounts": ["acc_nope"], "after": None}, "not_found"),
        # Regressions (outside probe): a NUL in an account id reached Postgres and closed
        # 1013 "try again later"; 5,000 nested brackets (10 kB, within the frame limit)
        # raised RecursionError and closed 1011.
        ({"type": "subscribe", "accounts": ["acc_\x00x"], "after": None}, "validation_error"),
        ({"type": "subscribe", "accounts": ["acc x"], "after": None}, "validation_error"),
        ('{"type": "subscribe", "accounts": ' + "[" * 5000 + "]" * 5000 + "}", "malformed_json"),
        ("[" * 5000 + "]" * 5000, "malformed_json"),
        (b"\x00binary", "unsupported_frame"),
        ("x" * 17000, "message_too_large"),
    ],
)
async def test_bad_messages_after_auth_are_errors_and_the_connection_stays(
    instance: Instance, frame: dict[str, Any] | str | bytes, code: str
) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    async with instance.client() as client:
        await _authed(instance, client, user)
        await client.send(frame)
        error = await client.recv_type("error")
        assert error["code"] == code
        assert isinstance(error["detail"], str)
        assert error["detail"]
        # Same connection, now a good subscription: it works.
        await client.subscribe([account], after=None)
        ids = await append_events(instance.sessionmaker, user, account, 1)
        [event] = await client.events(1)
        assert event["cursor"] == str(ids[0])


async def test_subscribing_twice_is_an_error(instance: Instance) -> None:
    user = new_user()
    async with instance.client() as client:
        await _authed(instance, client, user)
        await client.subscribe("*", after=None)
        await client.send({"type": "subscribe", "accounts": "*", "after": None})
        assert (await client.recv_type("error"))["code"] == "already_subscribed"
        await client.send({"type": "auth", "token": instance.token(user)})
        assert (await client.recv_type("authenticated"))["user_id"] == user


async def test_too_many_bad_messages_close_1008(instance: Instance) -> None:
    user = new_user()
    async with instance.client() as client:
        await _authed(instance, client, user)
        for _ in range(20):
            await client.send("nope")
        close_code, before = await client.closed()
    assert close_code == 1008
    assert [m["code"] for m in before] == ["malformed_json"] * 20 + ["too_many_errors"]
    await _still_serves(instance)


async def test_a_frame_over_the_transport_limit_closes_1009(instance: Instance) -> None:
    async with instance.client(max_size=None) as client:
        await client.send({"type": "auth", "token": "x" * (17 * 1024 * 1024)})
        close_code, _ = await client.closed()
    assert close_code == 1009
    await _still_serves(instance)


async def test_the_server_stays_up_after_every_kind_of_abuse(instance: Instance) -> None:
    user = new_user()
    account = await instance.paper_account(user)
    async with instance.client() as client:
        await client.auth(instance.token(user))
        await client.subscribe("*", after="0")
        # Abrupt disconnect in the middle of a backlog.
        client.ws.transport.abort()
    await append_events(instance.sessionmaker, user, account, 3)
    await _still_serves(instance)

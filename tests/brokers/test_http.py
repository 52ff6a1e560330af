"""The shared broker HTTP layer: Retry-After, the token bucket and transport outcomes."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from app.brokers import errors
from app.brokers.http import (
    BrokerClient,
    HttpPool,
    RetryPolicy,
    Timeouts,
    TokenBucket,
    credential_key,
    parse_retry_after,
)
from tests.fakes.alpaca import FakeAlpaca, serve_asgi


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_credential_keys_do_not_contain_the_credential() -> None:
    key = credential_key("alpaca", "PKSECRETISH")
    assert "PKSECRETISH" not in key
    assert key == credential_key("alpaca", "PKSECRETISH")
    assert key != credential_key("alpaca", "PKOTHER")


async def test_the_bucket_paces_and_refuses_long_waits() -> None:
    bucket = TokenBucket(rate=20, capacity=2, max_wait=0.2)
    started = time.monotonic()
    for _ in range(3):
        await bucket.acquire()
    assert time.monotonic() - started >= 0.04  # the third waited for a refill
    slow = TokenBucket(rate=1, capacity=1, max_wait=0.1)
    await slow.acquire()
    with pytest.raises(errors.RateLimitExceeded) as caught:
        await slow.acquire("alpaca")
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0.1
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0, capacity=1)


def client_for(pool: HttpPool, base_url: str, retry: RetryPolicy | None = None) -> BrokerClient:
    return BrokerClient(
        pool,
        broker="test",
        base_url=base_url,
        headers={"Authorization": "Bearer not-logged"},
        bucket=pool.bucket("test", "k", rate=1000, capacity=1000),
        retry=retry or RetryPolicy(base_delay=0.01, max_delay=0.02),
    )


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_name_that_does_not_resolve_is_transient(method: str) -> None:
    pool = HttpPool(timeouts=Timeouts(connect=1, read=1, write=1, pool=1))
    try:
        client = client_for(pool, "http://broker.invalid")
        with pytest.raises(errors.Transient):
            await client.request(method, "/v2/account")
    finally:
        await pool.aclose()


async def test_generic_status_mapping_and_redacted_repr() -> None:
    fake = FakeAlpaca()
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        pool = HttpPool()
        try:
            client = client_for(pool, url)  # no Alpaca key and no classifier: generic rules
            assert "not-logged" not in repr(client)
            with pytest.raises(errors.AuthenticationFailed, match="not authorized"):
                await client.request("GET", "/v2/account")
            fake.faults.server_errors = 1
            fake.faults.server_error_status = 502
            with pytest.raises(errors.OutcomeUnknown):
                await client.request("DELETE", "/v2/orders/x")
            fake.faults.server_errors = 5
            with pytest.raises(errors.Transient):
                await client.request("GET", "/v2/account")
            assert fake.requests.count(("GET", "/v2/account")) == 1 + 3
        finally:
            await pool.aclose()


async def test_writes_are_sent_once_even_when_the_answer_is_lost() -> None:
    fake = FakeAlpaca()
    account = fake.add_account()
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        pool = HttpPool(timeouts=Timeouts(connect=1, read=0.2, write=1, pool=1))
        try:
            client = BrokerClient(
                pool,
                broker="test",
                base_url=url,
                headers={"APCA-API-KEY-ID": account.key_id, "APCA-API-SECRET-KEY": account.secret},
                bucket=pool.bucket("test", "k", rate=1000, capacity=1000),
            )
            fake.faults.latency = 0.5
            body = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market"}
            body["time_in_force"] = "day"
            with pytest.raises(errors.OutcomeUnknown):
                await client.request("POST", "/v2/orders", json=body)
            await asyncio.sleep(0.5)  # the fake finishes the request it was holding
            assert fake.requests.count(("POST", "/v2/orders")) == 1
            assert len(account.orders) == 1
        finally:
            await pool.aclose()


async def test_every_connection_to_a_broker_host_is_kept_between_bursts() -> None:
    """Forty calls at once to one broker host, twice: the second burst reuses the forty
    connections the first opened (a real server counts them by the client's port). With
    httpx's default of 20 kept alive, it opened 20 more: with a real broker, a TLS
    handshake for each call over 20 at once."""
    ports: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        ports.append(scope["client"][1])
        await asyncio.sleep(0.2)  # the burst's calls overlap
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async with serve_asgi(app) as url:
        pool = HttpPool()
        try:
            client = pool.client(url)
            for _ in range(2):
                answers = await asyncio.gather(*(client.get("/v2/clock") for _ in range(40)))
                assert [a.status_code for a in answers] == [200] * 40
        finally:
            await pool.aclose()
    assert len(ports) == 80
    assert len(set(ports)) == 40, "the second burst opened connections of its own"


def test_a_pool_refuses_fewer_than_one_connection() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HttpPool(max_connections=0)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_waits_refusals_and_answers_are_counted_per_broker() -> None:
    broker = "metrics-" + uuid.uuid4().hex[:8]
    bucket = TokenBucket(rate=50, capacity=1, max_wait=0.2)
    await bucket.acquire(broker)
    await bucket.acquire(broker)  # waits ~20 ms for a refill
    slow = TokenBucket(rate=1, capacity=1, max_wait=0.1)
    await slow.acquire(broker)
    with pytest.raises(errors.RateLimitExceeded):
        await slow.acquire(broker)

    assert _metric("brokerage_rate_limit_waits_total", broker=broker) == 1
    assert 0 < _metric("brokerage_rate_limit_wait_seconds_total", broker=broker) <= 0.2
    assert _metric("brokerage_rate_limit_refused_total", broker=broker) == 1

    fake = FakeAlpaca()
    account = fake.add_account()
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        pool = HttpPool(timeouts=Timeouts(connect=1, read=1, write=1, pool=1))
        try:
            client = BrokerClient(
                pool,
                broker=broker,
                base_url=url,
                headers={"APCA-API-KEY-ID": account.key_id, "APCA-API-SECRET-KEY": account.secret},
                bucket=pool.bucket(broker, "k", rate=1000, capacity=1000),
                retry=RetryPolicy(attempts=1),
            )
            await client.request("GET", "/v2/account")
            with pytest.raises(errors.BrokerError):
                await client.request("GET", "/v2/orders/no-such-order")
            fake.faults.server_errors = 1
            with pytest.raises(errors.Transient):
                await client.request("GET", "/v2/account")
            unreachable = BrokerClient(
                pool,
                broker=broker,
                base_url="http://broker.invalid",
                headers={},
                bucket=pool.bucket(broker, "k2", rate=1000, capacity=1000),
                retry=RetryPolicy(attempts=1),
            )
            with pytest.raises(errors.Transient):
                await unreachable.request("GET", "/v2/account")
        finally:
            await pool.aclose()

    answers = {
        outcome: _metric("brokerage_broker_requests_total", broker=broker, outcome=outcome)
        for outcome in ("ok", "client_error", "server_error", "transport_error")
    }
    assert answers == {"ok": 1, "client_error": 1, "server_error": 1, "transport_error": 1}
    timed = _metric("brokerage_broker_call_duration_seconds_count", broker=broker, operation="GET")
    assert timed == 3  # the answers; a request that got none is not timed

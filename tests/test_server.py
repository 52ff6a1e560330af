"""Slow clients over a real socket: the server does not wait on them forever (app/server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest_asyncio
import uvicorn

from app.config import Settings
from app.main import create_app
from app.server import guard, server_options
from tests.harness import settings_for_tests

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0


@pytest_asyncio.fixture(scope="module")
async def port(sqlite_url: str) -> AsyncIterator[int]:
    settings: Settings = settings_for_tests(
        sqlite_url,
        http_header_timeout_seconds=HEAD_TIMEOUT,
        http_body_timeout_seconds=BODY_TIMEOUT,
        http_keep_alive_timeout_seconds=2,
        http_max_header_bytes=4096,
    )
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        **server_options(settings),
    )
    server = uvicorn.Server(guard(config, settings))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.01)
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


@contextlib.asynccontextmanager
async def _socket(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_all(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """Everything until the server closes, and how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        data = await reader.read()
    return data, time.monotonic() - started


async def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    async with _socket(port) as (reader, _writer):
        data, waited = await _read_all(reader, within=10)
    assert data == b""
    assert HEAD_TIMEOUT * 0.8 < waited < HEAD_TIMEOUT + 2


async def test_a_request_head_sent_byte_by_byte_is_cut_off(port: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"a" * 200
    async with _socket(port) as (reader, writer):
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
                if reader.at_eof() or time.monotonic() - started > HEAD_TIMEOUT + 3:
                    break
        try:
            data, _ = await _read_all(reader, within=10)
        except ConnectionResetError:
            # A byte sent after the server closed met a closed socket, whose reset then ends
            # the read: cut off all the same, with nothing answered (seen under load).
            data = b""
        closed_after = time.monotonic() - started
    assert data == b""
    assert closed_after < HEAD_TIMEOUT + 2  # trickling bytes does not extend it


async def test_a_body_that_stops_arriving_is_a_408(port: int) -> None:
    async with _socket(port) as (reader, writer):
        writer.write(
            b"POST /v1/connections HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json"
            b'\r\nContent-Length: 100\r\n\r\n{"broker":'
        )
        await writer.drain()
        data, waited = await _read_all(reader, within=10)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"request_timeout" in data
    assert waited < BODY_TIMEOUT + 2


async def test_an_oversized_request_head_is_refused(port: int) -> None:
    async with _socket(port) as (reader, writer):
        # The server bounds the head it is still waiting for (a head that arrives whole in one
        # read is parsed at once): sent in two parts, as a slow client would.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"a" * 8000)
        await writer.drain()
        await asyncio.sleep(0.2)
        with contextlib.suppress(ConnectionError):
            writer.write(b"\r\n\r\n")
            await writer.drain()
        data, _ = await _read_all(reader, within=10)
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]


async def test_a_body_larger_than_the_head_bound_is_not_counted_as_head(port: int) -> None:
    # Only a head still incomplete counts against the bound: a body sent in many reads
    # after a complete head (and a head sent in two reads, under the bound) is the app's.
    body = b'{"broker": "paper", "pad": "' + b"a" * 10_000 + b'"}'
    async with _socket(port) as (reader, writer):
        writer.write(b"POST /v1/connections HTTP/1.1\r\nHost: gateway\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        await writer.drain()
        for start in range(0, len(body), 1000):
            writer.write(body[start : start + 1000])
            await writer.drain()
            await asyncio.sleep(0.01)
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
    # No bearer token: the app's 401, not the server's 400.
    assert head.startswith(b"HTTP/1.1 401 "), head[:200]


async def test_a_normal_client_keeps_its_connection_between_requests(port: int) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    async with _socket(port) as (reader, writer):
        for _ in range(2):
            writer.write(request)
            await writer.drain()
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                await reader.readexactly(length)
            # Idle less than the keep-alive timeout but longer than the head timeout: the
            # head timer only runs once a request has begun, so the connection stays.
            await asyncio.sleep(HEAD_TIMEOUT + 0.3)
        assert not reader.at_eof()

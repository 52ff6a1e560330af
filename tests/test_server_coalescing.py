"""The WebSocket server's transport hands one event-loop turn's writes to the socket together
(app/server.py ``CoalescedTransport``), over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

from app.server import CoalescedTransport


class _Accepting(asyncio.Protocol):
    def __init__(self, accepted: asyncio.Future[asyncio.Transport]) -> None:
        self._accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._accepted.set_result(transport)


@contextlib.asynccontextmanager
async def _pair() -> AsyncIterator[tuple[CoalescedTransport, asyncio.Transport, socket.socket]]:
    """(the server end wrapped, its real transport, the client's plain socket)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()
    server = await loop.create_server(lambda: _Accepting(accepted), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    client.setblocking(False)
    try:
        real = await asyncio.wait_for(accepted, 10)
        yield CoalescedTransport(real, loop), real, client
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def _read(client: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(client, size - len(data)), 10)
        if not chunk:
            break
        data += chunk
    return data


def _nothing_arrived(client: socket.socket) -> bool:
    try:
        client.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


async def test_writes_of_one_turn_are_held_until_the_loop_turns_then_sent_in_order() -> None:
    async with _pair() as (transport, real, client):
        transport.write(b"one,")
        transport.write(bytearray(b"two,"))
        transport.write(memoryview(b"three"))
        # Nothing reached the socket yet; what is pending counts as buffered.
        assert real.get_write_buffer_size() == 0
        assert transport.get_write_buffer_size() == len(b"one,two,three")
        await asyncio.sleep(0.05)
        assert _nothing_arrived(client) is False
        assert await _read(client, 13) == b"one,two,three"
        assert transport.get_write_buffer_size() == 0

        # Across turns, order is kept too.
        transport.write(b"1")
        await asyncio.sleep(0)
        transport.writelines([b"2", b"3"])
        assert await _read(client, 3) == b"123"


async def test_nothing_is_sent_before_the_loop_turns() -> None:
    async with _pair() as (transport, _, client):
        transport.write(b"later")
        transport.write(b"!")
        # Block this thread (the loop cannot turn): a write sent at once would arrive now.
        time.sleep(0.05)  # noqa: ASYNC251 - on purpose
        assert _nothing_arrived(client)
        assert await _read(client, 6) == b"later!"


async def test_close_sends_what_is_pending_first() -> None:
    async with _pair() as (transport, _, client):
        transport.write(b"last words")
        transport.close()
        assert transport.is_closing()
        assert await _read(client, 64) == b"last words"  # then the end of the stream


async def test_abort_drops_what_is_pending() -> None:
    async with _pair() as (transport, _, client):
        transport.write(b"never sent")
        transport.abort()
        await asyncio.sleep(0.05)
        try:
            received = await _read(client, 64)
        except ConnectionResetError:
            received = b""
        assert received == b""


async def test_a_write_left_pending_when_the_socket_closes_is_dropped_quietly() -> None:
    async with _pair() as (transport, real, client):
        transport.write(b"too late")
        real.close()  # closed underneath, before the loop turns
        await asyncio.sleep(0.05)
        assert real.is_closing()
        assert transport.get_write_buffer_size() == 0
        assert await _read(client, 64) == b""

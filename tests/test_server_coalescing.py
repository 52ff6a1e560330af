"""The WebSocket server's transport hands a held batch of writes to the socket as one write
(app/server.py ``CoalescedTransport``), over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
import websockets

from app.server import CoalescedTransport, guard, server_options
from app.streaming.protocol import SEND_MORE
from tests.harness import settings_for_tests


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


def _arrives_during_a_blocked_loop(client: socket.socket) -> bool:
    """Block this thread (the loop cannot turn): only a write already handed to the socket
    can arrive meanwhile."""
    time.sleep(0.05)
    return not _nothing_arrived(client)


async def test_a_write_goes_straight_through_when_nothing_is_held() -> None:
    async with _pair() as (transport, _, client):
        transport.write(b"now")
        assert _arrives_during_a_blocked_loop(client)
        assert await _read(client, 3) == b"now"


async def test_held_writes_go_out_together_at_release_in_order() -> None:
    async with _pair() as (transport, real, client):
        transport.hold()
        transport.write(b"one,")
        transport.write(bytearray(b"two,"))
        transport.writelines([memoryview(b"thr"), b"ee"])
        assert not _arrives_during_a_blocked_loop(client)
        assert real.get_write_buffer_size() == 0
        assert transport.get_write_buffer_size() == len(b"one,two,three")
        transport.release()
        assert _arrives_during_a_blocked_loop(client)
        assert await _read(client, 13) == b"one,two,three"
        transport.write(b"!")  # not held any more
        assert await _read(client, 1) == b"!"


async def test_a_hold_ends_with_its_event_loop_turn() -> None:
    """A batch whose sender never released (suspended, or gone) is written next turn."""
    async with _pair() as (transport, _, client):
        transport.hold()
        transport.write(b"stranded")
        assert not _arrives_during_a_blocked_loop(client)
        await asyncio.sleep(0)
        assert await _read(client, 8) == b"stranded"


async def test_close_sends_what_is_held_first() -> None:
    async with _pair() as (transport, _, client):
        transport.hold()
        transport.write(b"last words")
        transport.close()
        assert transport.is_closing()
        assert await _read(client, 64) == b"last words"  # then the end of the stream


async def test_abort_drops_what_is_held() -> None:
    async with _pair() as (transport, _, client):
        transport.hold()
        transport.write(b"never sent")
        transport.abort()
        await asyncio.sleep(0.05)
        try:
            received = await _read(client, 64)
        except ConnectionResetError:
            received = b""
        assert received == b""


async def test_writes_held_when_the_socket_closes_are_dropped_quietly() -> None:
    async with _pair() as (transport, real, client):
        transport.hold()
        transport.write(b"too late")
        real.close()  # closed underneath, before the release
        transport.release()
        await asyncio.sleep(0.05)
        assert transport.get_write_buffer_size() == 0
        assert await _read(client, 64) == b""


# --- the WebSocket protocol as `brokerage serve` runs it --------------------------------------


async def _batch_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts, then sends three messages as one batch (the first two with SEND_MORE), with
    the event loop blocked between them, then a fourth on its own."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "one", SEND_MORE: True})
    await send({"type": "websocket.send", "text": "two", SEND_MORE: True})
    time.sleep(0.2)  # noqa: ASYNC251 - a held batch must not reach the client meanwhile
    await send({"type": "websocket.send", "text": "three"})
    await send({"type": "websocket.send", "text": "four"})
    assert (await receive())["type"] == "websocket.disconnect"


async def test_a_batch_is_written_at_its_last_message_each_still_its_own_message(
    sqlite_url: str,
) -> None:
    """The server runs in a thread of its own, so the client here keeps receiving while the
    server's loop is blocked inside the batch."""
    settings = settings_for_tests(sqlite_url)
    config = uvicorn.Config(
        _batch_app, host="127.0.0.1", port=0, log_level="warning", **server_options(settings)
    )
    server = uvicorn.Server(guard(config, settings))
    thread = threading.Thread(target=server.run, name="uvicorn-batch", daemon=True)
    thread.start()
    async with asyncio.timeout(30):
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            received = []
            times = []
            for _ in range(4):
                received.append(await asyncio.wait_for(ws.recv(), 10))
                times.append(time.monotonic())
        assert received == ["one", "two", "three", "four"]
        # "one" was held until "three" ended the batch (after the 0.2 s block): together.
        assert times[2] - times[0] < 0.1
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)

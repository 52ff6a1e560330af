"""Run a fake broker's ASGI app under uvicorn on 127.0.0.1 and an ephemeral port.

The server runs in the caller's event loop, so tests talk to it over real sockets (HTTP and
WebSocket) with no threads and no sleeps beyond start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import uvicorn
from starlette.types import ASGIApp

# How often a stopping server looks again (uvicorn's own loops look every 0.1 s: with a
# fake started and stopped by most broker tests, that added minutes to a test run).
POLL_SECONDS = 0.005


class _FakeServer(uvicorn.Server):
    """uvicorn's server, told to stop by an event rather than a flag it polls every 0.1 s,
    and shutting down as uvicorn does (stop accepting, ask every connection to close, wait
    up to ``timeout_graceful_shutdown`` for them, then cancel what is left) while looking
    every ``POLL_SECONDS``."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):  # the Date header, refreshed every 10 ticks
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 0)
        state = self.server_state
        # uvicorn offers no event for "every connection and task is gone": polled, as uvicorn does.
        while (state.connections or state.tasks) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)
        for task in state.tasks:
            task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


@contextlib.asynccontextmanager
async def serve_asgi(
    app: ASGIApp,
    *,
    port: int = 0,
    on_shutdown: Callable[[], None] | None = None,
    tls: tuple[str, str] | None = None,
) -> AsyncIterator[str]:
    """Yield ``http://127.0.0.1:<port>`` while the app is served; stop it afterwards.
    ``tls``: (certificate chain file, key file) to serve HTTPS and WSS instead
    (``https://127.0.0.1:<port>``)."""
    ssl_files: dict[str, str] = {}
    if tls is not None:
        ssl_files = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
        **ssl_files,  # type: ignore[arg-type]
    )
    server = _FakeServer(config)
    # ``serve()`` would take over SIGINT/SIGTERM for the whole test process; ``_serve`` does not.
    task = asyncio.create_task(server._serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the fake server stopped during start-up")
            await asyncio.sleep(POLL_SECONDS)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield f"{'https' if tls else 'http'}://127.0.0.1:{bound}"
    finally:
        if on_shutdown is not None:
            on_shutdown()
        server.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task

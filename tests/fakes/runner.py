"""Run a fake broker's ASGI app under uvicorn on 127.0.0.1 and an ephemeral port.

The server runs in the caller's event loop, so tests talk to it over real sockets (HTTP and
WebSocket) with no threads and no sleeps beyond start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import uvicorn
from starlette.types import ASGIApp


@contextlib.asynccontextmanager
async def serve_asgi(
    app: ASGIApp, *, port: int = 0, on_shutdown: Callable[[], None] | None = None
) -> AsyncIterator[str]:
    """Yield ``http://127.0.0.1:<port>`` while the app is served; stop it afterwards."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # ``serve()`` would take over SIGINT/SIGTERM for the whole test process; ``_serve`` does not.
    task = asyncio.create_task(server._serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the fake server stopped during start-up")
            await asyncio.sleep(0.005)
        socket = server.servers[0].sockets[0]
        bound = socket.getsockname()[1]
        yield f"http://127.0.0.1:{bound}"
    finally:
        if on_shutdown is not None:
            on_shutdown()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task

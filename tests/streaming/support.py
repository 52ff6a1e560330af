"""Real servers and real WebSocket clients for the streaming tests.

``serve`` runs the app under ``uvicorn.Server`` in the test's own event loop, on a free
loopback port, so a test can talk to it over TCP and still reach into its state (the hub,
the listener) where it must. ``StreamClient`` wraps the ``websockets`` client with waits
that have timeouts; nothing here sleeps to assert timing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.api.state import AppState
from app.brokers.registry import BrokerRegistry
from app.config import Settings
from app.db.models import OrderEvent
from app.db.repositories.orders import OrderEventRepository
from app.db.session import SessionMaker
from app.main import create_app
from app.paper.clock import ManualClock
from app.security.jwt import issue_dev_token
from app.server import guard, server_options
from app.streaming.config import StreamSettings
from tests.harness import CLOCK_START

TIMEOUT = 15.0


@dataclass
class Instance:
    """One running app instance (uvicorn on a real socket)."""

    app: FastAPI
    server: uvicorn.Server
    settings: Settings
    clock: ManualClock
    http: httpx.AsyncClient
    port: int

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.brokerage
        return state

    @property
    def sessionmaker(self) -> SessionMaker:
        return self.state.ctx.sessionmaker

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def token(self, user: str, *, ttl: timedelta = timedelta(hours=1)) -> str:
        assert self.settings.jwt_secret is not None
        return issue_dev_token(self.settings.jwt_secret, user, ttl=ttl)

    def auth(self, user: str, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}", **headers}

    async def paper_account(self, user: str, starting_cash: str = "1000000") -> str:
        response = await self.http.post(
            "/v1/connections",
            json={"broker": "paper", "options": {"starting_cash": starting_cash}},
            headers=self.auth(user),
        )
        assert response.status_code == 201, response.text
        account: str = response.json()["accounts"][0]
        return account

    async def place(self, user: str, account_id: str, **order: Any) -> dict[str, Any]:
        body = {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}
        body.update(order)
        response = await self.http.post(
            f"/v1/accounts/{account_id}/orders",
            json=body,
            headers=self.auth(user, **{"Idempotency-Key": uuid.uuid4().hex}),
        )
        assert response.status_code == 201, response.text
        placed: dict[str, Any] = response.json()
        return placed

    async def tick(self, seconds: float = 1.0) -> None:
        """Move the paper market: resting orders fill through the upstream feed seam."""
        self.clock.advance(timedelta(seconds=seconds))
        await self.state.ctx.paper_engine.tick()

    def client(self, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[StreamClient]:
        return stream_client(self.ws_url, **kwargs)


@contextlib.asynccontextmanager
async def serve(
    settings: Settings,
    stream_settings: StreamSettings | None = None,
    registry: BrokerRegistry | None = None,
) -> AsyncIterator[Instance]:
    clock = ManualClock(CLOCK_START)
    app = create_app(
        settings,
        paper_clock=clock,
        stream_settings=stream_settings,
        registry=registry,
        clock=clock.now,  # one "now" for the paper market and the services (bar backfill)
    )
    # The server as ``brokerage serve`` runs it: its HTTP and WebSocket protocol classes.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        access_log=False,
        **server_options(settings),
    )
    server = uvicorn.Server(guard(config, settings))
    task = asyncio.create_task(server.serve(), name="uvicorn-under-test")
    async with asyncio.timeout(30):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield Instance(app, server, settings, clock, http, port)
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


class StreamClient:
    """A ``/v1/stream`` client; every wait has a timeout."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.heartbeats: list[dict[str, Any]] = []
        self.resyncs: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        await self.ws.send(message)

    async def recv(self, within: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(within):
            raw = await self.ws.recv()
        message: dict[str, Any] = json.loads(raw)
        return message

    async def recv_type(self, kind: str, within: float = TIMEOUT) -> dict[str, Any]:
        """The next message, skipping heartbeats; it must be of ``kind``."""
        while True:
            message = await self.recv(within)
            if message["type"] == "heartbeat" and kind != "heartbeat":
                self.heartbeats.append(message)
                continue
            assert message["type"] == kind, message
            return message

    async def auth(self, token: str) -> dict[str, Any]:
        await self.send({"type": "auth", "token": token})
        return await self.recv_type("authenticated")

    async def subscribe(
        self, accounts: list[str] | str = "*", after: str | int | None = None
    ) -> dict[str, Any]:
        await self.send({"type": "subscribe", "accounts": accounts, "after": after})
        return await self.recv_type("subscribed")

    async def events(
        self, count: int, within: float = TIMEOUT, *, allow_resync: bool = False
    ) -> list[dict[str, Any]]:
        """The next ``count`` events (heartbeats and, if allowed, resyncs noted aside)."""
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while len(events) < count:
                message = await self.recv(within)
                if message["type"] == "heartbeat":
                    self.heartbeats.append(message)
                elif message["type"] == "resync" and allow_resync:
                    self.resyncs.append(message)
                else:
                    assert message["type"] == "event", message
                    events.append(message["event"])
        return events

    async def events_until(self, cursor: str, within: float = TIMEOUT) -> list[dict[str, Any]]:
        """Events up to and including the one with ``cursor``."""
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while not events or int(events[-1]["cursor"]) < int(cursor):
                events.extend(await self.events(1, within, allow_resync=True))
        return events

    async def closed(self, within: float = TIMEOUT) -> tuple[int | None, list[dict[str, Any]]]:
        """Read until the server closes; returns the close code and what came before."""
        before: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(within):
                while True:
                    before.append(json.loads(await self.ws.recv()))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd is not None else None), before


@contextlib.asynccontextmanager
async def stream_client(url: str, **kwargs: Any) -> AsyncIterator[StreamClient]:
    async with connect(url, open_timeout=TIMEOUT, close_timeout=2, **kwargs) as ws:
        yield StreamClient(ws)


async def append_events(
    sessionmaker: SessionMaker,
    user: str,
    account_id: str | None,
    count: int,
    *,
    per_transaction: int = 100,
    type_: str = "order.accepted",
    pad: int = 0,
) -> list[int]:
    """Append ``count`` outbox rows through the real write path; returns their ids."""
    ids: list[int] = []
    remaining = count
    while remaining > 0:
        n = min(per_transaction, remaining)
        async with sessionmaker() as session:
            repo = OrderEventRepository.for_system(session)
            rows = [
                repo.append(
                    user_id=user,
                    type_=type_,
                    payload={"marker": uuid.uuid4().hex, "pad": _incompressible(pad)}
                    if pad
                    else {"marker": uuid.uuid4().hex},
                    occurred_at=datetime.now(UTC),
                    account_id=account_id,
                    order_id=None,
                )
                for _ in range(n)
            ]
            await session.commit()
            ids.extend(await published_ids(sessionmaker, [row.payload["marker"] for row in rows]))
        remaining -= n
    return ids


async def published_ids(sessionmaker: SessionMaker, markers: list[str]) -> list[int]:
    """The committed ids of the events carrying these payload markers, in marker order.

    On Postgres the id an insert returns is provisional: the reader-visible one is given at
    COMMIT (app/streaming/outbox.py), so it is read back after the commit.
    """
    async with sessionmaker() as session:
        rows = await session.execute(
            select(OrderEvent.payload["marker"].as_string(), OrderEvent.id).where(
                OrderEvent.payload["marker"].as_string().in_(markers)
            )
        )
        found: dict[str, int] = dict(rows.all())
    return [found[marker] for marker in markers]


def _incompressible(size: int) -> str:
    """Padding that permessage-deflate cannot shrink, so socket buffers really fill."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = TIMEOUT) -> None:
    """Wait until ``check()`` holds, polling; fails with TimeoutError after ``within``."""
    async with asyncio.timeout(within):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.02)


async def event_ids(sessionmaker: SessionMaker, user: str, after: int = 0) -> list[int]:
    """The truth: the user's committed event ids after ``after``, in order."""
    async with sessionmaker() as session:
        rows = await session.execute(
            select(OrderEvent.id)
            .where(OrderEvent.user_id == user, OrderEvent.id > after)
            .order_by(OrderEvent.id)
        )
        return [int(r) for r in rows.scalars().all()]

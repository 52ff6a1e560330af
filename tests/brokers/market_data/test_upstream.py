"""The reconnecting upstream session over a real WebSocket, with a small broker-like server
in this file (auth, subscribe/unsubscribe or a set-replacing subscribe, quotes, heartbeats)
and fault switches: drop the connection, go silent, refuse the key."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve

from app.brokers import errors
from app.brokers.base import (
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    Support,
)
from app.brokers.market_data.subscription import SubscriptionDiff
from app.brokers.market_data.upstream import UpstreamMarketSession
from app.brokers.upstream_stream import frames_logger

CAPS = MarketDataCapabilities(quotes=Support.native, max_symbols=3)


class Server:
    """Answers auth, records subscription messages, pushes quotes and heartbeats."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.connections: list[ServerConnection] = []
        self.refuse_auth = False
        self.silent = False
        self.subscribed: set[str] = set()

    async def handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        self.subscribed = set()
        beat = asyncio.create_task(self._heartbeats(ws))
        try:
            async for raw in ws:
                message = json.loads(raw)
                self.received.append(message)
                action = message["action"]
                if action == "auth":
                    if self.refuse_auth:
                        await ws.send(json.dumps({"T": "error", "code": 402}))
                        await ws.close()
                        return
                    await ws.send(json.dumps({"T": "success"}))
                elif action == "subscribe":
                    self.subscribed |= set(message["quotes"])
                elif action == "unsubscribe":
                    self.subscribed -= set(message["quotes"])
                elif action == "set":
                    self.subscribed = set(message["quotes"])
        except Exception:  # noqa: S110 - a dropped connection ends the handler
            pass
        finally:
            beat.cancel()

    async def _heartbeats(self, ws: ServerConnection) -> None:
        while True:
            await asyncio.sleep(0.05)
            if not self.silent:
                await ws.send(json.dumps({"T": "hb"}))

    async def push(self, symbol: str, bid: str) -> None:
        ws = self.connections[-1]
        if symbol in self.subscribed:
            await ws.send(
                json.dumps({"T": "q", "S": symbol, "bp": bid, "ap": str(Decimal(bid) + 1)})
            )

    def subscriptions(self) -> list[dict[str, Any]]:
        return [m for m in self.received if m["action"] != "auth"]


class ToySession(UpstreamMarketSession):
    broker = "toy"
    name = "toy market stream"
    frames = frames_logger(__name__)

    def __init__(self, url: str, *, replacing: bool = False, **kwargs: Any) -> None:
        super().__init__(CAPS, idle_timeout=kwargs.pop("idle_timeout", 0.3), **kwargs)
        self._url = url
        self._replacing = replacing

    async def _open(self) -> str:
        return self._url

    async def _handshake(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"action": "auth", "key": "k"}))
        answer = json.loads(await ws.recv())
        if answer["T"] != "success":
            raise errors.AuthenticationFailed("the key was refused", broker=self.broker)

    async def _send_subscription(self, ws: ClientConnection, diff: SubscriptionDiff) -> None:
        if self._replacing:
            await ws.send(json.dumps({"action": "set", "quotes": sorted(diff.wanted.quotes)}))
            return
        if diff.added.quotes:
            await ws.send(json.dumps({"action": "subscribe", "quotes": sorted(diff.added.quotes)}))
        if diff.removed.quotes:
            await ws.send(
                json.dumps({"action": "unsubscribe", "quotes": sorted(diff.removed.quotes)})
            )

    async def _read(self, ws: ClientConnection) -> AsyncIterator[MarketEvent]:
        while (frame := await self._recv(ws)) is not None:
            message = json.loads(frame)
            if message["T"] == "q":
                yield MarketQuote(
                    symbol=message["S"],
                    bid=Decimal(message["bp"]),
                    ask=Decimal(message["ap"]),
                    bid_size=None,
                    ask_size=None,
                    ts=datetime.now(UTC),
                    source=MarketDataSource.stream,
                )


@contextlib.asynccontextmanager
async def toy_server() -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    async with serve(server.handler, "127.0.0.1", 0) as running:
        port = next(iter(running.sockets)).getsockname()[1]
        yield server, f"ws://127.0.0.1:{port}"


class Reader:
    def __init__(self, session: UpstreamMarketSession) -> None:
        self.queue: asyncio.Queue[MarketEvent | BaseException] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(session))

    async def _run(self, session: UpstreamMarketSession) -> None:
        try:
            async for event in session.events():
                await self.queue.put(event)
        except Exception as exc:
            await self.queue.put(exc)

    async def take(self, count: int) -> list[MarketEvent | BaseException]:
        return [await asyncio.wait_for(self.queue.get(), 10) for _ in range(count)]


@contextlib.asynccontextmanager
async def reading(session: UpstreamMarketSession) -> AsyncIterator[Reader]:
    reader = Reader(session)
    try:
        yield reader
    finally:
        await session.close()
        await asyncio.wait_for(reader.task, 5)


async def until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - state on the server side
            await asyncio.sleep(0.01)


def quotes(*symbols: str) -> MarketDataSubscription:
    return MarketDataSubscription(quotes=frozenset(symbols))


async def test_an_additive_broker_gets_only_what_changed() -> None:
    async with toy_server() as (server, url):
        session = ToySession(url)
        await session.update(quotes("AAPL"))  # before connecting: sent on connect
        async with reading(session) as reader:
            await until(lambda: server.subscribed == {"AAPL"})
            await session.update(quotes("AAPL", "MSFT"))
            await until(lambda: server.subscribed == {"AAPL", "MSFT"})
            await session.update(quotes("MSFT"))
            await until(lambda: server.subscribed == {"MSFT"})
            await server.push("MSFT", "420")
            [quote] = await reader.take(1)
        assert server.subscriptions() == [
            {"action": "subscribe", "quotes": ["AAPL"]},
            {"action": "subscribe", "quotes": ["MSFT"]},
            {"action": "unsubscribe", "quotes": ["AAPL"]},
        ]
        assert isinstance(quote, MarketQuote)
        assert quote.bid == Decimal("420")


async def test_a_set_replacing_broker_gets_the_whole_set_each_time() -> None:
    async with toy_server() as (server, url):
        session = ToySession(url, replacing=True)
        async with reading(session):
            await until(lambda: session.connects == 1)
            await session.update(quotes("AAPL", "SPY"))
            await session.update(quotes("SPY", "QQQ"))
            await until(lambda: server.subscribed == {"SPY", "QQQ"})
        assert server.subscriptions() == [
            {"action": "set", "quotes": ["AAPL", "SPY"]},
            {"action": "set", "quotes": ["QQQ", "SPY"]},
        ]


async def test_over_the_symbol_cap_is_refused_and_nothing_is_sent() -> None:
    async with toy_server() as (server, url):
        session = ToySession(url)
        await session.update(quotes("AAPL"))
        async with reading(session):
            await until(lambda: server.subscribed == {"AAPL"})
            with pytest.raises(errors.MarketDataLimit, match="at most 3"):
                await session.update(quotes("AAPL", "MSFT", "SPY", "QQQ"))
            with pytest.raises(errors.MarketDataLimit, match="no trades"):
                await session.update(MarketDataSubscription(trades=frozenset({"AAPL"})))
            await asyncio.sleep(0.1)
        assert server.subscriptions() == [{"action": "subscribe", "quotes": ["AAPL"]}]
        assert session.wanted == quotes("AAPL")


async def test_a_drop_is_a_gap_then_resubscribed_with_everything_sent_again() -> None:
    async with toy_server() as (server, url):
        session = ToySession(url)
        await session.update(quotes("AAPL", "MSFT"))
        async with reading(session) as reader:
            await until(lambda: server.subscribed == {"AAPL", "MSFT"})
            await server.connections[0].close()
            gap, back = await reader.take(2)
            await until(lambda: server.subscribed == {"AAPL", "MSFT"})
            await server.push("AAPL", "190")
            [quote] = await reader.take(1)
        assert isinstance(gap, MarketGap)
        assert isinstance(back, MarketResubscribed)
        assert isinstance(quote, MarketQuote)
        assert len(server.connections) == 2
        assert server.subscriptions()[-1] == {"action": "subscribe", "quotes": ["AAPL", "MSFT"]}
        assert (session.connects, session.gaps) == (2, 1)


async def test_a_silent_connection_is_a_gap_and_a_reconnect() -> None:
    async with toy_server() as (server, url):
        session = ToySession(url, idle_timeout=0.2)
        await session.update(quotes("AAPL"))
        async with reading(session) as reader:
            await until(lambda: session.connects == 1)
            server.silent = True
            [gap] = await reader.take(1)
            server.silent = False
            [back] = await reader.take(1)
        assert isinstance(gap, MarketGap)
        assert isinstance(back, MarketResubscribed)
        assert session.silences >= 1


async def test_a_refused_key_is_a_gap_then_the_error() -> None:
    async with toy_server() as (server, url):
        server.refuse_auth = True
        session = ToySession(url)
        async with reading(session) as reader:
            gap, error = await reader.take(2)
        assert isinstance(gap, MarketGap)
        assert isinstance(error, errors.AuthenticationFailed)

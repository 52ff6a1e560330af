"""Reading a ``MarketDataSession``'s events in the background, for tests: a queue of the
events (or the exception that ended them), taken with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from app.brokers.base import MarketDataSession, MarketEvent


class Reader:
    def __init__(self, session: MarketDataSession) -> None:
        self.queue: asyncio.Queue[MarketEvent | BaseException] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(session))

    async def _run(self, session: MarketDataSession) -> None:
        try:
            async for event in session.events():
                await self.queue.put(event)
        except Exception as exc:
            await self.queue.put(exc)

    async def take(self, count: int) -> list[MarketEvent | BaseException]:
        return [await asyncio.wait_for(self.queue.get(), 10) for _ in range(count)]


@contextlib.asynccontextmanager
async def reading(session: MarketDataSession) -> AsyncIterator[Reader]:
    reader = Reader(session)
    try:
        yield reader
    finally:
        await session.close()
        await asyncio.wait_for(reader.task, 5)

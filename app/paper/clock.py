"""Where the paper engine reads "now": the system clock in production, a manual one in tests.

Every fill's time is the clock's reading, so a test that drives a ``ManualClock`` gets the
same fills on every run. ``wait_until`` (``WaitableClock``) is how the paper market-data
session paces itself: in real time on the system clock, and on a ``ManualClock`` exactly
when a test moves it past the instant waited for.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


@runtime_checkable
class WaitableClock(Protocol):
    def now(self) -> datetime: ...

    async def wait_until(self, at: datetime) -> None:
        """Return once the clock reads ``at`` or later."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def wait_until(self, at: datetime) -> None:
        """Sleep until about ``at`` (callers read ``now`` again after waking)."""
        await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("ManualClock needs a timezone-aware datetime")
    return value.astimezone(UTC)


class ManualClock:
    """A clock that moves only when told; raises ``ValueError`` on naive datetimes."""

    def __init__(self, start: datetime) -> None:
        self._now = _require_aware(start)
        self._waiters: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward (or backward, for a negative delta) and return the new time."""
        self._now = self._now + delta
        self._wake()
        return self._now

    def set(self, value: datetime) -> None:
        self._now = _require_aware(value)
        self._wake()

    async def wait_until(self, at: datetime) -> None:
        """Return once a test has moved the clock to ``at`` or later."""
        if self._now >= at:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (at, future)
        self._waiters.append(entry)
        try:
            await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _wake(self) -> None:
        for at, future in list(self._waiters):
            if future.done() or future.get_loop().is_closed():
                self._waiters.remove((at, future))
            elif self._now >= at:
                future.set_result(None)

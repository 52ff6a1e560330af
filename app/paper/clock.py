"""Where the paper engine reads "now": the system clock in production, a manual one in tests.

Every fill's time is the clock's reading, so a test that drives a ``ManualClock`` gets the
same fills on every run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("ManualClock needs a timezone-aware datetime")
    return value.astimezone(UTC)


class ManualClock:
    """A clock that moves only when told; raises ``ValueError`` on naive datetimes."""

    def __init__(self, start: datetime) -> None:
        self._now = _require_aware(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward (or backward, for a negative delta) and return the new time."""
        self._now = self._now + delta
        return self._now

    def set(self, value: datetime) -> None:
        self._now = _require_aware(value)

"""A settable "now" for the polling market-data sessions under test: each test moves it past
a poll interval instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime

START = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

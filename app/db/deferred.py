"""Writes one store hands over to the statement of another, to save a round trip.

A paper placement changes the paper books and then writes the order row, its events and
the Idempotency-Key: two statements on Postgres, one round trip each. With a
``DeferredWrites`` the paper store does not send its writes; it adds them here, and the
order repository sends them as data-modifying CTEs of its own statement (one round trip;
foreign keys are checked at the statement's end, so the CTEs' order does not matter). Only
Postgres defers: SQLite has no data-modifying CTEs, so there each store writes as before.

A part's statements use parameters of its own prefix (the paper store's ``w<n>_``), never
one of the statement that carries them; each part carries a ``key`` naming its shape, so
the combined statement is built once per pair of shapes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DeferredPart:
    key: Hashable
    # Insert/update statements, each RETURNING something (a CTE needs it).
    statements: tuple[Any, ...]
    params: dict[str, Any]


@dataclass(slots=True)
class DeferredWrites:
    parts: list[DeferredPart] = field(default_factory=list)

    def add(self, part: DeferredPart) -> None:
        self.parts.append(part)

"""Gauges sampled on every scrape of ``/metrics``: what an operator must see at a glance.

Unresolved orders (``unknown``, ``pending_submit``) by broker with the age of the oldest,
connections by broker and status, and the kill-switches in force. They come from the
database and the environment, so every instance reports the same values (dashboards and
alerts take ``max`` over instances). A kill-switch's age is how long *this* instance has
seen it (the environment keeps no "since"); it restarts at zero with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from app.brokers.base import OrderStatus
from app.db.repositories.connections import ConnectionRepository
from app.db.repositories.orders import OrderRepository
from app.db.session import SessionMaker
from app.observability import (
    CONNECTIONS,
    KILL_SWITCH,
    KILL_SWITCH_SECONDS,
    ORDERS_UNRESOLVED,
    ORDERS_UNRESOLVED_AGE,
    SAMPLE_FAILURES,
)
from app.services.kill_switches import KillSwitches

log = logging.getLogger(__name__)

SAMPLE_TIMEOUT = 5.0
# With metrics on their own port (BROKERAGE_METRICS_EXPOSURE=port): how often to sample.
SAMPLE_INTERVAL_SECONDS = 15.0
UNRESOLVED = (OrderStatus.unknown.value, OrderStatus.pending_submit.value)
# Always reported (0 when none) for every broker that has a connection, so a rise from
# nothing is a rise and not a series appearing.
CONNECTION_STATUSES = ("active", "expiring", "broken", "revoked")


class OpsGauges:
    """Refreshes the gauges; keeps when each kill-switch was first seen in force."""

    def __init__(self, sessionmaker: SessionMaker) -> None:
        self._sessionmaker = sessionmaker
        self._switch_seen: dict[tuple[str, str], float] = {}

    async def refresh(self, now: datetime) -> None:
        """Sample now. When the database does not answer (within ``SAMPLE_TIMEOUT``), its
        gauges keep their last values and ``brokerage_ops_sample_failures_total`` counts it:
        the scrape itself must still succeed, an outage is when its metrics matter most."""
        self._kill_switches()
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT):
                orders, connections = await self._read()
        except Exception as exc:
            SAMPLE_FAILURES.inc()
            log.warning("ops gauges not sampled", extra={"error": type(exc).__name__})
            return
        # No await below: a concurrent scrape never sees the gauges half rebuilt.
        ORDERS_UNRESOLVED.clear()
        ORDERS_UNRESOLVED_AGE.clear()
        for broker, status, count, oldest in orders:
            ORDERS_UNRESOLVED.labels(broker=broker, status=status).set(count)
            age = max(0.0, (now - oldest).total_seconds())
            ORDERS_UNRESOLVED_AGE.labels(broker=broker, status=status).set(age)
        CONNECTIONS.clear()
        for broker in {b for b, _, _ in connections}:
            for status in CONNECTION_STATUSES:
                CONNECTIONS.labels(broker=broker, status=status).set(0)
        for broker, status, count in connections:
            CONNECTIONS.labels(broker=broker, status=status).set(count)

    async def run(
        self, interval: float, stop: asyncio.Event, clock: Callable[[], datetime]
    ) -> None:
        """Sample every ``interval`` seconds until ``stop``: for metrics served on their own
        port (a thread that only renders the registry and cannot sample the database)."""
        while not stop.is_set():
            await self.refresh(clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def _read(
        self,
    ) -> tuple[list[tuple[str, str, int, datetime]], list[tuple[str, str, int]]]:
        async with self._sessionmaker() as session:
            orders = await OrderRepository.for_system(session).unresolved_summary(UNRESOLVED)
            connections = await ConnectionRepository.for_system(
                session
            ).count_by_broker_and_status()
        return orders, connections

    def _kill_switches(self) -> None:
        monotonic = time.monotonic()
        in_force = {
            (s.variable, s.slug or ""): self._switch_seen.get((s.variable, s.slug or ""), monotonic)
            for s in KillSwitches.from_environ().switches
        }
        self._switch_seen = in_force
        KILL_SWITCH.clear()
        KILL_SWITCH_SECONDS.clear()
        for (variable, broker), since in in_force.items():
            KILL_SWITCH.labels(variable=variable, broker=broker).set(1)
            KILL_SWITCH_SECONDS.labels(variable=variable, broker=broker).set(monotonic - since)

"""The gauges sampled on each scrape: a database that does not answer never fails the
scrape, and the kill-switches are read from the environment every time."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from app.db.session import create_engine, create_sessionmaker
from app.services.clock import utcnow
from app.services.ops_metrics import OpsGauges


def _sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_an_unreachable_database_leaves_the_gauges_and_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BYOB_BROKER_OPSTEST_DISABLED", "1")
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    try:
        gauges = OpsGauges(create_sessionmaker(engine))
        failures = _sample("brokerage_ops_sample_failures_total") or 0.0
        await gauges.refresh(utcnow())  # no exception: the scrape goes on
    finally:
        await engine.dispose()

    assert _sample("brokerage_ops_sample_failures_total") == failures + 1
    switch = {"variable": "BYOB_BROKER_OPSTEST_DISABLED", "broker": "opstest"}
    assert _sample("brokerage_kill_switch_in_force", **switch) == 1
    monkeypatch.delenv("BYOB_BROKER_OPSTEST_DISABLED")
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    try:
        await OpsGauges(create_sessionmaker(engine)).refresh(utcnow())
    finally:
        await engine.dispose()
    assert _sample("brokerage_kill_switch_in_force", **switch) is None

"""The open-order sweep spends the broker's rate budget sparingly: one open order is looked
up at most once per its broker's poll interval, rarely where a stream reports changes.

The paper path is plugged into the registry under the ``paper`` slug (the seam every broker
plugin uses) with an adapter that records which orders were looked up, once as a broker
with an order stream and once as one without.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from app.brokers.base import BrokerAdapter, BrokerOrder, Support
from app.brokers.registry import AdapterContext, BrokerRegistry, default_registry
from app.paper.adapter import PaperAdapter
from app.security.credentials import Credentials
from app.services.clock import utcnow
from app.services.reconciliation import Reconciler
from tests.brokers.tradier.test_api import gateway as tradier_gateway
from tests.conftest import new_user, own_database
from tests.harness import running_app, settings_for_tests

LOOKUPS: list[str] = []


class RecordingAdapter(PaperAdapter):
    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        LOOKUPS.append(broker_order_id)
        return await super().get_order(account_ref, broker_order_id)


def _recording(ctx: AdapterContext, _credentials: Credentials | None) -> BrokerAdapter:
    return RecordingAdapter(ctx.paper_engine, owner=ctx.owner)


def registry_with(order_stream: Support) -> BrokerRegistry:
    registry = default_registry()
    paper = registry.get("paper")
    assert paper is not None
    capabilities = dataclasses.replace(paper.capabilities, order_stream=order_stream)
    registry.register(dataclasses.replace(paper, factory=_recording, capabilities=capabilities))
    return registry


@pytest.mark.parametrize(
    ("order_stream", "interval"),
    [(Support.unsupported, timedelta(seconds=30)), (Support.native, timedelta(seconds=300))],
)
async def test_an_open_order_is_looked_up_once_per_its_poll_interval(
    db_url: str,
    tmp_path: Path,
    order_stream: Support,
    interval: timedelta,
) -> None:
    # A database of its own: the sweep reads every open order, and other tests leave many.
    async with own_database(db_url, tmp_path) as url:
        settings = settings_for_tests(
            url,
            reconcile_unknown_after_seconds=0,
            reconcile_open_polled_seconds=30,
            reconcile_open_streamed_seconds=300,
        )
        async with running_app(settings, registry=registry_with(order_stream)) as h:
            user = new_user()
            _connection, account = await h.paper_account(user)
            placed = await h.place(
                user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
            )
            assert placed.status_code == 201, placed.text
            assert placed.json()["status"] == "accepted"
            broker_order_id = placed.json()["broker_order_id"]
            reconciler = Reconciler(h.state.ctx)
            start = utcnow() + timedelta(minutes=1)

            LOOKUPS.clear()
            await reconciler.run_once(now=start)
            assert LOOKUPS == [broker_order_id]
            await reconciler.run_once(now=start + interval - timedelta(seconds=1))
            assert LOOKUPS == [broker_order_id]  # not due yet: the budget is kept
            await reconciler.run_once(now=start + interval)
            assert LOOKUPS == [broker_order_id, broker_order_id]


def test_each_broker_gets_its_poll_interval() -> None:
    settings = settings_for_tests("sqlite+aiosqlite:///:memory:")
    assert settings.open_order_poll_interval("alpaca", streamed=True) == timedelta(seconds=60)
    assert settings.open_order_poll_interval("ibkr", streamed=False) == timedelta(seconds=5)
    # SnapTrade's budget is shared by every user; Robinhood's is 100 requests/min.
    assert settings.open_order_poll_interval("snaptrade", streamed=False) == timedelta(seconds=30)
    assert settings.open_order_poll_interval("robinhood", streamed=False) == timedelta(seconds=15)


async def test_a_new_open_order_at_a_streaming_broker_waits_one_interval_for_its_lookup(
    db_url: str,
) -> None:
    # Tradier streams order changes: the sweep's lookup is a safety net that spends the
    # credential's rate budget, so a new order is first looked up one interval after its
    # last change. The fake filled it; only a lookup can tell (the stream is not run here).
    async with tradier_gateway(db_url) as gw:
        gw.tradier.account.number = f"VA{uuid.uuid4().int % 10**8:08d}"
        user = new_user()
        [account] = (await gw.connect(user))["accounts"]
        placed = await gw.harness.place(user, account, quantity="1", time_in_force="day")
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] == "submitted"
        await gw.tradier.fake.match()
        settings = gw.harness.state.ctx.settings
        interval = timedelta(seconds=settings.reconcile_open_streamed_seconds)
        reconciler = Reconciler(gw.harness.state.ctx)

        async def status() -> str:
            got = await gw.harness.client.get(
                f"/v1/orders/{placed.json()['id']}", headers=gw.harness.auth(user)
            )
            value: str = got.json()["status"]
            return value

        await reconciler.run_once(now=utcnow() + interval / 2)
        assert await status() == "submitted"  # not looked up yet
        await reconciler.run_once(now=utcnow() + interval + timedelta(seconds=1))
        assert await status() == "filled"

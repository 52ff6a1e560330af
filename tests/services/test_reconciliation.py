"""Ambiguous broker outcomes: the order goes ``unknown`` and is resolved, never resent.

A fault-injecting paper path is plugged into the registry under the ``paper`` slug (the
same seam every broker plugin uses): it either places the order and then loses the answer
(a timeout after acceptance) or loses the request before the broker saw it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
import pytest_asyncio

from app.brokers import errors as broker_errors
from app.brokers.base import BrokerAdapter, BrokerOrder, OrderRequest
from app.brokers.registry import AdapterContext, BrokerRegistry, default_registry
from app.db.repositories.connections import AccountRepository
from app.db.repositories.orders import OrderEventRepository
from app.paper.adapter import PaperAdapter
from app.security.credentials import Credentials
from app.services.clock import utcnow
from app.services.reconciliation import Reconciler
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests

# Which fault the next placement meets: "after" (placed, answer lost) or "before" (never sent).
FAULT: dict[str, str] = {"mode": "after"}


class LostAnswerAdapter(PaperAdapter):
    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        if FAULT["mode"] == "after":
            await super().place_order(account_ref, order)
        raise broker_errors.OutcomeUnknown("read timeout after the request was sent")


def _lost_answer_factory(ctx: AdapterContext, _credentials: Credentials | None) -> BrokerAdapter:
    return LostAnswerAdapter(ctx.paper_engine, owner=ctx.owner)


def faulty_registry() -> BrokerRegistry:
    registry = default_registry()
    paper = registry.get("paper")
    assert paper is not None
    registry.register(dataclasses.replace(paper, factory=_lost_answer_factory))
    return registry


@pytest_asyncio.fixture
async def faulty(db_url: str) -> AsyncIterator[Harness]:
    settings = settings_for_tests(db_url, reconcile_unknown_after_seconds=0)
    async with running_app(settings, registry=faulty_registry()) as harness:
        yield harness


async def _paper_orders(harness: Harness, user: str, account_ref: str) -> int:
    engine = harness.state.ctx.paper_engine
    return len(await engine.history(user, account_ref, None, None, None))


async def _account_ref(harness: Harness, user: str, account_id: str) -> str:
    response = await harness.client.get(f"/v1/accounts/{account_id}", headers=harness.auth(user))
    assert response.status_code == 200
    async with harness.state.ctx.sessionmaker() as session:
        account = await AccountRepository.for_user(session, user).get(account_id)
        assert account is not None
        return account.broker_account_ref


async def test_a_timeout_after_acceptance_is_unknown_then_adopted(faulty: Harness) -> None:
    FAULT["mode"] = "after"
    user = new_user()
    _connection, account = await faulty.paper_account(user)
    key = "lost-answer-1"

    first = await faulty.place(user, account, key=key, quantity="2")
    assert first.status_code == 202, first.text
    order = first.json()
    assert order["status"] == "unknown"
    replay = await faulty.place(user, account, key=key, quantity="2")
    assert (replay.status_code, replay.json()) == (202, order)

    resolved = await Reconciler(faulty.state.ctx).run_once()
    assert resolved >= 1
    got = (await faulty.client.get(f"/v1/orders/{order['id']}", headers=faulty.auth(user))).json()
    assert got["status"] == "filled"
    assert got["filled_quantity"] == "2"
    ref = await _account_ref(faulty, user, account)
    assert await _paper_orders(faulty, user, ref) == 1  # adopted, never sent twice
    async with faulty.state.ctx.sessionmaker() as session:
        events = await OrderEventRepository.for_user(session, user).list_after(0, limit=100)
    types = [e.type for e in events if e.order_id == order["id"]]
    assert types == ["order.pending_submit", "order.unknown", "order.filled"]


async def test_a_request_lost_before_the_broker_is_rejected_after_the_window(
    faulty: Harness,
) -> None:
    FAULT["mode"] = "before"
    user = new_user()
    _connection, account = await faulty.paper_account(user)

    first = await faulty.place(user, account, quantity="1")
    assert first.status_code == 202
    order_id = first.json()["id"]

    reconciler = Reconciler(faulty.state.ctx)
    await reconciler.run_once()  # inside the window: the broker may still surface it
    got = (await faulty.client.get(f"/v1/orders/{order_id}", headers=faulty.auth(user))).json()
    assert got["status"] == "unknown"

    await reconciler.run_once(now=utcnow() + timedelta(minutes=5))
    got = (await faulty.client.get(f"/v1/orders/{order_id}", headers=faulty.auth(user))).json()
    assert got["status"] == "rejected"
    assert got["reject_reason"] == "the broker never received the order"
    ref = await _account_ref(faulty, user, account)
    assert await _paper_orders(faulty, user, ref) == 0
    balances = await faulty.client.get(
        f"/v1/accounts/{account}/balances", headers=faulty.auth(user)
    )
    assert Decimal(balances.json()["cash"]) == Decimal(100000)


@pytest.fixture(autouse=True)
def _reset_fault() -> None:
    FAULT["mode"] = "after"

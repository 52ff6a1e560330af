"""The order path under races and faults, through the API and a fault-injecting paper path.

The ``paper`` slug is replaced in the registry (the seam every broker plugin uses) by an
adapter that runs the real paper broker and, when a test arms a fault, does something a
real broker or network does: answers late after a fill already streamed in, refuses with a
429, fails in an unexpected way. Nothing of ours is mocked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from app.brokers import errors as broker_errors
from app.brokers.base import Balances, BrokerAdapter, BrokerOrder, OrderRequest
from app.brokers.registry import AdapterContext, BrokerRegistry, default_registry
from app.db.models import OrderEvent
from app.db.repositories.connections import AccountRepository
from app.paper.adapter import PaperAdapter
from app.paper.engine import PaperEngine
from app.security.credentials import Credentials
from app.services.clock import utcnow
from app.services.reconciliation import Reconciler
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests

Hook = Callable[["FaultyPaperAdapter", Any], Awaitable[Any]]
HOOKS: dict[str, Hook] = {}


class FaultyPaperAdapter(PaperAdapter):
    """The paper broker, with an optional hook run in place of each call."""

    def __init__(self, engine: PaperEngine, *, owner: str) -> None:
        super().__init__(engine, owner=owner)
        self.engine = engine

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        hook = HOOKS.pop("place", None)
        if hook is None:
            return await super().place_order(account_ref, order)
        result: BrokerOrder = await hook(self, (account_ref, order))
        return result

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        hook = HOOKS.pop("cancel", None)
        if hook is not None:
            await hook(self, (account_ref, broker_order_id))
        return await super().cancel_order(account_ref, broker_order_id)

    async def get_balances(self, account_ref: str) -> Balances:
        hook = HOOKS.pop("balances", None)
        if hook is not None:
            await hook(self, account_ref)
        return await super().get_balances(account_ref)


def _factory(ctx: AdapterContext, _credentials: Credentials | None) -> BrokerAdapter:
    return FaultyPaperAdapter(ctx.paper_engine, owner=ctx.owner)


def faulty_registry() -> BrokerRegistry:
    registry = default_registry()
    paper = registry.get("paper")
    assert paper is not None
    registry.register(dataclasses.replace(paper, factory=_factory))
    return registry


@pytest_asyncio.fixture
async def app(db_url: str) -> AsyncIterator[Harness]:
    HOOKS.clear()
    settings = settings_for_tests(db_url, reconcile_unknown_after_seconds=0)
    async with running_app(settings, registry=faulty_registry()) as harness:
        yield harness
    HOOKS.clear()


async def _order(harness: Harness, user: str, order_id: str) -> dict[str, Any]:
    response = await harness.client.get(f"/v1/orders/{order_id}", headers=harness.auth(user))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _events(harness: Harness, order_id: str) -> list[tuple[str, str]]:
    async with harness.state.ctx.sessionmaker() as session:
        rows = (
            (
                await session.execute(
                    select(OrderEvent)
                    .where(OrderEvent.order_id == order_id)
                    .order_by(OrderEvent.id)
                )
            )
            .scalars()
            .all()
        )
    return [(e.type, e.payload["filled_quantity"]) for e in rows]


async def _account_ref(harness: Harness, user: str, account_id: str) -> str:
    async with harness.state.ctx.sessionmaker() as session:
        account = await AccountRepository.for_user(session, user).get(account_id)
        assert account is not None
        return account.broker_account_ref


def _never_backwards(events: list[tuple[str, str]]) -> None:
    filled = [Decimal(f) for _, f in events]
    assert filled == sorted(filled), events
    terminal = [i for i, (t, _) in enumerate(events) if t in ("order.filled", "order.rejected")]
    if terminal:
        assert terminal[0] == len(events) - 1, events


async def test_a_fill_streamed_before_the_placement_answer_is_not_overwritten(
    app: Harness,
) -> None:
    user = new_user()
    _, account = await app.paper_account(user, "100000000")

    async def fill_then_answer_late(adapter: FaultyPaperAdapter, args: Any) -> BrokerOrder:
        ref, request = args
        first = await PaperAdapter.place_order(adapter, ref, request)  # partially filled
        for _ in range(30):  # the fills stream in through the ingest before we answer
            await app.tick()
        return first

    HOOKS["place"] = fill_then_answer_late
    placed = await app.place(user, account, symbol="SPY", quantity="3000")

    assert placed.status_code == 201, placed.text
    order = await _order(app, user, placed.json()["id"])
    assert (order["status"], order["filled_quantity"]) == ("filled", "3000")
    events = await _events(app, order["id"])
    _never_backwards(events)


async def test_a_fill_during_a_cancel_wins_and_stays_final(app: Harness) -> None:
    user = new_user()
    _, account = await app.paper_account(user, "100000000")
    placed = await app.place(user, account, symbol="SPY", quantity="3000")
    assert placed.json()["status"] == "partially_filled"

    async def fill_first(_adapter: FaultyPaperAdapter, _args: Any) -> None:
        for _ in range(30):
            await app.tick()

    HOOKS["cancel"] = fill_first
    canceled = await app.client.delete(f"/v1/orders/{placed.json()['id']}", headers=app.auth(user))

    assert canceled.status_code == 409
    assert canceled.json()["code"] == "order_not_modifiable"
    order = await _order(app, user, placed.json()["id"])
    assert (order["status"], order["filled_quantity"]) == ("filled", "3000")
    _never_backwards(await _events(app, order["id"]))


async def test_a_fill_whose_update_was_lost_is_found_by_reconciliation(app: Harness) -> None:
    user = new_user()
    _, account = await app.paper_account(user)
    ask = Decimal(
        (await app.client.get("/v1/quotes?symbols=AAPL", headers=app.auth(user))).json()["quotes"][
            "AAPL"
        ]["ask"]
    )
    resting = await app.place(
        user,
        account,
        quantity="2",
        order_type="limit",
        limit_price=str((ask * Decimal("0.97")).quantize(Decimal("0.01"))),
        time_in_force="gtc",
    )
    resting_id = resting.json()["id"]
    assert resting.json()["status"] == "accepted"

    # Another instance's ticker fills it and crashes before delivering the update.
    engine = app.state.ctx.paper_engine
    silent = PaperEngine(app.state.ctx.sessionmaker, engine.quote_source, app.clock, sink=None)
    ref = await _account_ref(app, user, account)
    for _ in range(3600):
        app.clock.advance(timedelta(seconds=1))
        await silent.tick()
        if (await engine.get_order(user, ref, resting.json()["broker_order_id"])).status.value == (
            "filled"
        ):
            break
    assert (await _order(app, user, resting_id))["status"] == "accepted"  # the update was lost

    await Reconciler(app.state.ctx).run_once(now=utcnow() + timedelta(seconds=5))

    assert (await _order(app, user, resting_id))["status"] == "filled"


async def test_a_rate_limited_placement_releases_the_key_for_the_retry(app: Harness) -> None:
    user = new_user()
    _, account = await app.paper_account(user)

    async def refuse(_adapter: FaultyPaperAdapter, _args: Any) -> BrokerOrder:
        raise broker_errors.RateLimitExceeded("slow down", retry_after=2.5)

    HOOKS["place"] = refuse
    first = await app.place(user, account, key="retry-after-429")
    assert first.status_code == 429
    assert first.headers["retry-after"] == "3"
    assert first.json()["code"] == "rate_limited"
    assert first.json()["retryable"] is True

    retried = await app.place(user, account, key="retry-after-429")
    assert retried.status_code == 201, retried.text
    assert retried.json()["status"] == "filled"
    replay = await app.place(user, account, key="retry-after-429")
    assert replay.json()["id"] == retried.json()["id"]


async def test_an_unexpected_error_in_placement_is_unknown_and_reconciled(app: Harness) -> None:
    user = new_user()
    _, account = await app.paper_account(user)

    async def place_then_crash(adapter: FaultyPaperAdapter, args: Any) -> BrokerOrder:
        await PaperAdapter.place_order(adapter, *args)
        raise RuntimeError("library bug after the request went out")

    HOOKS["place"] = place_then_crash
    placed = await app.place(user, account, key="crash-after-send")
    assert placed.status_code == 202, placed.text
    assert placed.json()["status"] == "unknown"
    assert (await app.place(user, account, key="crash-after-send")).status_code == 202

    await Reconciler(app.state.ctx).run_once()
    assert (await _order(app, user, placed.json()["id"]))["status"] == "filled"


async def test_an_unexpected_error_is_a_500_problem_with_the_request_id(app: Harness) -> None:
    user = new_user()
    _, account = await app.paper_account(user)

    async def crash(_adapter: FaultyPaperAdapter, _args: Any) -> None:
        raise RuntimeError("boom")

    HOOKS["balances"] = crash
    response = await app.client.get(
        f"/v1/accounts/{account}/balances", headers=app.auth(user, **{"X-Request-ID": "req-500"})
    )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["x-request-id"] == "req-500"
    assert response.json()["code"] == "internal_error"
    assert "boom" not in response.text


async def test_a_limit_price_only_change_reaches_the_row_and_the_events(app: Harness) -> None:
    user = new_user()
    _, account = await app.paper_account(user)
    placed = await app.place(
        user, account, quantity="1", order_type="limit", limit_price="10.00", time_in_force="gtc"
    )
    order_id = placed.json()["id"]

    changed = await app.client.patch(
        f"/v1/orders/{order_id}", json={"limit_price": "11.00"}, headers=app.auth(user)
    )

    assert changed.status_code == 200, changed.text
    assert changed.json()["limit_price"] == "11"
    assert (await _order(app, user, order_id))["limit_price"] == "11"
    events = await _events(app, order_id)
    assert [t for t, _ in events][-2:] == ["order.pending_replace", "order.accepted"]
    ref = await _account_ref(app, user, account)
    book = await app.state.ctx.paper_engine.get_order(user, ref, placed.json()["broker_order_id"])
    assert book.limit_price == Decimal("11.00")


async def test_disconnecting_cancels_the_working_orders(app: Harness) -> None:
    user = new_user()
    connection, account = await app.paper_account(user)
    placed = await app.place(
        user, account, quantity="5", order_type="limit", limit_price="10.00", time_in_force="gtc"
    )

    deleted = await app.client.delete(f"/v1/connections/{connection}", headers=app.auth(user))

    assert deleted.status_code == 204
    assert (await _order(app, user, placed.json()["id"]))["status"] == "canceled"
    ref = await _account_ref(app, user, account)
    book = await app.state.ctx.paper_engine.get_order(user, ref, placed.json()["broker_order_id"])
    assert book.status.value == "canceled"


@pytest.mark.parametrize(
    "query", ["end=9999-12-31T23:59:59-05:00", "start=0001-01-01T00:00:00%2B05:00"]
)
async def test_dates_utc_cannot_hold_are_the_edge_of_the_range(app: Harness, query: str) -> None:
    # Valid RFC 3339 date-times (the OpenAPI document allows them): a range filter past
    # what UTC can hold means "from the beginning" / "to the end" (issue 14; was a 422).
    user = new_user()
    _, account = await app.paper_account(user)
    response = await app.client.get(
        f"/v1/accounts/{account}/transactions?{query}", headers=app.auth(user)
    )
    assert response.status_code == 200, response.text


async def test_a_huge_order_is_refused_cleanly(app: Harness) -> None:
    user = new_user()
    _, account = await app.paper_account(user)
    response = await app.place(
        user,
        account,
        quantity="999999999999999999",
        order_type="limit",
        limit_price="999999999999999999.9999999999",
        time_in_force="gtc",
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "insufficient_funds"

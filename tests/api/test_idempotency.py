"""Idempotency-Key semantics exactly as API.md says, concurrency-safe on Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.db.models import Account, IdempotencyKey, Order, PaperAccount, PaperOrder
from app.observability import ORDERS_TOTAL
from app.services.clock import utcnow
from tests.conftest import new_user
from tests.harness import Harness


async def _orders_of(harness: Harness, account: str) -> int:
    async with harness.state.ctx.sessionmaker() as session:
        return int(
            (
                await session.execute(select(func.count()).where(Order.account_id == account))
            ).scalar_one()
        )


async def test_same_key_same_body_replays_the_first_response(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    first = await harness.place(user, account, key=key, quantity="2")
    await harness.tick()
    second = await harness.place(user, account, key=key, quantity="2")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert await _orders_of(harness, account) == 1


async def test_an_equal_decimal_spelling_is_the_same_request(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    first = await harness.place(user, account, key=key, quantity="2")
    second = await harness.place(user, account, key=key, quantity="2.0")
    assert second.status_code == first.status_code
    assert second.json() == first.json()


async def test_a_rejection_is_replayed_too(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user, starting_cash="10")
    key = uuid.uuid4().hex
    first = await harness.place(user, account, key=key, quantity="5")
    second = await harness.place(user, account, key=key, quantity="5")
    assert first.status_code == second.status_code == 422
    assert first.json() == second.json()
    assert await _orders_of(harness, account) == 1


async def test_same_key_different_body_is_422(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    await harness.place(user, account, key=key, quantity="1")
    response = await harness.place(user, account, key=key, quantity="2")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert await _orders_of(harness, account) == 1


async def test_same_key_on_another_account_is_a_different_request(harness: Harness) -> None:
    user = new_user()
    _, first_account = await harness.paper_account(user)
    _, second_account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    await harness.place(user, first_account, key=key)
    response = await harness.place(user, second_account, key=key)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


async def test_missing_key_is_400_and_writes_nothing(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    response = await harness.client.post(
        f"/v1/accounts/{account}/orders",
        json={"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"},
        headers=harness.auth(user),
    )
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"
    assert await _orders_of(harness, account) == 0


async def test_an_overlong_key_is_refused(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    response = await harness.place(user, account, key="k" * 256)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"


async def test_key_in_flight_is_409(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    await harness.place(user, account, key=key)
    async with harness.state.ctx.sessionmaker() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == user, IdempotencyKey.key == key)
            .values(state="in_flight", response_status=None, response_body=None)
        )
        await session.commit()
    response = await harness.place(user, account, key=key)
    assert response.status_code == 409
    assert response.json()["code"] == "request_in_progress"
    assert response.headers["retry-after"] == "1"


async def _expire(harness: Harness, user: str, key: str) -> None:
    """Make the user's record of ``key`` expired a second ago."""
    async with harness.state.ctx.sessionmaker() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == user, IdempotencyKey.key == key)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def test_an_expired_key_counts_as_new(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    first = await harness.place(user, account, key=key)
    await _expire(harness, user, key)
    second = await harness.place(user, account, key=key)
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    assert await _orders_of(harness, account) == 2


async def test_keys_are_per_user(harness: Harness) -> None:
    alice, bob = new_user("alice"), new_user("bob")
    _, alice_account = await harness.paper_account(alice)
    _, bob_account = await harness.paper_account(bob)
    key = uuid.uuid4().hex
    a = await harness.place(alice, alice_account, key=key)
    b = await harness.place(bob, bob_account, key=key)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_concurrent_identical_requests_make_one_order(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    responses = await asyncio.gather(
        *(harness.place(user, account, key=key, quantity="1") for _ in range(12))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    created = [r.json() for r in responses if r.status_code == 201]
    assert created
    assert all(body["id"] == created[0]["id"] for body in created)
    assert await _orders_of(harness, account) == 1


async def _paper_books(harness: Harness, account: str) -> tuple[int, str]:
    """(paper orders, cash) of a gateway paper account's books."""
    async with harness.state.ctx.sessionmaker() as session:
        ref = (
            await session.execute(select(Account.broker_account_ref).where(Account.id == account))
        ).scalar_one()
        orders = (
            await session.execute(select(func.count()).where(PaperOrder.paper_account_id == ref))
        ).scalar_one()
        cash = (
            await session.execute(select(PaperAccount.cash).where(PaperAccount.id == ref))
        ).scalar_one()
    return int(orders), str(cash)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_paper_placement_that_loses_its_key_race_leaves_no_paper_state(
    harness: Harness,
) -> None:
    """The paper key is claimed last, with the answer: two requests with one key on two
    accounts (no shared paper lock) both reach the paper books; the one whose key insert
    meets the other's rolls its placement back whole and is answered as the key says (422:
    another request body)."""
    user = new_user()
    _, first = await harness.paper_account(user)
    _, second = await harness.paper_account(user)
    before = await _paper_books(harness, first), await _paper_books(harness, second)
    key = uuid.uuid4().hex
    for _ in range(5):
        key = uuid.uuid4().hex
        responses = await asyncio.gather(
            harness.place(user, first, key=key, quantity="1"),
            harness.place(user, second, key=key, quantity="1"),
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses in ([201, 409], [201, 422]), [r.text for r in responses]
    placed = (await _orders_of(harness, first)) + (await _orders_of(harness, second))
    assert placed == 5
    after = await _paper_books(harness, first), await _paper_books(harness, second)
    assert after[0][0] - before[0][0] + after[1][0] - before[1][0] == 5
    assert await _orders_of(harness, first) == after[0][0] - before[0][0]


async def test_an_expired_key_meeting_a_refusal_is_recorded_afresh(harness: Harness) -> None:
    """A refused paper order whose key's old record expired: the refusal is stored under the
    key (the expired record deleted), and replayed."""
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    first = await harness.place(user, account, key=key, quantity="1")
    assert first.status_code == 201
    await _expire(harness, user, key)
    refused = await harness.place(user, account, key=key, quantity="1000000")
    assert refused.status_code == 422, refused.text
    again = await harness.place(user, account, key=key, quantity="1000000")
    assert again.status_code == 422
    assert again.json() == refused.json()
    assert await _orders_of(harness, account) == 2


async def test_a_replayed_paper_order_is_not_counted_again(harness: Harness) -> None:
    """The replay runs the placement and rolls it back (the key is claimed last): the
    orders metric counts the order once."""
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    first = await harness.place(user, account, key=key, quantity="1")
    status = first.json()["status"]
    counted = ORDERS_TOTAL.labels(broker="paper", outcome=status)._value.get()
    again = await harness.place(user, account, key=key, quantity="1")
    assert again.json() == first.json()
    assert ORDERS_TOTAL.labels(broker="paper", outcome=status)._value.get() == counted
    assert await _orders_of(harness, account) == 1

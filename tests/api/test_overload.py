"""Past capacity the order path degrades, never breaks: order writes beyond the in-flight
limit are refused at the door (503 ``overloaded``, Retry-After, nothing written), and a
request that gets no database connection in time is a 503 too, never a 5xx."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.api.load_shedding import is_order_write
from app.db.models import IdempotencyKey, Order
from tests.conftest import new_user
from tests.harness import running_app, settings_for_tests


def assert_overloaded(
    response_status: int, headers: dict[str, str], body: dict[str, object]
) -> None:
    assert response_status == 503
    assert headers["retry-after"] == "1"
    assert headers["content-type"].startswith("application/problem+json")
    assert (body["code"], body["retryable"]) == ("overloaded", True)


async def test_order_writes_past_the_limit_are_refused_before_anything_is_written(
    db_url: str,
) -> None:
    async with running_app(settings_for_tests(db_url, max_inflight_orders=2)) as h:
        user = new_user()
        _, account = await h.paper_account(user)
        keys = [uuid.uuid4().hex for _ in range(24)]
        responses = await asyncio.gather(*(h.place(user, account, key) for key in keys))
        placed = [k for k, r in zip(keys, responses, strict=True) if r.status_code == 201]
        shed = [k for k, r in zip(keys, responses, strict=True) if r.status_code != 201]
        assert placed
        assert shed
        for key, response in zip(keys, responses, strict=True):
            if key in shed:
                assert_overloaded(response.status_code, dict(response.headers), response.json())

        async with h.state.ctx.sessionmaker() as session:
            held = await session.scalar(
                select(func.count())
                .select_from(IdempotencyKey)
                .where(IdempotencyKey.user_id == user, IdempotencyKey.key.in_(shed))
            )
        assert held == 0  # a refused request claimed no key

        # Retried one at a time, each refused request is placed, once.
        for key in shed:
            assert (await h.place(user, account, key)).status_code == 201
        async with h.state.ctx.sessionmaker() as session:
            orders = await session.scalar(
                select(func.count()).select_from(Order).where(Order.user_id == user)
            )
        assert orders == len(keys)
        # Reads are never shed.
        reads = await asyncio.gather(
            *(
                h.client.get(f"/v1/accounts/{account}/orders", headers=h.auth(user))
                for _ in range(8)
            )
        )
        assert {r.status_code for r in reads} == {200}


@pytest.mark.postgres_only
async def test_no_database_connection_in_time_is_503_overloaded(postgres_url: str) -> None:
    settings = settings_for_tests(
        postgres_url, db_pool_size=3, db_max_overflow=0, db_pool_timeout_seconds=0.3
    )
    async with running_app(settings) as h, contextlib.AsyncExitStack() as held:
        user = new_user()
        # Take every connection the pool still has free (the process may hold some itself).
        while True:
            session = await held.enter_async_context(h.state.ctx.sessionmaker())
            try:
                await session.execute(text("SELECT 1"))
            except PoolTimeout:
                break
        response = await h.client.get("/v1/accounts", headers=h.auth(user))
        assert_overloaded(response.status_code, dict(response.headers), response.json())
        await held.aclose()
        assert (await h.client.get("/v1/accounts", headers=h.auth(user))).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "counted"),
    [
        ("POST", "/v1/accounts/acc_1/orders", True),
        ("POST", "/v1/orders", True),
        ("PATCH", "/v1/orders/ord_1", True),
        ("DELETE", "/v1/orders/ord_1", True),
        ("POST", "/v1/orders/route", False),
        ("POST", "/v1/accounts/acc_1/orders/preview", False),
        ("GET", "/v1/accounts/acc_1/orders", False),
        ("GET", "/v1/orders/ord_1", False),
        ("POST", "/v1/connections", False),
    ],
)
def test_only_order_writes_count_toward_the_limit(method: str, path: str, counted: bool) -> None:
    assert is_order_write(method, path) is counted

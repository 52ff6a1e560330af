"""Bad input: a 4xx problem+json with a stable code, and nothing written."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db.models import IdempotencyKey, Order, OrderEvent
from tests.conftest import new_user
from tests.harness import Harness

GOOD = {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}


async def _written(harness: Harness, user: str) -> tuple[int, int, int]:
    async with harness.state.ctx.sessionmaker() as session:
        orders = (
            await session.execute(select(func.count()).where(Order.user_id == user))
        ).scalar_one()
        events = (
            await session.execute(
                select(func.count()).where(
                    OrderEvent.user_id == user, OrderEvent.order_id.is_not(None)
                )
            )
        ).scalar_one()
        keys = (
            await session.execute(select(func.count()).where(IdempotencyKey.user_id == user))
        ).scalar_one()
    return int(orders), int(events), int(keys)


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("unknown field", {**GOOD, "leverage": "10"}, 422, "validation_error"),
    ("zero quantity", {**GOOD, "quantity": "0"}, 422, "validation_error"),
    ("negative quantity", {**GOOD, "quantity": "-1"}, 422, "validation_error"),
    ("quantity as a JSON number", {**GOOD, "quantity": 1}, 422, "validation_error"),
    ("non-decimal quantity", {**GOOD, "quantity": "ten"}, 422, "validation_error"),
    ("NaN quantity", {**GOOD, "quantity": "NaN"}, 422, "validation_error"),
    ("exponent quantity", {**GOOD, "quantity": "1e3"}, 422, "validation_error"),
    ("too many decimals", {**GOOD, "quantity": "0.0000000001"}, 422, "validation_error"),
    ("limit without price", {**GOOD, "order_type": "limit"}, 422, "validation_error"),
    ("stop without stop price", {**GOOD, "order_type": "stop"}, 422, "validation_error"),
    ("market with a limit price", {**GOOD, "limit_price": "10"}, 422, "validation_error"),
    ("unknown side", {**GOOD, "side": "hold"}, 422, "validation_error"),
    ("unknown order type", {**GOOD, "order_type": "trailing"}, 422, "validation_error"),
    ("unknown time in force", {**GOOD, "time_in_force": "opg"}, 422, "validation_error"),
    ("missing symbol", {k: v for k, v in GOOD.items() if k != "symbol"}, 422, "validation_error"),
    ("not an object", ["AAPL"], 422, "validation_error"),
    ("unknown symbol", {**GOOD, "symbol": "NOTREAL"}, 422, "unknown_symbol"),
    # The paper broker trades options, but not contracts that have expired (by the service
    # clock, before the broker is asked).
    ("expired option", {**GOOD, "symbol": "AAPL260116C00150000"}, 422, "option_expired"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "code"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_order_bodies(
    harness: Harness, case: str, body: Any, status: int, code: str
) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    response = await harness.client.post(
        f"/v1/accounts/{account}/orders",
        json=body,
        headers=harness.auth(user, **{"Idempotency-Key": uuid.uuid4().hex}),
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert {"type", "title", "detail", "retryable"} <= set(problem)
    assert await _written(harness, user) == (0, 0, 0)


async def test_malformed_json(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    response = await harness.client.post(
        f"/v1/accounts/{account}/orders",
        content=b'{"symbol": "AAPL", ',
        headers=harness.auth(user, **{"Idempotency-Key": "k1", "Content-Type": "application/json"}),
    )
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"
    assert await _written(harness, user) == (0, 0, 0)


async def test_body_over_the_size_limit(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    huge = json.dumps({**GOOD, "symbol": "A" * (harness.settings.max_body_bytes + 10)})
    response = await harness.client.post(
        f"/v1/accounts/{account}/orders",
        content=huge.encode(),
        headers=harness.auth(user, **{"Idempotency-Key": "k2", "Content-Type": "application/json"}),
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert await _written(harness, user) == (0, 0, 0)


async def test_unknown_account(harness: Harness) -> None:
    user = new_user()
    await harness.paper_account(user)
    response = await harness.place(user, "acc_" + uuid.uuid4().hex)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert await _written(harness, user) == (0, 0, 0)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"broker": "nope"}, "unknown_broker"),
        ({"broker": "paper", "options": {"starting_cash": "-5"}}, "validation_error"),
        ({"broker": "paper", "options": {"starting_cash": "abc"}}, "validation_error"),
        ({"broker": "paper", "options": {"colour": "red"}}, "validation_error"),
        ({"broker": "paper", "credentials": {"api_key": "x"}}, "validation_error"),
        ({"broker": "paper", "extra": 1}, "validation_error"),
    ],
)
async def test_bad_connection_bodies(harness: Harness, body: dict[str, Any], code: str) -> None:
    user = new_user()
    response = await harness.client.post("/v1/connections", json=body, headers=harness.auth(user))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    listed = await harness.client.get("/v1/connections", headers=harness.auth(user))
    assert listed.json()["items"] == []


async def test_bad_cursor_and_limit(harness: Harness) -> None:
    user = new_user()
    bad_cursor = await harness.client.get("/v1/accounts?cursor=!!!", headers=harness.auth(user))
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["code"] == "invalid_cursor"
    too_many = await harness.client.get("/v1/accounts?limit=501", headers=harness.auth(user))
    assert too_many.status_code == 422
    assert too_many.json()["code"] == "validation_error"


async def test_empty_modify_body(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    order = (await harness.place(user, account)).json()
    response = await harness.client.patch(
        f"/v1/orders/{order['id']}", json={}, headers=harness.auth(user)
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "unauthorized"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "unauthorized"),
    ],
)
async def test_authentication_errors(
    harness: Harness, headers: dict[str, str], status: int, code: str
) -> None:
    response = await harness.client.get("/v1/accounts", headers=headers)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "www-authenticate" in response.headers

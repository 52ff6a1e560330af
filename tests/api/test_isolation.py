"""Tenant isolation: every route that takes an id answers 404 for another user's object.

The matrix is checked against the app's own route table, so a new ``{id}`` route without a
row here fails the suite.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select

from app.db.models import Connection, Order
from tests.conftest import new_user
from tests.harness import Harness

# (method, path template) -> how to call it with the victim's ids
MATRIX: dict[tuple[str, str], tuple[str, str, dict[str, object] | None]] = {
    ("GET", "/v1/connections/{connection_id}"): ("GET", "/v1/connections/{connection}", None),
    ("DELETE", "/v1/connections/{connection_id}"): ("DELETE", "/v1/connections/{connection}", None),
    ("POST", "/v1/connections/{connection_id}/portal"): (
        "POST",
        "/v1/connections/{connection}/portal",
        None,
    ),
    ("POST", "/v1/connections/{connection_id}/refresh"): (
        "POST",
        "/v1/connections/{connection}/refresh",
        None,
    ),
    ("PUT", "/v1/connections/{connection_id}/credentials"): (
        "PUT",
        "/v1/connections/{connection}/credentials",
        {"credentials": {"api_key_id": "PKATTACKER", "api_secret_key": "attacker-secret"}},
    ),
    ("GET", "/v1/accounts/{account_id}"): ("GET", "/v1/accounts/{account}", None),
    ("GET", "/v1/accounts/{account_id}/balances"): ("GET", "/v1/accounts/{account}/balances", None),
    ("GET", "/v1/accounts/{account_id}/positions"): (
        "GET",
        "/v1/accounts/{account}/positions",
        None,
    ),
    ("GET", "/v1/accounts/{account_id}/positions/{symbol}"): (
        "GET",
        "/v1/accounts/{account}/positions/AAPL",
        None,
    ),
    ("GET", "/v1/accounts/{account_id}/transactions"): (
        "GET",
        "/v1/accounts/{account}/transactions",
        None,
    ),
    ("GET", "/v1/accounts/{account_id}/orders"): ("GET", "/v1/accounts/{account}/orders", None),
    ("POST", "/v1/accounts/{account_id}/orders"): (
        "POST",
        "/v1/accounts/{account}/orders",
        {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"},
    ),
    ("POST", "/v1/accounts/{account_id}/orders/preview"): (
        "POST",
        "/v1/accounts/{account}/orders/preview",
        {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"},
    ),
    ("GET", "/v1/accounts/{account_id}/options/expirations"): (
        "GET",
        "/v1/accounts/{account}/options/expirations?underlying=AAPL",
        None,
    ),
    ("GET", "/v1/accounts/{account_id}/options/chain"): (
        "GET",
        "/v1/accounts/{account}/options/chain?underlying=AAPL",
        None,
    ),
    ("GET", "/v1/accounts/{account_id}/bars"): (
        "GET",
        "/v1/accounts/{account}/bars?symbol=AAPL&interval=1m",
        None,
    ),
    ("POST", "/v1/accounts/{account_id}/positions/{symbol}/exercise"): (
        "POST",
        "/v1/accounts/{account}/positions/AAPL261218C00150000/exercise",
        {"action": "exercise"},
    ),
    ("GET", "/v1/orders/{order_id}"): ("GET", "/v1/orders/{order}", None),
    ("PATCH", "/v1/orders/{order_id}"): ("PATCH", "/v1/orders/{order}", {"limit_price": "1.00"}),
    ("DELETE", "/v1/orders/{order_id}"): ("DELETE", "/v1/orders/{order}", None),
    ("GET", "/v1/routes/{route_id}"): ("GET", "/v1/routes/{route}", None),
}


def _id_routes(harness: Harness) -> set[tuple[str, str]]:
    """Every operation whose path takes an object id, from the app's own OpenAPI route table.

    ``{slug}`` names a broker, not anything a user owns (the OAuth routes): not in the matrix.
    """
    return {
        (method.upper(), path)
        for path, operations in harness.app.openapi()["paths"].items()
        if "{" in path.replace("{slug}", "")
        for method in operations
    }


async def test_the_matrix_covers_every_id_route(harness: Harness) -> None:
    assert _id_routes(harness) == set(MATRIX)


async def test_another_users_ids_answer_404_and_change_nothing(harness: Harness) -> None:
    victim, attacker = new_user("victim"), new_user("attacker")
    connection, account = await harness.paper_account(victim)
    quote = (
        await harness.client.get("/v1/quotes?symbols=AAPL", headers=harness.auth(victim))
    ).json()
    low = str((Decimal(quote["quotes"]["AAPL"]["bid"]) / 2).quantize(Decimal("0.01")))
    order = (
        await harness.place(
            victim, account, order_type="limit", limit_price=low, time_in_force="gtc"
        )
    ).json()
    assert order["status"] == "accepted"
    routed = await harness.client.post(
        "/v1/orders",
        json={"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}
        | {"account_id": "auto"},
        headers=harness.auth(victim, **{"Idempotency-Key": uuid.uuid4().hex}),
    )
    assert routed.status_code == 201, routed.text
    await harness.paper_account(attacker)
    ids = {
        "connection": connection,
        "account": account,
        "order": order["id"],
        "route": routed.json()["route"]["id"],
    }

    for method, path, body in MATRIX.values():
        response = await harness.client.request(
            method,
            path.format(**ids),
            json=body,
            headers=harness.auth(attacker, **{"Idempotency-Key": uuid.uuid4().hex}),
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"

    quotes = await harness.client.get(
        f"/v1/quotes?symbols=AAPL&account_id={account}", headers=harness.auth(attacker)
    )
    assert quotes.status_code == 404

    async with harness.state.ctx.sessionmaker() as session:
        row = (await session.execute(select(Order).where(Order.id == order["id"]))).scalar_one()
        conn = (
            await session.execute(select(Connection).where(Connection.id == connection))
        ).scalar_one()
        attacker_orders = (
            (await session.execute(select(Order).where(Order.user_id == attacker))).scalars().all()
        )
    assert row.status == "accepted"
    assert str(row.limit_price) == low or row.limit_price == Decimal(low)
    assert conn.status == "active"
    assert attacker_orders == []

    listed = await harness.client.get("/v1/accounts", headers=harness.auth(attacker))
    assert account not in [a["id"] for a in listed.json()["items"]]

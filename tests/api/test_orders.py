"""The order path end to end on the paper broker, on Postgres and SQLite."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from app.db.models import Order, OrderEvent
from tests.conftest import new_user
from tests.harness import Harness


async def test_market_order_fills_and_shows_in_positions(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    response = await harness.place(user, account, symbol="AAPL", quantity="3")
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] in ("filled", "partially_filled")
    assert order["client_order_id"].startswith("bg")
    assert order["broker_order_id"]
    for _ in range(10):
        if order["status"] == "filled":
            break
        await harness.tick()
        order = (
            await harness.client.get(f"/v1/orders/{order['id']}", headers=harness.auth(user))
        ).json()
    assert order["status"] == "filled"
    assert order["filled_quantity"] == "3"
    assert Decimal(order["avg_fill_price"]) > 0

    positions = await harness.client.get(
        f"/v1/accounts/{account}/positions", headers=harness.auth(user)
    )
    assert positions.status_code == 200
    [position] = positions.json()["items"]
    assert position["symbol"] == "AAPL"
    assert position["quantity"] == "3"
    assert position["avg_cost"] == order["avg_fill_price"]

    balances = (
        await harness.client.get(f"/v1/accounts/{account}/balances", headers=harness.auth(user))
    ).json()
    spent = Decimal(order["avg_fill_price"]) * 3
    assert Decimal(balances["cash"]) == Decimal("100000") - spent


async def test_every_status_change_is_an_event_in_the_same_transaction(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    order = (await harness.place(user, account, quantity="1")).json()
    async with harness.state.ctx.sessionmaker() as session:
        events = (
            (
                await session.execute(
                    select(OrderEvent)
                    .where(OrderEvent.order_id == order["id"])
                    .order_by(OrderEvent.id)
                )
            )
            .scalars()
            .all()
        )
        row = (await session.execute(select(Order).where(Order.id == order["id"]))).scalar_one()
    types = [e.type for e in events]
    assert types[0] == "order.pending_submit"
    assert types[-1] == f"order.{row.status}"
    assert [e.id for e in events] == sorted(e.id for e in events)


async def test_resting_limit_order_modify_and_cancel(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    quote = (
        await harness.client.get("/v1/quotes?symbols=MSFT", headers=harness.auth(user))
    ).json()["quotes"]["MSFT"]
    far_below = str((Decimal(quote["bid"]) * Decimal("0.5")).quantize(Decimal("0.01")))
    placed = await harness.place(
        user,
        account,
        symbol="MSFT",
        quantity="2",
        order_type="limit",
        limit_price=far_below,
        time_in_force="gtc",
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "accepted"

    await harness.tick()
    still = (
        await harness.client.get(f"/v1/orders/{order['id']}", headers=harness.auth(user))
    ).json()
    assert still["status"] == "accepted"

    lower = str((Decimal(far_below) - 1).quantize(Decimal("0.01")))
    modified = await harness.client.patch(
        f"/v1/orders/{order['id']}",
        json={"limit_price": lower, "quantity": "3"},
        headers=harness.auth(user),
    )
    assert modified.status_code == 200, modified.text
    assert modified.json()["limit_price"] == lower
    assert modified.json()["quantity"] == "3"
    assert modified.json()["status"] == "accepted"

    canceled = await harness.client.delete(f"/v1/orders/{order['id']}", headers=harness.auth(user))
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"

    again = await harness.client.delete(f"/v1/orders/{order['id']}", headers=harness.auth(user))
    assert again.status_code == 409
    assert again.json()["code"] == "order_not_modifiable"

    listed = await harness.client.get(
        f"/v1/accounts/{account}/orders?status=closed", headers=harness.auth(user)
    )
    assert [o["id"] for o in listed.json()["items"]] == [order["id"]]
    open_orders = await harness.client.get(
        f"/v1/accounts/{account}/orders?status=open", headers=harness.auth(user)
    )
    assert open_orders.json()["items"] == []


async def test_resting_order_fills_when_the_clock_moves(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user, starting_cash="5000000")
    quote = (await harness.client.get("/v1/quotes?symbols=SPY", headers=harness.auth(user))).json()[
        "quotes"
    ]["SPY"]
    above = str((Decimal(quote["ask"]) * Decimal("1.2")).quantize(Decimal("0.01")))
    # A large marketable limit order fills over several steps by the liquidity rule.
    placed = await harness.place(
        user,
        account,
        symbol="SPY",
        quantity="2000",
        order_type="limit",
        limit_price=above,
        time_in_force="gtc",
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] in ("partially_filled", "accepted")
    for _ in range(60):
        await harness.tick()
        order = (
            await harness.client.get(f"/v1/orders/{order['id']}", headers=harness.auth(user))
        ).json()
        if order["status"] == "filled":
            break
    assert order["status"] == "filled"
    assert order["filled_quantity"] == "2000"


async def test_insufficient_funds_is_a_rejected_order_with_a_stable_code(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user, starting_cash="100")
    response = await harness.place(user, account, symbol="AAPL", quantity="10")
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "insufficient_funds"
    order = (
        await harness.client.get(f"/v1/orders/{problem['order_id']}", headers=harness.auth(user))
    ).json()
    assert order["status"] == "rejected"
    assert order["reject_reason"]


async def test_selling_more_than_held_is_refused(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    response = await harness.place(user, account, side="sell", quantity="1")
    assert response.status_code == 422
    assert response.json()["code"] == "insufficient_funds"


async def test_a_revoked_connection_takes_no_orders(harness: Harness) -> None:
    user = new_user()
    connection, account = await harness.paper_account(user)
    deleted = await harness.client.delete(
        f"/v1/connections/{connection}", headers=harness.auth(user)
    )
    assert deleted.status_code == 204
    got = (
        await harness.client.get(f"/v1/connections/{connection}", headers=harness.auth(user))
    ).json()
    assert got["status"] == "revoked"
    response = await harness.place(user, account)
    assert response.status_code == 409
    assert response.json()["code"] == "connection_broken"

"""A paper order is one transaction: the paper books, the order row, the idempotency record
with its stored response and the order events commit together or not at all.

Each case arms a database trigger that fails one statement of the placement (or of a
cancel); afterwards nothing of the attempt is left: no order, no key, no paper order, fill
or position, no cash moved and no event. The same key then places the order afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from app.db.models import (
    Account,
    IdempotencyKey,
    Order,
    OrderEvent,
    PaperAccount,
    PaperFill,
    PaperOrder,
    PaperPosition,
)
from tests.conftest import new_user, own_database
from tests.harness import Harness, running_app, settings_for_tests

# (table event, SQLite WHEN, Postgres WHEN): one statement of a market buy's transaction each.
PLACEMENT_STATEMENTS = {
    "idempotency claim": ("INSERT ON idempotency_keys", "1", "true"),
    "paper account": ("UPDATE ON paper_accounts", "NEW.seq > 0", "NEW.seq > 0"),
    "paper order": ("INSERT ON paper_orders", "1", "true"),
    "paper fill": ("INSERT ON paper_fills", "1", "true"),
    "paper position": ("INSERT ON paper_positions", "1", "true"),
    "order row": ("INSERT ON orders", "1", "true"),
    "order event": ("INSERT ON order_events", "NEW.type LIKE 'order.%'", "NEW.type LIKE 'order.%'"),
    # The paper key is inserted once, completed with its stored response (no claim first).
    "stored response": (
        "INSERT ON idempotency_keys",
        "NEW.state = 'completed'",
        "NEW.state = 'completed'",
    ),
}


def _fault(dialect: str, table: str, when_sqlite: str, when_pg: str) -> list[str]:
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER injected_fault BEFORE {table} WHEN {when_sqlite} "
            "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        ]
    return [
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
        f"CREATE TRIGGER injected_fault BEFORE {table} FOR EACH ROW WHEN ({when_pg}) "
        "EXECUTE FUNCTION injected_fault()",
    ]


def _unfault(dialect: str, table: str) -> list[str]:
    if dialect == "sqlite":
        return ["DROP TRIGGER injected_fault"]
    return [f"DROP TRIGGER injected_fault ON {table.split(' ON ')[1]}"]


async def _run(h: Harness, statements: list[str]) -> None:
    async with h.state.ctx.sessionmaker() as session:
        for statement in statements:
            await session.execute(text(statement))
        await session.commit()


@contextlib.asynccontextmanager
async def own_gateway(shared_url: str, directory: Path) -> AsyncIterator[tuple[Harness, str]]:
    """A gateway on a database of its own (the triggers must not reach other tests), and a
    client that sees a failed request as the 500 it answers."""
    async with (
        own_database(shared_url, directory) as url,
        running_app(settings_for_tests(url)) as h,
    ):
        transport = httpx.ASGITransport(app=h.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
            h.client = c
            yield h, ("sqlite" if url.startswith("sqlite") else "postgresql")


async def _counts(h: Harness, user: str, paper_account: str) -> dict[str, object]:
    async with h.state.ctx.sessionmaker() as session:

        async def count(model: type, *where: object) -> int:
            stmt = select(func.count()).select_from(model).where(*where)  # type: ignore[arg-type]
            return int((await session.execute(stmt)).scalar_one())

        account = (
            await session.execute(select(PaperAccount).where(PaperAccount.id == paper_account))
        ).scalar_one()
        return {
            "orders": await count(Order, Order.user_id == user),
            "keys": await count(IdempotencyKey, IdempotencyKey.user_id == user),
            "events": await count(
                OrderEvent, OrderEvent.user_id == user, OrderEvent.type.like("order.%")
            ),
            "paper_orders": await count(PaperOrder, PaperOrder.paper_account_id == paper_account),
            "paper_fills": await count(PaperFill, PaperFill.paper_account_id == paper_account),
            "paper_positions": await count(
                PaperPosition, PaperPosition.paper_account_id == paper_account
            ),
            "cash": account.cash,
            "reserved_cash": account.reserved_cash,
            "seq": account.seq,
        }


async def _paper_ref(h: Harness, account_id: str) -> str:
    async with h.state.ctx.sessionmaker() as session:
        row = (await session.execute(select(Account).where(Account.id == account_id))).scalar_one()
        return row.broker_account_ref


NOTHING = {
    "orders": 0,
    "keys": 0,
    "events": 0,
    "paper_orders": 0,
    "paper_fills": 0,
    "paper_positions": 0,
    "cash": Decimal("100000"),
    "reserved_cash": Decimal(0),
    "seq": 0,
}


@pytest.mark.parametrize("statement", list(PLACEMENT_STATEMENTS))
async def test_a_failure_at_any_statement_of_a_paper_placement_leaves_nothing(
    db_url: str, tmp_path: Path, statement: str
) -> None:
    async with own_gateway(db_url, tmp_path) as (h, dialect):
        user = new_user()
        _, account = await h.paper_account(user)
        paper = await _paper_ref(h, account)
        # Without a fault, a market buy fills at once: every statement above runs.
        table, when_sqlite, when_pg = PLACEMENT_STATEMENTS[statement]
        await _run(h, _fault(dialect, table, when_sqlite, when_pg))

        failed = await h.place(user, account, key="one-tx")
        assert failed.status_code == 500, failed.text
        assert await _counts(h, user, paper) == NOTHING

        # Nothing held the key: the same key places the order afresh, whole.
        await _run(h, _unfault(dialect, table))
        placed = await h.place(user, account, key="one-tx")
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] == "filled"
        after = await _counts(h, user, paper)
        assert (after["orders"], after["keys"], after["paper_orders"]) == (1, 1, 1)
        assert (after["paper_fills"], after["paper_positions"]) == (1, 1)
        assert after["events"] == 2  # pending_submit, then filled
        assert after["cash"] < Decimal("100000")
        replay = await h.place(user, account, key="one-tx")
        assert (replay.status_code, replay.json()) == (201, placed.json())


async def test_a_failing_cancel_leaves_the_paper_order_working(db_url: str, tmp_path: Path) -> None:
    async with own_gateway(db_url, tmp_path) as (h, dialect):
        user = new_user()
        _, account = await h.paper_account(user)
        paper = await _paper_ref(h, account)
        placed = await h.place(
            user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        assert placed.json()["status"] == "accepted", placed.text
        before = await _counts(h, user, paper)
        assert before["reserved_cash"] == Decimal("1.00")
        event = ("INSERT ON order_events", "NEW.type = 'order.canceled'")
        await _run(h, _fault(dialect, event[0], event[1], event[1]))

        failed = await h.client.delete(f"/v1/orders/{placed.json()['id']}", headers=h.auth(user))
        assert failed.status_code == 500, failed.text
        assert await _counts(h, user, paper) == before  # no pending_cancel, cash still held
        async with h.state.ctx.sessionmaker() as session:
            row = (
                await session.execute(
                    select(PaperOrder).where(PaperOrder.paper_account_id == paper)
                )
            ).scalar_one()
            assert row.status == "accepted"
        got = await h.client.get(f"/v1/orders/{placed.json()['id']}", headers=h.auth(user))
        assert got.json()["status"] == "accepted"


# (table event, SQLite WHEN, Postgres WHEN): the paper books' writes of a cancel (armed
# after the placement, so the cancel is the account's only update).
CANCEL_STATEMENTS = {
    "paper order": ("UPDATE ON paper_orders", "NEW.status = 'canceled'", "NEW.status = 'canceled'"),
    "paper account": ("UPDATE ON paper_accounts", "1", "true"),
}


@pytest.mark.parametrize("statement", list(CANCEL_STATEMENTS))
async def test_a_failing_paper_write_of_a_cancel_leaves_the_order_working(
    db_url: str, tmp_path: Path, statement: str
) -> None:
    async with own_gateway(db_url, tmp_path) as (h, dialect):
        user = new_user()
        _, account = await h.paper_account(user)
        paper = await _paper_ref(h, account)
        placed = await h.place(
            user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        assert placed.json()["status"] == "accepted", placed.text
        before = await _counts(h, user, paper)
        table, when_sqlite, when_pg = CANCEL_STATEMENTS[statement]
        await _run(h, _fault(dialect, table, when_sqlite, when_pg))

        order_id = placed.json()["id"]
        failed = await h.client.delete(f"/v1/orders/{order_id}", headers=h.auth(user))
        assert failed.status_code == 500, failed.text
        assert await _counts(h, user, paper) == before
        got = await h.client.get(f"/v1/orders/{order_id}", headers=h.auth(user))
        assert got.json()["status"] == "accepted"

        await _run(h, _unfault(dialect, table))
        canceled = await h.client.delete(f"/v1/orders/{order_id}", headers=h.auth(user))
        assert canceled.status_code < 300, canceled.text
        after = await _counts(h, user, paper)
        assert after["reserved_cash"] == Decimal(0)


async def test_a_paper_refusal_is_recorded_whole_and_moves_no_money(
    db_url: str, tmp_path: Path
) -> None:
    async with own_gateway(db_url, tmp_path) as (h, _):
        user = new_user()
        _, account = await h.paper_account(user)
        paper = await _paper_ref(h, account)
        poor = await h.place(user, account, key="too-big", quantity="100000")
        assert poor.status_code == 422, poor.text
        assert poor.json()["code"] == "insufficient_funds"
        after = await _counts(h, user, paper)
        assert (after["orders"], after["keys"], after["events"]) == (1, 1, 2)
        assert (after["paper_orders"], after["cash"], after["seq"]) == (0, Decimal("100000"), 0)
        replay = await h.place(user, account, key="too-big", quantity="100000")
        assert (replay.status_code, replay.json()) == (422, poor.json())


# --- a routed paper order (POST /v1/orders): the route is one transaction too -------------

# (table event, SQLite WHEN, Postgres WHEN): statements of a route whose first paper account
# refuses the order (too little cash) and whose second fills it.
ROUTE_STATEMENTS = {
    "key claim": ("INSERT ON idempotency_keys", "1", "true"),
    "route": ("INSERT ON order_routes", "1", "true"),
    "first attempt": ("INSERT ON route_attempts", "NEW.seq = 1", "NEW.seq = 1"),
    "first attempt's refusal": (
        "UPDATE ON route_attempts",
        "NEW.outcome = 'rejected'",
        "NEW.outcome = 'rejected'",
    ),
    "rejected order's event": (
        "INSERT ON order_events",
        "NEW.type = 'order.rejected'",
        "NEW.type = 'order.rejected'",
    ),
    "second attempt": ("INSERT ON route_attempts", "NEW.seq = 2", "NEW.seq = 2"),
    "second paper account": ("UPDATE ON paper_accounts", "NEW.seq > 0", "NEW.seq > 0"),
    "second paper order": ("INSERT ON paper_orders", "1", "true"),
    "filled order's event": (
        "INSERT ON order_events",
        "NEW.type = 'order.filled'",
        "NEW.type = 'order.filled'",
    ),
    "stored response": (
        "UPDATE ON idempotency_keys",
        "NEW.state = 'completed'",
        "NEW.state = 'completed'",
    ),
}


async def _route(h: Harness, user: str, key: str) -> httpx.Response:
    body = {
        "account_id": "auto",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": "1",
        "order_type": "market",
    }
    return await h.client.post(
        "/v1/orders", json=body, headers=h.auth(user, **{"Idempotency-Key": key})
    )


async def _route_rows(h: Harness, user: str) -> tuple[int, int]:
    async with h.state.ctx.sessionmaker() as session:
        routes = await session.execute(
            text("SELECT count(*) FROM order_routes WHERE user_id = :u"), {"u": user}
        )
        attempts = await session.execute(
            text("SELECT count(*) FROM route_attempts WHERE user_id = :u"), {"u": user}
        )
        return int(routes.scalar_one()), int(attempts.scalar_one())


@pytest.mark.parametrize("statement", list(ROUTE_STATEMENTS))
async def test_a_failure_at_any_statement_of_a_paper_route_leaves_nothing(
    db_url: str, tmp_path: Path, statement: str
) -> None:
    """Both attempts, the route and the key commit together: a failure after the first
    paper account refused (or after the second filled) leaves not even the refused order,
    and the same key then routes afresh."""
    async with own_gateway(db_url, tmp_path) as (h, dialect):
        user = new_user()
        _, poor = await h.paper_account(user, starting_cash="10")  # the oldest: tried first
        _, rich = await h.paper_account(user)
        poor_ref, rich_ref = await _paper_ref(h, poor), await _paper_ref(h, rich)
        before = {ref: await _counts(h, user, ref) for ref in (poor_ref, rich_ref)}
        assert before[rich_ref] == NOTHING
        table, when_sqlite, when_pg = ROUTE_STATEMENTS[statement]
        await _run(h, _fault(dialect, table, when_sqlite, when_pg))

        failed = await _route(h, user, "one-route")
        assert failed.status_code == 500, failed.text
        assert {ref: await _counts(h, user, ref) for ref in before} == before
        assert before[poor_ref]["orders"] == 0  # no order, key or event of the user at all
        assert await _route_rows(h, user) == (0, 0)

        await _run(h, _unfault(dialect, table))
        routed = await _route(h, user, "one-route")
        assert routed.status_code == 201, routed.text
        body = routed.json()
        assert [(a["account_id"], a["outcome"], a["code"]) for a in body["route"]["attempts"]] == [
            (poor, "rejected", "insufficient_funds"),
            (rich, "accepted", None),
        ]
        assert (body["order"]["account_id"], body["order"]["status"]) == (rich, "filled")
        after_poor, after_rich = await _counts(h, user, poor_ref), await _counts(h, user, rich_ref)
        # Two order rows (the refused one and the filled one), four events, one key.
        assert (after_rich["orders"], after_rich["keys"], after_rich["events"]) == (2, 1, 4)
        assert (after_poor["paper_orders"], after_poor["cash"]) == (0, Decimal("10"))
        assert (after_rich["paper_orders"], after_rich["paper_fills"]) == (1, 1)
        assert await _route_rows(h, user) == (1, 2)
        replay = await _route(h, user, "one-route")
        assert (replay.status_code, replay.json()) == (201, body)


def _client_order_id_taken(dialect: str) -> list[str]:
    """A trigger that answers a paper order insert as the (account, client order id)
    uniqueness violation, in each database's own words."""
    if dialect == "sqlite":
        return [
            "CREATE TRIGGER injected_fault BEFORE INSERT ON paper_orders BEGIN SELECT "
            "RAISE(ABORT, 'UNIQUE constraint failed: paper_orders.paper_account_id, "
            "paper_orders.client_order_id'); END"
        ]
    return [
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE unique_violation USING MESSAGE = 'duplicate key value violates unique "
        'constraint "uq_paper_orders_paper_account_id_client_order_id"\'; END $$',
        "CREATE TRIGGER injected_fault BEFORE INSERT ON paper_orders FOR EACH ROW "
        "EXECUTE FUNCTION injected_fault()",
    ]


async def test_a_taken_client_order_id_is_a_recorded_refusal(db_url: str, tmp_path: Path) -> None:
    """On Postgres the paper books ride in the order's own statement, so the paper order's
    uniqueness violation surfaces there; it is still the paper broker's refusal, recorded
    whole (the rejected order, its events, the stored 422), and moves no money."""
    async with own_gateway(db_url, tmp_path) as (h, dialect):
        user = new_user()
        _, account = await h.paper_account(user)
        paper = await _paper_ref(h, account)
        await _run(h, _client_order_id_taken(dialect))

        refused = await h.place(user, account, key="taken")
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "broker_rejected"
        assert "client_order_id must be unique" in refused.json()["detail"]
        after = await _counts(h, user, paper)
        assert (after["orders"], after["keys"], after["events"]) == (1, 1, 2)
        assert (after["paper_orders"], after["paper_fills"], after["paper_positions"]) == (0, 0, 0)
        assert (after["cash"], after["reserved_cash"]) == (Decimal("100000"), Decimal(0))
        got = await h.client.get(f"/v1/orders/{refused.json()['order_id']}", headers=h.auth(user))
        assert got.json()["status"] == "rejected"
        replay = await h.place(user, account, key="taken")
        assert (replay.status_code, replay.json()) == (422, refused.json())


async def test_concurrent_retries_of_one_paper_route_place_it_once(
    db_url: str, tmp_path: Path
) -> None:
    """The route's key is claimed first in its one transaction: a retry sent meanwhile
    waits for that transaction and is answered with its outcome, never routed again."""
    async with own_gateway(db_url, tmp_path) as (h, _):
        user = new_user()
        _, poor = await h.paper_account(user, starting_cash="10")
        _, rich = await h.paper_account(user)
        rich_ref = await _paper_ref(h, rich)
        responses = await asyncio.gather(*(_route(h, user, "once") for _ in range(8)))
        assert {r.status_code for r in responses} <= {201, 409}, [r.text for r in responses]
        placed = [r.json() for r in responses if r.status_code == 201]
        assert placed
        assert all(p == placed[0] for p in placed)
        assert [a["account_id"] for a in placed[0]["route"]["attempts"]] == [poor, rich]
        assert placed[0]["order"]["account_id"] == rich
        after = await _counts(h, user, rich_ref)
        assert (after["orders"], after["keys"], after["paper_orders"]) == (2, 1, 1)
        assert await _route_rows(h, user) == (1, 2)

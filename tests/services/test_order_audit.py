"""The order path writes the audit chain: live BYOB actions only, in the order's transaction.

Every place, modify and cancel on a BYOB connection leaves two entries: one committed with
the order change made before the broker call (``pending_submit`` / ``pending_replace`` /
``pending_cancel``) and one with the result. Platform and paper actions leave none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from app.db.models import IdempotencyKey
from app.db.repositories.audit import AuditRepository, user_chain
from app.schemas.orders import OrderUpdateBody
from app.security.audit import request_fingerprint
from tests.conftest import new_user, own_database
from tests.services.support import (
    LiveGateway,
    assert_problem,
    chain_entries,
    live_gateway,
    verify_chains,
)


async def test_place_modify_cancel_on_byob_are_chained(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection, account = await gw.connect_byob(user)
        resting = {"order_type": "limit", "limit_price": "1.00", "time_in_force": "gtc"}
        placed = await h.place(user, account, key="audit-1", **resting)
        original = placed.json()
        modified = await h.client.patch(
            f"/v1/orders/{original['id']}", json={"limit_price": "1.01"}, headers=h.auth(user)
        )
        replacement = modified.json()
        canceled = await h.client.delete(f"/v1/orders/{replacement['id']}", headers=h.auth(user))
        assert canceled.json()["status"] == "canceled"
        poor = await h.place(user, account, quantity="100000")
        assert_problem(poor, 422, "insufficient_funds")
        rejected_id = poor.json()["order_id"]

        entries = await chain_entries(gw, user)
        assert [(e.action, e.order_id, e.outcome) for e in entries] == [
            ("place", original["id"], "pending_submit"),
            ("place", original["id"], "accepted"),
            ("modify", original["id"], "pending_replace"),
            ("modify", original["id"], f"replaced:{replacement['id']}"),
            ("cancel", replacement["id"], "pending_cancel"),
            ("cancel", replacement["id"], "canceled"),
            ("place", rejected_id, "pending_submit"),
            ("place", rejected_id, "rejected:insufficient_funds"),
        ]
        assert all(
            (e.user_id, e.connection_id, e.account_id, e.broker_slug)
            == (user, connection, account, "alpaca")
            for e in entries
        )
        assert [e.seq for e in entries] == sorted({e.seq for e in entries})
        assert all(e.occurred_at.tzinfo is not None for e in entries)

        # Fingerprints: the canonical request, as the idempotency check computed it for
        # the placement, and the same recipe for the change and the cancel.
        async with h.state.ctx.sessionmaker() as session:
            key = (
                await session.execute(
                    select(IdempotencyKey).where(
                        IdempotencyKey.user_id == user, IdempotencyKey.key == "audit-1"
                    )
                )
            ).scalar_one()
        assert entries[0].request_fingerprint == entries[1].request_fingerprint == key.fingerprint
        change = OrderUpdateBody.model_validate({"limit_price": "1.01"}).model_dump(mode="json")
        assert entries[2].request_fingerprint == request_fingerprint(
            "PATCH", f"/v1/orders/{original['id']}", change
        )
        assert entries[4].request_fingerprint == request_fingerprint(
            "DELETE", f"/v1/orders/{replacement['id']}", None
        )
        result = await verify_chains(gw)
        assert result["ok"] is True
        assert result["head_seq"] >= entries[-1].seq


async def test_platform_and_paper_actions_are_not_chained(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, platform = await gw.connect_platform(user)
        _, paper = await h.paper_account(user)
        for account in (platform, paper):
            placed = await h.place(
                user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
            )
            changed = await h.client.patch(
                f"/v1/orders/{placed.json()['id']}",
                json={"limit_price": "1.01"},
                headers=h.auth(user),
            )
            assert changed.status_code == 200, changed.text
            canceled = await h.client.delete(
                f"/v1/orders/{changed.json()['id']}", headers=h.auth(user)
            )
            assert canceled.status_code == 200, canceled.text
        assert await chain_entries(gw, user) == []


async def test_a_cancel_while_disconnecting_is_chained(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection, account = await gw.connect_byob(user)
        placed = await h.place(
            user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        deleted = await h.client.delete(f"/v1/connections/{connection}", headers=h.auth(user))
        assert deleted.status_code == 204
        outcomes = [(e.action, e.outcome) for e in await chain_entries(gw, user)]
        assert outcomes[-2:] == [("cancel", "pending_cancel"), ("cancel", "canceled")]
        assert placed.json()["id"] in {e.order_id for e in await chain_entries(gw, user)}


async def test_a_failed_change_records_its_outcome(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, account = await gw.connect_byob(user)
        placed = await h.place(
            user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        gw.alpaca.fake.faults.server_errors = 1
        gw.alpaca.fake.faults.server_errors_method = "PATCH"
        failed = await h.client.patch(
            f"/v1/orders/{placed.json()['id']}", json={"limit_price": "1.01"}, headers=h.auth(user)
        )
        assert failed.status_code >= 500
        code = failed.json()["code"]
        last = (await chain_entries(gw, user))[-1]
        assert last.action == "modify"
        assert last.outcome.endswith(f":{code}")
        assert (await verify_chains(gw))["ok"] is True


async def test_entries_never_hold_credentials(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, account = await gw.connect_byob(user)
        placed = await h.place(
            user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        await h.client.delete(f"/v1/orders/{placed.json()['id']}", headers=h.auth(user))
        async with h.state.ctx.sessionmaker() as session:
            rows = (await session.execute(text("SELECT * FROM audit_entries"))).all()
        dump = repr([tuple(r) for r in rows])
        assert user in dump
        assert gw.byob_key.key_id not in dump
        assert gw.byob_key.secret not in dump
        assert gw.platform_key.secret not in dump


@pytest.mark.postgres_only
async def test_concurrent_orders_from_many_users_keep_the_chain_linear(
    postgres_url: str,
) -> None:
    users_count, orders_each = 12, 3
    async with live_gateway(postgres_url) as gw:
        h = gw.harness
        users = [new_user("crowd") for _ in range(users_count)]
        accounts = [(await gw.connect_byob(u))[1] for u in users]
        head_before = (await verify_chains(gw))["head_seq"]

        async def trade(user: str, account: str) -> None:
            for _ in range(orders_each):
                placed = await h.place(
                    user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
                )
                assert placed.status_code == 201, placed.text
                canceled = await h.client.delete(
                    f"/v1/orders/{placed.json()['id']}", headers=h.auth(user)
                )
                assert canceled.status_code == 200, canceled.text

        await asyncio.gather(*(trade(u, a) for u, a in zip(users, accounts, strict=True)))

        result = await verify_chains(gw)
        assert result["ok"] is True, result
        written = users_count * orders_each * 4  # place x2, cancel x2
        assert result["head_seq"] == head_before + written
        for user in users:  # each user's chain is its own linear sequence
            seqs = [e.seq for e in await chain_entries(gw, user)]
            assert sorted(seqs) == list(range(1, orders_each * 4 + 1))


# --- atomicity: a fault in the database fails the order change and its entry together ----


@contextlib.asynccontextmanager
async def faulty_gateway(
    shared_url: str, directory: Path, trigger: dict[str, str]
) -> AsyncIterator[tuple[LiveGateway, httpx.AsyncClient]]:
    """A gateway on a database of its own with a trigger that raises on one write."""
    async with own_database(shared_url, directory) as url, live_gateway(url) as gw:
        dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        async with gw.harness.state.ctx.sessionmaker() as session:
            for statement in trigger[dialect].split(";;"):
                await session.execute(text(statement))
            await session.commit()
        transport = httpx.ASGITransport(app=gw.harness.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
            yield gw, c


def _trigger(table: str, when_sqlite: str, when_pg: str) -> dict[str, str]:
    return {
        "sqlite": (
            f"CREATE TRIGGER injected_fault BEFORE {table} WHEN {when_sqlite} "
            "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        ),
        "postgresql": (
            "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$;;"
            f"CREATE TRIGGER injected_fault BEFORE {table} FOR EACH ROW WHEN ({when_pg}) "
            "EXECUTE FUNCTION injected_fault()"
        ),
    }


async def test_a_failing_audit_append_rolls_back_the_order_change(
    db_url: str, tmp_path: Path
) -> None:
    trigger = _trigger(
        "INSERT ON audit_entries", "NEW.outcome = 'accepted'", "NEW.outcome = 'accepted'"
    )
    async with faulty_gateway(db_url, tmp_path, trigger) as (gw, client):
        h, user = gw.harness, new_user()
        _, account = await gw.connect_byob(user)
        response = await client.post(
            f"/v1/accounts/{account}/orders",
            json={"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"},
            headers=h.auth(user, **{"Idempotency-Key": "fault-1"}),
        )
        assert_problem(response, 500, "internal_error")
        [entry] = await chain_entries(gw, user)  # only the one committed before the broker call
        assert entry.outcome == "pending_submit"
        got = await client.get(f"/v1/orders/{entry.order_id}", headers=h.auth(user))
        assert got.json()["status"] == "pending_submit"  # "accepted" was rolled back with it
        assert (await verify_chains(gw))["ok"] is True


async def test_a_failing_order_change_rolls_back_its_audit_entry(
    db_url: str, tmp_path: Path
) -> None:
    trigger = _trigger("UPDATE ON orders", "NEW.status = 'canceled'", "NEW.status = 'canceled'")
    async with faulty_gateway(db_url, tmp_path, trigger) as (gw, client):
        h, user = gw.harness, new_user()
        _, account = await gw.connect_byob(user)
        placed = await h.place(
            user, account, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        order_id = placed.json()["id"]
        response = await client.delete(f"/v1/orders/{order_id}", headers=h.auth(user))
        assert_problem(response, 500, "internal_error")
        outcomes = [(e.action, e.outcome) for e in await chain_entries(gw, user)]
        assert outcomes == [
            ("place", "pending_submit"),
            ("place", "accepted"),
            ("cancel", "pending_cancel"),  # "canceled" went with the failed order update
        ]
        async with h.state.ctx.sessionmaker() as session:
            head = await AuditRepository(session).head(user_chain(user))
        assert head is not None
        assert head.last_seq == 3
        assert (await verify_chains(gw))["ok"] is True

"""Exercise instructions (``POST /v1/accounts/{id}/positions/{symbol}/exercise``) through the
whole gateway against the fake Alpaca over HTTP: gated like an order, audited, idempotent,
and every refusal answered before anything is written or sent."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select, text, update

from app.brokers.base import OptionContract, OptionRight
from app.db.models import AuditEntry, BrokerToken, IdempotencyKey
from app.db.repositories.audit import user_chain
from tests.brokers.alpaca.options import contract
from tests.conftest import new_user
from tests.fakes.alpaca.server import FakePosition
from tests.services.support import (
    LiveGateway,
    assert_problem,
    live_gateway,
    until_lock_waiters,
)


def _path(account: str, symbol: str) -> str:
    return f"/v1/accounts/{account}/positions/{quote(symbol, safe='')}/exercise"


async def _exercise(
    gw: LiveGateway, user: str, account: str, symbol: str, body: Any, key: str | None = "ex-1"
) -> httpx.Response:
    h = gw.harness
    headers = h.auth(user) if key is None else h.auth(user, **{"Idempotency-Key": key})
    return await h.client.post(_path(account, symbol), json=body, headers=headers)


async def _written(gw: LiveGateway, user: str) -> tuple[int, int]:
    """(idempotency keys, audit entries) of the user."""
    async with gw.harness.state.ctx.sessionmaker() as session:
        keys = await session.scalar(
            select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.user_id == user)
        )
        audit = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.user_id == user)
        )
    return int(keys or 0), int(audit or 0)


async def _audit(gw: LiveGateway, user: str) -> list[AuditEntry]:
    async with gw.harness.state.ctx.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEntry).where(AuditEntry.user_id == user).order_by(AuditEntry.seq)
        )
        return list(rows.scalars())


def _long_call(gw: LiveGateway, qty: str = "2") -> OptionContract:
    held = contract(gw.alpaca.fake, OptionRight.call, -2)
    gw.byob_key.positions[held.symbol] = FakePosition(
        qty=Decimal(qty), cost_basis=Decimal(qty) * 100 * Decimal("3.10")
    )
    return held


async def test_an_exercise_is_sent_once_audited_and_replayed(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        held = _long_call(gw)
        before = len(gw.requests)

        # The padded OCC spelling names the same contract.
        done = await _exercise(gw, user, account, held.occ_padded, {"action": "exercise"})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["id"].startswith("exr_")
        assert (body["symbol"], body["action"], body["status"]) == (
            held.symbol,
            "exercise",
            "accepted",
        )
        assert Decimal(body["contract"]["strike"]) == held.strike
        sent = [r for r in gw.requests[before:] if r[0] == "POST"]
        assert sent == [("POST", f"/v2/positions/{held.symbol}/exercise")]
        assert held.symbol not in gw.byob_key.positions  # the fake exercised it
        assert gw.byob_key.positions[held.underlying].qty == 200

        # The same key: the stored answer, nothing sent (also under the unpadded spelling).
        again = await _exercise(gw, user, account, held.symbol, {"action": "exercise"})
        assert (again.status_code, again.json()) == (200, body)
        assert [r for r in gw.requests[before:] if r[0] == "POST"] == sent
        # The same key for another instruction is another request.
        reused = await _exercise(gw, user, account, held.symbol, {"action": "do_not_exercise"})
        assert_problem(reused, 422, "idempotency_key_reused")

        entries = await _audit(gw, user)
        assert [(e.action, e.outcome, e.order_id) for e in entries] == [
            ("exercise", "pending:exercise", body["id"]),
            ("exercise", "accepted:exercise", body["id"]),
        ]
        ctx = gw.harness.state.ctx
        assert (await ctx.audit.verify(ctx.sessionmaker, chain=f"user:{user}")).ok


async def test_do_not_exercise_reaches_the_broker(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        held = _long_call(gw, "1")
        done = await _exercise(gw, user, account, held.symbol, {"action": "do_not_exercise"})
        assert done.status_code == 200, done.text
        assert done.json()["action"] == "do_not_exercise"
        assert held.symbol in gw.byob_key.do_not_exercise
        assert gw.byob_key.positions[held.symbol].qty == 1  # still held


@pytest.mark.parametrize(
    ("qty", "reason"),
    [(None, "no available position"), ("-1", "cannot exercise short position")],
)
async def test_the_brokers_refusal_is_stored_and_audited(
    db_url: str, qty: str | None, reason: str
) -> None:
    async with live_gateway(db_url) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        held = contract(gw.alpaca.fake, OptionRight.put, 1)
        if qty is not None:
            gw.byob_key.positions[held.symbol] = FakePosition(qty=Decimal(qty))
        refused = await _exercise(gw, user, account, held.symbol, {"action": "exercise"})
        problem = assert_problem(refused, 422, "broker_rejected")
        assert reason in problem["detail"]
        assert problem["exercise_id"].startswith("exr_")
        replay = await _exercise(gw, user, account, held.symbol, {"action": "exercise"})
        assert (replay.status_code, replay.json()) == (422, problem)
        outcomes = [e.outcome for e in await _audit(gw, user)]
        assert outcomes == ["pending:exercise", "rejected:exercise:broker_rejected"]


# --- refusals before anything is written or sent -------------------------------------


async def _refused_before_anything(
    gw: LiveGateway,
    user: str,
    account: str,
    symbol: str,
    body: Any,
    status: int,
    code: str,
    key: str | None = "ex-refused",
) -> None:
    before, written = len(gw.requests), await _written(gw, user)
    assert_problem(await _exercise(gw, user, account, symbol, body, key), status, code)
    assert [r for r in gw.requests[before:] if r[0] != "GET"] == []
    assert await _written(gw, user) == written


async def test_bad_input_is_refused_before_anything(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        held = _long_call(gw)
        ok = {"action": "exercise"}
        await _refused_before_anything(
            gw, user, account, held.symbol, ok, 400, "idempotency_key_required", key=None
        )
        for body in ({}, {"action": "assign"}, {"action": "exercise", "quantity": "1"}):
            await _refused_before_anything(
                gw, user, account, held.symbol, body, 422, "validation_error"
            )
        for symbol in ("AAPL", "AAPL261318C00150000", "AAPL261218X00150000"):
            await _refused_before_anything(
                gw, user, account, symbol, ok, 422, "invalid_option_symbol"
            )
        expired = OptionContract.parse("AAPL240119C00150000")
        await _refused_before_anything(gw, user, account, expired.symbol, ok, 422, "option_expired")
        # Another user's account is not found; an account that does not exist neither.
        await _refused_before_anything(gw, new_user(), account, held.symbol, ok, 404, "not_found")
        await _refused_before_anything(gw, user, "acc_nope", held.symbol, ok, 404, "not_found")
        assert held.symbol in gw.byob_key.positions


async def test_a_broker_without_exercise_is_refused_before_any_request(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, paper = await h.paper_account(user)
        held = contract(gw.alpaca.fake, OptionRight.call, 0)
        await _refused_before_anything(
            gw, user, paper, held.symbol, {"action": "exercise"}, 422, "unsupported_order"
        )


async def test_kill_switches_and_read_only_credentials(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection, account = await gw.connect_byob(user)
        held = _long_call(gw)
        ok = {"action": "exercise"}
        for switch in ("BYOB_LIVE_DISABLED", "BYOB_BROKER_ALPACA_DISABLED"):
            monkeypatch.setenv(switch, "1")
            await _refused_before_anything(
                gw, user, account, held.symbol, ok, 503, "live_trading_disabled"
            )
            monkeypatch.delenv(switch)
        async with h.state.ctx.sessionmaker() as session:
            await session.execute(
                update(BrokerToken)
                .where(BrokerToken.connection_id == connection)
                .values(no_order_write=True)
            )
            await session.commit()
        await _refused_before_anything(gw, user, account, held.symbol, ok, 403, "read_only_account")
        deleted = await h.client.delete(f"/v1/connections/{connection}", headers=h.auth(user))
        assert deleted.status_code == 204
        await _refused_before_anything(gw, user, account, held.symbol, ok, 409, "connection_broken")
        assert held.symbol in gw.byob_key.positions


async def test_the_platform_account_is_not_switched_off_nor_audited(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like orders: the platform's own default Alpaca account is unaffected by the BYOB
    switches, and only user-supplied credentials are audited."""
    async with live_gateway(db_url) as gw:
        user = new_user()
        _, account = await gw.connect_platform(user)
        held = contract(gw.alpaca.fake, OptionRight.call, -1)
        gw.platform_key.positions[held.symbol] = FakePosition(qty=Decimal(1))
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
        done = await _exercise(gw, user, account, held.symbol, {"action": "exercise"})
        assert done.status_code == 200, done.text
        assert await _audit(gw, user) == []


async def test_a_429_releases_the_key_and_a_lost_answer_is_unknown(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        held = _long_call(gw)
        fake = gw.alpaca.fake

        # Refused before it reached the broker: 429, the key is free for the retry.
        fake.faults.rate_limited, fake.faults.rate_limited_method = 1, "POST"
        limited = await _exercise(gw, user, account, held.symbol, {"action": "do_not_exercise"})
        problem = assert_problem(limited, 429, "rate_limited")
        assert limited.headers["Retry-After"] == str(problem["retry_after"])
        retried = await _exercise(gw, user, account, held.symbol, {"action": "do_not_exercise"})
        assert retried.status_code == 200, retried.text
        assert held.symbol in gw.byob_key.do_not_exercise

        # The broker's answer lost (5xx after sending): 202 unknown, stored, not re-sent.
        fake.faults.server_errors, fake.faults.server_errors_method = 1, "POST"
        before = len(gw.requests)
        lost = await _exercise(gw, user, account, held.symbol, {"action": "exercise"}, "ex-2")
        assert lost.status_code == 202, lost.text
        assert lost.json()["status"] == "unknown"
        again = await _exercise(gw, user, account, held.symbol, {"action": "exercise"}, "ex-2")
        assert (again.status_code, again.json()) == (202, lost.json())
        posts = [r for r in gw.requests[before:] if r[0] == "POST"]
        assert len(posts) == 1
        outcomes = [e.outcome for e in await _audit(gw, user)]
        assert outcomes == [
            "pending:do_not_exercise",
            "rejected:do_not_exercise:rate_limited",
            "pending:do_not_exercise",
            "accepted:do_not_exercise",
            "pending:exercise",
            "unknown:exercise",
        ]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_one_key_at_an_exercise_and_an_order_at_once_never_deadlocks(db_url: str) -> None:
    """An order and an exercise sent with one Idempotency-Key, queued behind a transaction
    that holds the user's audit chain head: both take the head before the key, so the
    order claims it and places, and the exercise finds it held by another request (422).
    Were the exercise to claim the key first, the two would wait for each other."""
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        held = _long_call(gw)
        h = gw.harness
        terms = {"order_type": "limit", "limit_price": "1.00", "time_in_force": "gtc"}
        warm = await h.place(user, account, **terms)  # the chain and its head exist now
        assert warm.status_code == 201, warm.text
        async with h.state.ctx.sessionmaker() as holder:
            await holder.execute(
                text("SELECT 1 FROM audit_chain_head WHERE chain = :c FOR UPDATE"),
                {"c": user_chain(user)},
            )
            placing = asyncio.create_task(h.place(user, account, key="both-1", **terms))
            await until_lock_waiters(h.state.ctx.sessionmaker, 1)
            exercising = asyncio.create_task(
                _exercise(gw, user, account, held.symbol, {"action": "exercise"}, key="both-1")
            )
            await until_lock_waiters(h.state.ctx.sessionmaker, 2)
            await holder.rollback()
        placed, exercised = await asyncio.wait_for(asyncio.gather(placing, exercising), timeout=30)
        assert placed.status_code == 201, placed.text
        assert_problem(exercised, 422, "idempotency_key_reused")
        assert held.symbol in gw.byob_key.positions  # nothing was exercised

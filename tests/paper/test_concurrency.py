"""Concurrent placements on one paper account serialise on the account lock and each sees
what the one before it committed (Postgres: real concurrent transactions)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from tests.conftest import new_user
from tests.harness import running_app, settings_for_tests

pytestmark = pytest.mark.postgres_only


async def test_concurrent_first_orders_on_one_account_build_one_position(
    postgres_url: str,
) -> None:
    async with running_app(settings_for_tests(postgres_url)) as h:
        user = new_user()
        _, account = await h.paper_account(user, starting_cash="1000000")
        buys = await asyncio.gather(
            *(h.place(user, account, uuid.uuid4().hex, symbol="MSFT") for _ in range(12))
        )
        assert [r.status_code for r in buys] == [201] * 12, [r.text for r in buys]
        assert {r.json()["status"] for r in buys} == {"filled"}
        position = await h.client.get(
            f"/v1/accounts/{account}/positions/MSFT", headers=h.auth(user)
        )
        assert Decimal(position.json()["quantity"]) == 12

        # Sales sized against the position each see the ones before them: exactly 12 sell.
        sells = await asyncio.gather(
            *(
                h.place(user, account, uuid.uuid4().hex, symbol="MSFT", side="sell")
                for _ in range(15)
            )
        )
        filled = [r for r in sells if r.status_code == 201]
        assert len(filled) == 12, [r.text for r in sells]
        assert {r.json()["code"] for r in sells if r.status_code != 201} == {"insufficient_funds"}
        gone = await h.client.get(f"/v1/accounts/{account}/positions/MSFT", headers=h.auth(user))
        assert gone.status_code == 404 or Decimal(gone.json()["quantity"]) == 0


async def test_refusals_and_placements_on_one_account_at_once_all_answer(
    postgres_url: str,
) -> None:
    """The account is locked by a placement's first statement, before the gates: refusals
    among concurrent placements give the lock back, and every request is answered."""
    async with running_app(settings_for_tests(postgres_url)) as h:
        user = new_user()
        _, account = await h.paper_account(user, starting_cash="1000000")
        requests = [
            h.place(user, account, uuid.uuid4().hex, symbol="MSFT")
            if i % 2 == 0
            else h.place(user, account, uuid.uuid4().hex, symbol="NOSUCHSYMBOL1")
            for i in range(20)
        ]
        answers = await asyncio.wait_for(asyncio.gather(*requests), timeout=60)
        placed = [r for r in answers if r.status_code == 201]
        refused = [r for r in answers if r.status_code != 201]
        assert len(placed) == 10, [r.text for r in answers]
        assert {(r.status_code, r.json()["code"]) for r in refused} == {(422, "unknown_symbol")}
        position = await h.client.get(
            f"/v1/accounts/{account}/positions/MSFT", headers=h.auth(user)
        )
        assert Decimal(position.json()["quantity"]) == 10

"""One row the gateway cannot represent never breaks a Plaid list, and the fake answers what
Plaid answers beside the gateway's own calls (issue 15 items 6 and 9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from app.brokers.rows import is_partial
from tests.brokers.plaid.support import running_fake


async def test_one_unreadable_transaction_is_left_out_and_counted() -> None:
    async with running_fake(cash="5000") as run:
        today = datetime.now(UTC).date()
        aapl = run.fake.security("AAPL", price="190")
        for kind, subtype in (("buy", "buy"), ("barter", "buy")):  # "barter": no such type
            run.fake.add_transaction(
                run.account,
                kind=kind,
                subtype=subtype,
                amount=Decimal("190.00"),
                name="BUY AAPL",
                security=aapl,
                quantity=Decimal(1),
                price=Decimal(190),
                on=today - timedelta(days=1),
            )
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        assert not is_partial(await adapter.list_accounts())
        listed = await adapter.get_transactions(account.broker_account_id, None, None, None)
        assert [(t.type, t.symbol) for t in listed] == [("deposit", None), ("buy", "AAPL")]
        assert is_partial(listed)
        assert getattr(listed, "skipped", 0) == 1
        buys = await adapter.get_transactions(account.broker_account_id, None, None, "buy")
        assert len(buys) == 1
        assert is_partial(buys)


async def test_balance_get_and_unknown_routes_in_plaids_envelope() -> None:
    async with running_fake(cash="1234.50") as run:
        item, _ = run.link()
        keys = {"client_id": run.fake.client_id, "secret": run.fake.secret}
        async with httpx.AsyncClient(base_url=run.url) as client:
            answer = await client.post(
                "/accounts/balance/get", json={**keys, "access_token": item.access_token}
            )
            assert answer.status_code == 200
            body = answer.json()
            assert body["item"]["item_id"] == item.item_id
            ira = next(a for a in body["accounts"] if a["subtype"] == "ira")
            assert ira["balances"]["available"] == 1234.5
            assert isinstance(body["request_id"], str)
            for method, path in (("POST", "/no/such/route"), ("GET", "/accounts/get")):
                refused = await client.request(method, path, json=keys)
                assert refused.status_code == 404
                envelope = refused.json()
                assert (envelope["error_type"], envelope["error_code"]) == (
                    "INVALID_REQUEST",
                    "NOT_FOUND",
                )
                assert envelope["error_message"] == "not found"

"""One row the gateway cannot represent never breaks an IBKR list (issue 15 item 6), and the
fake gateway answers unknown paths in JSON (item 9)."""

from __future__ import annotations

import httpx

from app.brokers.base import OrderStatus
from app.brokers.rows import is_partial
from tests.brokers.ibkr.support import running_fake
from tests.brokers.ibkr.test_adapter import far_limit


async def test_one_live_order_with_an_unknown_status_is_left_out_and_counted() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter(ibkr_auto_confirm=["o163"])
        ref = ib.account.account_id
        kept = await adapter.place_order(ref, far_limit())
        odd = await adapter.place_order(ref, far_limit())
        assert kept.status is OrderStatus.accepted
        ib.fake.orders[int(odd.broker_order_id)].status = "Parked"  # no such IBKR status
        listed = await adapter.list_orders(ref, "all", 50)
        assert [o.broker_order_id for o in listed] == [kept.broker_order_id]
        assert is_partial(listed)
        assert getattr(listed, "skipped", 0) == 1
        history = await adapter.order_history(ref, None, None, "AAPL")
        assert [o.broker_order_id for o in history] == [kept.broker_order_id]
        assert is_partial(history)
        accounts = await adapter.list_accounts()
        assert [a.broker_account_id for a in accounts] == [ref]
        assert not is_partial(accounts)


async def test_unknown_paths_answer_json() -> None:
    async with running_fake() as ib, httpx.AsyncClient() as client:
        for method, path in (("GET", "/no/such/route"), ("PUT", "/iserver/accounts")):
            answer = await client.request(method, ib.url + path)
            assert answer.status_code == 404
            assert answer.json() == {"error": "Not Found", "statusCode": 404}

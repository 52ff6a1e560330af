"""The live gates around options and preview, on a BYOB Alpaca connection (fake Alpaca).

A preview is a read: kill-switches and the paper-first gate, which guard sending an order,
do not stop it; the capability gate and the body's validation do. Alpaca takes market and
limit option orders only, so an option stop order there is ``unsupported_order`` with
nothing sent.
"""

from __future__ import annotations

import pytest

from tests.conftest import new_user
from tests.services.support import assert_problem, live_gateway

OPTION = {
    "symbol": "AAPL300118C00200000",
    "side": "buy",
    "quantity": "1",
    "order_type": "market",
    "position_effect": "open",
}


async def test_a_preview_is_not_stopped_by_the_kill_switch_or_paper_first(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with live_gateway(db_url, paper_first_cycles=3) as gw:
        h, user = gw.harness, new_user()
        _, live = await gw.connect_byob(user)
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
        assert_problem(await h.place(user, live), 503, "live_trading_disabled")
        preview = await h.client.post(
            f"/v1/accounts/{live}/orders/preview",
            json={"symbol": "AAPL", "side": "buy", "quantity": "3", "order_type": "market"},
            headers=h.auth(user),
        )
        assert preview.status_code == 200, preview.text
        body = preview.json()
        assert body["source"] == "estimate"
        assert body["direction"] == "debit"
        assert not [r for r in gw.requests if r[0] == "POST"]  # nothing was sent


async def test_capabilities_and_validation_still_stop_a_preview(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, live = await gw.connect_byob(user)
        before = len(gw.requests)
        for body, code in (
            ({**OPTION, "order_type": "stop", "stop_price": "1.00"}, "unsupported_order"),
            ({**OPTION, "quantity": "0.5"}, "fractional_contracts"),
            ({**OPTION, "symbol": "AAPL301318C00200000"}, "invalid_option_symbol"),
        ):
            for path in ("orders/preview", "orders"):
                response = await h.client.post(
                    f"/v1/accounts/{live}/{path}",
                    json=body,
                    headers=h.auth(user, **{"Idempotency-Key": new_user("k")}),
                )
                assert_problem(response, 422, code)
        assert gw.requests[before:] == []

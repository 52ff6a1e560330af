"""An option combo on a live BYOB connection (the fake Schwab, through the whole gateway):
the same at-most-once machinery as an equity order. One order with its legs, one audit
entry per step whose fingerprint covers the legs, the Idempotency-Key replay, and a lost
answer adopted by reconciliation by its legs (Schwab takes no client order id) without
mistaking an earlier combo that differs in one leg."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from app.brokers.base import OptionContract, OptionRight
from app.db.models import AuditEntry
from app.schemas.orders import OrderCreate
from app.services.orders import request_fingerprint
from app.services.reconciliation import Reconciler
from tests.brokers.schwab.support import gateway
from tests.conftest import new_user


def _condor(fake: Any, put_wing: str = "180") -> dict[str, Any]:
    expiration = fake.options.expirations("AAPL", fake.today())[2].expiration

    def symbol(right: OptionRight, strike: str) -> str:
        return OptionContract("AAPL", "AAPL", expiration, right, Decimal(strike)).symbol

    return {
        "legs": [
            {
                "symbol": symbol(OptionRight.put, put_wing),
                "side": "buy",
                "ratio": 1,
                "position_effect": "open",
            },
            {
                "symbol": symbol(OptionRight.put, "185"),
                "side": "sell",
                "ratio": 1,
                "position_effect": "open",
            },
            {
                "symbol": symbol(OptionRight.call, "195"),
                "side": "sell",
                "ratio": 1,
                "position_effect": "open",
            },
            {
                "symbol": symbol(OptionRight.call, "200"),
                "side": "buy",
                "ratio": 1,
                "position_effect": "open",
            },
        ],
        "quantity": "1",
        "order_type": "limit",
        "limit_price": "9.00",  # a credit the market will not pay: the order works
        "price_effect": "credit",
        "time_in_force": "day",
    }


async def test_a_live_combo_is_audited_idempotent_and_reconciled_by_its_legs(
    db_url: str,
) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        [account] = (await gw.connect(user))["accounts"]
        fake = gw.schwab.fake
        path = f"/v1/accounts/{account}/orders"

        async def post(body: dict[str, Any], key: str) -> Any:
            return await h.client.post(
                path, json=body, headers=h.auth(user, **{"Idempotency-Key": key})
            )

        # An earlier combo differing in one leg.
        earlier = await post(_condor(fake, put_wing="175"), "combo-earlier")
        assert earlier.status_code == 201, earlier.text
        assert len(earlier.json()["legs"]) == 4

        body = _condor(fake)
        fake.faults.timeout_after_accept = 1
        fake.faults.hang_seconds = 3.0
        lost = await post(body, "combo-lost")
        assert lost.status_code == 202, lost.text
        order = lost.json()
        assert order["status"] == "unknown"
        assert [leg["symbol"] for leg in order["legs"]] == [leg["symbol"] for leg in body["legs"]]

        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = (await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(user))).json()
        assert got["status"] == "accepted"
        assert got["broker_order_id"] not in (None, earlier.json()["broker_order_id"])
        assert len(got["legs"]) == 4

        # The key answers as first sent; a changed leg under it is another request.
        replay = await post(body, "combo-lost")
        assert replay.status_code == 202
        changed = _condor(fake, put_wing="170")
        reused = await post(changed, "combo-lost")
        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"

        # The audit chain holds the placement, its fingerprint covering the legs.
        async with h.state.ctx.sessionmaker() as session:
            entries = (
                (
                    await session.execute(
                        select(AuditEntry)
                        .where(AuditEntry.order_id == order["id"])
                        .order_by(AuditEntry.seq)
                    )
                )
                .scalars()
                .all()
            )
        assert [e.action for e in entries][:2] == ["place", "place"]
        assert entries[0].outcome == "pending_submit"
        expected = request_fingerprint("POST", path, OrderCreate.model_validate(body))
        assert {e.request_fingerprint for e in entries if e.action == "place"} == {expected}
        assert expected != request_fingerprint("POST", path, OrderCreate.model_validate(changed))

        canceled = await h.client.delete(f"/v1/orders/{order['id']}", headers=h.auth(user))
        assert canceled.status_code == 200, canceled.text
        assert len(canceled.json()["legs"]) == 4
        verify = await h.client.get(
            "/v1/admin/audit/verify",
            headers={"Authorization": f"Bearer {h.token(user, admin=True)}"},
        )
        assert verify.status_code == 200, verify.text
        assert verify.json()["ok"] is True

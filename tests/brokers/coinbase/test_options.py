"""Coinbase has no options API: the capabilities say so, and an option order is refused with
the capability code (422 ``unsupported_order``) before any request reaches Coinbase, with
nothing written."""

from __future__ import annotations

import pytest

from app import errors
from app.brokers.base import NO_OPTIONS, AssetClass, OrderType, Support, TimeInForce
from app.brokers.coinbase.adapter import COINBASE_CAPABILITIES
from app.services.pretrade import check_order
from tests.brokers.coinbase.test_api import gateway
from tests.conftest import new_user

CALL = "AAPL261218C00150000"
PADDED = "AAPL  261218C00150000"


def test_the_capabilities_state_no_options() -> None:
    caps = COINBASE_CAPABILITIES
    assert caps.asset_classes[AssetClass.option] is Support.unsupported
    assert caps.multi_leg is Support.unsupported
    assert caps.options == NO_OPTIONS
    assert caps.options.chain is Support.unsupported
    assert caps.options.max_legs == 1


@pytest.mark.parametrize("symbol", [CALL, PADDED])
def test_the_pre_trade_gate_refuses_an_option_order(symbol: str) -> None:
    with pytest.raises(errors.UnsupportedOrder) as refused:
        check_order(
            COINBASE_CAPABILITIES,
            symbol=symbol,
            order_type=OrderType.limit,
            time_in_force=TimeInForce.gtc,
            quantity_is_fractional=False,
            extended_hours=False,
        )
    assert refused.value.code == "unsupported_order"
    assert "option" in str(refused.value.detail)  # padded or not, it is an option


async def test_an_option_order_is_refused_before_any_request(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account_id = await gw.account(user)
        brokers = await h.client.get("/v1/brokers", headers=h.auth(user))
        caps = {b["slug"]: b for b in brokers.json()["items"]}["coinbase"]["capabilities"]
        assert caps["asset_classes"]["option"] == "unsupported"
        assert (caps["multi_leg"], caps["options"]["chain"]) == ("unsupported", "unsupported")
        seen = list(gw.cb.fake.requests)
        refused = await h.place(
            user,
            account_id,
            symbol=CALL,
            quantity="1",
            order_type="limit",
            limit_price="1.00",
            time_in_force="gtc",
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "unsupported_order")
        assert gw.cb.fake.requests == seen  # nothing reached Coinbase
        orders = await h.client.get(f"/v1/accounts/{account_id}/orders", headers=h.auth(user))
        assert orders.json()["items"] == []  # nothing written

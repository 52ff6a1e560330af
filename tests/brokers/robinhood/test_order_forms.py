"""Dollar-amount (``quote_amount``) orders, lists that survive a bad row, and the fake's
estimated-price route (issue 15), over real HTTP against the fake."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import OrderRequest, OrderSide, OrderStatus, OrderType, Support, TimeInForce
from app.brokers.robinhood import auth
from app.brokers.robinhood.adapter import ROBINHOOD_CAPABILITIES
from app.brokers.rows import is_partial
from tests.brokers.robinhood.support import Running, running_fake

ORDERS = "/api/v1/crypto/trading/orders/"


def dollars(
    amount: str,
    order_type: OrderType = OrderType.limit,
    *,
    limit_price: Decimal | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol="BTC-USD",
        side=OrderSide.buy,
        quantity=Decimal(0),
        order_type=order_type,
        time_in_force=TimeInForce.gtc,
        notional=Decimal(amount),
        limit_price=limit_price,
    )


async def signed_get(rh: Running, target: str) -> httpx.Response:
    signer = auth.RequestSigner(rh.credentials())
    async with httpx.AsyncClient(base_url=rh.url) as client:
        return await client.get(target, headers=dict(signer.headers("GET", target, "")))


def test_dollar_amounts_are_native_on_limit_orders_not_market_ones() -> None:
    assert ROBINHOOD_CAPABILITIES.notional_limit is Support.native
    assert ROBINHOOD_CAPABILITIES.notional is Support.unsupported


async def test_a_quote_amount_order_fills_as_robinhood_reports_it() -> None:
    async with running_fake() as rh:
        adapter, ref = rh.adapter(), rh.account.account_number
        quote = rh.fake.quotes.quote("BTC-USD", rh.fake.clock())
        placed = await adapter.place_order(ref, dollars("500", limit_price=quote.ask * 2))
        assert (placed.status, placed.notional, placed.quantity) == (
            OrderStatus.accepted,
            Decimal(500),
            Decimal(0),
        )
        assert await rh.fake.match() == 1
        filled = await adapter.get_order(ref, placed.broker_order_id)
        fake_order = rh.account.orders[placed.broker_order_id]
        assert filled.status is OrderStatus.filled
        assert filled.notional == Decimal(500)
        assert filled.quantity == filled.filled_quantity == fake_order.filled > 0
        assert filled.avg_fill_price == fake_order.average_price
        found = await adapter.find_order_by_client_id(ref, placed.client_order_id or "")
        assert found is not None
        assert found.notional == Decimal(500)
        with pytest.raises(errors.NotSupported):  # before any request
            await adapter.place_order(ref, dollars("10", OrderType.market))
        with pytest.raises(errors.InsufficientFunds):
            await adapter.place_order(ref, dollars("1000000", limit_price=quote.ask))


async def test_one_unrepresentable_row_never_breaks_a_list() -> None:
    async with running_fake() as rh:
        adapter, ref = rh.adapter(), rh.account.account_number
        quote = rh.fake.quotes.quote("BTC-USD", rh.fake.clock())
        kept = await adapter.place_order(ref, dollars("100", limit_price=quote.bid / 2))
        odd = await adapter.place_order(ref, dollars("100", limit_price=quote.bid / 2))
        rh.fake.set_state(odd.broker_order_id, "settling")  # not in the documented vocabulary
        for listed in (
            await adapter.list_orders(ref, "all", 10),
            await adapter.order_history(ref, None, None, None),
        ):
            assert [o.broker_order_id for o in listed] == [kept.broker_order_id]
            assert is_partial(listed)
        bought = await adapter.place_order(ref, dollars("100", limit_price=quote.ask * 2))
        await rh.fake.match()
        transactions = await adapter.get_transactions(ref, None, None, None)
        assert [t.description.split()[-1] for t in transactions] == [bought.broker_order_id]
        assert is_partial(transactions)
        with pytest.raises(errors.UnknownBrokerValue):  # one order alone still raises
            await adapter.get_order(ref, odd.broker_order_id)


async def test_the_fake_estimates_prices_and_answers_unknown_routes_in_json() -> None:
    async with running_fake() as rh:
        answer = await signed_get(
            rh,
            "/api/v1/crypto/marketdata/estimated_price/?symbol=BTC-USD&side=both&quantity=0.1,1",
        )
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [(r["side"], r["quantity"]) for r in results] == [
            ("bid", 0.1),
            ("bid", 1.0),
            ("ask", 0.1),
            ("ask", 1.0),
        ]
        assert results[0]["price"] == results[0]["bid_inclusive_of_sell_spread"]
        assert results[2]["price"] == results[2]["ask_inclusive_of_buy_spread"]
        bad = await signed_get(
            rh, "/api/v1/crypto/marketdata/estimated_price/?symbol=AAPL&side=bid&quantity=1"
        )
        assert (bad.status_code, bad.json()["errors"][0]["attr"]) == (400, "symbol")
        unknown = await signed_get(rh, "/api/v1/crypto/nothing/here/")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "type": "client_error",
            "errors": [{"detail": "Not found.", "attr": None}],
        }

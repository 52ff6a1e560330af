"""Dollar-amount orders, Coinbase's own preview, lists that survive a bad row, and the fake's
routes the SDK uses (issue 15), all over real HTTP against the fake."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Support,
    SupportsOrderPreview,
    TimeInForce,
)
from app.brokers.coinbase import auth
from app.brokers.coinbase.adapter import COINBASE_CAPABILITIES
from app.brokers.rows import is_partial
from tests.brokers import support as shared
from tests.brokers.coinbase.support import Running, running_fake
from tests.fakes.coinbase.server import FakeWallet

P = "/api/v3/brokerage"


def dollars(client_order_id: str, amount: str, side: OrderSide = OrderSide.buy) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol="BTC-USD",
        side=side,
        quantity=Decimal(0),
        order_type=OrderType.market,
        time_in_force=TimeInForce.ioc,
        notional=Decimal(amount),
    )


async def signed(run: Running, method: str, path: str, body: Any = None) -> httpx.Response:
    """One request signed with the user's CDP key, as the SDK would send it."""
    token = auth.Signer(run.credentials()).rest_jwt(method, auth.jwt_host(run.url), path)
    async with httpx.AsyncClient(base_url=run.url) as client:
        return await client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )


def test_dollar_amounts_and_the_preview_are_native() -> None:
    assert COINBASE_CAPABILITIES.notional is Support.native
    assert COINBASE_CAPABILITIES.notional_limit is Support.unsupported
    assert COINBASE_CAPABILITIES.preview is Support.native


async def test_a_dollar_amount_market_order_fills_as_coinbase_reports_it() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.portfolio, dollars("bg-usd-1", "250"))
        sent = [b for m, p, b in run.fake.bodies if p == f"{P}/orders"]
        assert sent[-1]["order_configuration"] == {"market_market_ioc": {"quote_size": "250"}}
        fake_order = run.user.orders[placed.broker_order_id]
        assert placed.status is OrderStatus.filled
        assert placed.notional == Decimal(250)
        assert placed.quantity == placed.filled_quantity == fake_order.filled_size > 0
        assert placed.avg_fill_price == fake_order.average.quantize(Decimal("0.01"))
        spent = placed.filled_quantity * placed.avg_fill_price
        assert spent == pytest.approx(Decimal(250), rel=Decimal("0.001"))
        positions = await adapter.get_positions(run.portfolio)
        assert [(p.symbol, p.quantity) for p in positions] == [("BTC-USD", placed.quantity)]
        # and sold by the dollar too
        sold = await adapter.place_order(
            run.portfolio, dollars("bg-usd-2", "100", side=OrderSide.sell)
        )
        assert (sold.status, sold.notional) == (OrderStatus.filled, Decimal(100))
        listed = await adapter.list_orders(run.portfolio, "all", 10)
        assert {o.broker_order_id for o in listed} == {placed.broker_order_id, sold.broker_order_id}
        assert not is_partial(listed)
        with pytest.raises(errors.InsufficientFunds):
            await adapter.place_order(run.portfolio, dollars("bg-usd-3", "10000000"))


async def test_a_lost_dollar_amount_answer_is_unknown_and_found_by_client_id() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.portfolio, dollars("bg-usd-lost", "50"))
        found = await adapter.find_order_by_client_id(run.portfolio, "bg-usd-lost")
        assert found is not None
        assert found.notional == Decimal(50)
        assert found.status is OrderStatus.filled
        assert found.filled_quantity > 0


async def test_the_preview_is_coinbases_own_and_places_nothing() -> None:
    async with running_fake(cash="1000") as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOrderPreview)
        preview = await adapter.preview_order(
            run.portfolio, shared.limit_buy("bg-p1", "0.01", "1000", symbol="BTC-USD")
        )
        assert preview.estimated_cash_change == Decimal("-10.00")
        assert preview.direction.value == "debit"
        assert (preview.rejections, preview.source.value) == ((), "broker")
        by_amount = await adapter.preview_order(run.portfolio, dollars("bg-p2", "40"))
        assert by_amount.estimated_cash_change == Decimal(-40)
        too_big = await adapter.preview_order(
            run.portfolio, shared.limit_buy("bg-p3", "5", "1000", symbol="BTC-USD")
        )
        assert too_big.rejections == ("PREVIEW_INSUFFICIENT_FUND",)
        assert run.fake.order_count(run.user) == 0
        sent = [b for m, p, b in run.fake.bodies if p == f"{P}/orders/preview"]
        assert "client_order_id" not in sent[0]


async def test_one_unrepresentable_row_never_breaks_a_list() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        kept = await adapter.place_order(
            run.portfolio, shared.limit_buy("bg-r1", "0.01", "1000", symbol="BTC-USD")
        )
        odd = await adapter.place_order(
            run.portfolio, shared.limit_buy("bg-r2", "0.01", "1000", symbol="BTC-USD")
        )
        run.fake.set_status(odd.broker_order_id, "SETTLING")  # not in Coinbase's vocabulary
        for listed in (
            await adapter.list_orders(run.portfolio, "all", 10),
            await adapter.order_history(run.portfolio, None, None, None),
        ):
            assert [o.broker_order_id for o in listed] == [kept.broker_order_id]
            assert is_partial(listed)
        # a wallet without a currency among the real ones
        run.user.wallets["?"] = FakeWallet(currency="")
        accounts = await adapter.list_accounts()
        assert [a.broker_account_id for a in accounts] == [run.portfolio]
        assert is_partial(accounts)
        # a fill of a kind Coinbase has not documented, among real ones
        await adapter.place_order(run.portfolio, dollars("bg-r3", "20"))
        run.user.fills.append({**run.user.fills[-1], "trade_type": "NEW_KIND"})
        transactions = await adapter.get_transactions(run.portfolio, None, None, "buy")
        assert len(transactions) == 1
        assert is_partial(transactions)


async def test_the_fake_answers_the_sdks_other_routes() -> None:
    async with running_fake() as run:
        usd = run.user.wallet("USD")
        one = await signed(run, "GET", f"{P}/accounts/{usd.uuid}")
        assert one.status_code == 200
        assert one.json()["account"]["available_balance"] == {
            "value": "100000",
            "currency": "USD",
        }
        missing = await signed(run, "GET", f"{P}/accounts/nope")
        assert (missing.status_code, missing.json()["error"]) == (404, "NOT_FOUND")
        portfolios = await signed(run, "GET", f"{P}/portfolios")
        assert portfolios.json() == {
            "portfolios": [
                {"name": "Default", "uuid": run.portfolio, "type": "DEFAULT", "deleted": False}
            ]
        }
        placed = await run.adapter().place_order(
            run.portfolio, shared.limit_buy("bg-e1", "0.01", "1000", symbol="BTC-USD")
        )
        preview = await signed(
            run,
            "POST",
            f"{P}/orders/edit_preview",
            {"order_id": placed.broker_order_id, "price": "900"},
        )
        assert preview.json()["order_total"] == "9.00"
        assert run.user.orders[placed.broker_order_id].limit_price == Decimal(1000)
        edited = await signed(
            run, "POST", f"{P}/orders/edit", {"order_id": placed.broker_order_id, "price": "900"}
        )  # "a new size, or new price" (edit-order reference): price alone is an edit
        assert edited.json() == {"success": True, "errors": []}
        fake_order = run.user.orders[placed.broker_order_id]
        assert (fake_order.limit_price, fake_order.base_size) == (Decimal(900), Decimal("0.01"))
        unknown = await signed(run, "GET", f"{P}/no/such/route")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/json"
        assert unknown.json()["error"] == "NOT_FOUND"

"""Webull order forms and list reads against the fake over real HTTP: amount (notional)
orders, short sales and covers, one unrepresentable row never breaking a list, the fake's
JSON error envelope on unknown routes and the older generation's paths."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    Support,
    TimeInForce,
)
from app.brokers.rows import is_partial
from app.brokers.webull import auth
from app.brokers.webull.adapter import WEBULL_CAPABILITIES
from tests.brokers.webull.support import running_fake


def market(
    side: OrderSide,
    *,
    quantity: str = "0",
    notional: str | None = None,
    effect: PositionEffect | None = None,
    symbol: str = "AAPL",
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        notional=None if notional is None else Decimal(notional),
        position_effect=effect,
    )


def test_capabilities_declare_amount_orders_and_short_sales() -> None:
    assert WEBULL_CAPABILITIES.notional is Support.native
    assert WEBULL_CAPABILITIES.notional_limit is Support.unsupported
    assert WEBULL_CAPABILITIES.short_selling is Support.native


async def test_an_amount_order_buys_fractional_shares_and_reports_what_filled() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        ref = wb.account.account_id
        placed = await adapter.place_order(ref, market(OrderSide.buy, notional="500"))
        sent = wb.account.orders[placed.broker_order_id]
        assert (sent.amount, sent.quantity) == (Decimal(500), 0)
        assert wb.fake.categories == ["US_EQUITY"]
        assert placed.notional == Decimal(500)
        assert placed.quantity == 0  # unknown until filled
        await wb.fake.match()
        filled = await adapter.get_order(ref, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.notional == Decimal(500)
        assert filled.filled_quantity != filled.filled_quantity.to_integral_value()
        assert filled.avg_fill_price is not None
        assert abs(filled.filled_quantity * filled.avg_fill_price - 500) < 1
        [held] = await adapter.get_positions(ref)
        assert held.quantity == filled.filled_quantity


async def test_an_amount_limit_order_is_refused_before_any_request() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        order = market(OrderSide.buy, notional="100")
        limit = dataclasses.replace(order, order_type=OrderType.limit, limit_price=Decimal(1))
        before = len(wb.fake.requests)
        with pytest.raises(errors.UnsupportedOrder, match="market"):
            await adapter.place_order(wb.account.account_id, limit)
        assert len(wb.fake.requests) == before


async def test_a_sell_that_opens_is_a_short_sale_and_a_buy_that_closes_covers_it() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        ref = wb.account.account_id
        with pytest.raises(errors.InsufficientFunds, match="position"):
            await adapter.place_order(ref, market(OrderSide.sell, quantity="5"))
        short = await adapter.place_order(
            ref, market(OrderSide.sell, quantity="5", effect=PositionEffect.open)
        )
        assert wb.account.orders[short.broker_order_id].side == "SHORT"
        assert short.side is OrderSide.sell
        assert short.position_effect is PositionEffect.open
        await wb.fake.match()
        [held] = await adapter.get_positions(ref)
        assert held.quantity == -5
        cover = await adapter.place_order(
            ref, market(OrderSide.buy, quantity="5", effect=PositionEffect.close)
        )
        assert wb.account.orders[cover.broker_order_id].side == "BUY"
        await wb.fake.match()
        assert await adapter.get_positions(ref) == []


async def test_one_unrepresentable_row_never_breaks_a_list() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        ref = wb.account.account_id
        placed = await adapter.place_order(ref, market(OrderSide.buy, quantity="1"))
        await wb.fake.match()
        foreign = {
            "client_order_id": "f" * 32,
            "combo_type": "NORMAL",
            "orders": [
                {
                    **wb.account.orders[placed.broker_order_id].wire()["orders"][0],
                    "client_order_id": "f" * 32,
                    "instrument_type": "FUTURES",
                    "symbol": "ESZ6",
                }
            ],
        }
        wb.fake.add_foreign_order(wb.account, foreign)
        wb.fake.add_foreign_position(
            wb.account,
            {"position_id": "P-futures", "symbol": "ESZ6", "instrument_type": "FUTURES"},
        )
        orders = await adapter.list_orders(ref, "all", 50)
        assert [o.broker_order_id for o in orders] == [placed.broker_order_id]
        assert is_partial(orders)
        positions = await adapter.get_positions(ref)
        assert [p.symbol for p in positions] == ["AAPL"]
        assert is_partial(positions)
        accounts = await adapter.list_accounts()
        assert len(accounts) == 1
        assert not is_partial(accounts)


async def test_unknown_routes_answer_webulls_json_error_envelope() -> None:
    async with running_fake() as wb:
        async with httpx.AsyncClient(base_url=wb.url) as client:
            missing = await client.get("/trading/nowhere")
            wrong_method = await client.get("/trading/orders/place")
        assert missing.status_code == 404
        assert missing.json() == {
            "error_code": "NOT_FOUND",
            "message": "/trading/nowhere is not an API path",
        }
        assert wrong_method.status_code == 405
        assert set(wrong_method.json()) == {"error_code", "message"}


async def test_the_config_and_the_older_generation_still_answer_signed_requests() -> None:
    async with running_fake() as wb:
        credentials = await wb.confirmed_credentials()
        signer = auth.RequestSigner(credentials)
        async with httpx.AsyncClient(base_url=wb.url) as client:
            answers = {}
            for path in ("/openapi/config", "/openapi/account/list", "/trading/accounts/list"):
                request = client.build_request("GET", path)
                request.headers.update(signer(request))
                answers[path] = await client.send(request)
        assert answers["/openapi/config"].json() == {"token_check_enabled": True}
        assert answers["/openapi/account/list"].json() == answers["/trading/accounts/list"].json()
        assert answers["/trading/accounts/list"].json()[0]["account_id"] == (wb.account.account_id)


async def test_crypto_trades_in_the_crypto_account_as_btc_usd_both_ways() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        crypto = wb.fake.add_crypto_account(wb.app)
        assert len(await adapter.list_accounts()) == 2
        await adapter.check_symbol("BTC-USD")
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol("NOPE-USD")
        quotes = await adapter.get_quotes(["BTC-USD", "AAPL"])
        assert set(quotes) == {"BTC-USD", "AAPL"}
        assert quotes["BTC-USD"].symbol == "BTC-USD"
        ask = quotes["BTC-USD"].ask
        order = dataclasses.replace(
            market(OrderSide.buy, quantity="0.01", symbol="BTC-USD"),
            order_type=OrderType.limit,
            limit_price=(ask * Decimal("1.01")).quantize(Decimal("0.01")),
        )
        with pytest.raises(errors.Rejected, match="crypto account"):
            await adapter.place_order(wb.account.account_id, order)
        placed = await adapter.place_order(crypto.account_id, order)
        assert wb.fake.categories == ["US_CRYPTO"]
        sent = crypto.orders[placed.broker_order_id]
        assert (sent.symbol, sent.instrument, sent.quantity) == (
            "BTCUSD",
            "CRYPTO",
            Decimal("0.01"),
        )
        assert placed.symbol == "BTC-USD"
        await wb.fake.match()
        assert (await adapter.get_order(crypto.account_id, placed.broker_order_id)).status is (
            OrderStatus.filled
        )
        [held] = await adapter.get_positions(crypto.account_id)
        assert (held.symbol, held.asset_class, held.quantity) == (
            "BTC-USD",
            AssetClass.crypto,
            Decimal("0.01"),
        )
        with pytest.raises(errors.UnsupportedOrder, match="short"):
            await adapter.place_order(
                crypto.account_id,
                market(OrderSide.sell, quantity="1", symbol="BTC-USD", effect=PositionEffect.open),
            )


async def test_a_fractional_stock_quantity_is_refused_before_any_request() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        before = len(wb.fake.requests)
        with pytest.raises(errors.UnsupportedOrder, match="by amount"):
            await adapter.place_order(wb.account.account_id, market(OrderSide.buy, quantity="0.5"))
        assert len(wb.fake.requests) == before

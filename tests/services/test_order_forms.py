"""Order forms through the API on the fake Alpaca over a real socket (ISSUE 15 items 1, 3, 6):
dollar-amount (notional) orders with their idempotency, lost answers and reconciliation;
equity short sales and covers; the capability gate refusing both before anything is
written or sent; lists marked partial when a broker row cannot be represented.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app import errors
from app.brokers.alpaca.adapter import ALPACA_CAPABILITIES
from app.brokers.base import OrderType, Support, TimeInForce
from app.schemas.orders import OrderCreate
from app.services.clock import utcnow
from app.services.pretrade import check_order
from app.services.reconciliation import Reconciler
from tests.conftest import new_user
from tests.services.support import LiveGateway, assert_problem, live_gateway


async def _post(gw: LiveGateway, user: str, account: str, key: str, **body: Any) -> httpx.Response:
    return await gw.harness.client.post(
        f"/v1/accounts/{account}/orders",
        json=body,
        headers=gw.harness.auth(user, **{"Idempotency-Key": key}),
    )


async def _get(gw: LiveGateway, user: str, order_id: str) -> dict[str, Any]:
    response = await gw.harness.client.get(f"/v1/orders/{order_id}", headers=gw.harness.auth(user))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _orders(gw: LiveGateway, user: str, account: str) -> list[dict[str, Any]]:
    response = await gw.harness.client.get(
        f"/v1/accounts/{account}/orders?status=all", headers=gw.harness.auth(user)
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


NOTIONAL_BUY = {"symbol": "AAPL", "side": "buy", "notional": "500", "order_type": "market"}


# --- the body ---------------------------------------------------------------------------


def _body(**fields: Any) -> OrderCreate:
    return OrderCreate.model_validate(
        {"symbol": "AAPL", "side": "buy", "order_type": "market"} | fields
    )


def test_exactly_one_of_quantity_and_notional() -> None:
    assert _body(notional="500").quantity == 0
    assert _body(quantity="2").notional is None
    for fields in ({}, {"quantity": "1", "notional": "500"}, {"quantity": "0", "notional": "5"}):
        with pytest.raises(ValidationError):
            _body(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"notional": "0"},
        {"notional": "-5"},
        {"notional": "10.001"},  # at most cents
        {"notional": "5", "order_type": "stop", "stop_price": "1"},
        {"notional": "5", "order_type": "stop_limit", "stop_price": "1", "limit_price": "1"},
        {"notional": "5", "symbol": "AAPL250117C00150000", "position_effect": "open"},
    ],
)
def test_a_notional_body_is_refused_where_it_makes_no_sense(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _body(**fields)


@given(cents=st.integers(min_value=1, max_value=10**12))
def test_any_positive_amount_in_cents_is_taken_and_answered_as_given(cents: int) -> None:
    amount = Decimal(cents) / 100
    body = _body(notional=str(amount))
    assert body.notional == amount
    assert Decimal(body.model_dump(mode="json")["notional"]) == amount


# --- the capability gate ----------------------------------------------------------------


@given(
    notional=st.sampled_from(Support),
    notional_limit=st.sampled_from(Support),
    short_selling=st.sampled_from(Support),
    order_type=st.sampled_from([OrderType.market, OrderType.limit]),
    by_amount=st.booleans(),
    short_sale=st.booleans(),
)
def test_the_gate_takes_exactly_what_the_capabilities_say(
    notional: Support,
    notional_limit: Support,
    short_selling: Support,
    order_type: OrderType,
    by_amount: bool,
    short_sale: bool,
) -> None:
    capabilities = dataclasses.replace(
        ALPACA_CAPABILITIES,
        notional=notional,
        notional_limit=notional_limit,
        short_selling=short_selling,
    )
    needed = notional_limit if order_type is OrderType.limit else notional
    refused = (by_amount and needed is Support.unsupported) or (
        short_sale and short_selling is Support.unsupported
    )
    try:
        check_order(
            capabilities,
            symbol="AAPL",
            order_type=order_type,
            time_in_force=TimeInForce.day,
            quantity_is_fractional=False,
            extended_hours=False,
            notional=by_amount,
            short_sale=short_sale,
        )
    except errors.UnsupportedOrder:
        assert refused
    else:
        assert not refused


# --- notional orders at Alpaca ----------------------------------------------------------


async def test_a_notional_market_order_fills_as_alpaca_reports(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        placed = await _post(gw, user, account, "notional-1", **NOTIONAL_BUY)
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["notional"] == "500"
        sent = gw.alpaca.fake.accounts[gw.byob_key.key_id].orders[order["broker_order_id"]]
        assert (sent.notional, sent.side, sent.type) == (Decimal(500), "buy", "market")
        await gw.alpaca.fake.match()
        await Reconciler(gw.harness.state.ctx).run_once(now=utcnow() + timedelta(minutes=5))
        got = await _get(gw, user, order["id"])
        filled = gw.alpaca.fake.accounts[gw.byob_key.key_id].orders[order["broker_order_id"]]
        assert got["status"] == "filled", got
        assert got["notional"] == "500"
        # The quantity and price Alpaca reports, not ours to compute.
        assert Decimal(got["filled_quantity"]) == filled.filled_qty > 0
        assert Decimal(got["quantity"]) == filled.filled_qty
        assert Decimal(got["avg_fill_price"]) == filled.filled_avg_price


async def test_a_notional_key_replays_and_covers_the_amount(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        first = await _post(gw, user, account, "notional-key", **NOTIONAL_BUY)
        assert first.status_code == 201, first.text
        before = len(gw.requests)
        replay = await _post(gw, user, account, "notional-key", **NOTIONAL_BUY)
        assert (replay.status_code, replay.json()) == (201, first.json())
        assert [r for r in gw.requests[before:] if r[0] == "POST"] == []
        changed = await _post(
            gw, user, account, "notional-key", **(NOTIONAL_BUY | {"notional": "501"})
        )
        assert_problem(changed, 422, "idempotency_key_reused")
        assert len(await _orders(gw, user, account)) == 1


async def test_a_lost_notional_answer_is_adopted_by_client_order_id(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=0, reconcile_unknown_after_seconds=0) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        fake = gw.alpaca.fake
        fake.faults.timeout_after_accept, fake.faults.hang_seconds = 1, 3.0
        lost = await _post(gw, user, account, "notional-lost", **NOTIONAL_BUY)
        assert lost.status_code == 202, lost.text
        order = lost.json()
        assert (order["status"], order["notional"], order["broker_order_id"]) == (
            "unknown",
            "500",
            None,
        )
        replay = await _post(gw, user, account, "notional-lost", **NOTIONAL_BUY)
        assert (replay.status_code, replay.json()) == (202, order)

        assert await Reconciler(gw.harness.state.ctx).run_once() >= 1
        got = await _get(gw, user, order["id"])
        at_alpaca = fake.accounts[gw.byob_key.key_id].orders
        assert got["status"] != "unknown", got
        assert got["broker_order_id"] in at_alpaca
        assert at_alpaca[got["broker_order_id"]].client_order_id == order["client_order_id"]
        assert len(at_alpaca) == 1  # adopted, never sent twice
        assert got["notional"] == "500"


async def test_notional_limit_is_refused_before_anything_is_sent(db_url: str) -> None:
    """Alpaca takes notional on market orders only (``notional_limit`` unsupported)."""
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        brokers = (await gw.harness.client.get("/v1/brokers", headers=gw.harness.auth(user))).json()
        alpaca = next(b for b in brokers["items"] if b["slug"] == "alpaca")
        assert alpaca["capabilities"]["notional_limit"] == "unsupported"
        before = len(gw.requests)
        body = NOTIONAL_BUY | {"order_type": "limit", "limit_price": "100"}
        assert_problem(await _post(gw, user, account, "nl", **body), 422, "unsupported_order")
        assert [r for r in gw.requests[before:] if r[0] == "POST"] == []
        assert await _orders(gw, user, account) == []


async def test_paper_notional_and_short_sales_through_the_api(db_url: str) -> None:
    """The paper broker takes dollar amounts on market orders; a short sale needs a margin
    account: a cash account (the default) refuses it, recorded like any paper refusal as a
    rejected order with its 422."""
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        h, user = gw.harness, new_user()
        _, paper = await h.paper_account(user)
        bought = await _post(gw, user, paper, "paper-notional", **NOTIONAL_BUY)
        assert bought.status_code == 201, bought.text
        order = bought.json()
        assert (order["status"], order["notional"]) == ("filled", "500")
        filled = Decimal(order["filled_quantity"])
        assert filled > 0
        assert filled * Decimal(order["avg_fill_price"]) <= Decimal(500)
        short = {
            "symbol": "MSFT",
            "side": "sell",
            "quantity": "1",
            "order_type": "market",
            "position_effect": "open",
        }
        refused = await _post(gw, user, paper, "paper-short", **short)
        assert_problem(refused, 422, "unsupported_order")
        statuses = sorted(o["status"] for o in await _orders(gw, user, paper))
        assert statuses == ["filled", "rejected"]

        created = await h.client.post(
            "/v1/connections",
            json={"broker": "paper", "options": {"account_type": "margin"}},
            headers=h.auth(user),
        )
        assert created.status_code == 201, created.text
        [margin] = created.json()["accounts"]
        sold = await _post(gw, user, margin, "paper-short-margin", **short)
        assert sold.status_code == 201, sold.text
        assert sold.json()["status"] == "filled"
        held = await h.client.get(f"/v1/accounts/{margin}/positions", headers=h.auth(user))
        assert [(p["symbol"], p["quantity"]) for p in held.json()["items"]] == [("MSFT", "-1")]


# --- short sales and covers --------------------------------------------------------------


async def test_a_short_sale_and_its_cover_reach_alpaca(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        gw.byob_key.shorting = True
        _, account = await gw.connect_byob(user)
        short = await _post(
            gw,
            user,
            account,
            "short-1",
            symbol="AAPL",
            side="sell",
            quantity="3",
            order_type="market",
            position_effect="open",
        )
        assert short.status_code == 201, short.text
        assert short.json()["position_effect"] == "open"
        await gw.alpaca.fake.match()
        positions = (
            await gw.harness.client.get(
                f"/v1/accounts/{account}/positions", headers=gw.harness.auth(user)
            )
        ).json()
        assert [(p["symbol"], Decimal(p["quantity"])) for p in positions["items"]] == [
            ("AAPL", Decimal(-3))
        ]
        cover = await _post(
            gw,
            user,
            account,
            "cover-1",
            symbol="AAPL",
            side="buy",
            quantity="3",
            order_type="market",
            position_effect="close",
        )
        assert cover.status_code == 201, cover.text
        assert cover.json()["position_effect"] == "close"


async def test_alpaca_refuses_a_short_sale_where_the_account_cannot_short(db_url: str) -> None:
    """The position effect reaches the adapter: a cash account's short sale is refused
    there (Alpaca shorts by position), not sent as a plain sell."""
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        before = len(gw.requests)
        refused = await _post(
            gw,
            user,
            account,
            "short-cash",
            symbol="AAPL",
            side="sell",
            quantity="1",
            order_type="market",
            position_effect="open",
        )
        assert refused.status_code == 422, refused.text
        assert [r for r in gw.requests[before:] if r[0] == "POST"] == []


# --- partial lists ------------------------------------------------------------------------


async def test_a_list_with_an_unrepresentable_row_is_marked_partial(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        h, user = gw.harness, new_user()
        _, account = await gw.connect_byob(user)
        assert (await h.place(user, account)).status_code == 201
        await gw.alpaca.fake.match()

        async def read(path: str) -> dict[str, Any]:
            response = await h.client.get(path, headers=h.auth(user))
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        def portfolio_entry(body: dict[str, Any]) -> dict[str, Any]:
            entry: dict[str, Any] = next(a for a in body["accounts"] if a["account_id"] == account)
            return entry

        positions_path = f"/v1/accounts/{account}/positions"
        transactions_path = f"/v1/accounts/{account}/transactions"
        assert (await read(positions_path))["partial"] is False
        assert (await read(transactions_path))["partial"] is False
        assert portfolio_entry(await read("/v1/portfolio"))["partial"] is False

        fake_account = gw.alpaca.fake.accounts[gw.byob_key.key_id]
        fake_account.foreign_positions.append(
            {"asset_class": "crypto_perp", "symbol": "BTCUSDPERP", "qty": "1", "side": "long"}
        )
        # A fill activity without its quantity or price.
        fake_account.activities.append(
            {"activity_type": "FILL", "id": "20261204000000000::broken", "symbol": "AAPL"}
        )
        positions = await read(positions_path)
        assert positions["partial"] is True
        assert [p["symbol"] for p in positions["items"]] == ["AAPL"]
        transactions = await read(transactions_path)
        assert transactions["partial"] is True
        assert transactions["items"]
        entry = portfolio_entry(await read("/v1/portfolio"))
        assert (entry["partial"], entry["positions"]) == (True, 1)


async def test_the_estimate_of_a_dollar_amount_order_is_the_amount(db_url: str) -> None:
    """Alpaca has no preview: the gateway estimates, and a dollar amount is the cash moved."""
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        _, account = await gw.connect_byob(user)
        response = await gw.harness.client.post(
            f"/v1/accounts/{account}/orders/preview",
            json=NOTIONAL_BUY,
            headers=gw.harness.auth(user),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["source"], body["direction"], body["estimated_cash_change"]) == (
            "estimate",
            "debit",
            "-500",
        )

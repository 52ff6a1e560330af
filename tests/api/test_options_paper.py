"""Options end to end on the paper broker, through the API: chain, preview, a single-leg
order, and an iron condor filled with its four legs into four separate positions.

The paper clock starts where the harness puts it and is moved to the real date first, so the
contracts the paper market lists are live by the service clock too (the gateway refuses
contracts expired by its own clock)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio
from sqlalchemy import func, select

from app.db.models import IdempotencyKey, Order, OrderEvent
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests


@pytest_asyncio.fixture
async def paper(db_url: str) -> AsyncIterator[Harness]:
    async with running_app(settings_for_tests(db_url)) as harness:
        now = datetime.now(UTC)
        if now > harness.clock.now():
            harness.clock.advance(now - harness.clock.now())
        yield harness


async def _get(harness: Harness, user: str, path: str) -> Any:
    response = await harness.client.get(path, headers=harness.auth(user))
    assert response.status_code == 200, response.text
    return response.json()


async def _place(harness: Harness, user: str, account: str, body: dict[str, Any]) -> Any:
    response = await harness.client.post(
        f"/v1/accounts/{account}/orders",
        json=body,
        headers=harness.auth(user, **{"Idempotency-Key": uuid.uuid4().hex}),
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _monthly(harness: Harness, user: str, account: str) -> str:
    """A standard (monthly) expiration at least a week out."""
    expirations = await _get(
        harness, user, f"/v1/accounts/{account}/options/expirations?underlying=AAPL"
    )
    today = datetime.now(UTC).date().isoformat()
    monthlies = [
        e["expiration"]
        for e in expirations["items"]
        if e["expiration_type"] == "standard" and e["expiration"] > today
    ]
    assert monthlies, expirations
    return str(monthlies[-1])


async def _chain(harness: Harness, user: str, account: str, query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    url = f"/v1/accounts/{account}/options/chain?underlying=AAPL&{query}"
    page = await _get(harness, user, url)
    items.extend(page["items"])
    while page["next_cursor"] is not None:
        page = await _get(harness, user, f"{url}&cursor={page['next_cursor']}")
        items.extend(page["items"])
    return items


async def test_the_paper_chain_is_filtered_and_paged(paper: Harness) -> None:
    user = new_user()
    _, account = await paper.paper_account(user)
    expiration = await _monthly(paper, user, account)
    calls = await _chain(
        paper, user, account, f"expiration={expiration}&right=call&strike_gte=170&limit=7"
    )
    assert len(calls) > 7  # more than one page
    strikes = [Decimal(c["contract"]["strike"]) for c in calls]
    assert strikes == sorted(strikes)
    assert min(strikes) >= 170
    for item in calls:
        assert item["contract"]["expiration"] == expiration
        assert item["contract"]["right"] == "call"
        assert item["contract"]["multiplier"] == "100"
        assert item["greeks"] is not None
        assert item["source"]
        assert item["as_of"].endswith("Z")


async def test_a_single_leg_option_round_trip(paper: Harness) -> None:
    user = new_user()
    _, account = await paper.paper_account(user)
    expiration = await _monthly(paper, user, account)
    (quote,) = await _chain(
        paper,
        user,
        account,
        f"expiration={expiration}&right=call&strike_gte=190&strike_lte=190",
    )
    symbol = quote["symbol"]
    padded = f"AAPL  {symbol[4:]}"
    opened = await _place(
        paper,
        user,
        account,
        {
            "symbol": padded,
            "side": "buy",
            "quantity": "2",
            "order_type": "market",
            "position_effect": "open",
        },
    )
    assert opened["symbol"] == symbol
    assert opened["status"] == "filled"
    assert opened["position_effect"] == "open"
    assert opened["contract"]["strike"] == "190"
    assert opened["contract"]["expiration"] == expiration

    position = await _get(paper, user, f"/v1/accounts/{account}/positions/{symbol}")
    assert position["asset_class"] == "option"
    assert position["quantity"] == "2"
    assert position["contract"]["right"] == "call"
    assert Decimal(position["market_value"]) == Decimal(position["current_price"]) * 2 * 100

    closed = await _place(
        paper,
        user,
        account,
        {
            "symbol": symbol,
            "side": "sell",
            "quantity": "2",
            "order_type": "market",
            "position_effect": "close",
        },
    )
    assert closed["status"] == "filled"
    positions = await _get(paper, user, f"/v1/accounts/{account}/positions")
    assert symbol not in {p["symbol"] for p in positions["items"]}


async def test_an_iron_condor_fills_with_four_legs_into_four_positions(paper: Harness) -> None:
    user = new_user()
    _, account = await paper.paper_account(user)
    expiration = await _monthly(paper, user, account)
    chain = {
        (c["contract"]["right"], Decimal(c["contract"]["strike"])): c
        for c in await _chain(
            paper, user, account, f"expiration={expiration}&strike_gte=170&strike_lte=210"
        )
    }
    wings = [
        ("put", Decimal(170), "buy"),
        ("put", Decimal(180), "sell"),
        ("call", Decimal(200), "sell"),
        ("call", Decimal(210), "buy"),
    ]
    legs = [
        {
            "symbol": chain[(right, strike)]["symbol"],
            "side": side,
            "ratio": 1,
            "position_effect": "open",
        }
        for right, strike, side in wings
    ]
    body = {
        "legs": legs,
        "quantity": "2",
        "order_type": "limit",
        "limit_price": "0.05",  # any credit of at least 5 cents a share
        "price_effect": "credit",
        "time_in_force": "day",
    }

    # Preview first: the paper broker's own, nothing written.
    preview = await paper.client.post(
        f"/v1/accounts/{account}/orders/preview", json=body, headers=paper.auth(user)
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["source"] == "broker"
    assert preview.json()["direction"] == "credit"
    async with paper.state.ctx.sessionmaker() as session:
        for model in (Order, IdempotencyKey):
            count = (
                await session.execute(select(func.count()).where(model.user_id == user))
            ).scalar_one()
            assert count == 0

    order = await _place(paper, user, account, body)
    assert order["status"] == "filled"
    assert order["symbol"] == "AAPL"
    assert order["price_effect"] == "credit"
    assert [leg["symbol"] for leg in order["legs"]] == [leg["symbol"] for leg in legs]
    for leg in order["legs"]:
        assert leg["filled_quantity"] == "2"
        assert Decimal(leg["avg_fill_price"]) > 0
    credit = sum(
        Decimal(leg["avg_fill_price"]) * (1 if leg["side"] == "sell" else -1)
        for leg in order["legs"]
    )
    assert credit >= Decimal("0.05")

    async with paper.state.ctx.sessionmaker() as session:
        events = (
            (await session.execute(select(OrderEvent).where(OrderEvent.order_id == order["id"])))
            .scalars()
            .all()
        )
    assert events[-1].type == "order.filled"
    assert [leg["filled_quantity"] for leg in events[-1].payload["legs"]] == ["2"] * 4

    positions = {
        p["symbol"]: p
        for p in (await _get(paper, user, f"/v1/accounts/{account}/positions"))["items"]
        if p["asset_class"] == "option"
    }
    assert {s: p["quantity"] for s, p in positions.items()} == {
        leg["symbol"]: ("2" if leg["side"] == "buy" else "-2") for leg in legs
    }
    for p in positions.values():
        assert p["contract"]["multiplier"] == "100"
        assert (
            Decimal(p["market_value"]) == Decimal(p["current_price"]) * Decimal(p["quantity"]) * 100
        )

    portfolio = await _get(paper, user, "/v1/portfolio")
    rows = {
        (row["symbol"], row["position_side"])
        for row in portfolio["positions"]
        if row["asset_class"] == "option"
    }
    assert rows == {(leg["symbol"], "long" if leg["side"] == "buy" else "short") for leg in legs}


async def test_the_order_router_takes_the_same_multi_leg_body(paper: Harness) -> None:
    user = new_user()
    _, account = await paper.paper_account(user)
    expiration = await _monthly(paper, user, account)
    chain = await _chain(
        paper, user, account, f"expiration={expiration}&right=call&strike_gte=190&strike_lte=200"
    )
    low, high = chain[0]["symbol"], chain[-1]["symbol"]
    legs: list[dict[str, Any]] = [
        {"symbol": low, "side": "buy", "ratio": 1, "position_effect": "open"},
        {"symbol": high, "side": "sell", "ratio": 1, "position_effect": "open"},
    ]
    body = {
        "account_id": "auto",
        "legs": legs,
        "quantity": "1",
        "order_type": "market",
    }
    response = await paper.client.post(
        "/v1/orders", json=body, headers=paper.auth(user, **{"Idempotency-Key": "route-1"})
    )
    assert response.status_code == 201, response.text
    routed = response.json()
    assert routed["route"]["decision"]["asset_class"] == "option"
    assert routed["route"]["account_id"] == account
    assert routed["order"]["status"] == "filled"
    assert [leg["symbol"] for leg in routed["order"]["legs"]] == [low, high]
    # A leg on another underlying is refused before anything is written, as on the account
    # route.
    legs[1]["symbol"] = "MSFT" + high[4:]
    refused = await paper.client.post(
        "/v1/orders", json=body, headers=paper.auth(user, **{"Idempotency-Key": "route-2"})
    )
    assert refused.status_code == 422
    assert refused.json()["code"] == "mixed_underlyings"


async def test_a_resting_combo_is_modified_and_canceled_as_one_order(paper: Harness) -> None:
    user = new_user()
    _, account = await paper.paper_account(user)
    expiration = await _monthly(paper, user, account)
    chain = await _chain(
        paper, user, account, f"expiration={expiration}&right=call&strike_gte=200&strike_lte=205"
    )
    low, high = chain[0]["symbol"], chain[-1]["symbol"]
    body = {
        "legs": [
            {"symbol": low, "side": "sell", "ratio": 1, "position_effect": "open"},
            {"symbol": high, "side": "buy", "ratio": 1, "position_effect": "open"},
        ],
        "quantity": "1",
        "order_type": "limit",
        "limit_price": "4.90",  # a credit near the spread's whole width: it rests
        "price_effect": "credit",
        "time_in_force": "gtc",
    }
    order = await _place(paper, user, account, body)
    assert order["status"] == "accepted"
    assert [leg["filled_quantity"] for leg in order["legs"]] == ["0", "0"]

    changed = await paper.client.patch(
        f"/v1/orders/{order['id']}",
        json={"quantity": "2", "limit_price": "4.80"},
        headers=paper.auth(user),
    )
    assert changed.status_code == 200, changed.text
    current = changed.json()
    assert current["quantity"] == "2"
    assert current["limit_price"] == "4.8"
    assert [leg["symbol"] for leg in current["legs"]] == [low, high]

    canceled = await paper.client.delete(f"/v1/orders/{current['id']}", headers=paper.auth(user))
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] in ("pending_cancel", "canceled")
    assert len(canceled.json()["legs"]) == 2


async def test_a_naked_short_call_is_422_uncovered_option(paper: Harness) -> None:
    user = new_user()
    _, account = await paper.paper_account(user)
    expiration = await _monthly(paper, user, account)
    call = (
        await _chain(paper, user, account, f"expiration={expiration}&right=call&strike_gte=200")
    )[0]
    response = await paper.client.post(
        f"/v1/accounts/{account}/orders",
        json={
            "symbol": call["symbol"],
            "side": "sell",
            "quantity": "1",
            "order_type": "market",
            "position_effect": "open",
        },
        headers=paper.auth(user, **{"Idempotency-Key": uuid.uuid4().hex}),
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "uncovered_option"
    assert "uncovered short call" in response.json()["detail"]
    positions = await _get(paper, user, f"/v1/accounts/{account}/positions")
    assert positions["items"] == []


async def test_an_in_the_money_call_held_through_expiry_is_exercised_and_subscribers_see_it(
    paper: Harness,
) -> None:
    user = new_user()
    _, account = await paper.paper_account(user)
    expirations = await _get(
        paper, user, f"/v1/accounts/{account}/options/expirations?underlying=AAPL"
    )
    nearest = expirations["items"][0]["expiration"]
    call = (await _chain(paper, user, account, f"expiration={nearest}&right=call&strike_lte=160"))[
        0
    ]
    bought = await _place(
        paper,
        user,
        account,
        {
            "symbol": call["symbol"],
            "side": "buy",
            "quantity": "1",
            "order_type": "market",
            "position_effect": "open",
        },
    )
    assert bought["status"] == "filled"
    cursor = (await _get(paper, user, "/v1/events?limit=500"))["items"][-1]["cursor"]

    expiry = datetime.fromisoformat(f"{nearest}T21:00:00+00:00")
    paper.clock.advance(expiry - paper.clock.now() + timedelta(minutes=1))
    await paper.state.ctx.paper_engine.tick()

    events = (await _get(paper, user, f"/v1/events?after={cursor}"))["items"]
    exercised = [e for e in events if e["order"]["client_order_id"].startswith("option_exercise:")]
    assert [e["type"] for e in exercised] == ["order.filled"]
    order = exercised[0]["order"]
    assert (order["symbol"], order["side"], order["filled_quantity"]) == (
        call["symbol"],
        "sell",
        "1",
    )
    positions = {
        p["symbol"]: p
        for p in (await _get(paper, user, f"/v1/accounts/{account}/positions"))["items"]
    }
    assert call["symbol"] not in positions
    assert Decimal(positions["AAPL"]["quantity"]) == 100
    orders = await _get(paper, user, f"/v1/accounts/{account}/orders?status=all")
    assert order["id"] in {o["id"] for o in orders["items"]}

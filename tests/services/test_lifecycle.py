"""Option lifecycle events from a live broker, end to end: the fake Alpaca ends a held
contract's life (``settle_option``: OPEXC, OPASN, OPEXP activities), the lifecycle sweep
reads the activities over HTTP and the account's subscribers see one ``order.filled`` event
per contract, once, however often the sweep runs (and from a fresh process too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from app.brokers.base import OptionContract, OptionRight, Transaction
from app.services.lifecycle import LifecycleSweep, lifecycle_update
from tests.brokers.alpaca.options import contract
from tests.brokers.tastytrade.test_api import gateway as tastytrade_gateway
from tests.conftest import new_user
from tests.fakes.alpaca.server import FakePosition
from tests.fakes.tastytrade.server import FakePosition as TastyPosition
from tests.services.support import LiveGateway, live_gateway

ACTIVITIES = "/v2/account/activities"


async def _events(gw: LiveGateway, user: str) -> list[dict[str, Any]]:
    h = gw.harness
    response = await h.client.get("/v1/events", params={"limit": 500}, headers=h.auth(user))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _activity_reads(gw: LiveGateway) -> int:
    return sum(1 for _, path in gw.requests if path == ACTIVITIES)


@pytest.mark.parametrize(
    ("qty", "activity", "kind", "side"),
    [
        ("2", "OPEXC", "option_exercise", "sell"),
        ("-1", "OPASN", "option_assignment", "buy"),
        ("3", "OPEXP", "option_expiration", "sell"),
    ],
)
async def test_a_lifecycle_activity_reaches_the_stream_once(
    db_url: str, qty: str, activity: str, kind: str, side: str
) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, account = await gw.connect_byob(user)
        held = contract(gw.alpaca.fake, OptionRight.call, -1)
        gw.byob_key.positions[held.symbol] = FakePosition(qty=Decimal(qty))
        sweep = LifecycleSweep(h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0  # holds an option: reads, finds no event
        baseline = await _events(gw, user)

        gw.alpaca.fake.settle_option(gw.byob_key.key_id, held.symbol, activity)
        # Paced: not looked at again before its interval.
        reads = _activity_reads(gw)
        assert await sweep.run_once(now + timedelta(seconds=1)) == 0
        assert _activity_reads(gw) == reads
        later = now + h.settings.option_lifecycle_interval("alpaca") + timedelta(seconds=1)
        assert await sweep.run_once(later) == 1

        new = (await _events(gw, user))[len(baseline) :]
        assert [e["type"] for e in new] == ["order.filled"]
        order = new[0]["order"]
        assert new[0]["account_id"] == account
        assert order["symbol"] == held.symbol
        assert order["client_order_id"].startswith(f"{kind}:")
        assert (order["side"], order["quantity"], order["filled_quantity"]) == (
            side,
            str(abs(int(qty))),
            str(abs(int(qty))),
        )
        assert order["position_effect"] == "close"
        assert order["contract"]["underlying"] == held.underlying

        # Read again, by this sweep and by a fresh process's: adopted once.
        assert await sweep.run_once(later + timedelta(hours=1)) == 0
        fresh = LifecycleSweep(h.state.ctx)
        assert await fresh.run_once(later + timedelta(hours=2)) == 1  # fed, not recorded
        assert len(await _events(gw, user)) == len(baseline) + 1


async def test_an_account_without_options_is_not_read_for_transactions(db_url: str) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        await gw.connect_byob(user)
        gw.byob_key.positions["AAPL"] = FakePosition(qty=Decimal(5), cost_basis=Decimal(900))
        sweep = LifecycleSweep(h.state.ctx)
        now = datetime.now(UTC)
        await sweep.run_once(now)  # the first look after start reads once
        reads = _activity_reads(gw)
        step = h.settings.option_lifecycle_interval("alpaca") + timedelta(seconds=1)
        await sweep.run_once(now + step)
        await sweep.run_once(now + 2 * step)
        assert _activity_reads(gw) == reads


def _tx(type_: str, quantity: str | None, symbol: str | None = "AAPL261218C00150000") -> Any:
    return Transaction(
        transaction_id="t1",
        type=type_,
        occurred_at=datetime(2026, 12, 18, 21, tzinfo=UTC),
        amount=Decimal(0),
        symbol=symbol,
        quantity=None if quantity is None else Decimal(quantity),
    )


def test_a_lifecycle_transaction_is_mapped_without_guessing() -> None:
    assert lifecycle_update("ref", _tx("option_exercise", None)) is None  # how many?
    # Unsigned: an exercise closes a long, an assignment a short.
    exercised = lifecycle_update("ref", _tx("option_exercise", "2"))
    assert exercised is not None
    assert exercised.order.side.value == "sell"
    assigned = lifecycle_update("ref", _tx("option_assignment", "2"))
    assert assigned is not None
    assert assigned.order.side.value == "buy"
    assert lifecycle_update("ref", _tx("option_expiration", None)) is None  # which side?
    assert lifecycle_update("ref", _tx("option_expiration", "0")) is None
    assert lifecycle_update("ref", _tx("dividend", "1")) is None
    assert lifecycle_update("ref", _tx("option_expiration", "1", symbol="AAPL")) is None
    assert lifecycle_update("ref", _tx("option_expiration", "1", symbol=None)) is None
    expired = lifecycle_update("ref", _tx("option_expiration", "-4"))
    assert expired is not None
    assert expired.order.symbol == OptionContract.parse("AAPL  261218C00150000").symbol
    assert (expired.order.quantity, expired.order.broker_order_id) == (Decimal(4), "tx:t1")


async def test_a_tastytrade_assignment_reaches_the_stream_once(db_url: str) -> None:
    """tastytrade reports an assignment as a Receive Deliver of the contract (unsigned
    quantity, no action): adopted as the short's closing buy, once."""
    async with tastytrade_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        account = await gw.account(user)
        fake = gw.tt.fake
        today = datetime.now(UTC).date()
        expiration = fake.options.expirations("AAPL", today)[2].expiration
        strikes = fake.options.strikes("AAPL")
        short_put = OptionContract(
            "AAPL", "AAPL", expiration, OptionRight.put, strikes[len(strikes) // 2]
        )
        number = gw.tt.account.number
        gw.tt.account.positions[short_put.occ_padded] = TastyPosition(
            quantity=Decimal(-2), cost=Decimal("-4.20")
        )
        sweep = LifecycleSweep(h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0
        baseline = await h.client.get("/v1/events", headers=h.auth(user))
        seen = len(baseline.json()["items"])

        fake.settle_option(number, short_put.symbol, "Assignment")
        later = now + h.settings.option_lifecycle_interval("tastytrade") + timedelta(seconds=1)
        assert await sweep.run_once(later) == 1
        assert await LifecycleSweep(h.state.ctx).run_once(later) == 1  # fed again, not recorded
        items = (await h.client.get("/v1/events", headers=h.auth(user))).json()["items"]
        new = items[seen:]
        assert [e["type"] for e in new] == ["order.filled"]
        order = new[0]["order"]
        assert new[0]["account_id"] == account
        assert (order["symbol"], order["side"], order["quantity"]) == (
            short_put.symbol,
            "buy",
            "2",
        )
        assert order["client_order_id"].startswith("option_assignment:")
        shares = gw.tt.account.positions["AAPL"]
        assert shares.quantity == 200  # the put's assignment bought the underlying


async def test_an_event_the_broker_posts_late_is_still_adopted(db_url: str) -> None:
    """The position is gone at one look, its activity appears only later (end of day,
    nightly): the account is read again while it held an option within the lookback."""
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        await gw.connect_byob(user)
        held = contract(gw.alpaca.fake, OptionRight.call, 1)
        gw.byob_key.positions[held.symbol] = FakePosition(qty=Decimal(1))
        sweep = LifecycleSweep(h.state.ctx)
        step = h.settings.option_lifecycle_interval("alpaca") + timedelta(seconds=1)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0
        gw.alpaca.fake.settle_option(gw.byob_key.key_id, held.symbol, "OPEXP")
        posted = gw.byob_key.activities.pop()  # not listed yet
        assert await sweep.run_once(now + step) == 0  # gone, and nothing reported
        assert await sweep.run_once(now + 2 * step) == 0
        gw.byob_key.activities.append(posted)
        assert await sweep.run_once(now + 3 * step) == 1
        # Past the lookback after it last held one, the account is no longer read.
        reads = _activity_reads(gw)
        lookback = timedelta(days=h.settings.option_lifecycle_lookback_days)
        await sweep.run_once(now + lookback + 4 * step)
        assert _activity_reads(gw) == reads

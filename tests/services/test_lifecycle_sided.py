"""Option lifecycle events from brokers that name the contract but not the side (Schwab,
SnapTrade), end to end against their fakes (Tradier's, which name no contract:
test_lifecycle_tradier.py).

Schwab reports an expiry, exercise or assignment as a RECEIVE_AND_DELIVER transaction
("REMOVAL OF OPTION DUE TO ...") and SnapTrade as an OPTIONEXPIRATION / OPTIONASSIGNMENT /
OPTIONEXERCISE activity; neither documents what the quantity's sign means, so the sweep takes
the closed side from the positions the account was known to hold (its own reads, or the last
good portfolio read) and refuses when that is not exactly one side."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from app.brokers.base import OptionContract, OptionRight, OrderSide, Transaction
from app.services.lifecycle import LifecycleSweep, lifecycle_brokers, lifecycle_update
from app.services.reconciliation import Reconciler
from tests.brokers.schwab.support import gateway as schwab_gateway
from tests.brokers.snaptrade.gateway import gateway as snaptrade_gateway
from tests.conftest import new_user
from tests.fakes.schwab.server import FakePosition as SchwabPosition
from tests.fakes.snaptrade.options import FakeOptionPosition
from tests.harness import Harness

D = Decimal


async def _events(h: Harness, user: str) -> list[dict[str, Any]]:
    response = await h.client.get("/v1/events", params={"limit": 500}, headers=h.auth(user))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _transactions(h: Harness, user: str, account: str) -> list[dict[str, Any]]:
    response = await h.client.get(f"/v1/accounts/{account}/transactions", headers=h.auth(user))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _later(h: Harness, broker: str, now: datetime, steps: int = 1) -> datetime:
    return now + steps * (h.settings.option_lifecycle_interval(broker) + timedelta(seconds=1))


# --- Schwab ------------------------------------------------------------------------------


@dataclass
class SchwabCase:
    harness: Harness
    user: str
    account: str
    gw: Any

    def contract(self, right: OptionRight = OptionRight.put) -> OptionContract:
        fake = self.gw.schwab.fake
        expiration = fake.options.expirations("AAPL", fake.today())[2].expiration
        strikes = fake.options.strikes("AAPL")
        return OptionContract("AAPL", "AAPL", expiration, right, strikes[len(strikes) // 2])

    def hold(self, contract: OptionContract, qty: int) -> None:
        self.gw.schwab.account.positions[contract.occ_padded] = SchwabPosition(
            qty=D(qty), cost_basis=D(qty) * D(150), option=True
        )

    def settle(self, contract: OptionContract, event: str) -> dict[str, Any]:
        body: dict[str, Any] = self.gw.schwab.fake.settle_option(
            self.gw.schwab.account, contract.symbol, event
        )
        return body


@asynccontextmanager
async def schwab_case(db_url: str) -> AsyncIterator[SchwabCase]:
    async with schwab_gateway(db_url) as gw:
        user = new_user()
        [account] = (await gw.connect(user))["accounts"]
        yield SchwabCase(gw.harness, user, account, gw)


@pytest.mark.parametrize(
    ("held", "event", "kind", "side"),
    [
        (-2, "EXPIRATION", "option_expiration", "buy"),  # a short expired: bought back
        (3, "EXPIRATION", "option_expiration", "sell"),  # a long expired: sold
        (-1, "ASSIGNMENT", "option_assignment", "buy"),
        (2, "EXERCISE", "option_exercise", "sell"),
    ],
)
async def test_a_schwab_removal_of_option_reaches_the_stream_once(
    db_url: str, held: int, event: str, kind: str, side: str
) -> None:
    async with schwab_case(db_url) as c:
        h = c.harness
        assert "schwab" in lifecycle_brokers(h.state.ctx)
        option = c.contract()
        c.hold(option, held)
        sweep = LifecycleSweep(h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0  # sees the position; nothing happened yet
        baseline = len(await _events(h, c.user))

        wire = c.settle(option, event)
        listed = [t for t in await _transactions(h, c.user, c.account) if t["type"] == kind]
        assert [(t["id"], t["symbol"], t["quantity"]) for t in listed] == [
            (str(wire["activityId"]), option.symbol, str(abs(held)))
        ]
        assert await sweep.run_once(_later(h, "schwab", now)) == 1
        new = (await _events(h, c.user))[baseline:]
        assert [e["type"] for e in new] == ["order.filled"]
        order = new[0]["order"]
        assert new[0]["account_id"] == c.account
        assert (order["symbol"], order["side"], order["quantity"], order["filled_quantity"]) == (
            option.symbol,
            side,
            str(abs(held)),
            str(abs(held)),
        )
        assert order["position_effect"] == "close"
        assert order["client_order_id"].startswith(f"{kind}:")
        assert order["broker_order_id"] == f"tx:{wire['activityId']}"

        # Read again by this sweep and by another instance's: one order, one event.
        assert await sweep.run_once(_later(h, "schwab", now, 2)) == 0
        assert await LifecycleSweep(h.state.ctx).run_once(_later(h, "schwab", now, 3)) == 0
        assert len(await _events(h, c.user)) == baseline + 1
        orders = await h.client.get(f"/v1/accounts/{c.account}/orders", headers=h.auth(c.user))
        assert orders.status_code == 200, orders.text
        assert [(o["client_order_id"], o["status"]) for o in orders.json()["items"]] == [
            (order["client_order_id"], "filled")
        ]


async def test_an_account_linked_by_two_users_gets_the_event_in_each(db_url: str) -> None:
    """One broker account number, two account rows (two users linked it, or a reconnect
    kept the old row): each row the sweep reads is given its own order and event."""
    async with schwab_case(db_url) as c:
        h = c.harness
        other = new_user()
        [other_account] = (await c.gw.connect(other))["accounts"]
        assert other_account != c.account
        option = c.contract()
        c.hold(option, -1)
        sweep = LifecycleSweep(h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0
        before = {u: len(await _events(h, u)) for u in (c.user, other)}

        c.settle(option, "ASSIGNMENT")
        assert await sweep.run_once(_later(h, "schwab", now)) == 2
        for user, account in ((c.user, c.account), (other, other_account)):
            new = (await _events(h, user))[before[user] :]
            assert [(e["type"], e["account_id"]) for e in new] == [("order.filled", account)]
            assert (new[0]["order"]["symbol"], new[0]["order"]["side"]) == (option.symbol, "buy")
        assert await sweep.run_once(_later(h, "schwab", now, 2)) == 0


async def test_a_schwab_expiry_with_no_known_side_stays_a_transaction(db_url: str) -> None:
    """A process that never saw the position, and no portfolio read of it: the expiry is
    listed but not made an order. Once a portfolio read had shown the short, another
    instance adopts it."""
    async with schwab_case(db_url) as c:
        h = c.harness
        option = c.contract()
        c.hold(option, -2)
        wire = c.settle(option, "EXPIRATION")
        now = datetime.now(UTC)
        baseline = len(await _events(h, c.user))
        assert await LifecycleSweep(h.state.ctx).run_once(now) == 0
        assert len(await _events(h, c.user)) == baseline
        assert [t["id"] for t in await _transactions(h, c.user, c.account)].count(
            str(wire["activityId"])
        ) == 1

    async with schwab_case(db_url) as c:
        h = c.harness
        option = c.contract(OptionRight.call)
        c.hold(option, -2)
        portfolio = await h.client.get("/v1/portfolio", headers=h.auth(c.user))
        assert portfolio.status_code == 200, portfolio.text  # the last good read: a short
        c.settle(option, "EXPIRATION")
        baseline = len(await _events(h, c.user))
        assert await LifecycleSweep(h.state.ctx).run_once(datetime.now(UTC)) == 1
        [event] = (await _events(h, c.user))[baseline:]
        assert (event["order"]["side"], event["order"]["quantity"]) == ("buy", "2")


async def test_a_contract_held_both_ways_or_contradicted_is_not_adopted(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="app.services.lifecycle")
    async with schwab_case(db_url) as c:
        h = c.harness
        flipped, assigned_long = c.contract(), c.contract(OptionRight.call)
        sweep = LifecycleSweep(h.state.ctx)
        now = datetime.now(UTC)
        c.hold(flipped, 1)
        c.hold(assigned_long, 1)
        assert await sweep.run_once(now) == 0
        c.hold(flipped, -1)  # closed and sold short within the lookback
        assert await sweep.run_once(_later(h, "schwab", now)) == 0
        baseline = len(await _events(h, c.user))
        c.settle(flipped, "EXPIRATION")
        c.settle(assigned_long, "ASSIGNMENT")  # an assignment closes a short, not a long
        assert await sweep.run_once(_later(h, "schwab", now, 2)) == 0
        assert len(await _events(h, c.user)) == baseline
        kinds = {t["type"] for t in await _transactions(h, c.user, c.account)}
        assert {"option_expiration", "option_assignment"} <= kinds
        logged = [r.getMessage() for r in caplog.records if r.name == "app.services.lifecycle"]
        assert any("held both long and short" in m for m in logged)
        assert any("contradicts the side held" in m for m in logged)


async def test_other_receive_and_deliver_rows_stay_transfers(db_url: str) -> None:
    async with schwab_case(db_url) as c:
        h = c.harness
        option = c.contract()
        c.hold(option, 1)
        wire = c.settle(option, "EXPIRATION")
        wire["description"] = "TRANSFER OF SECURITY OR OPTION IN"  # an ACAT, not an event
        [listed] = [
            t
            for t in await _transactions(h, c.user, c.account)
            if t["id"] == str(wire["activityId"])
        ]
        assert listed["type"] == "transfer"
        assert await LifecycleSweep(h.state.ctx).run_once(datetime.now(UTC)) == 0


# --- SnapTrade ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "activity", "wire_units", "kind", "side"),
    [
        (-3, "OPTIONEXPIRATION", 3, "option_expiration", "buy"),
        (2, "OPTIONEXPIRATION", 2, "option_expiration", "sell"),
        (-1, "OPTIONASSIGNMENT", -1, "option_assignment", "buy"),
        (1, "OPTIONEXERCISE", 1, "option_exercise", "sell"),
    ],
)
async def test_a_snaptrade_option_activity_reaches_the_stream_once(
    db_url: str, units: int, activity: str, wire_units: int, kind: str, side: str
) -> None:
    async with snaptrade_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        assert "snaptrade" in lifecycle_brokers(h.state.ctx)
        connection, account = await gw.linked(user)
        fake_account = gw.account_of(connection)
        today = datetime.now(UTC).date()
        expiration = gw.fake.options.expirations("AAPL", today)[2].expiration
        strikes = gw.fake.options.strikes("AAPL")
        option = OptionContract(
            "AAPL", "AAPL", expiration, OptionRight.call, strikes[len(strikes) // 2]
        )
        fake_account.options.positions[option.symbol] = FakeOptionPosition(
            option, units=D(units), cost=D(units) * D(210)
        )
        sweep = LifecycleSweep(h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0
        baseline = len(await _events(h, user))

        # units as the brokerage reported them: its sign is not documented, so not used.
        wire = gw.fake.record_option_event(fake_account.id, activity, option, D(wire_units))
        [listed] = [t for t in await _transactions(h, user, account) if t["type"] == kind]
        assert (listed["id"], listed["symbol"]) == (wire["id"], option.symbol)
        assert await sweep.run_once(_later(h, "snaptrade", now)) == 1
        new = (await _events(h, user))[baseline:]
        assert [e["type"] for e in new] == ["order.filled"]
        order = new[0]["order"]
        assert (order["symbol"], order["side"], order["quantity"]) == (
            option.symbol,
            side,
            str(abs(units)),
        )
        assert order["position_effect"] == "close"
        assert order["client_order_id"].startswith(f"{kind}:")
        assert await sweep.run_once(_later(h, "snaptrade", now, 2)) == 0
        assert await LifecycleSweep(h.state.ctx).run_once(_later(h, "snaptrade", now, 3)) == 0
        assert len(await _events(h, user)) == baseline + 1


async def test_a_snaptrade_expiry_of_an_unknown_side_is_not_adopted(db_url: str) -> None:
    async with snaptrade_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection, account = await gw.linked(user)
        fake_account = gw.account_of(connection)
        today = datetime.now(UTC).date()
        expiration = gw.fake.options.expirations("AAPL", today)[2].expiration
        strikes = gw.fake.options.strikes("AAPL")
        option = OptionContract("AAPL", "AAPL", expiration, OptionRight.put, strikes[0])
        gw.fake.record_option_event(fake_account.id, "OPTIONEXPIRATION", option, D(1))
        baseline = len(await _events(h, user))
        assert await LifecycleSweep(h.state.ctx).run_once(datetime.now(UTC)) == 0
        assert len(await _events(h, user)) == baseline
        kinds = [t["type"] for t in await _transactions(h, user, account)]
        assert "option_expiration" in kinds


async def test_the_gateways_own_filled_orders_tell_the_side(db_url: str) -> None:
    """A vertical placed and filled through the gateway, both legs expiring: a process that
    never saw the positions, without any portfolio read, takes each leg's side from the
    net of the account's filled orders on that contract."""
    async with snaptrade_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection, account = await gw.linked(user)
        fake_account = gw.account_of(connection)
        today = datetime.now(UTC).date()
        expiration = gw.fake.options.expirations("AAPL", today)[2].expiration
        strikes = gw.fake.options.strikes("AAPL")
        long, short = (
            OptionContract("AAPL", "AAPL", expiration, OptionRight.call, strikes[i])
            for i in (len(strikes) // 2, len(strikes) // 2 + 2)
        )
        placed = await h.client.post(
            f"/v1/accounts/{account}/orders",
            json={
                "legs": [
                    {"symbol": long.symbol, "side": "buy", "ratio": 1, "position_effect": "open"},
                    {
                        "symbol": short.symbol,
                        "side": "sell",
                        "ratio": 1,
                        "position_effect": "open",
                    },
                ],
                "quantity": "2",
                "order_type": "market",
                "time_in_force": "day",
            },
            headers=h.auth(user, **{"Idempotency-Key": "vertical-1"}),
        )
        assert placed.status_code == 201, placed.text
        await gw.fake.match()
        assert await Reconciler(h.state.ctx).run_once() >= 1
        got = await h.client.get(f"/v1/orders/{placed.json()['id']}", headers=h.auth(user))
        assert got.json()["status"] == "filled", got.text
        baseline = len(await _events(h, user))

        for option in (long, short):
            gw.fake.record_option_event(fake_account.id, "OPTIONEXPIRATION", option, D(2))
        assert await LifecycleSweep(h.state.ctx).run_once(datetime.now(UTC)) == 2
        closed = {
            e["order"]["symbol"]: (e["order"]["side"], e["order"]["quantity"])
            for e in (await _events(h, user))[baseline:]
            if e["type"] == "order.filled"
        }
        assert closed == {long.symbol: ("sell", "2"), short.symbol: ("buy", "2")}


# --- the rule, unit by unit ----------------------------------------------------------------


def _tx(type_: str, quantity: str | None = "2") -> Transaction:
    return Transaction(
        transaction_id="t1",
        type=type_,
        occurred_at=datetime(2026, 12, 18, 21, tzinfo=UTC),
        amount=D(0),
        symbol="AAPL261218C00150000",
        quantity=None if quantity is None else D(quantity),
    )


def test_the_side_comes_from_the_positions_held_never_from_the_sign() -> None:
    long, short = frozenset({OrderSide.sell}), frozenset({OrderSide.buy})
    both, none = long | short, frozenset[OrderSide]()

    def side(tx: Transaction, held: frozenset[OrderSide]) -> str | None:
        update = lifecycle_update("ref", tx, held=held)
        return None if update is None else update.order.side.value

    assert side(_tx("option_expiration", "-2"), short) == "buy"  # the sign is ignored
    assert side(_tx("option_expiration", "2"), long) == "sell"
    assert side(_tx("option_expiration"), both) is None
    assert side(_tx("option_expiration"), none) is None
    assert side(_tx("option_exercise"), none) == "sell"  # only a long is exercised
    assert side(_tx("option_assignment"), none) == "buy"  # only a short is assigned
    assert side(_tx("option_assignment"), long) is None
    assert side(_tx("option_exercise"), short) is None
    assert side(_tx("option_exercise"), both) is None
    assert side(_tx("option_expiration", None), short) is None  # how many?
    assert side(_tx("option_expiration", "0"), short) is None
